package gateway_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ctxgate/ctxgate/gateway"
)

// arrayCall is a tools/call of tool whose arguments hold one array of n
// copies of elem: "1" makes the cheapest bytes to send and the dearest to
// decode.
func arrayCall(tool, elem string, n int) string {
	var b strings.Builder
	b.Grow(100 + n*(len(elem)+1))
	b.WriteString(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"items":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(elem)
	}
	b.WriteString(`]}}}`)
	return b.String()
}

// amplificationPolicy allows everything but tools/call of "denied".
const amplificationPolicy = `package ctxgate.authz
default allow := false
allow if not input.tool
allow if input.tool.name != "denied"
`

// TestRequestMemoryBudget measures what one large request costs the
// gateway (runtime.MemStats.TotalAlloc over the whole exchange: an upper
// bound of its peak), decided, forwarded or refused. The bounds have a
// generous margin; the figures are logged (go test -v).
func TestRequestMemoryBudget(t *testing.T) {
	var forwarded atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		head := make([]byte, 64)
		n, _ := io.ReadFull(r.Body, head)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(head[:n]), `"initialize"`) {
			w.Header().Set("Mcp-Session-Id", "s1")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
			return
		}
		if strings.Contains(string(head[:n]), `"tools/list"`) {
			// The gateway's own fetch for a tool it has not seen listed
			// (calls before lists): not the client's request.
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":0,"result":{"tools":[]}}`)
			return
		}
		forwarded.Add(1)
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":7,"result":{"content":[]}}`)
	}))
	defer up.Close()
	tests := []struct {
		name      string
		maxValues int // 0: the default
		body      string
		status    int
		forwarded int64
		maxFactor float64 // allocation per request byte
	}{
		// Measured (TotalAlloc per request byte): 1.1x; 90x before the
		// budget, the exact-size decode and the clipped decision log.
		{"500,000 numbers: over the default budget, refused", 0, arrayCall("echo", "1", 500_000), http.StatusRequestEntityTooLarge, 0, 2},
		// Measured: 9.9x (the target is 10x); 17x before.
		{"100,000 strings in 1 MB: within the budget, allowed", 0, arrayCall("echo", `"abcdefgh"`, 99_000), http.StatusOK, 1, 13},
		{"100,000 strings in 1 MB: within the budget, denied", 0, arrayCall("denied", `"abcdefgh"`, 99_000), http.StatusOK, 0, 13},
		// Measured: 37x; 90x before. The budget is what keeps such a
		// request from being decoded at all.
		{"500,000 numbers with the budget raised: allowed", 1_000_000, arrayCall("echo", "1", 500_000), http.StatusOK, 1, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := ""
			if tt.maxValues > 0 {
				limit = fmt.Sprintf(", max_json_values: %d", tt.maxValues)
			}
			engine := newEngine(t, amplificationPolicy, nil, io.Discard)
			srv, err := startGatewayYAML(t, `
server: {listen: "127.0.0.1:0", max_body_bytes: 8388608`+limit+`}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused}
upstreams: [{name: up, url: "`+up.URL+`"}]
`, gateway.Options{Policy: engine, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			init := send(t, http.MethodPost, srv.URL+"/mcp/up", "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
			session := init.Header.Get("Mcp-Session-Id")
			h := http.Header{"Mcp-Protocol-Version": {"2025-11-25"}}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			sent := forwarded.Load()
			resp := send(t, http.MethodPost, srv.URL+"/mcp/up", session, tt.body, h)
			out, _ := io.ReadAll(resp.Body)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			factor := float64(alloc) / float64(len(tt.body))
			t.Logf("%d bytes: %s, %d bytes allocated (%.1fx the request)", len(tt.body), resp.Status, alloc, factor)
			if resp.StatusCode != tt.status {
				t.Errorf("status %s, want %d: %.300s", resp.Status, tt.status, out)
			}
			if got := forwarded.Load() - sent; got != tt.forwarded {
				t.Errorf("forwarded %d, want %d", got, tt.forwarded)
			}
			if factor > tt.maxFactor && !raceDetector {
				t.Errorf("the request cost %.1fx its size, want at most %.0fx", factor, tt.maxFactor)
			}
		})
	}
}
