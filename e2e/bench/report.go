package main

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// figures are one target's medians and ranges over the rounds.
type figures struct {
	rps, sut, upstream, fan spread // closed loop
	p50, p90, p99, maxLat   spread // open loop, milliseconds
	errors, sent            int64
	cache                   cacheCounts // both phases
}

// cacheCounts are answers by their Ctxgate-Cache header.
type cacheCounts struct{ hits, misses, other int64 }

func (c cacheCounts) total() int64 { return c.hits + c.misses + c.other }

// figures summarizes a target's rounds. For direct, the system under test
// is the upstream itself.
func (r *result) figures() figures {
	var f figures
	var rps, sut, up, fan, p50, p90, p99, mx []float64
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for _, s := range r.samples {
		rps = append(rps, float64(s.Closed.Requests)/s.Closed.Seconds)
		cpu := s.SUTCPU
		if r.name == targetDirect {
			cpu = s.Upstream
		}
		sut = append(sut, perRequest(cpu, s.Closed.Requests))
		up = append(up, perRequest(s.Upstream, s.Closed.Requests))
		fan = append(fan, float64(s.UpstreamRequests)/float64(max(s.Closed.Requests, 1)))
		p50, p90, p99 = append(p50, ms(s.Open.Latency.P50)), append(p90, ms(s.Open.Latency.P90)), append(p99, ms(s.Open.Latency.P99))
		mx = append(mx, ms(s.Open.Latency.Max))
		f.errors += s.Closed.Errors + s.Open.Errors
		f.sent += s.Closed.Requests + s.Open.Requests
		for _, ph := range []loadResult{s.Closed, s.Open} {
			f.cache.hits, f.cache.misses, f.cache.other = f.cache.hits+ph.CacheHits, f.cache.misses+ph.CacheMisses, f.cache.other+ph.CacheOther
		}
	}
	f.rps, f.sut, f.upstream, f.fan = spreadOf(rps), spreadOf(sut), spreadOf(up), spreadOf(fan)
	f.p50, f.p90, f.p99, f.maxLat = spreadOf(p50), spreadOf(p90), spreadOf(p99), spreadOf(mx)
	return f
}

// markdown renders the run as a markdown section: conditions, the table,
// what each target is, and what is not measured.
func (r *report) markdown() string {
	var b strings.Builder
	o := r.opts
	fmt.Fprintf(&b, "ctxgate benchmark, %s\n\n", r.started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "- machine: %s\n", r.machine)
	pin := "not pinned"
	if r.pinned {
		pin = "system under test on CPU 0 (GOMAXPROCS=1, nginx 1 worker); upstream and load generator on CPU 1"
	}
	fmt.Fprintf(&b, "- placement: %s\n", pin)
	policyTimeout := "the default (100ms)"
	if o.policyTime > 0 {
		policyTimeout = o.policyTime.String()
	}
	fmt.Fprintf(&b, "- workload: MCP 2025-11-25 on %d established sessions, 3 tools/call (arguments cycling through %d keys) : 1 tools/list : 1 resources/read; upstream: the %s fixture, service time %s (each of those requests); ctxgate policy.timeout %s\n",
		o.sessions, callKeys, o.fixture, o.serviceTime, policyTimeout)
	if o.freshTokens > 0 {
		fmt.Fprintf(&b, "- JWT targets: a new token for every request (%d signed per round), so every request's signature is verified\n", o.freshTokens)
	}
	fmt.Fprintf(&b, "- %d interleaved rounds; per round and target: closed loop (%s generator), %d in flight, %s (after %s warm-up); then open loop at %.0f req/s for %s\n\n",
		o.rounds, o.engine, o.conns, o.duration, o.warmup, o.rate, o.duration)
	b.WriteString("| target | req/s (closed loop) | × direct | SUT CPU µs/req | × direct | × go-proxy | upstream CPU µs/req | upstream req/req | p50 ms | p90 ms | p99 ms | max ms | errors |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	base := map[string]figures{}
	for _, res := range r.results {
		if res.skipped == "" && len(res.samples) > 0 {
			base[res.name] = res.figures()
		}
	}
	for _, res := range r.results {
		if res.skipped != "" {
			fmt.Fprintf(&b, "| %s | not run: %s | | | | | | | | | | | |\n", res.name, res.skipped)
			continue
		}
		f := base[res.name]
		direct, hasDirect := base[targetDirect]
		proxy, hasProxy := base[targetGoProxy]
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d of %d |\n", res.name,
			fmtSpread(f.rps, 0), ratio(f.rps, direct.rps, hasDirect), fmtSpread(f.sut, 1),
			ratio(f.sut, direct.sut, hasDirect), ratio(f.sut, proxy.sut, hasProxy), fmtSpread(f.upstream, 1), fmtSpread(f.fan, 3),
			fmtSpread(f.p50, 2), fmtSpread(f.p90, 2), fmtSpread(f.p99, 2), fmtNum(f.maxLat.Max, 2), f.errors, f.sent)
	}
	b.WriteString("\n")
	b.WriteString(legend)
	for _, res := range r.results {
		fmt.Fprintf(&b, "- `%s`: %s\n", res.name, descriptions[res.name])
	}
	for _, res := range r.results {
		if c := base[res.name].cache; c.total() > 0 {
			fmt.Fprintf(&b, "\n%s: %s\n", res.name, c)
		}
	}
	for _, res := range r.results {
		if n := res.reusedTokens(); n > 0 {
			fmt.Fprintf(&b, "\n%s: %d requests reused a token (raise -fresh-tokens); those were answered from the token cache\n", res.name, n)
		}
		for _, f := range res.failures {
			fmt.Fprintf(&b, "\nFailed requests, %s, %s\n", res.name, f)
		}
	}
	b.WriteString("\nNot measured: the stateless 2026-07-28 protocol era (served by the gateway, but without sessions its figures would not compare with these rounds).\n")
	return b.String()
}

