package shared_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/shared"
)

// start runs a miniredis on a frozen clock (its TIME is what the script
// reads) and a client for it.
func start(t *testing.T, prefix string) (*miniredis.Miniredis, *shared.Client, *prometheus.Registry) {
	t.Helper()
	m := miniredis.RunT(t)
	m.SetTime(time.Unix(1_800_000_000, 0))
	reg := prometheus.NewRegistry()
	c, err := shared.New(context.Background(), redisConfig("redis://"+m.Addr()+"/0", prefix), shared.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return m, c, reg
}

func redisConfig(url, prefix string) *config.Redis {
	return &config.Redis{URL: url, KeyPrefix: prefix, PoolSize: 2, Timeout: 2 * time.Second, OnError: "local"}
}

type call struct {
	ok   bool
	wait time.Duration
}

func allow(t *testing.T, c *shared.Client, principal string, buckets ...shared.Bucket) call {
	t.Helper()
	ok, wait, err := c.Allow(context.Background(), "docs", principal, buckets)
	if err != nil {
		t.Fatalf("Allow: %v", err)
	}
	return call{ok, wait}
}

func TestAllowBurstThenRate(t *testing.T) {
	m, c, _ := start(t, "ctxgate:")
	per := shared.Bucket{RPS: 2, Burst: 3} // a token every 500ms
	for i := range 3 {
		if got := allow(t, c, "alice", per); !got.ok {
			t.Fatalf("call %d of the burst refused: %+v", i+1, got)
		}
	}
	if got := allow(t, c, "alice", per); got != (call{false, 500 * time.Millisecond}) {
		t.Errorf("over the burst = %+v, want refused with a 500ms wait", got)
	}
	if got := allow(t, c, "bob", per); !got.ok {
		t.Error("another principal shares alice's bucket")
	}
	m.SetTime(time.Unix(1_800_000_000, 0).Add(500 * time.Millisecond))
	if got := allow(t, c, "alice", per); !got.ok {
		t.Errorf("a token was due after 500ms on the Redis clock: %+v", got)
	}
	if got := allow(t, c, "alice", per); got.ok {
		t.Error("only one token came back in 500ms")
	}
}

// TestAllowAllOrNothing: a request refused by one bucket takes nothing
// from the others.
func TestAllowAllOrNothing(t *testing.T) {
	_, c, _ := start(t, "ctxgate:")
	per := shared.Bucket{RPS: 1.0 / 3600, Burst: 3}
	tool := shared.Bucket{Tool: "search", RPS: 1.0 / 3600, Burst: 1}
	if got := allow(t, c, "alice", per, tool); !got.ok {
		t.Fatalf("first call refused: %+v", got)
	}
	if got := allow(t, c, "alice", per, tool); got != (call{false, time.Hour}) {
		t.Fatalf("second call of the tool = %+v, want refused with a 1h wait", got)
	}
	// The refused call took no principal token: two are left, not one.
	for i := range 2 {
		if got := allow(t, c, "alice", per); !got.ok {
			t.Fatalf("principal call %d refused: the refused tool call consumed a token", i+1)
		}
	}
	if got := allow(t, c, "alice", per); got.ok {
		t.Error("the principal's burst of 3 allowed a fourth call")
	}
}

func TestAllowWaitIsTheLongest(t *testing.T) {
	_, c, _ := start(t, "ctxgate:")
	per := shared.Bucket{RPS: 1, Burst: 1}
	tool := shared.Bucket{Tool: "search", RPS: 0.1, Burst: 1}
	allow(t, c, "alice", per, tool)
	if got := allow(t, c, "alice", per, tool); got != (call{false, 10 * time.Second}) {
		t.Errorf("refused by both = %+v, want the longer wait (10s)", got)
	}
}

func TestRateKeys(t *testing.T) {
	m, c, _ := start(t, "prod:")
	buckets := []shared.Bucket{{RPS: 1, Burst: 1}, {Tool: "search", RPS: 1, Burst: 1}}
	allow(t, c, "alice@example.com", buckets...)
	keys := m.Keys()
	want := []string{"prod:rl:{docs:alice%40example.com}", "prod:rl:{docs:alice%40example.com}:tool:search"}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Fatalf("keys = %q, want %q", keys, want)
	}
	for _, k := range keys {
		if ttl := m.TTL(k); ttl <= 0 || ttl > time.Second {
			t.Errorf("%s expires in %s, want when its bucket is full again (1s)", k, ttl)
		}
	}
	// The hash tag (first {...}) is the same for every key of a request,
	// whatever the principal and tool contain.
	for _, tt := range []struct{ principal, tool string }{
		{"alice", "search"}, {"a}:tool:x", "y"}, {"{x}", "}{"}, {"", ""},
	} {
		ks := c.RateKeys("docs", tt.principal, []shared.Bucket{{}, {Tool: tt.tool}})
		if hashTag(ks[0]) != hashTag(ks[1]) || hashTag(ks[0]) == "" {
			t.Errorf("keys %q do not share one hash tag", ks)
		}
	}
	// Escaping keeps one principal's tool bucket from being another's own.
	a := c.RateKeys("docs", "a}:tool:x", []shared.Bucket{{}})[0]
	b := c.RateKeys("docs", "a", []shared.Bucket{{Tool: "x}"}})[0]
	if a == b {
		t.Errorf("principal %q and principal %q's tool share the key %s", "a}:tool:x", "a", a)
	}
}

// hashTag is what Redis Cluster hashes: the text between the first { and
// the first } after it, when not empty.
func hashTag(key string) string {
	_, rest, ok := strings.Cut(key, "{")
	if !ok {
		return ""
	}
	tag, _, ok := strings.Cut(rest, "}")
	if !ok {
		return ""
	}
	return tag
}
