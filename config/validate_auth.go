package config

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// signingAlgorithms are the JWS algorithms an issuer may be allowed to use.
// Symmetric HS* algorithms are absent on purpose: with them anyone holding
// the verification key can mint tokens, and "none" is no signature at all.
var signingAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

func (v *validator) tls(t *TLS, mtls *MTLS) {
	if t == nil {
		if mtls != nil {
			v.add("auth.mtls", "needs server.tls with a client_ca_file: client certificates only exist on a TLS listener")
		}
		return
	}
	if t.CertFile == "" || t.KeyFile == "" {
		v.add("server.tls", "cert_file and key_file are both required")
	}
	switch t.ClientAuth {
	case "none", "optional", "require":
	default:
		v.add("server.tls.client_auth", "must be none, optional or require")
	}
	if t.ClientAuth != "none" && t.ClientCAFile == "" {
		v.add("server.tls.client_ca_file", "required when client_auth is %s", t.ClientAuth)
	}
	if t.CRLFile != "" && t.ClientCAFile == "" {
		v.add("server.tls.crl_file", "needs server.tls.client_ca_file (the CRL's issuer)")
	}
	if t.CRLGrace != 0 && t.CRLFile == "" {
		v.add("server.tls.crl_grace", "needs server.tls.crl_file; remove crl_grace or set the CRL file")
	}
	if t.CRLGrace < 0 {
		v.add("server.tls.crl_grace", "must not be negative: how long past its nextUpdate the CRL is still trusted, e.g. 1h")
	}
	if mtls != nil && t.ClientAuth == "none" {
		v.add("auth.mtls", "needs server.tls.client_auth: optional or require")
	}
}

func (v *validator) mtls(m *MTLS) {
	if m == nil {
		return
	}
	for i, g := range m.Groups {
		if g != "ou" && g != "o" {
			v.add(fmt.Sprintf("auth.mtls.groups[%d]", i), "must be ou or o (the subject fields whose values become groups)")
		}
	}
	seen := map[string]bool{}
	for i, id := range m.Identity {
		switch {
		case id != "spiffe" && id != "dns" && id != "cn":
			v.add(fmt.Sprintf("auth.mtls.identity[%d]", i), "must be spiffe, dns or cn")
		case seen[id]:
			v.add(fmt.Sprintf("auth.mtls.identity[%d]", i), "%s is listed twice", id)
		}
		seen[id] = true
	}
}

func (v *validator) oidc(issuers []OIDCIssuer) {
	seen := map[string]bool{}
	for i, o := range issuers {
		path := fmt.Sprintf("auth.oidc[%d]", i)
		u, err := url.Parse(o.Issuer)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			v.add(path+".issuer", "must be the issuer URL exactly as in the tokens' iss claim, e.g. https://idp.example.com")
		case u.Scheme == "http" && !isLoopback(u.Hostname()):
			v.add(path+".issuer", "must use https (http is accepted for loopback issuers only)")
		case u.RawQuery != "" || u.Fragment != "":
			v.add(path+".issuer", "must not have a query or fragment")
		case seen[o.Issuer]:
			v.add(path+".issuer", "issuer %q is configured twice", o.Issuer)
		}
		seen[o.Issuer] = true
		if len(o.Audiences) == 0 {
			v.add(path+".audiences", "at least one audience is required (the default is server.public_url)")
		}
		for j, a := range o.Audiences {
			if a == "" || a == "*" {
				v.add(fmt.Sprintf("%s.audiences[%d]", path, j), "must name this gateway (e.g. https://mcp.example.com); accepting any audience would accept tokens meant for other services")
			}
		}
		for j, alg := range o.Algorithms {
			if !slices.Contains(signingAlgorithms, alg) {
				v.add(fmt.Sprintf("%s.algorithms[%d]", path, j), "%q is not allowed; use asymmetric algorithms: %s", alg, strings.Join(signingAlgorithms, ", "))
			}
		}
		if o.ClockSkew < 0 || o.ClockSkew > 300e9 {
			v.add(path+".clock_skew", "must be between 0 and 5m")
		}
		if o.JWKSRefresh < 60e9 {
			v.add(path+".jwks_refresh", "must be at least 1m")
		}
	}
}

func (v *validator) routeAuth(path string, up Upstream, hasOIDC bool) {
	for j, s := range up.RequiredScopes {
		if s == "" || strings.ContainsAny(s, " \t\"\\") {
			v.add(fmt.Sprintf("%s.required_scopes[%d]", path, j), "must be a scope token without spaces or quotes")
		}
	}
	if len(up.RequiredScopes) > 0 && !hasOIDC {
		v.add(path+".required_scopes", "needs auth.oidc: only bearer tokens carry scopes")
	}
	c := up.Credentials
	if c == nil {
		return
	}
	path += ".credentials"
	kinds := 0
	for _, set := range []bool{c.OAuth2ClientCredentials != nil, c.Header != nil, c.TokenExchange != nil, c.UserOAuth != nil} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds > 1:
		v.add(path, "set one of oauth2_client_credentials, header, token_exchange or user_oauth, not several")
	case c.OAuth2ClientCredentials != nil:
		v.clientCredentials(path+".oauth2_client_credentials", c.OAuth2ClientCredentials)
	case c.Header != nil:
		v.headerCredential(path+".header", c.Header)
	case c.TokenExchange != nil:
		v.tokenExchange(path+".token_exchange", c.TokenExchange)
		if !hasOIDC {
			// Only a token the gateway verified itself is ever exchanged.
			v.add(path+".token_exchange", "needs auth.oidc: only bearer tokens from the gateway's own issuers are exchanged")
		}
	case c.UserOAuth != nil:
		v.userOAuth(path+".user_oauth", c.UserOAuth)
	default:
		v.add(path, "set oauth2_client_credentials, header, token_exchange or user_oauth")
	}
}

func (v *validator) clientCredentials(path string, cc *OAuth2ClientCredentials) {
	if u, err := url.Parse(cc.TokenURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname()))) {
		v.add(path+".token_url", "must be an https URL (http for loopback only)")
	}
	if cc.ClientID == "" {
		v.add(path+".client_id", "is required")
	}
	if (cc.ClientSecret == "") == (cc.ClientSecretFile == "") {
		v.add(path, "set exactly one of client_secret_file or client_secret")
	}
	if cc.Resource != "" {
		if u, err := url.Parse(cc.Resource); err != nil || !u.IsAbs() || u.Fragment != "" {
			v.add(path+".resource", "must be an absolute URL without a fragment (RFC 8707)")
		}
	}
}

func (v *validator) headerCredential(path string, h *HeaderCredential) {
	name := http.CanonicalHeaderKey(h.Name)
	switch {
	case h.Name == "" || strings.ContainsAny(h.Name, " :\t\r\n"):
		v.add(path+".name", "must be a header name such as Authorization or X-API-Key")
	case name == "Host" || name == "Content-Length" || name == "Connection" || name == "Transfer-Encoding" || name == "Mcp-Session-Id":
		v.add(path+".name", "%s is set by the gateway itself", name)
	case name == "Idempotency-Key" || name == "X-Idempotency-Key":
		// Go's HTTP client silently re-sends a POST carrying either header
		// when a reused connection fails: a tools/call could run twice.
		v.add(path+".name", "%s would let the HTTP client re-send a tools/call; use another header name", name)
	}
	if (h.Value == "") == (h.ValueFile == "") {
		v.add(path, "set exactly one of value_file or value")
	}
}
