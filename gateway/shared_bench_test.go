package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/shared"
	"github.com/ctxgate/ctxgate/upstream"
)

// BenchmarkSharedState measures what state shared on Redis adds to a
// request, through the whole handler, against the in-memory path in the
// same run: a rate-limited tools/list (the GCRA script, one round trip)
// and a tools/list answered from the cache's second level (one script
// round trip and opening the sealed entry; the first level is emptied
// outside the timer before each). Redis is a real redis-server on a unix
// socket: the figures include its round trip, not only the gateway's
// CPU. Skipped without redis-server. A benchmark, not a test: nothing
// here asserts a time.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkSharedState -benchmem
func BenchmarkSharedState(b *testing.B) {
	redisURL := startRedisServer(b, false).URL
	up := newCountingUpstream()
	upSrv := httptest.NewServer(up)
	b.Cleanup(upSrv.Close)
	memory := newSharedBenchGateway(b, upSrv.URL, "")
	onRedis := newSharedBenchGateway(b, upSrv.URL, redisURL)
	const list = `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`
	for _, bc := range []struct {
		name, route string
		g           *sharedBenchGateway
		emptyL1     bool
		want        string
	}{
		{name: "limit/memory", route: "/mcp/limited", g: memory},
		{name: "limit/redis", route: "/mcp/limited", g: onRedis},
		{name: "cache/l1-hit", route: "/mcp/cached", g: onRedis, want: "hit"},
		{name: "cache/l2-hit", route: "/mcp/cached", g: onRedis, emptyL1: true, want: "hit; l2"},
		{name: "cache/forward", route: "/mcp/limited", g: memory},
	} {
		b.Run(bc.name, func(b *testing.B) {
			session := benchPost(b, bc.g.handler, bc.route, "", `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`).Header().Get("Mcp-Session-Id")
			benchPost(b, bc.g.handler, bc.route, session, list) // fill both levels
			if bc.emptyL1 {
				bc.g.store.Purge() // the local purge is not published
			}
			if got := benchPost(b, bc.g.handler, bc.route, session, list).Header().Get("Ctxgate-Cache"); got != bc.want {
				b.Fatalf("Ctxgate-Cache %q, want %q", got, bc.want)
			}
			b.ReportAllocs()
			for b.Loop() {
				if bc.emptyL1 {
					b.StopTimer()
					bc.g.store.Purge()
					b.StartTimer()
				}
				benchPost(b, bc.g.handler, bc.route, session, list)
			}
		})
	}
}

type sharedBenchGateway struct {
	handler http.Handler
	store   *cache.Store
}

// newSharedBenchGateway has a route "limited" (a per-principal limit no
// benchmark reaches) and a route "cached" (tools/list cached); with
// redisURL, both on Redis (the cache's second level sealed).
func newSharedBenchGateway(b *testing.B, upstreamURL, redisURL string) *sharedBenchGateway {
	b.Helper()
	key := "bench-cache-key-bench-cache-key-bench"
	redisBlock := ""
	if redisURL != "" {
		redisBlock = fmt.Sprintf("redis: {url: %q, key_prefix: \"bench:\"}\n", redisURL)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused}
cache: {max_mb: 16, encryption_keys: [%q]}
%supstreams:
  - name: limited
    url: %q
    rate_limit: {per_principal: {rps: 1000000, burst: 1000000}}
  - name: cached
    url: %q
    cache: {ttl: {tools/list: 1h}}
`, map[bool]string{true: key}[redisURL != ""], redisBlock, upstreamURL, upstreamURL), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		b.Fatal(problems)
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(allowAllRego), 0o600); err != nil {
		b.Fatal(err)
	}
	pol, err := policy.New(policy.Options{Dir: dir, Timeout: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pol.Close)
	store, err := cache.New(cfg, cache.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { store.Close() })
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		b.Fatal(err)
	}
	opts := gateway.Options{Policy: pol, Cache: store, Metrics: gateway.NewMetrics()}
	if redisURL != "" {
		c, err := shared.New(context.Background(), cfg.Redis, shared.Options{Registerer: opts.Metrics.Registry()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		opts.Redis = c
	}
	gw, err := gateway.New(cfg, pool, opts)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	gw.StartShared(ctx)
	deadline := time.Now().Add(20 * time.Second)
	for !gw.InStep() {
		if time.Now().After(deadline) {
			b.Fatal("the fan-out never followed Redis")
		}
		time.Sleep(time.Millisecond)
	}
	return &sharedBenchGateway{handler: gw.Handler(), store: store}
}
