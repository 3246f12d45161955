package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/shared"
	"github.com/ctxgate/ctxgate/upstream"
)

// routeResilience is what a route adds around its upstream's executor:
// which calls may be retried, stream bounds, rate limits and the
// idempotency store.
type routeResilience struct {
	idempotentTools map[string]bool
	streams         config.Streams
	limiter         limiter // nil: no rate limits
	idem            *idempotencyStore
	sharedIdem      *sharedIdempotency // nil: the ledger is idem, in memory
}

func newRouteResilience(c config.Upstream, now func() time.Time, redis *shared.Client) routeResilience {
	tools := map[string]bool{}
	for _, t := range c.IdempotentTools {
		tools[t] = true
	}
	return routeResilience{
		idempotentTools: tools,
		streams:         c.Streams,
		limiter:         newLimiter(c.Name, c.RateLimit, redis, now),
		idem:            newIdempotencyStore(c.Idempotency.Window, c.Idempotency.MaxKeys, now),
		sharedIdem:      newSharedIdempotency(c, redis),
	}
}

// safeMethods are requests that change nothing upstream, so repeating one
// after a failed attempt is harmless.
var safeMethods = map[string]bool{
	"tools/list": true, "prompts/list": true, "resources/list": true, "resources/templates/list": true,
	"resources/read": true, "prompts/get": true, "server/discover": true, "ping": true,
	"skills/list": true, "skills/get": true, "resources/directory/read": true,
}

// retryClass says how the request may be retried. tools/call is retried
// after it may have been received only for tools the operator marked
// idempotent; a client's answer to a server request (sampling, elicitation)
// never, since the server may already have acted on it.
func (rt *route) retryClass(fwd *forward) upstream.Retry {
	switch {
	case fwd.stream:
		// Opening a stream runs nothing; and it is bounded by
		// server.max_streams, not the bulkhead's request slots.
		return upstream.RetryStream
	case fwd.body == nil || fwd.msg == nil:
		return upstream.RetryUnsent // DELETE, batches
	case fwd.msg.Request() == nil:
		return upstream.RetryNever
	case safeMethods[fwd.msg.Method()]:
		return upstream.RetrySafe
	case fwd.msg.Method() == "tools/call" && rt.res.idempotentTools[fwd.target.name]:
		return upstream.RetrySafe
	}
	return upstream.RetryUnsent
}

// rateLimit takes the request's tokens: per principal for every request
// (not a client's answers to the server), per tool for tools/call.
func (s *Server) rateLimit(ctx context.Context, rt *route, fwd *forward) error {
	l := rt.res.limiter
	if l == nil || fwd.body == nil || (fwd.msg != nil && fwd.msg.Request() == nil) {
		return nil
	}
	tool := ""
	if fwd.msg != nil && fwd.msg.Method() == "tools/call" {
		tool = fwd.target.name
	}
	ok, wait, err := l.take(ctx, fwd.principal.ID, tool)
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	s.metrics.rateLimited.WithLabelValues(rt.upstream.Name).Inc()
	return rateLimitedError(fwd.era, wait)
}

// rateLimitedError is the answer over a limit: 429 with Retry-After in
// every era; the modern era's error is the draft rate-limited shape
// (-32023, data.retryAfterMs) so a client of that revision can back off
// without reading headers, the legacy eras keep ctxgate's -31015.
func rateLimitedError(era string, wait time.Duration) *Error {
	e := newError(http.StatusTooManyRequests, CodeRateLimited, "rate limit exceeded; retry later", nil)
	if era == eraModern {
		e.Code = CodeRateLimitedModern
		e.Data, _ = json.Marshal(struct {
			RetryAfterMs int64 `json:"retryAfterMs"`
		}{max(1, wait.Milliseconds())})
	}
	setRetryAfter(e, wait)
	return e
}

// forwardOnce runs the first call with a principal's key and records its
// answer, or waits for it and replays it: on Redis when the ledger is
// shared (idemshared.go), else in this replica's memory.
func (s *Server) forwardOnce(w http.ResponseWriter, r *http.Request, rt *route, principal, key string, st *requestState) {
	if rt.res.sharedIdem != nil {
		s.forwardOnceShared(w, r, rt, principal, key, st)
		return
	}
	// Per principal: another principal's key is another key.
	e, first, gwErr := rt.res.idem.begin(principal+"\x00"+key, callDigest(st.msg.Request()))
	if gwErr != nil {
		writeError(w, r, gwErr)
		return
	}
	if !first {
		// Waiting is not work: the slot goes back meanwhile, so duplicates
		// cannot fill the admission limit while the first call runs.
		t := ticketOf(r.Context())
		t.release()
		select {
		case <-e.done:
			t.resume()
			s.replay(w, r, &e.idemAnswer, st)
		case <-r.Context().Done():
			writeError(w, r, fmt.Errorf("client went away: %w", context.Canceled))
		}
		return
	}
	ran := true
	defer func() {
		// Deferred, so duplicates are woken even if the proxy panics.
		e.idemAnswer = e.idemAnswer.orUnrecorded()
		rt.res.idem.finish(e, ran)
	}()
	e.idemAnswer, ran = s.runFirst(w, r, rt, st)
}

