package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// attemptTransport is a route's way upstream. Every HTTP request to the
// upstream is one attempt and gets: a client span whose context goes
// upstream as traceparent (the gateway's span, never the client's raw
// header) and, for a JSON-RPC request, in params._meta; the attempt's
// metrics; and the upstream's status for /admin/upstreams. It ends when the answer's body is closed, so a
// streamed answer is measured to its end.
type attemptTransport struct {
	s     *Server
	name  string // the upstream's name
	next  http.RoundTripper
	stats *upstreamStats
}

// RoundTrip sends one attempt. The request is cloned, as a RoundTripper
// must not change the one it is given.
func (t *attemptTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	op := t.operation(req.Context())
	ctx, span := t.s.tracer.Start(req.Context(), op.spanName, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(op.attrs...))
	req = req.Clone(ctx)
	// Whatever trace context the client sent is replaced: the upstream's
	// parent is this attempt (with tracing off, the client's own valid
	// context passes through unchanged, re-encoded).
	req.Header.Del("Traceparent")
	req.Header.Del("Tracestate")
	traceContext.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if fwd, st := forwardOf(ctx), stateOf(ctx); fwd != nil && st != nil && st.msg != nil && st.msg.IsCall() {
		// The same context inside the message, for requests only: a
		// client's answer or notification is relayed as it was checked.
		if body, ok := withTraceMeta(ctx, fwd.body); ok {
			req.Body, req.ContentLength, req.GetBody = io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil
		}
	}
	run := &attemptRun{t: t, ctx: ctx, span: span, op: op, start: time.Now()}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		run.finish(0, err)
		return nil, err
	}
	var once sync.Once
	resp.Body = &endOnClose{ReadCloser: resp.Body, end: func() {
		once.Do(func() { run.finish(resp.StatusCode, nil) })
	}}
	return resp, nil
}

// attemptOp is what an attempt is about, read from the request's state.
type attemptOp struct {
	spanName string
	attrs    []attribute.KeyValue
	// labels of mcp_client_operation_duration_seconds; nil when the
	// attempt is not one MCP operation (a GET stream, a DELETE, a batch).
	method, tool, version string
	single                bool
}

func (t *attemptTransport) operation(ctx context.Context) attemptOp {
	op := attemptOp{spanName: "upstream " + t.name}
	st := stateOf(ctx)
	if st == nil || st.msg == nil || st.msg.Request() == nil {
		return op
	}
	method := st.msg.Method()
	op.spanName = operationName(method, st.target)
	op.attrs = append(operationAttributes(method, st.target, st.version), attribute.String("ctxgate.upstream", t.name))
	op.method, op.tool, op.version, op.single = methodLabel(method), st.toolLabel, st.version, true
	return op
}

// attemptRun is one attempt under way.
type attemptRun struct {
	t     *attemptTransport
	ctx   context.Context
	span  trace.Span
	op    attemptOp
	start time.Time
}

// finish records an ended attempt: span, metrics, upstream status.
func (a *attemptRun) finish(status int, err error) {
	t, span, op := a.t, a.span, a.op
	result, errType := attemptResult(a.ctx, status, err)
	t.s.metrics.upstreamAttempts.WithLabelValues(t.name, result).Inc()
	if op.single {
		t.s.metrics.clientOps.WithLabelValues(op.method, op.tool, t.name, errType, op.version).Observe(time.Since(a.start).Seconds())
	}
	t.stats.record(result, status, err)
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if errType != "" {
		span.SetAttributes(attribute.String("error.type", errType))
	}
	if result != "ok" {
		span.SetStatus(codes.Error, result)
	}
	span.End()
}

// attemptResult classifies an attempt: the result label of
// ctxgate_upstream_attempts_total and the OpenTelemetry error.type.
func attemptResult(ctx context.Context, status int, err error) (result, errType string) {
	var netErr net.Error
	switch {
	case err != nil && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return "canceled", "canceled"
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr) && netErr.Timeout()):
		return "timeout", "timeout"
	case err != nil:
		return "transport_error", "transport_error"
	case status >= 500 || status == http.StatusUnauthorized:
		// 401: the upstream refused the gateway's own credential.
		return "http_error", strconv.Itoa(status)
	case status >= 400:
		return "ok", strconv.Itoa(status)
	}
	return "ok", ""
}

// endOnClose calls end when the body is closed.
type endOnClose struct {
	io.ReadCloser
	end func()
}

func (b *endOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// upstreamStats is what /admin/upstreams shows of one upstream.
type upstreamStats struct {
	requests, errors atomic.Int64
	mu               sync.Mutex
	lastError        string
	lastErrorAt      time.Time
}

func (u *upstreamStats) record(result string, status int, err error) {
	u.requests.Add(1)
	if result == "ok" || result == "canceled" {
		return // a client that went away is not the upstream's failure
	}
	u.errors.Add(1)
	msg := result
	switch {
	case err != nil:
		msg = err.Error()
	case status != 0:
		msg = "HTTP " + strconv.Itoa(status) + " " + http.StatusText(status)
	}
	u.mu.Lock()
	u.lastError, u.lastErrorAt = msg, time.Now()
	u.mu.Unlock()
}
