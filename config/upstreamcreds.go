package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// UpstreamTLS is how the gateway reaches an https upstream: the private CA
// it verifies the upstream against and the client certificate it presents
// (mutual TLS). Every file is re-read when it changes, so certificates are
// rotated without a restart.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of the CAs the upstream's certificate must
	// chain to. Empty: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the gateway's client certificate and key
	// (PEM), presented when the upstream asks. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name the upstream's certificate must carry (and the
	// SNI sent). Empty: the URL's host.
	ServerName string `yaml:"server_name"`
	// MinVersion is the lowest TLS version offered: "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// TokenExchange is RFC 8693 token exchange: the caller's verified access
// token is exchanged at TokenURL for a token meant for this upstream, which
// names the same user. The client's own token never reaches the upstream.
type TokenExchange struct {
	TokenURL string `yaml:"token_url"`
	ClientID string `yaml:"client_id"`
	// ClientSecretFile (or ClientSecret, from ${ENV}) authenticates the
	// gateway with client_secret_basic; ClientAssertion instead signs a
	// private_key_jwt (RFC 7523) with a key only the gateway holds.
	ClientSecretFile string           `yaml:"client_secret_file"`
	ClientSecret     string           `yaml:"client_secret"`
	ClientAssertion  *ClientAssertion `yaml:"client_assertion" json:",omitempty"`
	// Audience and Resource (RFC 8707) name the upstream to the token
	// service; at least one is required.
	Audience string   `yaml:"audience"`
	Resource string   `yaml:"resource"`
	Scopes   []string `yaml:"scopes"`
	// SubjectTokenType of what is exchanged. Default:
	// urn:ietf:params:oauth:token-type:access_token.
	SubjectTokenType string `yaml:"subject_token_type"`
	// RequestedTokenType asked for. Default:
	// urn:ietf:params:oauth:token-type:access_token.
	RequestedTokenType string `yaml:"requested_token_type"`
	// Fallback is what a caller without a token to exchange (API key,
	// certificate, anonymous) gets: "" refuses them; "client_credentials"
	// calls the upstream as the gateway itself (the client credentials grant
	// with the same client), naming no user.
	Fallback string `yaml:"fallback"`
	// ExpiryMargin: a cached token is used until this long before it
	// expires. Default: 30s.
	ExpiryMargin time.Duration `yaml:"expiry_margin"`
}

// ClientAssertion authenticates the gateway to the token endpoint with a
// JWT it signs (private_key_jwt, RFC 7523 section 2.2).
type ClientAssertion struct {
	// KeyFile is the PEM private key (RSA, EC P-256/384, or Ed25519).
	KeyFile string `yaml:"key_file"`
	// Algorithm of the signature: RS256, PS256, ES256, ES384 or EdDSA.
	// Default: RS256 for an RSA key, ES256/ES384 by curve, EdDSA.
	Algorithm string `yaml:"algorithm"`
	// KeyID is put in the JWT header as kid when set.
	KeyID string `yaml:"key_id"`
	// Audience of the assertion. Default: token_url.
	Audience string `yaml:"audience"`
}

// Token types (RFC 8693 section 3).
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	// FallbackClientCredentials is TokenExchange.Fallback's one value.
	FallbackClientCredentials = "client_credentials"
	// DefaultExpiryMargin is TokenExchange.ExpiryMargin's default.
	DefaultExpiryMargin = 30 * time.Second
)

// UserOAuth connects a user's own account at a third-party service: the
// user authorizes the gateway once (authorization code + PKCE, from the
// gateway's /oauth/connect/<upstream> page), the gateway keeps the refresh
// token encrypted, and calls the upstream with that user's access token.
type UserOAuth struct {
	AuthorizationEndpoint string   `yaml:"authorization_endpoint"`
	TokenEndpoint         string   `yaml:"token_endpoint"`
	ClientID              string   `yaml:"client_id"`
	ClientSecretFile      string   `yaml:"client_secret_file"`
	ClientSecret          string   `yaml:"client_secret"`
	Scopes                []string `yaml:"scopes"`
	// RedirectURL is the gateway's callback as registered at the provider.
	// Default: server.public_url + /oauth/callback.
	RedirectURL string `yaml:"redirect_url"`
	// Resource is the RFC 8707 resource indicator to ask for. Default: none.
	Resource string `yaml:"resource"`
}

func (c *Credentials) applyDefaults(publicURL string) {
	if c == nil {
		return
	}
	if te := c.TokenExchange; te != nil {
		setDefault(&te.SubjectTokenType, TokenTypeAccessToken)
		setDefault(&te.RequestedTokenType, TokenTypeAccessToken)
		setDefault(&te.ExpiryMargin, DefaultExpiryMargin)
		if a := te.ClientAssertion; a != nil {
			setDefault(&a.Audience, te.TokenURL)
		}
	}
	if uo := c.UserOAuth; uo != nil && publicURL != "" {
		setDefault(&uo.RedirectURL, strings.TrimSuffix(publicURL, "/")+"/oauth/callback")
	}
}

// httpsURL reports whether s is an absolute https URL, or http on loopback.
func httpsURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Host != "" && (u.Scheme == "https" || u.Scheme == "http" && isLoopback(u.Hostname()))
}

func (v *validator) upstreamTLS(path string, up Upstream) {
	t := up.TLS
	if t == nil {
		return
	}
	path += ".tls"
	if u, err := url.Parse(up.URL); err == nil && u.Scheme != "https" {
		v.add(path, "needs an https upstream url; tls settings have no effect on http://")
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(path, "set both cert_file and key_file (the gateway's client certificate), or neither")
	}
	switch t.MinVersion {
	case "", "1.2", "1.3":
	default:
		v.add(path+".min_version", "must be 1.2 or 1.3")
	}
	if t.ServerName != "" && strings.ContainsAny(t.ServerName, "/: ") {
		v.add(path+".server_name", "must be a host name such as docs.internal")
	}
}