// runFirst runs the first call with a key through the route's proxy and
// returns the answer to record, and whether the call may have run (a call
// that provably did not run is forgotten, so that a retry runs it).
func (s *Server) runFirst(w http.ResponseWriter, r *http.Request, rt *route, st *requestState) (a idemAnswer, ran bool) {
	rec := &answerRecorder{ResponseWriter: w}
	rt.proxy.ServeHTTP(rec, r)
	switch {
	case r.Context().Err() != nil:
		// The client went away mid-call: the call may have run.
		return idemAnswer{gwErr: outcomeUnknown(http.StatusBadGateway, context.Canceled)}, true
	case st.err != nil:
		return idemAnswer{gwErr: st.err}, sent(st.err)
	case rec.status >= 400 && rec.status < 500:
		// Refused by the upstream (an ended session, a bad request): it
		// did not run, so the client may retry with the same key.
		return idemAnswer{status: rec.status, contentType: rec.Header().Get("Content-Type"), body: rec.buf.Bytes()}, false
	}
	a = idemAnswer{status: rec.status, contentType: "application/json", body: rec.answer()}
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.orUnrecorded(), true
}

// orUnrecorded is a, or when a holds no answer (the proxy panicked, the
// answer was over the bound or had no response), the error that says so.
func (a idemAnswer) orUnrecorded() idemAnswer {
	if a.gwErr == nil && a.body == nil {
		return idemAnswer{gwErr: outcomeUnknown(http.StatusBadGateway, errors.New("the first call's answer was not recorded"))}
	}
	return a
}

// replay answers a duplicate with the first call's answer, under the
// duplicate's own id.
func (s *Server) replay(w http.ResponseWriter, r *http.Request, e *idemAnswer, st *requestState) {
	if e.gwErr != nil {
		writeError(w, r, e.gwErr)
		return
	}
	body := e.body
	if b, err := withID(e.body, st.msg.ID()); err == nil {
		body = b
	}
	h := w.Header()
	if e.contentType != "" {
		h.Set("Content-Type", e.contentType)
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Idempotent-Replayed", "true")
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}

// sent reports whether a failed request may have reached the upstream.
func sent(err error) bool {
	var f *upstream.Failure
	if errors.As(err, &f) {
		return f.Sent
	}
	return true // unsure is sent: the key must not let the call run twice
}

// answerRecorder passes a response through and keeps a copy (bounded) to
// find the final JSON-RPC response in it.
type answerRecorder struct {
	http.ResponseWriter
	status int
	buf    bytes.Buffer
	over   bool
}

func (a *answerRecorder) WriteHeader(code int) {
	if a.status == 0 {
		a.status = code
	}
	a.ResponseWriter.WriteHeader(code)
}

func (a *answerRecorder) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if !a.over {
		if a.buf.Len()+len(p) > maxFilteredResponseBytes {
			a.over = true
			a.buf = bytes.Buffer{}
		} else {
			a.buf.Write(p)
		}
	}
	return a.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (a *answerRecorder) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// answer is the final JSON-RPC response the client got: the JSON body, or
// the last response among the SSE events; nil if there was none.
func (a *answerRecorder) answer() []byte {
	if a.over || a.buf.Len() == 0 {
		return nil
	}
	body := bytes.Clone(a.buf.Bytes())
	if !isEventStream(a.Header()) {
		return body
	}
	var last []byte
	for _, data := range messagePayloads(body, true) {
		if msg, err := decodeRPC(data); err == nil {
			if _, ok := msg.(*jsonrpc.Response); ok {
				last = data
			}
		}
	}
	return last
}

// upstreamError is what the client is told when the upstream could not
// answer: each failure its own status and code (README "Resilience").
func upstreamError(ctx context.Context, err error) *Error {
	if errors.Is(err, errMemberSessionEnded) {
		return memberSessionEnded(err)
	}
	if errors.Is(err, upstream.ErrCredential) {
		// Nothing was sent: the caller has no credential for it.
		return credentialError(err, "")
	}
	if errors.Is(err, upstream.ErrProcessesFull) {
		e := newError(http.StatusServiceUnavailable, CodeUpstreamSessionsFull, "upstream busy: its max_processes processes are running; nothing was sent, retry later", err)
		setRetryAfter(e, time.Second)
		return e
	}
	if backoff, ok := errors.AsType[*upstream.RestartBackoff](err); ok {
		e := newError(http.StatusServiceUnavailable, CodeUpstreamRestartBackoff, "upstream failing: its processes crashed one after another, so restarts are backed off; nothing was started or sent, retry later", err)
		setRetryAfter(e, backoff.Wait)
		return e
	}
	if errors.Is(err, upstream.ErrSessionsFull) {
		e := newError(http.StatusServiceUnavailable, CodeUpstreamSessionsFull, "upstream sessions full: the gateway holds its maximum of sessions with this upstream; nothing was sent, retry later", err)
		setRetryAfter(e, time.Second)
		return e
	}
	var f *upstream.Failure
	if !errors.As(err, &f) {
		// Failures after the executor: an unusable answer, a refused
		// credential.
		var netErr net.Error
		if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout() {
			return newError(http.StatusGatewayTimeout, CodeUpstreamTimeout, "upstream timed out", err)
		}
		return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "upstream unavailable", err)
	}
	timedOut := errors.Is(err, upstream.ErrTimeout)
	fwd := forwardOf(ctx)
	switch {
	case errors.Is(err, upstream.ErrBreakerOpen):
		e := newError(http.StatusServiceUnavailable, CodeBreakerOpen, "upstream unavailable: circuit breaker open; nothing was sent, retry later", err)
		setRetryAfter(e, f.RetryAfter)
		return e
	case errors.Is(err, upstream.ErrBulkheadFull):
		e := newError(http.StatusServiceUnavailable, CodeOverloaded, "upstream busy: too many requests in flight; nothing was sent, retry later", err)
		setRetryAfter(e, f.RetryAfter)
		return e
	case errors.Is(err, upstream.ErrOutcomeUnknown) && fwd != nil && fwd.body != nil && !repeatable(upstream.RetryOf(ctx)):
		// Never retried silently: the client decides, knowing it may have run.
		status := http.StatusBadGateway
		if timedOut {
			status = http.StatusGatewayTimeout
		}
		return outcomeUnknown(status, err)
	case timedOut:
		return newError(http.StatusGatewayTimeout, CodeUpstreamTimeout, "upstream timed out", err)
	}
	return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "upstream unavailable", err)
}

