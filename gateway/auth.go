package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// Principal is who the gateway verified a request comes from. Sessions,
// logs (and later policy and cache) use it; nothing uses client-supplied
// identity headers.
type Principal struct {
	// ID is stable across credential refreshes, so a refreshed token keeps
	// its session: "oidc:<issuer>#<subject>", "mtls:spiffe://...",
	// "mtls:dns:<name>", "mtls:cn:<name>", "api_key:<name>" or "anonymous".
	ID string
	// Kind is "oidc", "mtls", "api_key" or "anonymous".
	Kind string
	// Issuer and Subject of a verified token (oidc).
	Issuer, Subject string
	// Name is the API key's configured name (api_key).
	Name string
	// Scopes granted by the token (oidc); nil for other kinds.
	Scopes []string
	// Groups (or roles) claimed by the token (oidc).
	Groups []string
	// Claims is the token's whole verified claim set (oidc).
	Claims map[string]any
	// Audience is the token's aud (oidc).
	Audience []string
	// Expiry of the token (oidc); zero for other kinds.
	Expiry time.Time
	// Cert describes the verified client certificate (mtls).
	Cert *CertInfo
	// Attributes are the API key's configured attributes (api_key).
	Attributes map[string]string

	// AccessToken is the raw bearer token that verified (oidc), kept only
	// to be exchanged for an upstream token (token_exchange). It is never
	// forwarded, never in the policy input, and never logged: LogValue
	// leaves it out, and JSON skips it.
	AccessToken string `json:"-"`
}

// LogValue is what a log line shows of a principal: who, never the token.
func (p *Principal) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", p.ID), slog.String("kind", p.Kind))
}

// caller is the principal as upstream credential sources know it.
func (p *Principal) caller() *upstream.Caller {
	c := &upstream.Caller{ID: p.ID, Kind: p.Kind}
	if p.Kind == "oidc" {
		// Only a token the gateway verified against its own issuers.
		c.AccessToken, c.Expiry = p.AccessToken, p.Expiry
	}
	return c
}

// CertInfo is what the policy and logs may know of a client certificate.
type CertInfo struct {
	Subject  string
	URIs     []string
	DNSNames []string
	SHA256   string // hex digest of the DER certificate
}

var anonymous = &Principal{ID: "anonymous", Kind: "anonymous"}

// maxCredentialBytes bounds a presented credential before it is parsed,
// hashed or compared; real JWTs and keys are far smaller, and a huge one
// must cost nothing.
const maxCredentialBytes = 16 << 10

// tokenVerifier verifies a bearer JWT for a route whose canonical URL is
// resource. It returns the principal, or an error for the log (the client
// only learns the token was not accepted).
type tokenVerifier interface {
	verify(ctx context.Context, token, resource string) (*Principal, error)
}

// certIdentifier names the principal of a verified client certificate.
type certIdentifier interface {
	identify(chain []*x509.Certificate) (*Principal, error)
}

// authenticator decides who is calling. It never decides what they may do.
type authenticator struct {
	anonymous bool
	header    string // where API keys are read: "authorization" or "x-api-key"
	keys      []apiKey
	tokens    tokenVerifier  // nil without auth.oidc
	certs     certIdentifier // nil without auth.mtls
}

type apiKey struct {
	name       string
	hash       [sha256.Size]byte
	groups     []string
	attributes map[string]string
}

