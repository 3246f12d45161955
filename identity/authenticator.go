package identity

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ctxgate/ctxgate/config"
)

// MaxCredentialBytes bounds a presented credential before it is parsed,
// hashed or compared; real JWTs and keys are far smaller, and a huge one
// must cost nothing.
const MaxCredentialBytes = 16 << 10

// TokenVerifier verifies a bearer JWT for a route whose canonical URL is
// resource. It returns the principal, or an error for the log (the client
// only learns the token was not accepted). *OIDCVerifier is the
// implementation.
type TokenVerifier interface {
	Verify(ctx context.Context, token, resource string) (*Principal, error)
}

// CertIdentifier names the principal of a client certificate chain the
// TLS handshake verified. *CertIdentity is the implementation.
type CertIdentifier interface {
	Identify(chain []*x509.Certificate) (*Principal, error)
}

// Authenticator decides who is calling. It never decides what they may do.
// Make one with NewAuthenticator; set Tokens and Certs before the first
// Authenticate, never after.
type Authenticator struct {
	// Tokens verifies bearer JWTs; nil (no auth.oidc) treats every bearer
	// credential as an API key.
	Tokens TokenVerifier
	// Certs names the principal of a verified client certificate; nil (no
	// auth.mtls) makes a certificate name no one.
	Certs CertIdentifier

	anonymous bool
	header    string // where API keys are read: "authorization" or "x-api-key"
	keys      []apiKey
}

type apiKey struct {
	name       string
	hash       [sha256.Size]byte
	groups     []string
	attributes map[string]string
}

// NewAuthenticator is an authenticator for the API keys and anonymous
// access cfg configures, without a token verifier or certificate
// identifier (set Tokens and Certs). A key hash that is not 64 hex digits is
// an error.
func NewAuthenticator(cfg config.Auth) (*Authenticator, error) {
	a := &Authenticator{anonymous: cfg.Anonymous, header: cfg.APIKeyHeader}
	for _, k := range cfg.APIKeys {
		b, err := hex.DecodeString(k.SHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, errors.New("auth.api_keys: " + k.Name + ": sha256 must be 64 hex digits")
		}
		key := apiKey{name: k.Name, groups: slices.Clone(k.Groups), attributes: maps.Clone(k.Attributes)}
		copy(key.hash[:], b)
		a.keys = append(a.keys, key)
	}
	return a, nil
}

// Failure is why a request was not authenticated: a refused credential,
// or none where one is required. It carries what the front needs for its
// answer (RFC 6750 section 3) and nothing of the route.
type Failure struct {
	// Message is public: it never quotes what the client sent.
	Message string
	// InvalidToken marks a presented bearer credential that was refused
	// (RFC 6750 invalid_token); false for no credential or a non-bearer one.
	InvalidToken bool
	// RetryAfter, when positive, marks a token that could not be checked
	// yet (its issuer's keys are unavailable): 503, not 401.
	RetryAfter time.Duration
	// Err is the internal cause, for the log only; may be nil.
	Err error
	// Reason is one of the Reason constants: a fixed word for metrics and
	// traces (never the cause, which may quote what the client sent).
	Reason string
}

// ErrDuplicateCredential is the refusal of a request with two
// Authorization or two X-API-Key headers: which one a later hop reads is
// undefined, so neither is judged (a bad request, not a bad credential).
var ErrDuplicateCredential = errors.New("more than one Authorization or X-API-Key header")

// Reasons for an authentication failure (Failure.Reason and the reason
// label of ctxgate_authentication_failures_total).
const (
	ReasonMissing         = "missing"          // no credential, anonymous access off
	ReasonMalformed       = "malformed"        // Authorization is not "Bearer <credential>"
	ReasonDuplicate       = "duplicate"        // two Authorization or X-API-Key headers
	ReasonWrongHeader     = "wrong_header"     // X-API-Key sent where keys are read from Authorization
	ReasonTooLong         = "too_long"         // over MaxCredentialBytes
	ReasonInvalidToken    = "invalid_token"    // a JWT that did not verify
	ReasonUnknownKey      = "unknown_key"      // a bearer credential or API key nobody issued
	ReasonCertificate     = "certificate"      // a verified certificate that names no principal
	ReasonKeysUnavailable = "keys_unavailable" // the token's issuer's keys are not loaded (yet)
)

// Error is the public message and, after it, the internal cause.
func (f *Failure) Error() string {
	if f.Err != nil {
		return f.Message + ": " + f.Err.Error()
	}
	return f.Message
}

// Unwrap is the internal cause (nil when there is none).
func (f *Failure) Unwrap() error { return f.Err }