// repeatable: a request of this class runs nothing upstream that a
// repeat would run twice.
func repeatable(r upstream.Retry) bool {
	return r == upstream.RetrySafe || r == upstream.RetryStream
}

func outcomeUnknown(status int, cause error) *Error {
	return newError(status, CodeOutcomeUnknown, "upstream failed after the request was sent: it may or may not have been executed; it was not retried", cause)
}

// setRetryAfter adds Retry-After in whole seconds, at least 1.
func setRetryAfter(e *Error, d time.Duration) {
	secs := max(1, int(math.Ceil(d.Seconds())))
	if e.Header == nil {
		e.Header = http.Header{}
	}
	e.Header.Set("Retry-After", strconv.Itoa(secs))
}

// resilienceCollector reads every upstream's breaker state and counters at
// scrape time, so the upstream package stays free of Prometheus.
type resilienceCollector struct{ pool *upstream.Pool }

var (
	breakerStateDesc = prometheus.NewDesc("ctxgate_circuit_breaker_state",
		"Circuit breaker state per upstream: 1 for the current state (closed, open, half_open), 0 for the others.",
		[]string{"upstream", "state"}, nil)
	retriesDesc = prometheus.NewDesc("ctxgate_upstream_retries_total",
		"Attempts that repeated a failed upstream attempt.", []string{"upstream"}, nil)
	bulkheadDesc = prometheus.NewDesc("ctxgate_bulkhead_rejections_total",
		"Requests refused at once because max_concurrent requests were in flight to the upstream.", []string{"upstream"}, nil)
)

func (c resilienceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- breakerStateDesc
	ch <- retriesDesc
	ch <- bulkheadDesc
}

func (c resilienceCollector) Collect(ch chan<- prometheus.Metric) {
	for _, up := range c.pool.All() {
		st := up.Resilience.Stats()
		for _, state := range upstream.BreakerStates {
			v := 0.0
			if state == st.Breaker {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue, v, up.Name, state)
		}
		ch <- prometheus.MustNewConstMetric(retriesDesc, prometheus.CounterValue, float64(st.Retries), up.Name)
		ch <- prometheus.MustNewConstMetric(bulkheadDesc, prometheus.CounterValue, float64(st.BulkheadRejections), up.Name)
	}
}
