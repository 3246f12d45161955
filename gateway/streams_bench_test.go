package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// BenchmarkStreams measures what an open legacy GET stream costs the
// gateway: bytes (heap and stacks in use, from runtime.MemStats, after a
// GC) and goroutines per stream, with n streams open at once, reported as
// metrics. Client, gateway and upstream share the process, so the same n
// streams opened straight to the upstream are measured too and taken
// away: gw-B/stream and gw-goroutines/stream are the gateway's share. A
// benchmark, not a test: nothing here asserts a figure.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkStreams -benchtime 1x
func BenchmarkStreams(b *testing.B) {
	for _, n := range []int{1000, 3000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			up := httptest.NewServer(benchUpstream{})
			b.Cleanup(up.Close)
			g := newPipelineGateway(b, up.URL, nil, false, false)
			gw := httptest.NewServer(g.handler)
			b.Cleanup(gw.Close)
			session := g.initialize(b, "/mcp/small")
			for b.Loop() {
				direct := measureStreams(b, n, up.URL+"/4", "")
				through := measureStreams(b, n, gw.URL+"/mcp/small", session)
				b.ReportMetric(float64(through.bytes-direct.bytes)/float64(n), "gw-B/stream")
				b.ReportMetric(float64(through.goroutines-direct.goroutines)/float64(n), "gw-goroutines/stream")
				b.ReportMetric(float64(through.stack-direct.stack)/float64(n), "gw-stack-B/stream")
				b.ReportMetric(float64(through.bytes)/float64(n), "total-B/stream")
			}
		})
	}
}

// streamCost is what n open streams added to the process.
type streamCost struct{ bytes, stack, goroutines int64 }

// measureStreams opens n GET streams on url, each read to its first event
// (open end to end), measures, then closes them all and waits until the
// process is back to its goroutines before.
func measureStreams(b *testing.B, n int, url, session string) streamCost {
	b.Helper()
	before, beforeStack, beforeG := inUse(), stackInUse(), runtime.NumGoroutine()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1}}
	ctx, cancel := context.WithCancel(b.Context())
	var wg sync.WaitGroup
	opened := make(chan error, n)
	// Opened 64 at a time: a burst of n at once would be shed by
	// server.max_inflight, which is not what is measured here.
	opening := make(chan struct{}, 64)
	for range n {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		req.Header.Set("Accept", "text/event-stream")
		if session != "" {
			req.Header.Set("Mcp-Session-Id", session)
			req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		}
		wg.Go(func() {
			opening <- struct{}{}
			resp, err := client.Do(req)
			if err == nil && resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				err = fmt.Errorf("status %d: %s", resp.StatusCode, body)
			}
			if err == nil {
				var line string
				if line, err = bufio.NewReader(resp.Body).ReadString('\n'); err == nil && !strings.HasPrefix(line, "id:") && !strings.HasPrefix(line, "data:") {
					err = fmt.Errorf("first line %q", line)
				}
			}
			<-opening
			opened <- err
			if resp != nil {
				<-ctx.Done()
				resp.Body.Close()
			}
		})
	}
	for range n {
		if err := <-opened; err != nil {
			cancel()
			b.Fatalf("open stream: %v", err)
		}
	}
	// The waiting goroutine per stream above is the client's, on both
	// sides of the subtraction.
	cost := streamCost{bytes: int64(inUse() - before), stack: int64(stackInUse() - beforeStack), goroutines: int64(runtime.NumGoroutine() - beforeG)}
	cancel()
	wg.Wait()
	client.CloseIdleConnections()
	return cost
}

// stackInUse is the goroutine stack memory in use.
func stackInUse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.StackInuse
}

// inUse is the heap and stack memory in use after a collection.
func inUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
