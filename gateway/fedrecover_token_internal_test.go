package gateway

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// tokenMember is a minimal MCP server that starts a session for a POSTed
// initialize only when accept says so (503 otherwise), and accepts every
// other message; joined counts the initializes it accepted.
func tokenMember(t *testing.T, accept func(*http.Request) bool, joined *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case r.Method != http.MethodPost || !strings.Contains(string(body), `"initialize"`):
			w.WriteHeader(http.StatusAccepted)
		case !accept(r):
			http.Error(w, "down", http.StatusServiceUnavailable)
		default:
			joined.Add(1)
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Mcp-Session-Id", "member-session")
			fmt.Fprint(w, `{"jsonrpc":"2.0","id":"ctxgate-federation","result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"m","version":"1"}}}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// jwtExpiry reads a token's exp, unverified (the test's own tokens).
func jwtExpiry(t *testing.T, token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c struct{ Exp int64 }
	_ = json.Unmarshal(raw, &c)
	return time.Unix(c.Exp, 0)
}

// holds reports whether v holds the string s anywhere (fields, pointers,
// maps, slices): a credential kept in memory, whatever the type holding it.
func holds(v reflect.Value, s string) bool {
	switch v.Kind() {
	case reflect.String:
		return strings.Contains(v.String(), s)
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && holds(v.Elem(), s)
	case reflect.Struct:
		for i := range v.NumField() {
			if holds(v.Field(i), s) {
				return true
			}
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			if holds(it.Key(), s) || holds(it.Value(), s) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return strings.Contains(string(v.Bytes()), s)
		}
		for i := range v.Len() {
			if holds(v.Index(i), s) {
				return true
			}
		}
	}
	return false
}

// TestFederatedRecoveryFreshToken: a token_exchange member down at
// initialize is retried with the token of the request that starts the
// retry, not the initialize's: once that one expired, the client's fresh
// token (same user) still brings the member in. The gateway keeps no
// token for the retries.
func TestFederatedRecoveryFreshToken(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	exchanger := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		// The member's token names the user's token it came from.
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}`, "ex:"+r.PostForm.Get("subject_token"))
	}))
	defer exchanger.Close()
	var down atomic.Bool
	down.Store(true)
	var joinedA, joinedB atomic.Int64
	a := tokenMember(t, func(*http.Request) bool { return true }, &joinedA)
	// b takes a token only while the user's token it came from is valid.
	b := tokenMember(t, func(r *http.Request) bool {
		subject, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ex:")
		return !down.Load() && ok && jwtExpiry(t, subject).After(f.clock.now())
	}, &joinedB)
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0", public_url: %q}
auth: {anonymous: false}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - name: b
    url: %q
    retry: {max_attempts: 1}
    circuit_breaker: {failure_threshold: 1000}
    credentials: {token_exchange: {token_url: %q, client_id: gw, client_secret_file: %q, audience: "https://b.example"}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 5s}]
`, oidcTestAudience, a.URL, b.URL, exchanger.URL, secret), func(string) (string, bool) { return "", false })
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

	post := func(token, session, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, gw.URL+"/mcp", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+token)
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	first := f.token(t, map[string]any{"exp": f.clock.now().Add(time.Minute).Unix()})
	init := post(first, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	session := init.Header.Get("Mcp-Session-Id")
	if init.StatusCode != http.StatusOK || session == "" || joinedA.Load() != 1 || joinedB.Load() != 0 {
		t.Fatalf("initialize with b down: HTTP %d, session %q, a joined %d, b %d", init.StatusCode, session, joinedA.Load(), joinedB.Load())
	}
	if late := &s.federated[0].fed.late; holds(reflect.ValueOf(late).Elem(), first) {
		t.Error("the sessions held for retries keep the client's access token")
	}
	// b is back after the first token expired; the client has a new one.
	down.Store(false)
	f.clock.mu.Lock()
	f.clock.t = f.clock.t.Add(2 * time.Minute)
	f.clock.mu.Unlock()
	fresh := f.token(t, nil)
	deadline := time.Now().Add(10 * time.Second)
	for joinedB.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("b never joined: its retries did not use the client's fresh token")
		}
		if resp := post(fresh, session, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("ping with the fresh token: HTTP %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond) // the retry runs in the background; polled with a deadline
	}
}
