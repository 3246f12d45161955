package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestFailureAnswers: each failure has its own documented answer, and
// tools/call is never repeated once it may have been received.
func TestFailureAnswers(t *testing.T) {
	tests := []struct {
		name           string
		extra          string
		mode           string // the upstream's mode once the session is open
		body           string
		wantStatus     int
		wantCode       int64
		wantRetryAfter bool
		wantReceipts   int64 // tools/call or tools/list requests the upstream read
	}{
		{
			name: "tools/call reset after receipt: outcome unknown, executed once",
			body: callBody(7, "reset", "n-reset"), wantStatus: http.StatusBadGateway, wantCode: -31016, wantReceipts: 1,
		},
		{
			name: "tools/call timed out: outcome unknown, executed once", extra: "timeout: 1s",
			body: callBody(7, "hang", "n-hang"), wantStatus: http.StatusGatewayTimeout, wantCode: -31016, wantReceipts: 1,
		},
		{
			name: "idempotent tool reset after receipt: retried", extra: "idempotent_tools: [reset]",
			body: callBody(7, "reset", "n-idem"), wantStatus: http.StatusBadGateway, wantCode: -31010, wantReceipts: 3,
		},
		{
			name: "tools/list timed out: retried, then 504", extra: "timeout: 1s\nretry: {max_attempts: 2}", mode: "hang",
			body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`, wantStatus: http.StatusGatewayTimeout, wantCode: -31011, wantReceipts: 2,
		},
		{
			name: "a JSON-RPC error in a 200 is relayed as it is",
			body: callBody(7, "rpcerror", "n-rpc"), wantStatus: http.StatusOK, wantCode: -32000, wantReceipts: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newFaultUpstream(t)
			g := startResGateway(t, up.srv.URL, tt.extra)
			c := g.open(t, aliceKey)
			// A list first, as clients do: a call of a tool the gateway
			// has not seen listed would make it read the list itself
			// (calls before lists), one more receipt.
			if _, err := c.post(t.Context(), `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil); err != nil {
				t.Fatal(err)
			}
			if tt.mode != "" {
				up.setMode(tt.mode)
			}
			before := up.receipts.Load()
			a, err := c.post(t.Context(), tt.body, nil)
			if err != nil {
				t.Fatal(err)
			}
			if a.status != tt.wantStatus || a.code() != tt.wantCode || fmt.Sprint(a.msg.ID) != "7" {
				t.Errorf("got %d %s; want %d with code %d and id 7", a.status, a.body, tt.wantStatus, tt.wantCode)
			}
			if got := a.header.Get("Retry-After") != ""; got != tt.wantRetryAfter {
				t.Errorf("Retry-After %q", a.header.Get("Retry-After"))
			}
			if tt.wantReceipts > 0 {
				if got := up.receipts.Load() - before; got != tt.wantReceipts {
					t.Errorf("the upstream received the request %d times, want %d", got, tt.wantReceipts)
				}
			}
		})
	}
}

