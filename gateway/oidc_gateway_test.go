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
	s.auth.tokens = f.v // the fixture's verifier, on the fixture's issuer and clock
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
