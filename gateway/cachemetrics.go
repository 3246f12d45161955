package gateway

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/cache"
)

// cacheAgeBuckets span a fresh hit (seconds) to a stale answer served
// through a long outage (a day), in seconds.
var cacheAgeBuckets = []float64{1, 5, 15, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600}

// cacheMetrics are the response cache's series: what each cached method's
// request got (hit, miss, stale, bypass), how old the context served from
// the cache was, and the store's size. Results and ages are counted per
// request from its state; entries and bytes are read from the store at
// scrape time, so they cannot drift from it.
type cacheMetrics struct {
	results *prometheus.CounterVec
	age     *prometheus.HistogramVec
}

func newCacheMetrics(f factory) *cacheMetrics {
	return &cacheMetrics{
		results: f.counter("ctxgate_cache_results_total",
			"Requests for cacheable methods by how the response cache answered: hit, miss (fetched, and stored), stale (the upstream failed: a stale answer, marked), bypass (relayed, not storable).",
			"upstream", "result"),
		age: f.histogram("ctxgate_cache_served_age_seconds",
			"Age of the context served from the cache (hit or stale): how fresh answers were when they left.",
			cacheAgeBuckets, "upstream", "result"),
	}
}

// registerStore exposes the store's size on the registry, read at scrape.
func (m *Metrics) registerStore(store *cache.Store) {
	gauge := func(name, help string, read func(cache.Stats) int) {
		m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(read(store.Stats())) }))
	}
	gauge("ctxgate_cache_entries", "Entries in the response cache (invalidated ones until they are evicted).",
		func(s cache.Stats) int { return s.Entries })
	gauge("ctxgate_cache_bytes", "Memory allocated to response cache entries; never above ctxgate_cache_max_bytes.",
		func(s cache.Stats) int { return s.Bytes })
	gauge("ctxgate_cache_max_bytes", "The response cache's size bound (cache.max_mb).",
		func(s cache.Stats) int { return s.MaxBytes })
	m.registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "ctxgate_cache_too_large_total",
		Help: "Answers served but not cached for being larger than the cache's max entry (cache.Store.MaxEntryBytes)."},
		func() float64 { return float64(store.Stats().TooLarge) }))
}

// observeCache records how the cache answered one request.
func (m *Metrics) observeCache(st *requestState) {
	if st.cache == "" {
		return
	}
	m.cache.results.WithLabelValues(st.upstream, st.cache).Inc()
	if st.cache == "hit" || st.cache == "stale" {
		m.cache.age.WithLabelValues(st.upstream, st.cache).Observe(float64(st.cacheAgeMs) / 1000)
	}
}
