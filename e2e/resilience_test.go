package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// faultServer is the upstream of the resilience test: a scripted MCP server
// outside the system, which can reset a call after reading it whole or
// answer 503 to everything but initialize, and keeps a ledger of the calls
// it received by nonce.
type faultServer struct {
	failing atomic.Bool
	mu      sync.Mutex
	ledger  map[string]int
}

func (f *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name      string            `json:"name"`
			Arguments map[string]string `json:"arguments"`
		} `json:"params"`
	}
	_ = json.Unmarshal(body, &req)
	switch {
	case req.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "fault-session")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"fault","version":"1"}}}`, req.ID)
		return
	case req.ID == nil:
		w.WriteHeader(http.StatusAccepted)
		return
	case f.failing.Load():
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	nonce := req.Params.Arguments["nonce"]
	f.mu.Lock()
	f.ledger[nonce]++
	f.mu.Unlock()
	if req.Params.Name == "reset" {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // received, never answered
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":%q}]}}`, req.ID, nonce)
}

func (f *faultServer) executions(nonce string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ledger[nonce]
}

// TestResilienceRealBinary drives the real binary against a faulty
// upstream: a call reset after receipt is reported as outcome unknown and
// executed once, a duplicated idempotency key executes once, and a failing
// upstream opens the breaker (503 -31013, visible in /metrics), which
// closes again once the upstream recovers.
func TestResilienceRealBinary(t *testing.T) {
	up := &faultServer{ledger: map[string]int{}}
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - name: fault
    url: %q
    retry: {backoff: 5ms, max_backoff: 10ms}
    circuit_breaker: {failure_threshold: 2, delay: 2s, success_threshold: 1}
`, upSrv.URL+"/"))
	c := &rpc{url: gw.URL + "/mcp/fault"}
	c.initialize(t)
	call := func(id int, tool, nonce string, h http.Header) (*http.Response, rpcError) {
		c.header = h
		resp := c.post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"nonce":%q}}}`, id, tool, nonce))
		body, _ := io.ReadAll(resp.Body)
		var e rpcError
		_ = json.Unmarshal(body, &e) // a relayed upstream 503 has no body
		return resp, e
	}

	t.Run("reset after receipt: outcome unknown, executed once", func(t *testing.T) {
		resp, e := call(2, "reset", "n-reset", nil)
		if resp.StatusCode != http.StatusBadGateway || e.Error.Code != -31016 || fmt.Sprint(e.ID) != "2" {
			t.Errorf("got %s %+v; want 502 -31016 with id 2", resp.Status, e)
		}
		if n := up.executions("n-reset"); n != 1 {
			t.Errorf("executed %d times, want 1", n)
		}
	})

	t.Run("idempotency key: executed once, replayed under the new id", func(t *testing.T) {
		key := http.Header{"Idempotency-Key": {"e2e-key-1"}}
		first, _ := call(3, "echo", "n-key", key)
		second, e := call(4, "echo", "n-key", key)
		if first.StatusCode != http.StatusOK || second.StatusCode != http.StatusOK || fmt.Sprint(e.ID) != "4" || second.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("first %s, second %s id %v replayed %q", first.Status, second.Status, e.ID, second.Header.Get("Idempotent-Replayed"))
		}
		if n := up.executions("n-key"); n != 1 {
			t.Errorf("executed %d times, want 1", n)
		}
	})

	t.Run("breaker opens, fails fast, closes", func(t *testing.T) {
		up.failing.Store(true)
		for i := range 2 {
			if resp, _ := call(10+i, "echo", "n-fail", nil); resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("failing upstream: %s, want its 503 relayed", resp.Status)
			}
		}
		resp, e := call(12, "echo", "n-open", nil)
		if resp.StatusCode != http.StatusServiceUnavailable || e.Error.Code != -31013 || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("open breaker: %s %+v Retry-After %q; want 503 -31013 with Retry-After", resp.Status, e, resp.Header.Get("Retry-After"))
		}
		if n := up.executions("n-open"); n != 0 {
			t.Errorf("the open breaker let the call through")
		}
		metrics := get(t, gw.Admin+"/metrics")
		if !strings.Contains(metrics, `ctxgate_circuit_breaker_state{state="open",upstream="fault"} 1`) {
			t.Errorf("/metrics does not show the breaker open:\n%s", grepLines(metrics, "ctxgate_circuit_breaker_state"))
		}
		up.failing.Store(false)
		waitFor(t, "the breaker to close", readyDeadline, func() bool {
			resp, _ := call(13, "echo", "n-probe", nil)
			return resp.StatusCode == http.StatusOK
		})
	})
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func grepLines(s, substr string) string {
	var out []string
	for line := range strings.SplitSeq(s, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
