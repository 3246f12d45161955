package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkToolsCall is one tools/call through the whole handler
// (anonymous authentication, strict decode and params check, session,
// allow-all policy decision, forwarding) to an upstream that answers at
// once with a fixed result, so what it measures is the gateway's own work
// per call, the request side's decoding included. A benchmark, not a
// test: nothing here asserts a time.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkToolsCall -benchmem
func BenchmarkToolsCall(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), `"initialize"`) {
			w.Header().Set("Mcp-Session-Id", "s1")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"u","version":"1"}}}`)
			return
		}
		_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"ok"}]}}`)
	}))
	b.Cleanup(up.Close)
	g := newCachingGateway(b, up.URL, fmt.Sprintf("  - {name: plain, url: %q}\n", up.URL))
	session := benchPost(b, g.handler, "/mcp/plain", "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`).Header().Get("Mcp-Session-Id")
	const call = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","arguments":{"query":"open issues","limit":20,"labels":["bug","p1"],"filter":{"state":"open","since":"2026-01-01"}},"_meta":{"progressToken":"p-1"}}}`
	b.ReportAllocs()
	for b.Loop() {
		if rec := benchPost(b, g.handler, "/mcp/plain", session, call); !strings.Contains(rec.Body.String(), `"ok"`) {
			b.Fatalf("answer %s", rec.Body)
		}
	}
}
