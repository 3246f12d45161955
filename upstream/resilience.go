package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/budget"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/ctxgate/ctxgate/config"
)

// Kinds of upstream failure. A *Failure matches exactly one of the first
// four with errors.Is, and ErrOutcomeUnknown too when the request may have
// reached the upstream; callers (the error writer, a stale-cache fallback)
// decide on these, never on message text.
var (
	// ErrBreakerOpen: the circuit breaker is open; nothing was sent.
	ErrBreakerOpen = errors.New("circuit breaker open")
	// ErrBulkheadFull: max_concurrent requests are in flight; nothing was
	// sent.
	ErrBulkheadFull = errors.New("upstream concurrency limit reached")
	// ErrTimeout: an attempt or the overall deadline expired.
	ErrTimeout = errors.New("upstream timed out")
	// ErrTransport: the upstream could not be reached or cut the exchange
	// before answering (including a retry the budget refused).
	ErrTransport = errors.New("upstream transport error")
	// ErrOutcomeUnknown: the request was (or may have been) written to the
	// upstream before the failure, so it may have been executed.
	ErrOutcomeUnknown = errors.New("request may have reached the upstream")
)

// Failure is a request that got no usable answer from its upstream.
type Failure struct {
	// Upstream is the upstream's name.
	Upstream string
	// Kind is ErrBreakerOpen, ErrBulkheadFull, ErrTimeout or ErrTransport.
	Kind error
	// Sent reports that some attempt obtained a connection to the
	// upstream, so the request may have reached it. False is proof that
	// it did not.
	Sent bool
	// RetryAfter, when positive, is when trying again makes sense (the
	// breaker's remaining delay).
	RetryAfter time.Duration
	// Err is the underlying cause.
	Err error
}

// Error names the upstream, the kind and the cause (for logs only).
func (f *Failure) Error() string {
	return fmt.Sprintf("upstream %s: %v: %v", f.Upstream, f.Kind, f.Err)
}

// Unwrap exposes the kind and the cause to errors.Is and errors.As.
func (f *Failure) Unwrap() []error { return []error{f.Kind, f.Err} }

// Is matches ErrOutcomeUnknown when the request may have been received.
func (f *Failure) Is(target error) bool { return target == ErrOutcomeUnknown && f.Sent }

// Retry says when a request may be repeated after a failed attempt.
type Retry int

const (
	// RetryUnsent, the default, repeats a request only when it provably
	// never reached the upstream (no connection was obtained).
	RetryUnsent Retry = iota
	// RetrySafe also repeats after timeouts, transport errors and 502, 503,
	// 504 answers: for requests that are safe to repeat (reads, lists).
	RetrySafe
	// RetryNever never repeats (a client's answer to a server request).
	RetryNever
	// RetryStream opens a long-lived stream (a GET stream, a
	// subscriptions/listen): retried as RetrySafe, and outside the
	// bulkhead, since a stream is held for as long as its client keeps it
	// and so must not take a slot max_concurrent keeps for requests. The
	// gateway bounds streams itself (server.max_streams).
	RetryStream
)

type retryKey struct{}

// WithRetry marks a request's context with how it may be retried; without
// it, RetryUnsent applies.
func WithRetry(ctx context.Context, r Retry) context.Context {
	return context.WithValue(ctx, retryKey{}, r)
}

// RetryOf is how the request with this context may be retried.
func RetryOf(ctx context.Context) Retry {
	r, _ := ctx.Value(retryKey{}).(Retry)
	return r
}

type principalKey struct{}

// WithPrincipal marks a request's context with the verified principal it
// is sent for, whose share of the upstream's bulkhead it then uses
// (max_concurrent_per_principal). Without it, only the shared bulkhead
// applies (the gateway's own requests).
func WithPrincipal(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, principalKey{}, id)
}

// errPrincipalShare is the cause of a request refused because its
// principal already had its share in flight.
var errPrincipalShare = errors.New("the principal's share of max_concurrent is in flight (max_concurrent_per_principal)")