func (v *validator) tokenExchange(path string, te *TokenExchange) {
	if !httpsURL(te.TokenURL) {
		v.add(path+".token_url", "must be an https URL (http for loopback only)")
	}
	if te.ClientID == "" {
		v.add(path+".client_id", "is required")
	}
	n := 0
	for _, set := range []bool{te.ClientSecret != "", te.ClientSecretFile != "", te.ClientAssertion != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.add(path, "set exactly one of client_secret_file, client_secret or client_assertion")
	}
	if a := te.ClientAssertion; a != nil {
		if a.KeyFile == "" {
			v.add(path+".client_assertion.key_file", "is required: the PEM private key the gateway signs its assertion with")
		}
		switch a.Algorithm {
		case "", "RS256", "PS256", "ES256", "ES384", "EdDSA":
		default:
			v.add(path+".client_assertion.algorithm", "must be RS256, PS256, ES256, ES384 or EdDSA")
		}
	}
	if te.Audience == "" && te.Resource == "" {
		v.add(path, "set audience or resource: the token service must know which upstream the token is for")
	}
	if te.Resource != "" {
		if u, err := url.Parse(te.Resource); err != nil || !u.IsAbs() || u.Fragment != "" {
			v.add(path+".resource", "must be an absolute URL without a fragment (RFC 8707)")
		}
	}
	for j, s := range te.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\"\\") {
			v.add(fmt.Sprintf("%s.scopes[%d]", path, j), "must be a scope token without spaces or quotes")
		}
	}
	for _, tt := range []struct{ key, value string }{{"subject_token_type", te.SubjectTokenType}, {"requested_token_type", te.RequestedTokenType}} {
		if !strings.HasPrefix(tt.value, "urn:") {
			v.add(path+"."+tt.key, "must be a token type URI such as %s", TokenTypeAccessToken)
		}
	}
	if te.Fallback != "" && te.Fallback != FallbackClientCredentials {
		v.add(path+".fallback", "must be client_credentials, or left out to refuse callers without a token")
	}
	if te.ExpiryMargin < 0 {
		v.add(path+".expiry_margin", "must not be negative")
	}
}

func (v *validator) userOAuth(path string, uo *UserOAuth) {
	if !httpsURL(uo.AuthorizationEndpoint) {
		v.add(path+".authorization_endpoint", "must be an https URL (http for loopback only)")
	}
	if !httpsURL(uo.TokenEndpoint) {
		v.add(path+".token_endpoint", "must be an https URL (http for loopback only)")
	}
	if uo.ClientID == "" {
		v.add(path+".client_id", "is required")
	}
	if (uo.ClientSecret == "") == (uo.ClientSecretFile == "") {
		v.add(path, "set exactly one of client_secret_file or client_secret")
	}
	if !httpsURL(uo.RedirectURL) {
		v.add(path+".redirect_url", "must be the gateway's https callback URL as registered at the provider, e.g. https://mcp.example.com/oauth/callback")
	}
}

// Warnings are settings that are valid but risky; `ctxgate check` prints
// them. Like Validate, it is pure.
func (c *Config) Warnings() []Problem {
	var out []Problem
	for i, up := range c.Upstreams {
		u, err := url.Parse(up.URL)
		if err != nil || u.Scheme != "http" {
			continue
		}
		host := u.Hostname()
		if ip := net.ParseIP(host); isLoopback(host) || ip != nil && ip.IsLoopback() {
			continue
		}
		out = append(out, Problem{
			Path:    fmt.Sprintf("upstreams[%d].url", i),
			Message: "plain http:// to a non-loopback host: requests, tool results and the gateway's upstream credential cross the network unencrypted; use https:// (with tls.ca_file and a client certificate for mutual TLS)",
		})
	}
	return out
}

// Grants is where user_oauth keeps the users' grants (refresh tokens):
// sealed with AES-GCM under keys derived from Keys, in a local file per
// grant under Dir. (A shared store such as Redis is not built yet, so
// replicas do not share grants.)
type Grants struct {
	// Dir holds one sealed file per (principal, upstream); created 0700.
	Dir string `yaml:"dir"`
	// Keys are secrets from which grant keys are derived: the first seals,
	// every key opens, so a key is rotated by putting the new one first.
	// Empty entries are ignored (optional "${OLD_KEY:-}").
	Keys []string `yaml:"keys"`
}

func (v *validator) grants(c *Config) {
	uses := false
	for _, up := range c.Upstreams {
		uses = uses || up.Credentials != nil && up.Credentials.UserOAuth != nil
	}
	g := c.Grants
	switch {
	case g == nil && uses:
		v.add("grants", "required by user_oauth upstreams: set grants.dir and grants.keys (generate a key with: openssl rand -base64 32)")
		return
	case g == nil:
		return
	}
	if g.Dir == "" {
		v.add("grants.dir", "is required: the directory the sealed grants are kept in")
	}
	keys := 0
	for i, k := range g.Keys {
		if k == "" {
			continue
		}
		keys++
		if len(k) < MinSessionKeyBytes {
			v.add(fmt.Sprintf("grants.keys[%d]", i), "must be at least %d bytes; generate one with: openssl rand -base64 32", MinSessionKeyBytes)
		}
	}
	if keys == 0 {
		v.add("grants.keys", "at least one key is required: grants are never stored unencrypted")
	}
}