// Authenticate returns the verified principal for a request to the route
// whose canonical URL is resource. A request that presents a credential is
// judged on it: a bad one is refused even when anonymous access is on,
// never silently downgraded. A bearer token, when present, names the
// principal; otherwise a verified client certificate; otherwise anonymous.
//
// Every refusal is a *Failure, except two credential headers:
// ErrDuplicateCredential. A nil Authenticator must not be used.
func (a *Authenticator) Authenticate(r *http.Request, resource string) (*Principal, error) {
	authz := r.Header.Values("Authorization")
	xkey := r.Header.Values("X-Api-Key")
	if len(authz) > 1 || len(xkey) > 1 {
		// Two credentials: which one a later hop reads is undefined.
		return nil, ErrDuplicateCredential
	}
	if len(authz) == 1 {
		scheme, credential, ok := strings.Cut(authz[0], " ")
		credential = strings.TrimSpace(credential)
		if !ok || !strings.EqualFold(scheme, "Bearer") || credential == "" {
			return nil, &Failure{Message: "Authorization must be: Bearer <credential>", InvalidToken: true, Reason: ReasonMalformed}
		}
		return a.bearer(r.Context(), credential, resource)
	}
	if len(xkey) == 1 {
		if a.header != "x-api-key" {
			return nil, &Failure{Message: "credential not accepted", Err: errors.New("X-API-Key presented, API keys are read from Authorization"), Reason: ReasonWrongHeader}
		}
		return a.apiKey(xkey[0])
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && a.Certs != nil {
		p, err := a.Certs.Identify(r.TLS.VerifiedChains[0])
		if err != nil {
			return nil, &Failure{Message: "client certificate not accepted", Err: err, Reason: ReasonCertificate}
		}
		return p, nil
	}
	if a.anonymous {
		return anonymous, nil
	}
	return nil, &Failure{Message: "authentication required", Reason: ReasonMissing}
}

// bearer tells a JWT (three base64url segments) from an API key and checks
// it with the matching method.
func (a *Authenticator) bearer(ctx context.Context, credential, resource string) (*Principal, error) {
	if len(credential) > MaxCredentialBytes {
		return nil, &Failure{Message: "credential not accepted", InvalidToken: true, Err: errors.New("credential too long"), Reason: ReasonTooLong}
	}
	if strings.Count(credential, ".") == 2 && a.Tokens != nil {
		p, err := a.Tokens.Verify(ctx, credential, resource)
		if err == nil {
			p.AccessToken = credential
			return p, nil
		}
		// An API key may happen to contain two dots; it is still only
		// accepted by an exact (constant-time) match.
		if a.header == "authorization" {
			if name, ok := a.lookupKey(credential); ok {
				return a.keyPrincipal(name), nil
			}
		}
		if ku, ok := errors.AsType[*keysUnavailableError](err); ok {
			// Not the token's fault: a 401 invalid_token would make the
			// client throw away a token that may be good.
			return nil, &Failure{Message: "the token's issuer's signing keys are not loaded yet; retry later", RetryAfter: ku.retryAfter, Err: err, Reason: ReasonKeysUnavailable}
		}
		return nil, &Failure{Message: "token not accepted", InvalidToken: true, Err: err, Reason: ReasonInvalidToken}
	}
	if a.header != "authorization" || len(a.keys) == 0 {
		return nil, &Failure{Message: "credential not accepted", InvalidToken: true, Err: errors.New("no verifier accepts this bearer credential"), Reason: ReasonUnknownKey}
	}
	p, err := a.apiKey(credential)
	if f, ok := errors.AsType[*Failure](err); ok {
		f.InvalidToken = true
	}
	return p, err
}

func (a *Authenticator) apiKey(key string) (*Principal, error) {
	if len(key) > MaxCredentialBytes {
		return nil, &Failure{Message: "credential not accepted", Err: errors.New("credential too long"), Reason: ReasonTooLong}
	}
	if name, ok := a.lookupKey(key); ok {
		return a.keyPrincipal(name), nil
	}
	return nil, &Failure{Message: "credential not accepted", Err: errors.New("unknown API key"), Reason: ReasonUnknownKey}
}

// keyPrincipal is the principal of the configured key name: its groups
// and attributes come from the configuration, never from the request.
func (a *Authenticator) keyPrincipal(name string) *Principal {
	p := &Principal{ID: "api_key:" + name, Kind: "api_key", Name: name}
	for _, k := range a.keys {
		if k.name == name {
			p.Groups, p.Attributes = slices.Clone(k.groups), maps.Clone(k.attributes)
		}
	}
	return p
}

// lookupKey compares the key's hash with every configured hash in constant
// time, visiting all of them, so timing reveals neither the key nor which
// entry matched.
func (a *Authenticator) lookupKey(key string) (string, bool) {
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