// Stats is a snapshot of one upstream's resilience state.
type Stats struct {
	// Breaker is "closed", "open" or "half_open". An open breaker becomes
	// half-open when the next request arrives after its delay.
	Breaker string
	// Retries counts attempts that repeated a failed one.
	Retries uint64
	// BulkheadRejections counts requests refused because max_concurrent
	// were in flight, or their principal's share of it.
	BulkheadRejections uint64
}

// BreakerStates are the values of Stats.Breaker.
var BreakerStates = []string{"closed", "open", "half_open"}

// Resilience is one upstream's failsafe-go executor: an overall deadline
// around a bulkhead, retries (with a budget) around a circuit breaker,
// around a per-attempt timeout; in front of it, the share of the bulkhead
// one principal may hold. Its state is shared by every request to the
// upstream.
type Resilience struct {
	name      string
	breaker   circuitbreaker.CircuitBreaker[*http.Response]
	executors [4]failsafe.Executor[*http.Response] // by Retry
	retries   atomic.Uint64
	rejected  atomic.Uint64
	shares    *shares // nil: no per-principal share
	// openTimeout bounds the time to a stream's headers, every attempt
	// included (upstreams[].timeout).
	openTimeout time.Duration
}

func newResilience(c config.Upstream) *Resilience {
	r := &Resilience{name: c.Name}
	if c.MaxConcurrentPerPrincipal > 0 && c.MaxConcurrentPerPrincipal < c.MaxConcurrent {
		r.shares = &shares{max: c.MaxConcurrentPerPrincipal, inFlight: map[string]int{}}
	}
	cb := c.CircuitBreaker
	breaker := circuitbreaker.NewBuilder[*http.Response]().
		HandleIf(breakerFailure(cb.Count429)).
		WithDelay(cb.Delay).
		WithSuccessThreshold(uint(cb.SuccessThreshold))
	if cb.FailureExecutions > 0 {
		breaker.WithFailureThresholdRatio(uint(cb.FailureThreshold), uint(cb.FailureExecutions))
	} else {
		breaker.WithFailureThresholdPeriod(uint(cb.FailureThreshold), cb.FailureWindow)
	}
	r.breaker = breaker.Build()
	// No wait: a full upstream is answered at once, never queued without
	// bound behind it.
	bh := bulkhead.NewBuilder[*http.Response](uint(c.MaxConcurrent)).
		OnFull(func(failsafe.ExecutionEvent[*http.Response]) { r.rejected.Add(1) }).
		Build()
	retryBudget := budget.NewBuilder().
		WithMaxRate(float64(c.Retry.BudgetPercent) / 100).
		WithMinConcurrency(uint(c.Retry.BudgetMin)).
		Build()
	deadline := timeout.New[*http.Response](c.Deadline)
	attempt := timeout.New[*http.Response](c.Timeout)
	r.executors[RetryUnsent] = failsafe.With(deadline, bh, r.retryPolicy(c.Retry, retryBudget, retryUnsent), r.breaker, attempt)
	r.executors[RetrySafe] = failsafe.With(deadline, bh, r.retryPolicy(c.Retry, retryBudget, retrySafe), r.breaker, attempt)
	r.executors[RetryNever] = failsafe.With(deadline, bh, r.breaker, attempt)
	// No timeout policy for a stream: failsafe-go's keeps two goroutines
	// per request until its body is closed (its merged contexts), which for
	// a stream is its whole life. The time to a stream's headers is bounded
	// by openStream instead.
	r.executors[RetryStream] = failsafe.With(r.retryPolicy(c.Retry, retryBudget, retrySafe), r.breaker)
	r.openTimeout = c.Timeout
	return r
}

