package upstream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// fault is what the fixture upstream does with a request it received.
type fault string

const (
	answerOK    fault = "ok"
	answer503   fault = "503"
	answer500   fault = "500"
	answer404   fault = "404"
	resetAfter  fault = "reset" // read the whole request, then close the connection
	hangForever fault = "hang"  // never answer (until the client gives up)
)

// fixture is an upstream that records a receipt for every request it read
// whole, then misbehaves as told.
type fixture struct {
	srv      *httptest.Server
	receipts atomic.Int64
	mu       sync.Mutex
	fault    fault
	release  chan struct{} // closed at cleanup: hanging handlers return
}

func newFixture(t *testing.T, f fault) *fixture {
	t.Helper()
	fx := &fixture{fault: f, release: make(chan struct{})}
	fx.srv = httptest.NewServer(http.HandlerFunc(fx.serve))
	t.Cleanup(func() { close(fx.release); fx.srv.Close() })
	return fx
}

func (fx *fixture) set(f fault) {
	fx.mu.Lock()
	fx.fault = f
	fx.mu.Unlock()
}

func (fx *fixture) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	fx.receipts.Add(1)
	fx.mu.Lock()
	f := fx.fault
	fx.mu.Unlock()
	switch f {
	case answerOK:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{}}`)
	case answer503:
		w.WriteHeader(http.StatusServiceUnavailable)
	case answer500:
		w.WriteHeader(http.StatusInternalServerError)
	case answer404:
		w.WriteHeader(http.StatusNotFound)
	case resetAfter:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	case hangForever:
		select {
		case <-r.Context().Done():
		case <-fx.release:
		}
	}
}

// refusedURL is an address nothing listens on any more.
func refusedURL(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

// pool builds a one-upstream pool with the defaults, changed by edit.
func pool(t *testing.T, url string, edit func(*config.Upstream)) *upstream.Upstream {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, "auth: {anonymous: true}\npolicy: {dir: p}\nupstreams: [{name: up, url: %q}]\n", url), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Upstreams[0].Retry.Backoff = time.Millisecond // fast tests; the policy is the same
	cfg.Upstreams[0].Retry.MaxBackoff = 2 * time.Millisecond
	if edit != nil {
		edit(&cfg.Upstreams[0])
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	p, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return p.Get("up")
}

// post sends one request through the upstream's executor, as the gateway
// does: a body that cannot be rewound (no GetBody).
func post(ctx context.Context, up *upstream.Upstream, class upstream.Retry) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(upstream.WithRetry(ctx, class), http.MethodPost, up.URL.String(), bytes.NewReader([]byte(`{"jsonrpc":"2.0","id":1,"method":"x"}`)))
	req.GetBody = nil
	resp, err := up.Resilience.RoundTripper(up.Transport).RoundTrip(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name         string
		class        upstream.Retry
		fault        fault // "" means connection refused
		wantReceipts int64
		wantRetries  uint64
		wantStatus   int   // when an answer comes back
		wantKind     error // when it does not
		wantUnknown  bool
	}{
		{name: "safe request retried on 503", class: upstream.RetrySafe, fault: answer503, wantReceipts: 3, wantRetries: 2, wantStatus: 503},
		{name: "unsafe request not retried on 503", class: upstream.RetryUnsent, fault: answer503, wantReceipts: 1, wantStatus: 503},
		{name: "404 is an answer, not retried", class: upstream.RetrySafe, fault: answer404, wantReceipts: 1, wantStatus: 404},
		{name: "refused connection retried even when unsafe", class: upstream.RetryUnsent, wantRetries: 2, wantKind: upstream.ErrTransport},
		{name: "client answer never retried", class: upstream.RetryNever, wantKind: upstream.ErrTransport},
		{name: "unsafe request reset after receipt: once, outcome unknown", class: upstream.RetryUnsent, fault: resetAfter, wantReceipts: 1, wantKind: upstream.ErrTransport, wantUnknown: true},
		{name: "safe request reset after receipt: retried", class: upstream.RetrySafe, fault: resetAfter, wantReceipts: 3, wantRetries: 2, wantKind: upstream.ErrTransport, wantUnknown: true},
		{name: "unsafe request timed out: once, outcome unknown", class: upstream.RetryUnsent, fault: hangForever, wantReceipts: 1, wantKind: upstream.ErrTimeout, wantUnknown: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fx *fixture
			url := refusedURL(t)
			if tt.fault != "" {
				fx = newFixture(t, tt.fault)
				url = fx.srv.URL
			}
			up := pool(t, url, func(c *config.Upstream) { c.Timeout = 200 * time.Millisecond })
			resp, err := post(t.Context(), up, tt.class)
			if tt.wantKind == nil {
				if err != nil || resp.StatusCode != tt.wantStatus {
					t.Fatalf("got %v, %v; want status %d", resp, err, tt.wantStatus)
				}
			} else {
				var f *upstream.Failure
				if !errors.As(err, &f) || !errors.Is(err, tt.wantKind) {
					t.Fatalf("error %v; want a *Failure of kind %v", err, tt.wantKind)
				}
				if got := errors.Is(err, upstream.ErrOutcomeUnknown); got != tt.wantUnknown {
					t.Errorf("errors.Is(err, ErrOutcomeUnknown) = %v, want %v (err %v)", got, tt.wantUnknown, err)
				}
			}
			if fx != nil && fx.receipts.Load() != tt.wantReceipts {
				t.Errorf("upstream received %d requests, want %d", fx.receipts.Load(), tt.wantReceipts)
			}
			if got := up.Resilience.Stats().Retries; got != tt.wantRetries {
				t.Errorf("retries = %d, want %d", got, tt.wantRetries)
			}
		})
	}
}

func TestBreaker(t *testing.T) {
	fx := newFixture(t, answer500)
	up := pool(t, fx.srv.URL, func(c *config.Upstream) {
		c.CircuitBreaker = config.CircuitBreaker{FailureThreshold: 3, FailureWindow: time.Minute, Delay: 100 * time.Millisecond, SuccessThreshold: 2}
	})
	ctx := t.Context()

	// Answers that are not the upstream failing never open it.
	fx.set(answer404)
	for range 50 {
		if _, err := post(ctx, up, upstream.RetryUnsent); err != nil {
			t.Fatal(err)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	for range 10 {
		_, _ = post(canceled, up, upstream.RetryUnsent)
	}
	if got := up.Resilience.Stats().Breaker; got != "closed" {
		t.Fatalf("after 404s and canceled requests the breaker is %s, want closed", got)
	}

	fx.set(answer500)
	for range 3 {
		if _, err := post(ctx, up, upstream.RetryUnsent); err != nil {
			t.Fatal(err)
		}
	}
	if got := up.Resilience.Stats().Breaker; got != "open" {
		t.Fatalf("after 3 failures the breaker is %s, want open", got)
	}
	before := fx.receipts.Load()
	_, err := post(ctx, up, upstream.RetrySafe)
	var f *upstream.Failure
	if !errors.Is(err, upstream.ErrBreakerOpen) || !errors.As(err, &f) || f.Sent || errors.Is(err, upstream.ErrOutcomeUnknown) {
		t.Fatalf("open breaker: %v; want ErrBreakerOpen, not sent", err)
	}
	if fx.receipts.Load() != before {
		t.Errorf("an open breaker let a request through")
	}

	// After the delay, probes go through; two successes close it.
	fx.set(answerOK)
	deadline := time.Now().Add(10 * time.Second)
	for up.Resilience.Stats().Breaker != "closed" {
		if time.Now().After(deadline) {
			t.Fatalf("breaker still %s", up.Resilience.Stats().Breaker)
		}
		_, _ = post(ctx, up, upstream.RetryUnsent)
	}
}

func TestBulkheadFull(t *testing.T) {
	fx := newFixture(t, hangForever)
	up := pool(t, fx.srv.URL, func(c *config.Upstream) { c.MaxConcurrent, c.MaxConcurrentPerPrincipal = 1, 1 })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = post(ctx, up, upstream.RetryUnsent)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for fx.receipts.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first request never arrived")
		}
		time.Sleep(time.Millisecond) // polling, not synchronisation
	}
	_, err := post(t.Context(), up, upstream.RetrySafe)
	var f *upstream.Failure
	if !errors.Is(err, upstream.ErrBulkheadFull) || !errors.As(err, &f) || f.Sent || f.RetryAfter <= 0 {
		t.Fatalf("second request: %v; want ErrBulkheadFull, not sent, with a Retry-After", err)
	}
	cancel()
	<-done
	got := up.Resilience.Stats()
	if diff := cmp.Diff(upstream.Stats{Breaker: "closed", BulkheadRejections: 1}, got); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

// TestBreakerByCount: with failure_executions the breaker counts failures
// among the last attempts, not over a period.
func TestBreakerByCount(t *testing.T) {
	fx := newFixture(t, answerOK)
	up := pool(t, fx.srv.URL, func(c *config.Upstream) {
		c.CircuitBreaker = config.CircuitBreaker{FailureThreshold: 2, FailureExecutions: 4, Delay: time.Minute, SuccessThreshold: 1}
	})
	for _, f := range []fault{answerOK, answerOK, answer500, answerOK, answer500} {
		fx.set(f)
		if _, err := post(t.Context(), up, upstream.RetryUnsent); err != nil {
			t.Fatal(err)
		}
	}
	if got := up.Resilience.Stats().Breaker; got != "open" {
		t.Errorf("2 failures among the last 4 attempts: breaker %s, want open", got)
	}
}

// TestPrincipalShare: one principal cannot hold more than its share of
// the bulkhead; another principal is still served meanwhile, and the
// share is given back when a request ends.
func TestPrincipalShare(t *testing.T) {
	fx := newFixture(t, hangForever)
	up := pool(t, fx.srv.URL, func(c *config.Upstream) { c.MaxConcurrent, c.MaxConcurrentPerPrincipal = 4, 2 })
	waitReceipts := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for fx.receipts.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d requests arrived, want %d", fx.receipts.Load(), n)
			}
			time.Sleep(time.Millisecond) // polling, not synchronisation
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	hang := func(id string) {
		wg.Go(func() { _, _ = post(upstream.WithPrincipal(ctx, id), up, upstream.RetryUnsent) })
	}
	hang("alice")
	hang("alice")
	waitReceipts(2)

	_, err := post(upstream.WithPrincipal(t.Context(), "alice"), up, upstream.RetrySafe)
	var f *upstream.Failure
	if !errors.Is(err, upstream.ErrBulkheadFull) || !errors.As(err, &f) || f.Sent || f.RetryAfter <= 0 {
		t.Fatalf("alice's third request: %v; want ErrBulkheadFull, not sent, with a Retry-After", err)
	}
	if got := fx.receipts.Load(); got != 2 {
		t.Errorf("the upstream received %d requests, want 2", got)
	}
	hang("bob") // inside the shared bulkhead: admitted
	waitReceipts(3)

	cancel()
	wg.Wait()
	fx.set(answerOK)
	for _, id := range []string{"alice", "alice", "bob"} {
		if _, err := post(upstream.WithPrincipal(t.Context(), id), up, upstream.RetrySafe); err != nil {
			t.Errorf("%s after the others ended: %v; want served (the share given back)", id, err)
		}
	}
	if got := up.Resilience.Stats().BulkheadRejections; got != 1 {
		t.Errorf("bulkhead rejections %d, want 1", got)
	}
}
