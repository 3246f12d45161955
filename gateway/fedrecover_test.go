package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestFederatedMemberRecovery: a member down at initialize is not in the
// session (its calls 503 -31070 with Retry-After, not unknown tool); once
// it is back and its retry is due (1s on the injected clock), a request
// of the session retries it in the background and it joins: its tools
// are listed fresh and callable on the same session, and DELETE ends its
// session too.
func TestFederatedMemberRecovery(t *testing.T) {
	hooksB := &memberHooks{}
	a, b := sdkServer(t, "search"), sdkServerHooked(t, hooksB, "other")
	hooksB.fail.Store(true)
	clock := &testClock{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 2s}]
`, a.URL, b.URL), gateway.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if got := string(init.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"]}}` {
		t.Fatalf("initialize with b down: HTTP %d, _meta %s", init.status, got)
	}
	const callB = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b__other","arguments":{}}}`
	resp := send(t, http.MethodPost, url, init.session, callB, nil)
	var answer struct {
		Error struct{ Code int64 } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	if resp.StatusCode != http.StatusServiceUnavailable || answer.Error.Code != -31070 || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("tools/call b__other while b is retried: HTTP %d, code %d, Retry-After %q; want 503 -31070, 1", resp.StatusCode, answer.Error.Code, resp.Header.Get("Retry-After"))
	}
	tools := func() ([]string, string) {
		t.Helper()
		got := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
		var list []struct{ Name string }
		_ = json.Unmarshal(got.Result["tools"], &list)
		var names []string
		for _, tool := range list {
			names = append(names, tool.Name)
		}
		return names, string(got.Result["_meta"])
	}
	hooksB.fail.Store(false)
	// Not due yet: b is back, but nothing retries it before 1s.
	if names, _ := tools(); slices.Contains(names, "b__other") {
		t.Errorf("b joined before its retry was due: %v", names)
	}
	clock.Add(time.Second)
	waitUntil(t, "b to join the session", func() bool {
		names, meta := tools() // each request of the session may start the retry
		return slices.Contains(names, "b__other") && meta == ""
	})
	if call := rpc(t, http.MethodPost, url, init.session, callB, nil); call.status != http.StatusOK || call.Error != nil || len(call.Result["content"]) == 0 {
		t.Errorf("tools/call b__other after b joined: HTTP %d, %+v", call.status, call.Error)
	}
	if del := send(t, http.MethodDelete, url, init.session, "", nil); del.StatusCode != http.StatusNoContent || hooksB.deletes.Load() != 1 {
		t.Errorf("DELETE: %s; b was sent %d DELETEs, want 1", del.Status, hooksB.deletes.Load())
	}
}

// gated is target behind a proxy that calls before with each request
// (its body readable, then restored) before sending it on; a request
// before answers itself (true) is not sent on.
func gated(t *testing.T, target *httptest.Server, before func(w http.ResponseWriter, r *http.Request, body []byte) bool) *httptest.Server {
	t.Helper()
	u, _ := url.Parse(target.URL)
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if !before(w, r, body) {
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// logWatch is a log writer that reports whether a message was logged.
type logWatch struct {
	mu   sync.Mutex
	text strings.Builder
}

func (l *logWatch) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.Write(p)
}

func (l *logWatch) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.text.String(), s)
}

// TestFederatedDeleteDuringRecovery: a missing member whose retry
// finishes while the session's DELETE is ending the other members is
// sent DELETE too, whichever comes first. The retry is held at the
// member until the DELETE reaches member a, and a's DELETE is held until
// the retry is over (b joined, or b was ended).
func TestFederatedDeleteDuringRecovery(t *testing.T) {
	hooksB := &memberHooks{}
	b := sdkServerHooked(t, hooksB, "other")
	hooksB.fail.Store(true)
	var logs logWatch
	const joined = "a member that was missing joined"
	var armed atomic.Bool
	arrived, release := make(chan struct{}), make(chan struct{})
	bGate := gated(t, b, func(_ http.ResponseWriter, r *http.Request, body []byte) bool {
		if armed.Load() && r.Method == http.MethodPost && bytes.Contains(body, []byte(`"method":"initialize"`)) {
			close(arrived)
			<-release
		}
		return false
	})
	a := gated(t, sdkServer(t, "search"), func(_ http.ResponseWriter, r *http.Request, _ []byte) bool {
		if r.Method != http.MethodDelete {
			return false
		}
		close(release)
		deadline := time.Now().Add(20 * time.Second)
		for !logs.has(joined) && hooksB.deletes.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // the retry's end, polled with a deadline
		}
		return false
	})
	clock := &testClock{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 10s}]
`, a.URL, bGate.URL), gateway.Options{Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if got := string(init.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"]}}` {
		t.Fatalf("initialize with b down: HTTP %d, _meta %s", init.status, got)
	}
	hooksB.fail.Store(false)
	armed.Store(true)
	clock.Add(time.Second)
	rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, nil) // starts b's retry
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("b's retry never reached b")
	}
	del := send(t, http.MethodDelete, url, init.session, "", nil)
	if del.StatusCode != http.StatusNoContent || hooksB.deletes.Load() != 1 {
		t.Errorf("DELETE: %s; b was sent %d DELETEs, want 1 (joined during the DELETE: %t)", del.Status, hooksB.deletes.Load(), logs.has(joined))
	}
}