func (r *Resilience) retryPolicy(c config.Retry, b budget.Budget, retryable func(*http.Response, error) bool) retrypolicy.RetryPolicy[*http.Response] {
	return retrypolicy.NewBuilder[*http.Response]().
		HandleIf(retryable).
		WithMaxAttempts(c.MaxAttempts).
		WithBackoff(c.Backoff, c.MaxBackoff).
		WithJitterFactor(0.5).
		WithBudget(b).
		ReturnLastFailure().
		OnRetryScheduled(func(e failsafe.ExecutionScheduledEvent[*http.Response]) {
			// The failed answer is dropped for the next attempt: close it, or
			// its connection and its attempt's span would stay open.
			if resp := e.LastResult(); resp != nil {
				_ = resp.Body.Close()
			}
		}).
		OnRetry(func(failsafe.ExecutionEvent[*http.Response]) { r.retries.Add(1) }).
		Build()
}

// breakerFailure is what the breaker counts: transport errors, timeouts,
// 5xx (and 429 when configured). A caller that went away is not the
// upstream's failure, and 4xx (including a session 404) is an answer.
// failsafe-go records anything that is not a failure as a success.
func breakerFailure(count429 bool) func(*http.Response, error) bool {
	return func(resp *http.Response, err error) bool {
		if err != nil {
			// No credential for this caller is not the upstream failing;
			// nor are the gateway's own sessions with it being full.
			return !errors.Is(err, context.Canceled) && !errors.Is(err, ErrCredential) && !errors.Is(err, ErrSessionsFull)
		}
		return resp.StatusCode >= 500 || count429 && resp.StatusCode == http.StatusTooManyRequests
	}
}

// retrySafe repeats what a safe request may be repeated after.
func retrySafe(resp *http.Response, err error) bool {
	if err != nil {
		// An open breaker fails fast: retrying it would only burn budget.
		// Nor would retrying a refused credential: it is refused again.
		// Nor full sessions: they are full again at once; nor a start a
		// crash-looping stdio command's backoff refused.
		return !errors.Is(err, context.Canceled) && !errors.Is(err, circuitbreaker.ErrOpen) && !errors.Is(err, ErrCredential) && !errors.Is(err, ErrSessionsFull) && !errors.Is(err, ErrRestartBackoff)
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryUnsent repeats only attempts that provably never reached the
// upstream.
func retryUnsent(_ *http.Response, err error) bool {
	var ns *notSent
	return errors.As(err, &ns) && !errors.Is(err, context.Canceled) && !errors.Is(err, ErrCredential) && !errors.Is(err, ErrSessionsFull) && !errors.Is(err, ErrRestartBackoff)
}

// notSent marks an attempt's error when no connection was ever obtained.
type notSent struct{ err error }

func (e *notSent) Error() string { return e.err.Error() }

// Unwrap exposes the attempt's own error.
func (e *notSent) Unwrap() error { return e.err }

// RoundTripper sends each request through the executor to next, which
// carries one attempt.
func (r *Resilience) RoundTripper(next http.RoundTripper) http.RoundTripper {
	return &resilientTransport{r: r, next: next}
}

// Stats returns the current breaker state and counters.
func (r *Resilience) Stats() Stats {
	state := "closed"
	switch r.breaker.State() {
	case circuitbreaker.OpenState:
		state = "open"
	case circuitbreaker.HalfOpenState:
		state = "half_open"
	}
	return Stats{Breaker: state, Retries: r.retries.Load(), BulkheadRejections: r.rejected.Load()}
}

// resilientTransport is Resilience.RoundTripper's result.
type resilientTransport struct {
	r    *Resilience
	next http.RoundTripper
}

// RoundTrip runs one request: attempts through the policies, failures
// returned as *Failure.
func (t *resilientTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// The principal's share first: a caller over it must not take a slot
	// of the shared bulkhead from the others, even for a moment. A stream
	// takes no bulkhead slot, so no share of one either.
	if id, ok := req.Context().Value(principalKey{}).(string); ok && t.r.shares != nil && RetryOf(req.Context()) != RetryStream {
		if !t.r.shares.acquire(id) {
			t.r.rejected.Add(1)
			return nil, &Failure{Upstream: t.r.name, Kind: ErrBulkheadFull, RetryAfter: time.Second, Err: errPrincipalShare}
		}
		defer t.r.shares.release(id)
	}
	var sent atomic.Bool
	attempt := roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		var connected atomic.Bool
		trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { connected.Store(true); sent.Store(true) }}
		resp, err := t.next.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
		if err != nil && !connected.Load() {
			// No connection, so not a byte reached the upstream.
			return nil, &notSent{err}
		}
		return resp, err
	})
	rt := failsafehttp.NewRoundTripperWithExecutor(attempt, t.r.executors[RetryOf(req.Context())])
	if RetryOf(req.Context()) == RetryStream {
		return t.openStream(rt, req, &sent)
	}
	resp, err := rt.RoundTrip(req)
	if err == nil {
		return resp, nil
	}
	if req.Context().Err() != nil {
		return nil, err // the caller went away: not an upstream failure
	}
	return nil, t.r.failure(err, sent.Load())
}

