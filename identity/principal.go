// Package identity decides who is calling, and nothing else: it turns a
// request's credential (a bearer JWT verified against the configured OIDC
// issuers' keys, an API key, or a client certificate the TLS handshake
// verified) into a Principal, or refuses it. It knows nothing of policy,
// routes' scopes or HTTP answers: a refusal is a *Failure (or
// ErrDuplicateCredential), which the gateway turns into a status, a
// challenge and a JSON-RPC error in its one error writer. It also builds
// the public listener's TLS configuration, whose client-certificate and CRL
// checks are what make a certificate an identity.
package identity

import (
	"log/slog"
	"time"
)

// Principal is who the gateway verified a request comes from. Sessions,
// logs, policy and cache use it; nothing uses client-supplied identity
// headers.
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

// CertInfo is what the policy and logs may know of a client certificate.
type CertInfo struct {
	Subject  string
	URIs     []string
	DNSNames []string
	SHA256   string // hex digest of the DER certificate
}

// anonymous is the one principal of a request without a credential, when
// anonymous access is on.
var anonymous = &Principal{ID: "anonymous", Kind: "anonymous"}
