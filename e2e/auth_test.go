package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var oidcProviderJS = filepath.Join("node", "oidc-provider.mjs")

// idp is a running oidc-provider (panva's certified OpenID provider).
type idp struct {
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
	JWKSURI       string `json:"jwks_uri"`
	proc          *proc
}

func startOIDCProvider(t *testing.T, cfg string) *idp {
	t.Helper()
	requireNodeTool(t, oidcProviderJS)
	cmd := exec.Command(nodeBin, oidcProviderJS)
	cmd.Env = append(os.Environ(), "OIDC_CONFIG="+cfg)
	p := &proc{name: "oidc-provider", cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	startCmd(t, p)
	var got idp
	waitFor(t, "oidc-provider to print its issuer", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("oidc-provider exited: %v\n%s", p.waitErr, p.stderr.String())
		}
		line, _, ok := strings.Cut(p.stdout.String(), "\n")
		return ok && json.Unmarshal([]byte(line), &got) == nil && got.Issuer != ""
	})
	got.proc = p
	return &got
}

// token gets an access token with the client credentials grant (RFC 6749
// 4.4) for one resource (RFC 8707).
func (i *idp) token(t *testing.T, client, secret, resource, scope string) string {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}, "scope": {scope}}
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, i.TokenEndpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		AccessToken string `json:"access_token"`
	}
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil || body.AccessToken == "" {
		t.Fatalf("token for %s (%s): %s %s", client, resource, resp.Status, raw)
	}
	return body.AccessToken
}

