package gateway_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCacheMetrics: scripted cache traffic (a miss, a hit 30s later, a
// stale answer 150s after storing) shows in the cache series with those
// results and ages, and the store's size is exported.
func TestCacheMetrics(t *testing.T) {
	up, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	alice.call(t, "tools/list", `{}`)
	g.clock.Add(30 * time.Second)
	if a := alice.call(t, "tools/list", `{}`); a.cache != "hit" {
		t.Fatalf("second tools/list: %q, want hit", a.cache)
	}
	up.down.Store(true)
	g.clock.Add(2 * time.Minute)
	if a := alice.call(t, "tools/list", `{}`); a.cache != "stale; age=150" {
		t.Fatalf("with the upstream down: %q, want stale", a.cache)
	}

	want := map[string]float64{
		`ctxgate_cache_results_total{result="miss",upstream="up"}`:                       1,
		`ctxgate_cache_results_total{result="hit",upstream="up"}`:                        1,
		`ctxgate_cache_results_total{result="stale",upstream="up"}`:                      1,
		`ctxgate_cache_served_age_seconds_sum{result="hit",upstream="up"}`:               30,
		`ctxgate_cache_served_age_seconds_sum{result="stale",upstream="up"}`:             150,
		`ctxgate_cache_served_age_seconds_bucket{result="stale",upstream="up",le="300"}`: 1,
		`ctxgate_cache_served_age_seconds_bucket{result="stale",upstream="up",le="60"}`:  0,
		`ctxgate_cache_entries`:   1,
		`ctxgate_cache_max_bytes`: 4 << 20,
	}
	var got map[string]float64
	// The series are written when each request's record is, just after
	// its answer: poll for them.
	waitUntil(t, "cache series", func() bool {
		resp, err := http.Get(g.admin + "/metrics")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		all := parseMetrics(t, string(body))
		got = map[string]float64{}
		for k := range want {
			got[k] = all[k]
		}
		return cmp.Equal(want, got) && all["ctxgate_cache_bytes"] > 0
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("cache series (-want +got):\n%s", diff)
	}
}
