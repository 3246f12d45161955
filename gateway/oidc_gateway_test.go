package gateway

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/identity"
	"github.com/ctxgate/ctxgate/upstream"
)

// TestOIDCThroughGateway runs every refused token through the whole
// handler chain: each gets 401 with the RFC 6750/9728 challenge, and the
// upstream receives nothing. A valid token is the control: it is forwarded.
func TestOIDCThroughGateway(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	k := f.keys
	var received atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
	}))
	defer up.Close()
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0", public_url: %q}
auth: {anonymous: false}
upstreams: [{name: a, url: %q}]
`, oidcTestAudience, up.URL), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, pool, Options{Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	s.auth.Tokens = f.v // the fixture's verifier, on the fixture's issuer and clock
	gw := httptest.NewServer(s.Handler())
	defer gw.Close()

	now := f.clock.now()
	rsaDER, _ := x509.MarshalPKIXPublicKey(k.rsa1.priv.Public())
	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	claims, _ := json.Marshal(f.claims(nil))
	const challenge = `Bearer resource_metadata="https://gw.example/.well-known/oauth-protected-resource/mcp/a"`
	const invalid = challenge + `, error="invalid_token"`

	tests := []struct {
		name          string
		authorization []string
		query         string
		wantStatus    int
		wantChallenge string
		wantForwarded bool
	}{
		{name: "valid token (control)", authorization: []string{"Bearer " + f.token(t, nil)}, wantStatus: 200, wantForwarded: true},
		{name: "no token", wantStatus: 401, wantChallenge: challenge},
		{name: "alg none", authorization: []string{"Bearer " + unsignedJWT(t, map[string]any{"alg": "none", "typ": "at+jwt"}, f.claims(nil))}, wantStatus: 401, wantChallenge: invalid},
		{name: "HS256 signed with the RSA public key", authorization: []string{"Bearer " + signJWT(t, jose.HS256, rsaPublicPEM, "rsa-1", "at+jwt", claims)}, wantStatus: 401, wantChallenge: invalid},
		{name: "expired", authorization: []string{"Bearer " + f.token(t, map[string]any{"exp": now.Add(-time.Hour).Unix()})}, wantStatus: 401, wantChallenge: invalid},
		{name: "nbf in the future", authorization: []string{"Bearer " + f.token(t, map[string]any{"nbf": now.Add(time.Hour).Unix()})}, wantStatus: 401, wantChallenge: invalid},
		{name: "wrong iss", authorization: []string{"Bearer " + f.token(t, map[string]any{"iss": "https://evil.example"})}, wantStatus: 401, wantChallenge: invalid},
		{name: "wrong aud", authorization: []string{"Bearer " + f.token(t, map[string]any{"aud": "https://other.example"})}, wantStatus: 401, wantChallenge: invalid},
		{name: "missing aud", authorization: []string{"Bearer " + f.token(t, map[string]any{"aud": nil})}, wantStatus: 401, wantChallenge: invalid},
		{name: "untrusted key with a trusted kid", authorization: []string{"Bearer " + mintJWT(t, k.attacker, "rsa-1", "at+jwt", f.claims(nil))}, wantStatus: 401, wantChallenge: invalid},
		{name: "ID token where at+jwt is required", authorization: []string{"Bearer " + mintJWT(t, k.rsa1, "rsa-1", "JWT", f.claims(nil))}, wantStatus: 401, wantChallenge: invalid},
		{name: "64 KiB token", authorization: []string{"Bearer " + strings.Repeat("a", 64<<10)}, wantStatus: 401, wantChallenge: invalid},
		{name: "token in the query string", query: "?access_token=" + f.token(t, nil), wantStatus: 401, wantChallenge: challenge},
		{name: "two Authorization headers", authorization: []string{"Bearer " + f.token(t, nil), "Bearer " + f.token(t, nil)}, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, gw.URL+"/mcp/a"+tt.query,
				strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header["Authorization"] = tt.authorization
			before := received.Load()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := resp.Header.Get("Www-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			if forwarded := received.Load() > before; forwarded != tt.wantForwarded {
				t.Errorf("forwarded upstream: %v, want %v", forwarded, tt.wantForwarded)
			}
		})
	}
}

// TestOIDCColdStartThroughGateway: while the issuer's keys were never
// fetched, /readyz is not ready and a bearer token is answered 503 with
// Retry-After (it could not be checked yet), never 401 invalid_token (which
// would make the client throw a good token away), and nothing is
// forwarded. Once the keys are in, both recover.
func TestOIDCColdStartThroughGateway(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{
		opts:   identity.OIDCOptions{RetryMin: time.Hour, RetryMax: time.Hour}, // the background loop stays out of the way
		before: func(p *testIdP) { p.down.Store(true) },
		noWait: true,
	})
	var received atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		received.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
	}))
	defer up.Close()
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0", public_url: %q}
upstreams: [{name: a, url: %q}]
`, oidcTestAudience, up.URL), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, pool, Options{Now: f.clock.now})
	if err != nil {
		t.Fatal(err)
	}
	s.auth.Tokens, s.oidc = f.v, f.v
	s.ready.Store(true) // the listeners are up; only the keys are missing
	gw, admin := httptest.NewServer(s.Handler()), httptest.NewServer(s.AdminHandler())
	defer gw.Close()
	defer admin.Close()
	readyz := func() (int, string) {
		resp, err := http.Get(admin.URL + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		return resp.StatusCode, fmt.Sprint(doc["status"])
	}
	call := func(token string) (*http.Response, map[string]any) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, gw.URL+"/mcp/a",
			strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		return resp, doc
	}

	if status, st := readyz(); status != http.StatusServiceUnavailable || st != "waiting_for_oidc_keys" {
		t.Errorf("/readyz without keys: %d %s, want 503 waiting_for_oidc_keys", status, st)
	}
	for i := range 2 { // the first spends the re-fetch budget, the second finds it spent
		resp, doc := call(f.token(t, nil))
		e, _ := doc["error"].(map[string]any)
		if resp.StatusCode != http.StatusServiceUnavailable || fmt.Sprint(e["code"]) != fmt.Sprint(CodeUnavailable) ||
			resp.Header.Get("Retry-After") == "" || resp.Header.Get("Www-Authenticate") != "" {
			t.Errorf("token %d without keys: %d %v Retry-After %q WWW-Authenticate %q; want 503 %d with Retry-After, no challenge",
				i, resp.StatusCode, doc, resp.Header.Get("Retry-After"), resp.Header.Get("Www-Authenticate"), CodeUnavailable)
		}
	}
	if got := received.Load(); got != 0 {
		t.Errorf("the upstream received %d requests", got)
	}

	f.idp.down.Store(false)
	if err := f.v.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	if status, st := readyz(); status != http.StatusOK || st != "ready" {
		t.Errorf("/readyz with keys: %d %s, want 200 ready", status, st)
	}
	if resp, doc := call(f.token(t, nil)); resp.StatusCode != http.StatusOK {
		t.Errorf("token with keys: %d %v, want 200", resp.StatusCode, doc)
	}
}
