package main

import (
	"math"
	"slices"
	"time"
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted: the smallest value that at least p% of the values do not exceed.
// An empty slice gives 0.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// latencies are the percentiles of one open-loop run.
type latencies struct {
	P50, P90, P99, Max time.Duration
}

// summarize sorts lat in place and returns its percentiles.
func summarize(lat []time.Duration) latencies {
	slices.Sort(lat)
	return latencies{
		P50: percentile(lat, 50),
		P90: percentile(lat, 90),
		P99: percentile(lat, 99),
		Max: percentile(lat, 100),
	}
}

// spread is the median and range of one figure over the rounds.
type spread struct {
	Median, Min, Max float64
}

// spreadOf returns the median (the mean of the two middle values for an
// even count) and the range of xs. NaN values (a round that measured
// nothing) are left out; with none left, every field is NaN.
func spreadOf(xs []float64) spread {
	vals := slices.DeleteFunc(slices.Clone(xs), math.IsNaN)
	if len(vals) == 0 {
		return spread{math.NaN(), math.NaN(), math.NaN()}
	}
	slices.Sort(vals)
	n := len(vals)
	med := vals[n/2]
	if n%2 == 0 {
		med = (vals[n/2-1] + vals[n/2]) / 2
	}
	return spread{Median: med, Min: vals[0], Max: vals[n-1]}
}
