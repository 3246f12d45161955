//go:build race

package gateway_test

// raceDetector: the race detector's instrumentation allocates on its own,
// so allocation bounds are asserted only without it.
const raceDetector = true