// TestBreakerThroughGateway: the breaker opens after the threshold, fails
// fast without reaching the upstream while open, then half-opens and
// closes; requests that never reach the upstream or that it answers with
// an error in a 200 never open it.
func TestBreakerThroughGateway(t *testing.T) {
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, "circuit_breaker: {failure_threshold: 3, delay: 2s, success_threshold: 1}")
	alice := g.open(t, aliceKey)
	ctx := t.Context()

	// 1,000 requests that are denied, malformed, from a foreign session or
	// answered with JSON-RPC errors: none is an upstream failure.
	foreign := &resClient{url: g.URL, key: bobKey, session: alice.session}
	for i := range 1000 {
		var a *resAnswer
		var err error
		switch i % 4 {
		case 0:
			a, err = alice.post(ctx, callBody(i, "forbidden", "denied"), nil)
		case 1:
			a, err = alice.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","NAME":"y"}}`, nil)
		case 2:
			a, err = foreign.post(ctx, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, nil)
		case 3:
			a, err = alice.post(ctx, callBody(i, "rpcerror", "rpc"), nil)
		}
		if err != nil || a.code() == 0 {
			t.Fatalf("request %d: %v %+v; want an error answer", i, err, a)
		}
	}
	if s := g.series(t); s[`ctxgate_circuit_breaker_state{state="closed",upstream="up"}`] != 1 {
		t.Fatalf("after 1,000 refused and error answers the breaker is not closed: %v", s)
	}

	up.setMode("503")
	a, err := alice.post(ctx, `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`, nil) // 3 attempts, 3 failures
	if err != nil || a.status != http.StatusServiceUnavailable {
		t.Fatalf("tools/list on a failing upstream: %v %+v; want its 503 relayed", err, a)
	}
	before := up.receipts.Load()
	a, err = alice.post(ctx, callBody(4, "echo", "n-open"), nil)
	if err != nil || a.status != http.StatusServiceUnavailable || a.code() != -31013 || a.header.Get("Retry-After") == "" {
		t.Fatalf("open breaker: %v %d %s %v; want 503, -31013, Retry-After", err, a.status, a.body, a.header)
	}
	if up.receipts.Load() != before || up.executions("n-open") != 0 {
		t.Errorf("an open breaker let a request through")
	}
	if s := g.series(t); s[`ctxgate_circuit_breaker_state{state="open",upstream="up"}`] != 1 || s[`ctxgate_upstream_retries_total{upstream="up"}`] != 2 {
		t.Errorf("metrics: breaker open %v, retries %v; want 1, 2", s[`ctxgate_circuit_breaker_state{state="open",upstream="up"}`], s[`ctxgate_upstream_retries_total{upstream="up"}`])
	}

	up.setMode("ok")
	waitUntil(t, "the breaker to close", func() bool {
		a, err := alice.post(ctx, `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, nil)
		return err == nil && a.status == http.StatusOK
	})
	if s := g.series(t); s[`ctxgate_circuit_breaker_state{state="closed",upstream="up"}`] != 1 {
		t.Errorf("breaker state after a successful probe: %v", s)
	}
}

func TestBulkheadFullThroughGateway(t *testing.T) {
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, "max_concurrent: 1")
	c := g.open(t, aliceKey)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.post(ctx, callBody(1, "hang", "n-hang"), nil)
	}()
	waitUntil(t, "the first call to arrive", func() bool { return up.executions("n-hang") == 1 })
	a, err := c.post(t.Context(), callBody(2, "echo", "n-second"), nil)
	if err != nil || a.status != http.StatusServiceUnavailable || a.code() != -31014 || a.header.Get("Retry-After") == "" {
		t.Fatalf("second call: %v %d %s; want 503, -31014, Retry-After", err, a.status, a.body)
	}
	if up.executions("n-second") != 0 {
		t.Error("the refused call reached the upstream")
	}
	cancel()
	<-done
	if got := g.series(t)[`ctxgate_bulkhead_rejections_total{upstream="up"}`]; got != 1 {
		t.Errorf("ctxgate_bulkhead_rejections_total = %v, want 1", got)
	}
}

// TestPrincipalShareThroughGateway: one principal that fires more calls
// than its share of max_concurrent gets the bulkhead answer for the rest,
// and another principal is still served (issue 14: before, one principal
// filled the bulkhead and another got 503 on 8 of 10 calls).
func TestPrincipalShareThroughGateway(t *testing.T) {
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, "max_concurrent: 4\nmax_concurrent_per_principal: 2")
	alice, bob := g.open(t, aliceKey), g.open(t, bobKey)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for i := range 4 {
		wg.Go(func() {
			a, err := alice.post(ctx, callBody(10+i, "hang", fmt.Sprintf("n-hang-%d", i)), nil)
			if err == nil && a.status == http.StatusServiceUnavailable && a.code() == -31014 && a.header.Get("Retry-After") != "" {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		})
	}
	hanging := func() int {
		n := 0
		for i := range 4 {
			n += up.executions(fmt.Sprintf("n-hang-%d", i))
		}
		return n
	}
	waitUntil(t, "alice's share in flight and the rest refused", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return hanging() == 2 && refused == 2
	})
	for i := range 3 {
		a, err := bob.post(t.Context(), callBody(20+i, "echo", fmt.Sprintf("n-bob-%d", i)), nil)
		if err != nil || a.status != http.StatusOK || a.code() != 0 {
			t.Errorf("bob's call %d beside alice's: %v %d %s; want 200", i, err, a.status, a.body)
		}
	}
	cancel()
	wg.Wait()
	if got := hanging(); got != 2 {
		t.Errorf("alice's calls executed: %d, want 2 (her share)", got)
	}
	if got := g.series(t)[`ctxgate_bulkhead_rejections_total{upstream="up"}`]; got != 2 {
		t.Errorf("ctxgate_bulkhead_rejections_total = %v, want 2", got)
	}
}

// TestRateLimits: a principal over its limit gets 429, another principal
// does not notice.
func TestRateLimits(t *testing.T) {
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, `rate_limit:
  per_principal: {rps: 0.001, burst: 4}
  per_tool: {echo: {rps: 0.001, burst: 1}}`)
	alice := g.open(t, aliceKey) // 1 token
	bob := g.open(t, bobKey)
	ctx := t.Context()
	steps := []struct {
		c      *resClient
		body   string
		status int
	}{
		{alice, callBody(2, "echo", "a1"), http.StatusOK},                        // 2; echo bucket empty
		{alice, callBody(3, "echo", "a2"), http.StatusTooManyRequests},           // per tool; takes nothing
		{alice, `{"jsonrpc":"2.0","id":4,"method":"tools/list"}`, http.StatusOK}, // 3
		{alice, `{"jsonrpc":"2.0","id":5,"method":"tools/list"}`, http.StatusOK}, // 4
		{alice, `{"jsonrpc":"2.0","id":6,"method":"tools/list"}`, http.StatusTooManyRequests},
		{bob, callBody(7, "echo", "b1"), http.StatusOK},
		{bob, `{"jsonrpc":"2.0","id":8,"method":"tools/list"}`, http.StatusOK},
	}
	for i, s := range steps {
		a, err := s.c.post(ctx, s.body, nil)
		if err != nil || a.status != s.status {
			t.Fatalf("step %d: %v %+v; want %d", i, err, a, s.status)
		}
		if s.status == http.StatusTooManyRequests && (a.code() != -31015 || a.header.Get("Retry-After") == "") {
			t.Errorf("step %d: code %d, Retry-After %q; want -31015 and a Retry-After", i, a.code(), a.header.Get("Retry-After"))
		}
	}
	if up.executions("a2") != 0 {
		t.Error("a rate-limited call reached the upstream")
	}
	if got := g.series(t)[`ctxgate_rate_limited_total{upstream="up"}`]; got != 2 {
		t.Errorf("ctxgate_rate_limited_total = %v, want 2", got)
	}
}

// TestIdempotencyKey: N concurrent duplicates, one execution, each answer
// under its own id; another principal's same key is another call.
func TestIdempotencyKey(t *testing.T) {
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, "")
	alice := g.open(t, aliceKey)
	const n = 20
	answers := make([]*resAnswer, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			h := http.Header{"Idempotency-Key": {"key-1"}, "X-Idempotency-Key": {"key-1"}}
			answers[i], errs[i] = alice.post(t.Context(), callBody(100+i, "slow", "n-once"), h)
		})
	}
	waitUntil(t, "the first call to arrive", func() bool { return up.executions("n-once") == 1 })
	close(up.gate)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || answers[i].status != http.StatusOK || fmt.Sprint(answers[i].msg.ID) != fmt.Sprint(100+i) || !strings.Contains(string(answers[i].msg.Result), "n-once") {
			t.Errorf("duplicate %d: %v %+v; want the result under id %d", i, errs[i], answers[i], 100+i)
		}
	}
	if got := up.executions("n-once"); got != 1 {
		t.Errorf("%d concurrent duplicates executed %d times, want once", n, got)
	}
	if up.idempotencyHeader.Load() {
		t.Error("an idempotency header reached the upstream: Go's HTTP client could re-send the call")
	}

	// The same key in _meta is the same call; with other arguments it is
	// refused; for another principal it is another call.
	meta := `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow","arguments":{"nonce":"n-once"},"_meta":{"io.ctxgate/idempotency-key":"key-1"}}}`
	if a, err := alice.post(t.Context(), meta, nil); err != nil || a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("key in _meta: %v %+v; want a replay", err, a)
	}
	if a, err := alice.post(t.Context(), callBody(10, "slow", "n-other"), http.Header{"Idempotency-Key": {"key-1"}}); err != nil || a.status != http.StatusUnprocessableEntity || a.code() != -31017 {
		t.Errorf("key reused for another call: %v %+v; want 422 -31017", err, a)
	}
	bob := g.open(t, bobKey)
	if a, err := bob.post(t.Context(), callBody(11, "slow", "n-once"), http.Header{"Idempotency-Key": {"key-1"}}); err != nil || a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("another principal's key: %v %+v; want its own execution", err, a)
	}
	if got := up.executions("n-once"); got != 2 {
		t.Errorf("executions = %d, want 2 (alice once, bob once)", got)
	}
}

