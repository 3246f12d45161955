package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// BenchmarkToolsList measures the response side of a tools/list through
// the whole handler with the shipped policy (anonymous principal, every
// tool read-only and so visible): forwarded to an upstream that answers at
// once, and answered from the cache, for lists of 4, 100 and 1,000 tools
// shaped as the benchmark harness's fixture lists them. A benchmark, not a
// test: nothing here asserts a time.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkToolsList -benchmem
func BenchmarkToolsList(b *testing.B) {
	for _, n := range []int{4, 100, 1000} {
		h := benchListGateway(b, benchListUpstream(b, benchToolList(n), nil))
		for _, route := range []string{"forward", "hit"} {
			b.Run(fmt.Sprintf("tools=%d/%s", n, route), func(b *testing.B) {
				path := "/mcp/" + route
				session := benchListInitialize(b, h, path)
				const req = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
				first := benchPost(b, h, path, session, req)
				var got struct {
					Result struct{ Tools []json.RawMessage } `json:"result"`
				}
				if err := json.Unmarshal(first.Body.Bytes(), &got); err != nil || len(got.Result.Tools) != n {
					b.Fatalf("%d tools (%v), want %d: %.300s", len(got.Result.Tools), err, n, first.Body)
				}
				benchListLoop(b, h, path, session, req, route)
			})
		}
	}
}

// BenchmarkToolResult is BenchmarkToolsList for a tools/call whose result
// is 1 MiB of text: the per-byte cost of the response side.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkToolResult -benchmem
func BenchmarkToolResult(b *testing.B) {
	text := strings.Repeat("All work and no play makes Jack a dull boy.\n", (1<<20)/45)
	result := fmt.Appendf(nil, `{"content":[{"type":"text","text":%q}]}`, text)
	h := benchListGateway(b, benchListUpstream(b, benchToolList(4), result))
	for _, route := range []string{"forward", "hit"} {
		b.Run("1MiB/"+route, func(b *testing.B) {
			path := "/mcp/" + route
			session := benchListInitialize(b, h, path)
			benchPost(b, h, path, session, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
			const req = `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"tool_0","arguments":{"key":"k"}}}`
			if first := benchPost(b, h, path, session, req); first.Body.Len() < len(result) {
				b.Fatalf("answer of %d bytes: %.300s", first.Body.Len(), first.Body)
			}
			b.SetBytes(int64(len(result)))
			benchListLoop(b, h, path, session, req, route)
		})
	}
}

// benchListLoop checks that route answers from the cache ("hit") or not, then
// posts req in the benchmark's loop.
func benchListLoop(b *testing.B, h http.Handler, path, session, req, route string) {
	want := map[string]string{"hit": "hit"}[route]
	if c := benchPost(b, h, path, session, req).Header().Get("Ctxgate-Cache"); c != want {
		b.Fatalf("Ctxgate-Cache %q, want %q", c, want)
	}
	b.ReportAllocs()
	for b.Loop() {
		benchPost(b, h, path, session, req)
	}
}

func benchListInitialize(b *testing.B, h http.Handler, path string) string {
	return benchPost(b, h, path, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`).Header().Get("Mcp-Session-Id")
}

// benchListUpstream answers initialize, tools/list with list and tools/call
// with call, at once.
func benchListUpstream(b *testing.B, list, call []byte) string {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &msg)
		w.Header().Set("Content-Type", "application/json")
		switch msg.Method {
		case "initialize":
			w.Header().Set("Mcp-Session-Id", "s1")
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"bench","version":"1"}}}`, msg.ID)
		case "tools/list":
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, list)
		case "tools/call":
			fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, call)
		default:
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	b.Cleanup(up.Close)
	return up.URL
}

// benchToolList is a tools/list result of n tools shaped as the harness's
// raw fixture's.
func benchToolList(n int) []byte {
	type tool struct {
		Name        string         `json:"name"`
		Description string         `json:"description"`
		InputSchema map[string]any `json:"inputSchema"`
		Annotations map[string]any `json:"annotations"`
	}
	tools := make([]tool, n)
	for i := range tools {
		name := fmt.Sprintf("tool_%d", i)
		tools[i] = tool{Name: name, Description: "Fixture tool " + name + ": answers every call with the same text.",
			InputSchema: map[string]any{"type": "object", "properties": map[string]any{"key": map[string]any{"type": "string"}}},
			Annotations: map[string]any{"readOnlyHint": true}}
	}
	list, _ := json.Marshal(map[string]any{"tools": tools})
	return list
}

// benchListGateway is a gateway with the shipped policy in front of one
// upstream as two routes: "hit" caches tools/list, "forward" does not.
func benchListGateway(b *testing.B, upstreamURL string) http.Handler {
	b.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused}
cache: {max_mb: 1024}
upstreams:
  - {name: hit, url: %[1]q, cache: {ttl: {tools/list: 1h, tools/call: 1h}, tools: [tool_0]}}
  - {name: forward, url: %[1]q}
`, upstreamURL), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		b.Fatal(problems)
	}
	dir := b.TempDir()
	rego, err := os.ReadFile(filepath.Join("..", "policies", "authz.rego"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), rego, 0o600); err != nil {
		b.Fatal(err)
	}
	pe, err := policy.New(policy.Options{Dir: dir, Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pe.Close)
	store, err := cache.New(cfg, cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(cfg, pool, gateway.Options{Policy: pe, Cache: store})
	if err != nil {
		b.Fatal(err)
	}
	return gw.Handler()
}
