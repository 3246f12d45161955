package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/shared"
)

// withRedis gives the gateway a Redis client for m, its metrics on the
// gateway's registry.
func withRedis(t *testing.T, m *miniredis.Miniredis, onError string) func(*gateway.Options) {
	return func(o *gateway.Options) {
		cfg := &config.Redis{URL: "redis://" + m.Addr() + "/0", KeyPrefix: "t:", PoolSize: 2, Timeout: 2 * time.Second, OnError: onError}
		c, err := shared.New(context.Background(), cfg, shared.Options{Registerer: o.Metrics.Registry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		o.Redis = c
	}
}

const sharedLimits = `rate_limit:
  per_principal: {rps: 0.001, burst: 4}
  per_tool: {echo: {rps: 0.001, burst: 1}}`

// TestSharedRateLimits: two gateways on one Redis share each principal's
// buckets; with Redis gone, on_error local falls back to each replica's
// own buckets, counted.
func TestSharedRateLimits(t *testing.T) {
	m := miniredis.RunT(t)
	up := newFaultUpstream(t)
	g1 := startResGateway(t, up.srv.URL, sharedLimits, withRedis(t, m, "local"))
	g2 := startResGateway(t, up.srv.URL, sharedLimits, withRedis(t, m, "local"))
	a1 := g1.open(t, aliceKey) // 1 of alice's 4 tokens, on either replica
	a2 := g2.open(t, aliceKey) // 2
	ctx := t.Context()
	steps := []struct {
		name   string
		c      *resClient
		body   string
		status int
	}{
		{"call on 1", a1, callBody(2, "echo", "a1"), http.StatusOK},                   // 3; echo empty
		{"same tool on 2", a2, callBody(3, "echo", "a2"), http.StatusTooManyRequests}, // takes nothing
		{"list on 2", a2, `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`, http.StatusOK},
		{"list on 1", a1, `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, http.StatusTooManyRequests},
	}
	for _, s := range steps {
		a, err := s.c.post(ctx, s.body, nil)
		if err != nil || a.status != s.status {
			t.Fatalf("%s: %v %+v; want %d", s.name, err, a, s.status)
		}
		if s.status == http.StatusTooManyRequests && (a.code() != gateway.CodeRateLimited || a.header.Get("Retry-After") == "") {
			t.Errorf("%s: code %d, Retry-After %q; want -31015 and a Retry-After", s.name, a.code(), a.header.Get("Retry-After"))
		}
	}
	if up.executions("a2") != 0 {
		t.Error("a call over the shared limit reached the upstream")
	}
	for _, k := range m.Keys() {
		if !strings.HasPrefix(k, "t:rl:{up:api_key%3Aalice}") {
			t.Errorf("key %q is not under the prefix and alice's hash tag", k)
		}
	}
	if got := g1.series(t)[`ctxgate_redis_fallback_total{feature="rate_limit"}`]; got != 0 {
		t.Errorf("fallbacks with Redis up = %v, want 0", got)
	}

	m.Close()
	// This replica's own buckets were never touched: alice gets its burst.
	a, err := a1.post(ctx, `{"jsonrpc":"2.0","id":6,"method":"tools/list"}`, nil)
	if err != nil || a.status != http.StatusOK {
		t.Fatalf("on_error local with Redis gone: %v %+v; want 200 from the local limits", err, a)
	}
	series := g1.series(t)
	if got := series[`ctxgate_redis_fallback_total{feature="rate_limit"}`]; got != 1 {
		t.Errorf("ctxgate_redis_fallback_total = %v, want 1", got)
	}
	if got := series[`ctxgate_redis_up`]; got != 0 {
		t.Errorf("ctxgate_redis_up = %v with Redis gone, want 0", got)
	}
}

// TestSharedRateLimitsDeny: on_error deny refuses what Redis cannot
// decide, 503 -31019 with a Retry-After, and sends nothing upstream.
func TestSharedRateLimitsDeny(t *testing.T) {
	m := miniredis.RunT(t)
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, sharedLimits, withRedis(t, m, "deny"))
	alice := g.open(t, aliceKey)
	m.Close()
	a, err := alice.post(t.Context(), callBody(2, "echo", "d1"), nil)
	if err != nil || a.status != http.StatusServiceUnavailable || a.code() != gateway.CodeRateLimitUnavailable || a.header.Get("Retry-After") == "" {
		t.Fatalf("on_error deny with Redis gone: %v %+v; want 503 -31019 with a Retry-After", err, a)
	}
	if up.executions("d1") != 0 {
		t.Error("a call that could not be rate limited reached the upstream")
	}
	if got := g.series(t)[`ctxgate_redis_fallback_total{feature="rate_limit"}`]; got != 1 {
		t.Errorf("ctxgate_redis_fallback_total = %v, want 1", got)
	}
}
