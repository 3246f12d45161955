package main

import (
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var out []time.Duration
		for _, n := range ns {
			out = append(out, time.Duration(n)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{name: "empty", sorted: nil, p: 50, want: 0},
		{name: "one value", sorted: ms(7), p: 99, want: 7 * time.Millisecond},
		{name: "median of four is the second", sorted: ms(1, 2, 3, 4), p: 50, want: 2 * time.Millisecond},
		{name: "p90 of 1..100", sorted: hundred, p: 90, want: 90 * time.Millisecond},
		{name: "p99 of 1..100", sorted: hundred, p: 99, want: 99 * time.Millisecond},
		{name: "p99.9 of 1..100 is the max", sorted: hundred, p: 99.9, want: 100 * time.Millisecond},
		{name: "max", sorted: ms(1, 5, 9), p: 100, want: 9 * time.Millisecond},
		{name: "tiny p is the min", sorted: ms(3, 4), p: 0.0001, want: 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeSorts(t *testing.T) {
	got := summarize([]time.Duration{9, 1, 5, 3, 7, 2, 8, 4, 6, 10})
	want := latencies{P50: 5, P90: 9, P99: 10, Max: 10}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
}

func TestSpreadOf(t *testing.T) {
	nan := math.NaN()
	tests := []struct {
		name string
		xs   []float64
		want spread
	}{
		{name: "odd", xs: []float64{3, 1, 2}, want: spread{2, 1, 3}},
		{name: "even", xs: []float64{4, 1, 3, 2}, want: spread{2.5, 1, 4}},
		{name: "NaN rounds left out", xs: []float64{nan, 5, nan}, want: spread{5, 5, 5}},
		{name: "nothing measured", xs: []float64{nan}, want: spread{nan, nan, nan}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, spreadOf(tt.xs), cmpopts.EquateNaNs()); diff != "" {
				t.Errorf("spreadOf(%v) (-want +got):\n%s", tt.xs, diff)
			}
		})
	}
}
