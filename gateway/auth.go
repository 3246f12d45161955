package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"github.com/ctxgate/ctxgate/config"
)

// Principal is who the gateway verified a request comes from. Sessions,
// logs (and later policy and cache) use it; nothing uses client-supplied
// identity headers.
type Principal struct {
	// ID is stable across credential refreshes: "anonymous" or
	// "api_key:<name>". Sessions are bound to it.
	ID string
	// Kind is "anonymous" or "api_key".
	Kind string
	// Name is the API key's configured name; empty for anonymous.
	Name string
}

var anonymous = &Principal{ID: "anonymous", Kind: "anonymous"}

// maxCredentialBytes bounds a presented credential before it is hashed or
// compared: no legitimate key is this long.
const maxCredentialBytes = 4096

// authenticator decides who is calling. It never decides what they may do.
type authenticator struct {
	anonymous bool
	header    string // "authorization" or "x-api-key"
	keys      []apiKey
}

type apiKey struct {
	name string
	hash [sha256.Size]byte
}

func newAuthenticator(cfg config.Auth) (*authenticator, error) {
	a := &authenticator{anonymous: cfg.Anonymous, header: cfg.APIKeyHeader}
	for _, k := range cfg.APIKeys {
		b, err := hex.DecodeString(k.SHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, errors.New("auth.api_keys: " + k.Name + ": sha256 must be 64 hex digits")
		}
		key := apiKey{name: k.Name}
		copy(key.hash[:], b)
		a.keys = append(a.keys, key)
	}
	return a, nil
}

// authenticate returns the verified principal. A request that presents a
// credential is judged on it: a bad credential is 401 even when anonymous
// access is on, never a silent downgrade to anonymous.
func (a *authenticator) authenticate(r *http.Request) (*Principal, error) {
	authz := r.Header.Values("Authorization")
	xkey := r.Header.Values("X-Api-Key")
	if len(authz) > 1 || len(xkey) > 1 {
		// Two credentials: which one a later hop reads is undefined.
		return nil, badRequest("more than one Authorization or X-API-Key header", nil)
	}
	var credential, presentedIn string
	switch {
	case len(authz) == 1:
		presentedIn = "authorization"
		scheme, token, ok := strings.Cut(authz[0], " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			return nil, unauthenticated("Authorization must be: Bearer <credential>", nil)
		}
		credential = strings.TrimSpace(token)
	case len(xkey) == 1:
		presentedIn = "x-api-key"
		credential = xkey[0]
	default:
		if a.anonymous {
			return anonymous, nil
		}
		return nil, unauthenticated("authentication required", nil)
	}
	if presentedIn != a.header || len(a.keys) == 0 {
		return nil, unauthenticated("credential not accepted", errors.New("credential presented in "+presentedIn+", API keys are read from "+a.header))
	}
	if len(credential) > maxCredentialBytes {
		return nil, unauthenticated("credential not accepted", errors.New("credential too long"))
	}
	if name, ok := a.lookupKey(credential); ok {
		return &Principal{ID: "api_key:" + name, Kind: "api_key", Name: name}, nil
	}
	return nil, unauthenticated("credential not accepted", errors.New("unknown API key"))
}

// lookupKey compares the key's hash with every configured hash in constant
// time, visiting all of them, so timing reveals neither the key nor which
// entry matched.
func (a *authenticator) lookupKey(key string) (string, bool) {
	sum := sha256.Sum256([]byte(key))
	found := -1
	for i := range a.keys {
		if subtle.ConstantTimeCompare(sum[:], a.keys[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return a.keys[found].name, true
}

func unauthenticated(message string, cause error) *Error {
	e := newError(http.StatusUnauthorized, CodeUnauthenticated, message, cause)
	e.Header = http.Header{"Www-Authenticate": {`Bearer realm="ctxgate"`}}
	return e
}

// authenticate is the middleware: it puts the principal in the request state.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.auth.authenticate(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		if st := stateOf(r.Context()); st != nil {
			st.principal = p
		}
		next.ServeHTTP(w, r)
	})
}

// principalOf returns the request's verified principal. Every route sits
// behind authenticate, so a missing principal is a wiring bug: fail closed.
func principalOf(ctx context.Context) (*Principal, error) {
	if st := stateOf(ctx); st != nil && st.principal != nil {
		return st.principal, nil
	}
	return nil, errors.New("no principal in request context")
}