// idToken asks the provider's test-only route for an ID-token-shaped JWT
// (typ JWT) with the given audience.
func (i *idp) idToken(t *testing.T, aud, sub string) string {
	t.Helper()
	resp, err := http.Get(i.Issuer + "/test/id-token?" + url.Values{"aud": {aud}, "sub": {sub}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body struct {
		IDToken string `json:"id_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &body) != nil || body.IDToken == "" {
		t.Fatalf("id token: %s %s", resp.Status, b)
	}
	return body.IDToken
}

// claims decodes a JWT's payload without verifying it (the test only reads
// what the upstream was sent).
func claims(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

type bearer struct {
	token string
	base  http.RoundTripper
}

func (b *bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}

// TestOIDC: a real OpenID provider issues JWT access tokens; a Go SDK client
// works through the gateway with one, while tokens for another resource,
// without the route's scope, or of the wrong type are refused with the
// right challenge and never reach the upstream. The upstream sees the
// gateway's own client-credentials token, never the client's.
func TestOIDC(t *testing.T) {
	provider := startOIDCProvider(t, `{"clients":[
		{"client_id":"tool","client_secret":"tool-secret","scopes":["docs.read","docs.write"]},
		{"client_id":"gateway","client_secret":"gateway-secret","scopes":["upstream.read"]}]}`)
	upstream := startEverything(t)
	rec := startRecorder(t, upstream)
	secretFile := filepath.Join(t.TempDir(), "gateway-secret")
	if err := os.WriteFile(secretFile, []byte("gateway-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth:
  oidc:
    - issuer: %q
      token_type: at+jwt
upstreams:
  - name: docs
    url: %q
    required_scopes: [docs.read]
    identity_headers: true
    credentials:
      oauth2_client_credentials:
        token_url: %q
        client_id: gateway
        client_secret_file: %q
        scopes: [upstream.read]
        resource: %q
`, provider.Issuer, rec.URL, provider.TokenEndpoint, secretFile, rec.URL))
	route := gw.URL + "/mcp/docs"
	good := provider.token(t, "tool", "tool-secret", route, "docs.read")
	// The issuer's keys load in the background; until then its tokens are
	// refused (fail closed), which /readyz reports.
	waitFor(t, "the gateway to load the issuer's keys", readyDeadline, func() bool {
		resp, err := http.Get(gw.Admin + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var detail struct {
			OIDCKeysLoaded bool `json:"oidc_keys_loaded"`
		}
		return json.NewDecoder(resp.Body).Decode(&detail) == nil && detail.OIDCKeysLoaded
	})

	t.Run("a Go SDK client with a token for this route works", func(t *testing.T) {
		client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)
		cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{
			Endpoint:   route,
			HTTPClient: &http.Client{Transport: &bearer{token: good, base: http.DefaultTransport}},
		}, nil)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer cs.Close()
		tools, err := cs.ListTools(ctx(t), nil)
		if err != nil || len(tools.Tools) == 0 {
			t.Fatalf("tools/list: %v, %d tools", err, len(tools.Tools))
		}
		reqs := rec.requests()
		if len(reqs) == 0 {
			t.Fatal("upstream saw nothing")
		}
		for _, r := range reqs {
			// The gateway's own server/discover probe (which era the
			// upstream speaks) is made for no principal: it carries the
			// gateway's credential but no identity headers.
			gatewayProbe := strings.Contains(string(r.body), `"ctxgate-discover"`)
			sent := strings.TrimPrefix(r.header.Get("Authorization"), "Bearer ")
			if sent == "" || sent == good {
				t.Fatalf("upstream Authorization %q: want the gateway's own token, never the client's", sent)
			}
			c := claims(t, sent)
			if c["sub"] != "gateway" || c["aud"] != rec.URL {
				t.Errorf("upstream token sub %v aud %v, want gateway's token for %s", c["sub"], c["aud"], rec.URL)
			}
			if want := "oidc:" + provider.Issuer + "#tool"; !gatewayProbe && r.header.Get("X-Ctxgate-Principal") != want {
				t.Errorf("X-Ctxgate-Principal = %q, want %q", r.header.Get("X-Ctxgate-Principal"), want)
			}
		}
	})

	t.Run("a refreshed token keeps the session", func(t *testing.T) {
		c := &rpc{url: route, header: http.Header{"Authorization": {"Bearer " + good}}}
		c.initialize(t)
		// A new token for the same client: same principal, same session.
		c.header.Set("Authorization", "Bearer "+provider.token(t, "tool", "tool-secret", route, "docs.read docs.write"))
		if resp := c.post(t, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusOK {
			t.Errorf("ping with a refreshed token on the same session: %s", resp.Status)
		}
	})

	metadata := gw.URL + "/.well-known/oauth-protected-resource/mcp/docs"
	tests := []struct {
		name       string
		authz      string
		wantStatus int
		wantChall  string // substring of WWW-Authenticate
	}{
		{name: "no token", wantStatus: 401, wantChall: `Bearer resource_metadata="` + metadata + `", scope="docs.read"`},
		{name: "token for another resource", authz: "Bearer " + provider.token(t, "tool", "tool-secret", "https://other.example.com/mcp", "docs.read"), wantStatus: 401, wantChall: `error="invalid_token"`},
		{name: "token without the route's scope", authz: "Bearer " + provider.token(t, "tool", "tool-secret", route, "docs.write"), wantStatus: 403, wantChall: `error="insufficient_scope"`},
		{name: "ID token where at+jwt is required", authz: "Bearer " + provider.idToken(t, route, "tool"), wantStatus: 401, wantChall: `error="invalid_token"`},
		{name: "tampered token", authz: "Bearer " + good[:len(good)-4] + "AAAA", wantStatus: 401, wantChall: `error="invalid_token"`},
		{name: "token in the query string only", wantStatus: 401, wantChall: `resource_metadata=`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &rpc{url: route, header: http.Header{}}
			if tt.authz != "" {
				c.header.Set("Authorization", tt.authz)
			}
			if strings.Contains(tt.name, "query") {
				c.url += "?access_token=" + url.QueryEscape(good)
			}
			before := rec.count()
			resp := c.post(t, initializeBody)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(resp.Header.Get("Www-Authenticate"), tt.wantChall) {
				t.Errorf("%s, WWW-Authenticate %q; want %d with %q", resp.Status, resp.Header.Get("Www-Authenticate"), tt.wantStatus, tt.wantChall)
			}
			if rec.count() != before {
				t.Errorf("upstream received the refused request")
			}
		})
	}

	t.Run("protected resource metadata names the issuer", func(t *testing.T) {
		resp, err := http.Get(metadata)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var meta struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			ScopesSupported      []string `json:"scopes_supported"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&meta); err != nil {
			t.Fatal(err)
		}
		if meta.Resource != route || len(meta.AuthorizationServers) != 1 || meta.AuthorizationServers[0] != provider.Issuer || len(meta.ScopesSupported) != 1 {
			t.Errorf("metadata = %+v", meta)
		}
	})

	t.Run("MCP Inspector CLI", func(t *testing.T) {
		requireNodeTool(t, inspectorCLIJS)
		inspector := func(args ...string) (string, int) {
			cmd := exec.CommandContext(ctx(t), nodeBin, append([]string{inspectorCLIJS, "--cli", route, "--transport", "http", "--method", "tools/list"}, args...)...)
			cmd.Dir = t.TempDir()
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			out, err := cmd.Output()
			if exit, ok := err.(*exec.ExitError); ok {
				return string(out) + string(exit.Stderr), exit.ExitCode()
			}
			if err != nil {
				t.Fatal(err)
			}
			return string(out), 0
		}
		if out, code := inspector("--header", "Authorization: Bearer "+good); code != 0 || !strings.Contains(out, `"tools"`) {
			t.Errorf("inspector with a token: exit %d\n%s", code, out)
		}
		// Exit code 3 is the Inspector's "auth_required".
		if out, code := inspector(); code != 3 || !strings.Contains(out, "auth_required") {
			t.Errorf("inspector without a token: exit %d, want 3 (auth required)\n%s", code, out)
		}
	})
}

// TestOIDCColdStart: the real binary starts while its issuer is
// unreachable (the real provider minted a token, then died). /readyz stays
// 503 waiting_for_oidc_keys, and the token is answered 503 -31012 with
// Retry-After and no invalid_token challenge (it could not be checked, so
// the client must not throw it away); nothing reaches the upstream.
func TestOIDCColdStart(t *testing.T) {
	provider := startOIDCProvider(t, `{"clients":[{"client_id":"tool","client_secret":"tool-secret","scopes":["docs.read"]}]}`)
	const publicURL = "https://gw.example"
	token := provider.token(t, "tool", "tool-secret", publicURL+"/mcp/docs", "docs.read")
	provider.proc.signal(syscall.SIGKILL) // from now on the issuer refuses connections
	<-provider.proc.done
	rec := startRecorder(t, startEverything(t))
	gw := startGatewayUnready(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0", public_url: %q}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth:
  oidc:
    - {issuer: %q, token_type: at+jwt}
upstreams:
  - {name: docs, url: %q}
`, publicURL, provider.Issuer, rec.URL))
	resp, err := http.Get(gw.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var ready struct{ Status string }
	_ = json.NewDecoder(resp.Body).Decode(&ready)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || ready.Status != "waiting_for_oidc_keys" {
		t.Errorf("/readyz without keys: %d %q, want 503 waiting_for_oidc_keys", resp.StatusCode, ready.Status)
	}
	before := rec.count()
	for i := range 2 { // the first may spend the refetch budget, the second finds it spent
		c := &rpc{url: gw.URL + "/mcp/docs", header: http.Header{"Authorization": {"Bearer " + token}}}
		resp := c.post(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`)
		e := decodeError(t, resp)
		if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code != -31012 || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Www-Authenticate") != "" {
			t.Errorf("token %d before the keys: %s %d Retry-After %q WWW-Authenticate %q; want 503 -31012 with Retry-After and no challenge",
				i, resp.Status, e.Error.Code, resp.Header.Get("Retry-After"), resp.Header.Get("Www-Authenticate"))
		}
	}
	if got := rec.count() - before; got != 0 {
		t.Errorf("the upstream received %d requests", got)
	}
}