func newAuthenticator(cfg config.Auth) (*authenticator, error) {
	a := &authenticator{anonymous: cfg.Anonymous, header: cfg.APIKeyHeader}
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

// authFailure is why a request was not authenticated. invalidToken marks a
// presented bearer credential that was refused (RFC 6750 invalid_token).
type authFailure struct {
	message      string
	invalidToken bool
	// retryAfter, when positive, marks a token that could not be checked
	// yet (its issuer's keys are unavailable): 503, not 401.
	retryAfter time.Duration
	cause      error
	// reason is a fixed word for metrics and traces (never the cause,
	// which may quote what the client sent).
	reason string
}

// Reasons for an authentication failure (ctxgate_authentication_failures_total).
const (
	reasonMissing           = "missing"            // no credential, anonymous access off
	reasonMalformed         = "malformed"          // Authorization is not "Bearer <credential>"
	reasonDuplicate         = "duplicate"          // two Authorization or X-API-Key headers
	reasonWrongHeader       = "wrong_header"       // X-API-Key sent where keys are read from Authorization
	reasonTooLong           = "too_long"           // over maxCredentialBytes
	reasonInvalidToken      = "invalid_token"      // a JWT that did not verify
	reasonUnknownKey        = "unknown_key"        // a bearer credential or API key nobody issued
	reasonCertificate       = "certificate"        // a verified certificate that names no principal
	reasonInsufficientScope = "insufficient_scope" // the route's required scopes are missing
	reasonKeysUnavailable   = "keys_unavailable"   // the token's issuer's keys are not loaded (yet)
)

func (f *authFailure) Error() string {
	if f.cause != nil {
		return f.message + ": " + f.cause.Error()
	}
	return f.message
}

func (f *authFailure) Unwrap() error { return f.cause }

// authenticate returns the verified principal for a request to the route
// whose canonical URL is resource. A request that presents a credential is
// judged on it: a bad one is refused even when anonymous access is on,
// never silently downgraded. A bearer token, when present, names the
// principal; otherwise a verified client certificate; otherwise anonymous.
func (a *authenticator) authenticate(r *http.Request, resource string) (*Principal, error) {
	authz := r.Header.Values("Authorization")
	xkey := r.Header.Values("X-Api-Key")
	if len(authz) > 1 || len(xkey) > 1 {
		// Two credentials: which one a later hop reads is undefined.
		return nil, badRequest("more than one Authorization or X-API-Key header", nil)
	}
	if len(authz) == 1 {
		scheme, credential, ok := strings.Cut(authz[0], " ")
		credential = strings.TrimSpace(credential)
		if !ok || !strings.EqualFold(scheme, "Bearer") || credential == "" {
			return nil, &authFailure{message: "Authorization must be: Bearer <credential>", invalidToken: true, reason: reasonMalformed}
		}
		return a.bearer(r.Context(), credential, resource)
	}
	if len(xkey) == 1 {
		if a.header != "x-api-key" {
			return nil, &authFailure{message: "credential not accepted", cause: errors.New("X-API-Key presented, API keys are read from Authorization"), reason: reasonWrongHeader}
		}
		return a.apiKey(xkey[0])
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && a.certs != nil {
		p, err := a.certs.identify(r.TLS.VerifiedChains[0])
		if err != nil {
			return nil, &authFailure{message: "client certificate not accepted", cause: err, reason: reasonCertificate}
		}
		return p, nil
	}
	if a.anonymous {
		return anonymous, nil
	}
	return nil, &authFailure{message: "authentication required", reason: reasonMissing}
}

// bearer tells a JWT (three base64url segments) from an API key and checks
// it with the matching method.
func (a *authenticator) bearer(ctx context.Context, credential, resource string) (*Principal, error) {
	if len(credential) > maxCredentialBytes {
		return nil, &authFailure{message: "credential not accepted", invalidToken: true, cause: errors.New("credential too long"), reason: reasonTooLong}
	}
	if strings.Count(credential, ".") == 2 && a.tokens != nil {
		p, err := a.tokens.verify(ctx, credential, resource)
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
			return nil, &authFailure{message: "the token's issuer's signing keys are not loaded yet; retry later", retryAfter: ku.retryAfter, cause: err, reason: reasonKeysUnavailable}
		}
		return nil, &authFailure{message: "token not accepted", invalidToken: true, cause: err, reason: reasonInvalidToken}
	}
	if a.header != "authorization" || len(a.keys) == 0 {
		return nil, &authFailure{message: "credential not accepted", invalidToken: true, cause: errors.New("no verifier accepts this bearer credential"), reason: reasonUnknownKey}
	}
	p, err := a.apiKey(credential)
	if f, ok := errors.AsType[*authFailure](err); ok {
		f.invalidToken = true
	}
	return p, err
}

func (a *authenticator) apiKey(key string) (*Principal, error) {
	if len(key) > maxCredentialBytes {
		return nil, &authFailure{message: "credential not accepted", cause: errors.New("credential too long"), reason: reasonTooLong}
	}
	if name, ok := a.lookupKey(key); ok {
		return a.keyPrincipal(name), nil
	}
	return nil, &authFailure{message: "credential not accepted", cause: errors.New("unknown API key"), reason: reasonUnknownKey}
}

// lookupKey compares the key's hash with every configured hash in constant
// time, visiting all of them, so timing reveals neither the key nor which
// entry matched.
// keyPrincipal is the principal of the configured key name: its groups
// and attributes come from the configuration, never from the request.
func (a *authenticator) keyPrincipal(name string) *Principal {
	p := &Principal{ID: "api_key:" + name, Kind: "api_key", Name: name}
	for _, k := range a.keys {
		if k.name == name {
			p.Groups, p.Attributes = slices.Clone(k.groups), maps.Clone(k.attributes)
		}
	}
	return p
}

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

// authenticate is the per-route middleware: it puts the verified principal
// in the request state, or answers 401 (no or bad credential) or 403
// (a token without the route's required scopes) with an RFC 6750/9728
// challenge that tells an MCP client where to get a token.
func (s *Server) authenticate(rt *route) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := stateOf(r.Context())
			// Known from here on, so refusals below count for the route.
			st.upstream, st.route = rt.upstream.Name, rt.upstream.Name
			p, err := s.authenticateTraced(r, rt)
			if err != nil {
				writeError(w, r, err)
				return
			}
			st.principal = p
			// Every upstream request made for this one is made for p, and
			// counts against p's share of that upstream's bulkhead.
			st.caller = p.caller()
			ctx := upstream.WithPrincipal(r.Context(), p.ID)
			next.ServeHTTP(w, r.WithContext(upstream.WithCaller(ctx, st.caller)))
		})
	}
}