// String says how many answers the cache served, for the report.
func (c cacheCounts) String() string {
	return fmt.Sprintf("Ctxgate-Cache of the %d answers after warm-up: %d hit (%.2f%%), %d miss, %d other (stale or bypass)",
		c.total(), c.hits, 100*float64(c.hits)/float64(max(c.total(), 1)), c.misses, c.other)
}

const legend = `Medians over the rounds, with the range (min–max) in parentheses. SUT CPU is the user+system
CPU time of the system under test's process during the closed-loop phase (/proc/<pid>/stat), divided
by the requests answered; for direct it is the upstream's. "× direct" divides by direct's figure
(for CPU: the upstream's own cost of a request), "× go-proxy" by the bare Go proxy's. upstream
req/req is the requests the upstream served per request answered (1.000: the proxy adds no upstream
traffic; near 0 for a target answering from its cache). Latencies are from the open-loop phase, measured from each request's intended send time;
max is the largest of any round. errors counts failed or wrong answers of both phases, of all
requests sent.

`

// fmtSpread prints a median with its range when the rounds differ.
func fmtSpread(s spread, decimals int) string {
	if math.IsNaN(s.Median) {
		return "–"
	}
	if fmtNum(s.Min, decimals) == fmtNum(s.Max, decimals) {
		return fmtNum(s.Median, decimals)
	}
	return fmt.Sprintf("%s (%s–%s)", fmtNum(s.Median, decimals), fmtNum(s.Min, decimals), fmtNum(s.Max, decimals))
}

func fmtNum(x float64, decimals int) string {
	if math.IsNaN(x) {
		return "–"
	}
	return fmt.Sprintf("%.*f", decimals, x)
}

// ratio is a's median over b's, when b was measured.
func ratio(a, b spread, ok bool) string {
	if !ok || math.IsNaN(a.Median) || math.IsNaN(b.Median) || b.Median == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", a.Median/b.Median)
}

// reusedTokens is how many requests of the rounds reused a fresh token.
func (r *result) reusedTokens() int64 {
	var n int64
	for _, s := range r.samples {
		n += s.Open.ReusedTokens // the count after both phases
	}
	return n
}
