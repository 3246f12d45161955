package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// TestResponseCache: through the real binary in front of the real
// everything-server, a second tools/list is served from the cache, and
// once the upstream is killed the cached list is served stale, marked.
func TestResponseCache(t *testing.T) {
	everything, upstreamURL := startEverythingProc(t, false)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
%scache: {max_mb: 16}
upstreams:
  - name: everything
    url: %q
    cache: {ttl: {tools/list: 3s}, stale_if_error: 1h}
`, policyConfig(), upstreamURL))
	c := &rpc{url: gw.URL + "/mcp/everything"}
	c.initialize(t)

	toolsList := func(id int) (*http.Response, map[string]any) {
		t.Helper()
		resp := c.post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id))
		body, _ := io.ReadAll(resp.Body)
		var msg struct {
			Result map[string]any `json:"result"`
		}
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &msg); err != nil {
				t.Fatalf("tools/list answer: %v: %q", err, body)
			}
		}
		return resp, msg.Result
	}
	first, result := toolsList(2)
	if got := first.Header.Get("Ctxgate-Cache"); got != "miss" || len(result["tools"].([]any)) == 0 {
		t.Fatalf("first tools/list: Ctxgate-Cache %q, %d tools; want a miss with the server's tools", got, len(result["tools"].([]any)))
	}
	second, again := toolsList(3)
	if got := second.Header.Get("Ctxgate-Cache"); got != "hit" {
		t.Errorf("second tools/list: Ctxgate-Cache %q, want hit", got)
	}
	if len(again["tools"].([]any)) != len(result["tools"].([]any)) {
		t.Errorf("the cached list has %d tools, the upstream's %d", len(again["tools"].([]any)), len(result["tools"].([]any)))
	}

	everything.signal(syscall.SIGKILL)
	<-everything.done
	// Once the 3s TTL has passed, the answer is stale: polled with a
	// deadline, as readiness is.
	var resp *http.Response
	id := 10
	waitFor(t, "the cached tools/list to turn stale", readyDeadline, func() bool {
		id++
		resp, result = toolsList(id)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("with the upstream killed, tools/list: %s (Ctxgate-Cache %q); want the cached answer", resp.Status, resp.Header.Get("Ctxgate-Cache"))
		}
		return strings.HasPrefix(resp.Header.Get("Ctxgate-Cache"), "stale")
	})
	meta, _ := result["_meta"].(map[string]any)
	stale, _ := meta["io.ctxgate/stale"].(map[string]any)
	if age, ok := stale["ageMs"].(float64); !ok || age < 3000 {
		t.Errorf("stale answer _meta = %v; want io.ctxgate/stale with ageMs >= 3000", meta)
	}
	if !strings.HasPrefix(resp.Header.Get("Ctxgate-Cache"), "stale; age=") {
		t.Errorf("Ctxgate-Cache = %q, want stale; age=N", resp.Header.Get("Ctxgate-Cache"))
	}
	waitFor(t, "the stale access record", readyDeadline, func() bool {
		for _, rec := range logRecords(gw.stderr.String()) {
			if rec["msg"] == "request" && rec["cache"] == "stale" && rec["cache_age_ms"] != nil {
				return true
			}
		}
		return false
	})
}