// authenticateTraced authenticates r for rt inside an "authenticate" span
// and counts a refusal by reason. The error is the client's answer.
func (s *Server) authenticateTraced(r *http.Request, rt *route) (*Principal, error) {
	ctx, span := s.tracer.Start(r.Context(), "authenticate")
	defer span.End()
	p, err := s.auth.authenticate(r.WithContext(ctx), rt.resource)
	reason := ""
	if f, ok := errors.AsType[*authFailure](err); ok && f.retryAfter > 0 {
		e := newError(http.StatusServiceUnavailable, CodeUnavailable, f.message, f.cause)
		setRetryAfter(e, f.retryAfter)
		err, reason = e, f.reason
	} else if ok {
		e := newError(http.StatusUnauthorized, CodeUnauthenticated, f.message, f.cause)
		e.Header = http.Header{"Www-Authenticate": {s.challenge(rt, f.invalidToken, "")}}
		err, reason = e, f.reason
	} else if err != nil {
		reason = reasonDuplicate // the only other refusal: two credential headers
	} else if err = s.checkScopes(rt, p); err != nil {
		reason = reasonInsufficientScope
	}
	if reason != "" {
		s.metrics.authFailures.WithLabelValues(rt.upstream.Name, reason).Inc()
		span.SetAttributes(attribute.String("ctxgate.auth.failure", reason))
		span.SetStatus(codes.Error, reason)
		return nil, err
	}
	span.SetAttributes(attribute.String("ctxgate.auth.kind", p.Kind))
	return p, nil
}

// checkScopes requires every scope the route demands. A principal that
// cannot carry scopes at all is sent to get a token (401); a token that
// lacks one is a step-up (403 insufficient_scope).
func (s *Server) checkScopes(rt *route, p *Principal) error {
	var missing []string
	for _, want := range rt.requiredScopes {
		if !slices.Contains(p.Scopes, want) {
			missing = append(missing, want)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if p.Kind != "oidc" {
		e := newError(http.StatusUnauthorized, CodeUnauthenticated, "this route requires a bearer token with scopes "+strings.Join(rt.requiredScopes, " "), nil)
		e.Header = http.Header{"Www-Authenticate": {s.challenge(rt, false, "")}}
		return e
	}
	e := newError(http.StatusForbidden, CodeInsufficientScope, "insufficient scope: the token lacks "+strings.Join(missing, " "), nil)
	e.Header = http.Header{"Www-Authenticate": {s.challenge(rt, false, "insufficient_scope")}}
	return e
}

// challenge builds the WWW-Authenticate value (RFC 6750 section 3, RFC
// 9728 section 5.1): where the route's protected-resource metadata is, the
// scopes to ask for, and the error when there is one.
func (s *Server) challenge(rt *route, invalidToken bool, errorCode string) string {
	var b strings.Builder
	b.WriteString(`Bearer resource_metadata="` + rt.metadataURL + `"`)
	if len(rt.requiredScopes) > 0 {
		b.WriteString(`, scope="` + strings.Join(rt.requiredScopes, " ") + `"`)
	}
	if invalidToken {
		errorCode = "invalid_token"
	}
	if errorCode != "" {
		b.WriteString(`, error="` + errorCode + `"`)
	}
	return b.String()
}

// principalOf returns the request's verified principal. Every route sits
// behind authenticate, so a missing principal is a wiring bug: fail closed.
func principalOf(ctx context.Context) (*Principal, error) {
	if st := stateOf(ctx); st != nil && st.principal != nil {
		return st.principal, nil
	}
	return nil, errors.New("no principal in request context")
}