// errOpenTimeout is the cause of a stream whose headers did not arrive
// within openTimeout.
var errOpenTimeout = errors.New("stream open timed out")

// openStream opens a stream through rt with its headers due within
// openTimeout: a timer, stopped when they arrive, cancels a context that
// the body's Close ends, so an open stream costs no goroutine here.
func (t *resilientTransport) openStream(rt http.RoundTripper, req *http.Request, sent *atomic.Bool) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	var timer *time.Timer
	if t.r.openTimeout > 0 {
		timer = time.AfterFunc(t.r.openTimeout, func() { cancel(errOpenTimeout) })
	}
	resp, err := rt.RoundTrip(req.WithContext(ctx))
	if timer != nil && !timer.Stop() && err == nil {
		// The headers came as the timer fired: the stream is cancelled.
		resp.Body.Close()
		resp, err = nil, errOpenTimeout
	}
	if err == nil {
		resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: func() { cancel(nil) }}
		return resp, nil
	}
	cause := context.Cause(ctx)
	cancel(nil)
	switch {
	case errors.Is(cause, errOpenTimeout):
		return nil, &Failure{Upstream: t.r.name, Kind: ErrTimeout, Sent: sent.Load(), Err: fmt.Errorf("%w after %v: %w", errOpenTimeout, t.r.openTimeout, err)}
	case req.Context().Err() != nil:
		return nil, err // the caller went away: not an upstream failure
	}
	return nil, t.r.failure(err, sent.Load())
}

// cancelOnClose ends a stream's context when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

func (r *Resilience) failure(err error, sent bool) *Failure {
	f := &Failure{Upstream: r.name, Kind: ErrTransport, Sent: sent, Err: err}
	var netErr net.Error
	switch {
	case errors.Is(err, circuitbreaker.ErrOpen):
		f.Kind, f.RetryAfter = ErrBreakerOpen, r.breaker.RemainingDelay()
	case errors.Is(err, bulkhead.ErrFull):
		f.Kind, f.RetryAfter = ErrBulkheadFull, time.Second
	case errors.Is(err, timeout.ErrExceeded), errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		f.Kind = ErrTimeout
	}
	return f
}

// shares counts each principal's requests in flight to one upstream. An
// entry lives only while its principal has requests in flight, so memory
// is bounded by max_concurrent, not by the number of principals seen.
// failsafe-go's bulkhead has no keyed form, hence the counter.
type shares struct {
	max      int
	mu       sync.Mutex
	inFlight map[string]int
}

func (s *shares) acquire(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight[id] >= s.max {
		return false
	}
	s.inFlight[id]++
	return true
}

func (s *shares) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inFlight[id] <= 1 {
		delete(s.inFlight, id)
		return
	}
	s.inFlight[id]--
}

// roundTripperFunc is a function as an http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls f.
func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