// TestStalledStreamEnds: a GET stream whose upstream stalls after one
// event gets keep-alives, ends at the idle timeout, and leaves no
// goroutine behind.
func TestStalledStreamEnds(t *testing.T) {
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, "streams: {idle_timeout: 300ms, keepalive: 50ms}")
	c := g.open(t, aliceKey)
	baseline := runtime.NumGoroutine()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, g.URL, nil)
	req.Header = http.Header{"Accept": {"text/event-stream"}, "Authorization": {"Bearer " + aliceKey}, "Mcp-Session-Id": {c.session}, "Mcp-Protocol-Version": {"2025-11-25"}}
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %v %v", err, resp)
	}
	r := bufio.NewReader(resp.Body)
	first := readEvent(t, r)
	if !strings.Contains(first, "notifications/message") {
		t.Errorf("first event %q", first)
	}
	rest, err := io.ReadAll(r) // returns when the gateway ends the stream
	resp.Body.Close()
	if err != nil {
		t.Fatalf("stream ended with %v, want a clean end", err)
	}
	if !strings.Contains(string(rest), ": keepalive\n\n") {
		t.Errorf("no keep-alive on the idle stream: %q", rest)
	}
	waitUntil(t, "goroutines back to the baseline", func() bool {
		return runtime.NumGoroutine() <= baseline
	})
}
