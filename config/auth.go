package config

import "time"

// TLS configures the public listener's TLS and client certificates.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile is a PEM bundle of CAs that issue client certificates.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is none, optional (verified if presented) or require.
	ClientAuth string `yaml:"client_auth"`
	// CRLFile is a PEM or DER revocation list from the client CA; it is
	// re-read when it changes. A reload whose CRL number (or thisUpdate)
	// is older than the loaded list's is refused: no rollback.
	CRLFile string `yaml:"crl_file"`
	// CRLGrace is how long past its nextUpdate the CRL is still trusted.
	// After that every client certificate is refused (fail closed) until
	// a fresh CRL is published. Default: DefaultCRLGrace.
	CRLGrace time.Duration `yaml:"crl_grace"`
}

// DefaultCRLGrace tolerates a CRL publisher an hour late.
const DefaultCRLGrace = time.Hour

// MTLS configures principals from client certificates.
type MTLS struct {
	// Identity is the order in which a certificate names its principal:
	// spiffe (URI SAN spiffe://...), dns (first DNS SAN), cn (subject CN).
	Identity []string `yaml:"identity"`
	// Groups names the certificate subject fields whose values become the
	// principal's groups (input.principal.groups): ou (organizational
	// units) and o (organizations), e.g. [ou]. Nil: no groups.
	Groups []string `yaml:"groups"`
}

// OIDCIssuer is one trusted token issuer.
type OIDCIssuer struct {
	// Issuer is the exact `iss` value; discovery is at
	// Issuer + /.well-known/openid-configuration. https, except on loopback.
	Issuer string `yaml:"issuer"`
	// Audiences a token's `aud` may name. Default: server.public_url. The
	// route's own URL (public_url + /mcp/<name>, the RFC 8707 resource a
	// client asks for) is always accepted for that route. Never "any".
	Audiences []string `yaml:"audiences"`
	// Algorithms allowed for signatures. Default: RS256, ES256.
	Algorithms []string `yaml:"algorithms"`
	// ClockSkew tolerated on exp and nbf. Default: 30s.
	ClockSkew time.Duration `yaml:"clock_skew"`
	// TokenType, when set, is the required JWT `typ` header (at+jwt per
	// RFC 9068), which keeps ID tokens from being used as access tokens.
	TokenType string `yaml:"token_type"`
	// JWKSRefresh is how often the key set is re-fetched, so a key the
	// issuer removed stops being trusted; a shorter Cache-Control max-age
	// on the JWKS (at least 1m) is honoured. Default: 5m.
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// Claims maps token claims to the principal.
	Claims ClaimMapping `yaml:"claims"`
}

// ClaimMapping names the claims a principal is built from.
type ClaimMapping struct {
	// Subject claim. Default: sub.
	Subject string `yaml:"subject"`
	// Scopes claims, space-separated strings or arrays. Default: scope, scp.
	Scopes []string `yaml:"scopes"`
	// Groups claims (arrays of strings). Default: groups, roles.
	Groups []string `yaml:"groups"`
}

// Credentials is an upstream's outbound credential: at most one kind.
// OAuth2ClientCredentials and Header authenticate the gateway itself;
// TokenExchange and UserOAuth call the upstream as the calling user.
type Credentials struct {
	OAuth2ClientCredentials *OAuth2ClientCredentials `yaml:"oauth2_client_credentials"`
	Header                  *HeaderCredential        `yaml:"header"`
	TokenExchange           *TokenExchange           `yaml:"token_exchange" json:",omitempty"`
	UserOAuth               *UserOAuth               `yaml:"user_oauth" json:",omitempty"`
}

// OAuth2ClientCredentials obtains (and refreshes) a token for the gateway.
type OAuth2ClientCredentials struct {
	TokenURL string `yaml:"token_url"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile holds the secret (preferred); or ClientSecret, which
	// can come from ${ENV}.
	ClientSecretFile string   `yaml:"client_secret_file"`
	ClientSecret     string   `yaml:"client_secret"`
	Scopes           []string `yaml:"scopes"`
	// Resource is the RFC 8707 resource indicator to ask for, usually the
	// upstream's URL. Default: none.
	Resource string `yaml:"resource"`
}

// HeaderCredential is a static header, e.g. an upstream API key.
type HeaderCredential struct {
	// Name of the header, e.g. Authorization or X-API-Key.
	Name string `yaml:"name"`
	// ValueFile holds the value; or Value, which can come from ${ENV}.
	ValueFile string `yaml:"value_file"`
	Value     string `yaml:"value"`
}

// Auth defaults.
const (
	DefaultClockSkew   = 30 * time.Second
	DefaultJWKSRefresh = 5 * time.Minute
)

// DefaultAlgorithms are the signature algorithms accepted by default.
var DefaultAlgorithms = []string{"RS256", "ES256"}

func (a *Auth) applyDefaults(publicURL string) {
	for i := range a.OIDC {
		o := &a.OIDC[i]
		if len(o.Audiences) == 0 && publicURL != "" {
			o.Audiences = []string{publicURL}
		}
		if len(o.Algorithms) == 0 {
			o.Algorithms = append([]string(nil), DefaultAlgorithms...)
		}
		setDefault(&o.ClockSkew, DefaultClockSkew)
		setDefault(&o.JWKSRefresh, DefaultJWKSRefresh)
		setDefault(&o.Claims.Subject, "sub")
		if len(o.Claims.Scopes) == 0 {
			o.Claims.Scopes = []string{"scope", "scp"}
		}
		if len(o.Claims.Groups) == 0 {
			o.Claims.Groups = []string{"groups", "roles"}
		}
	}
	if a.MTLS != nil && len(a.MTLS.Identity) == 0 {
		a.MTLS.Identity = []string{"spiffe", "dns", "cn"}
	}
}
