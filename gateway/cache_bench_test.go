package gateway_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// BenchmarkCache compares a tools/list answered from the cache with one
// forwarded to an upstream that takes 2 ms, both through the whole handler
// (anonymous authentication, strict decode, session, policy decision and
// list filtering). A benchmark, not a test: nothing here asserts a time.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkCache
func BenchmarkCache(b *testing.B) {
	up := newCountingUpstream()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(2 * time.Millisecond) // the upstream's service time
		up.ServeHTTP(w, r)
	}))
	b.Cleanup(slow.Close)
	// "up" caches tools/list; "plain" is the same upstream without a cache.
	g := newCachingGateway(b, slow.URL, fmt.Sprintf("  - {name: plain, url: %q}\n", slow.URL))
	for _, bc := range []struct{ name, route string }{
		{name: "hit", route: "/mcp/up"},
		{name: "forward", route: "/mcp/plain"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			session := benchPost(b, g.handler, bc.route, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`).Header().Get("Mcp-Session-Id")
			const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
			benchPost(b, g.handler, bc.route, session, list) // warm the cache
			if got, want := benchPost(b, g.handler, bc.route, session, list).Header().Get("Ctxgate-Cache"), map[string]string{"hit": "hit"}[bc.name]; got != want {
				b.Fatalf("Ctxgate-Cache %q, want %q", got, want)
			}
			b.ReportAllocs()
			for b.Loop() {
				if rec := benchPost(b, g.handler, bc.route, session, list); rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
			}
		})
	}
}

func benchPost(b *testing.B, h http.Handler, route, session, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1"+route, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: status %d: %s", route, rec.Code, rec.Body)
	}
	return rec
}
