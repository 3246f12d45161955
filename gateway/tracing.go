package gateway

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/policy"
)

// tracerName names the instrumentation scope of the gateway's spans.
const tracerName = "github.com/ctxgate/ctxgate/gateway"

// traceContext reads and writes W3C traceparent and tracestate. It is the
// gateway's own, not OpenTelemetry's global propagator, so nothing else in
// the process can change what goes upstream.
var traceContext propagation.TraceContext

// NewTracerProvider builds the OpenTelemetry SDK tracer provider for cfg:
// spans batched to cfg.Endpoint over OTLP/HTTP (the exporter also honours
// the standard OTEL_EXPORTER_OTLP_HEADERS and friends, e.g. for a
// collector's credentials), new traces sampled at cfg.SampleRatio, and a
// request that arrives sampled always recorded. It returns nil when tracing
// is disabled. The caller shuts the provider down after the gateway has
// stopped, which flushes the last spans.
func NewTracerProvider(cfg config.Tracing, version string) (*sdktrace.TracerProvider, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	// The URL's scheme decides TLS: Validate allows http only with
	// tracing.insecure. WithInsecure would downgrade an https URL.
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(cfg.Endpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing.endpoint: %w", err)
	}
	ratio := config.DefaultSampleRatio
	if cfg.SampleRatio != nil {
		ratio = *cfg.SampleRatio
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(
			attribute.String("service.name", "ctxgate"),
			attribute.String("service.version", version),
		)),
	), nil
}

// startRequestSpan starts the span of one request. An incoming traceparent
// continues its trace (the caller's sampling decision included); a
// malformed one is ignored and a new trace starts.
func (s *Server) startRequestSpan(r *http.Request) (context.Context, trace.Span) {
	ctx := traceContext.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	return s.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", r.URL.Path),
		))
}

// endRequestSpan names the request span after what it turned out to be
// ("tools/call get_weather", as the MCP semantic conventions name spans)
// and records the outcome.
func (s *Server) endRequestSpan(span trace.Span, st *requestState, status int) {
	defer span.End()
	if !span.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{
		attribute.Int("http.response.status_code", status),
		attribute.String("ctxgate.request_id", st.id),
	}
	if st.upstream != "" {
		attrs = append(attrs, attribute.String("ctxgate.route", st.upstream))
	}
	if st.decision != "" {
		attrs = append(attrs, attribute.String("ctxgate.decision", st.decision))
	}
	if st.msg != nil && st.msg.Request() != nil {
		span.SetName(operationName(st.msg.Method(), st.target))
		attrs = append(attrs, operationAttributes(st.msg.Method(), st.target, st.version)...)
	}
	if et := st.errorType(status); et != "" {
		attrs = append(attrs, attribute.String("error.type", et))
	}
	if st.err != nil && st.err.Status >= 500 || st.err == nil && status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.SetAttributes(attrs...)
}

// operationName is an MCP span name: "{method} {target}" when the message
// names a tool, prompt or resource, else the method alone.
func operationName(method string, t target) string {
	if t.name == "" {
		return method
	}
	return method + " " + clip(t.name, 128)
}

// operationAttributes are the MCP semantic conventions' span attributes.
func operationAttributes(method string, t target, version string) []attribute.KeyValue {
	attrs := []attribute.KeyValue{attribute.String("mcp.method.name", method)}
	if version != "" {
		attrs = append(attrs, attribute.String("mcp.protocol.version", version))
	}
	switch t.kind {
	case "tool":
		attrs = append(attrs, attribute.String("gen_ai.tool.name", clip(t.name, 256)))
	case "prompt":
		attrs = append(attrs, attribute.String("gen_ai.prompt.name", clip(t.name, 256)))
	case "resource":
		attrs = append(attrs, attribute.String("mcp.resource.uri", clip(t.name, 1024)))
	}
	return attrs
}

// decide asks the policy, inside a span and timed for the metrics.
func (s *Server) decide(ctx context.Context, phase string, in *policy.Input) policy.Decision {
	ctx, span := s.tracer.Start(ctx, "policy.decide", trace.WithAttributes(attribute.String("ctxgate.policy.phase", phase)))
	defer span.End()
	start := time.Now()
	d := s.policy.Decide(ctx, in)
	s.metrics.observeDecision(phase, d, time.Since(start))
	s.decisions.add(s.now(), in, d)
	if span.IsRecording() {
		span.SetAttributes(
			attribute.Bool("ctxgate.policy.allow", d.Allow),
			attribute.String("ctxgate.policy.revision", d.Revision),
			attribute.String("ctxgate.policy.decision_id", d.ID),
		)
		if d.Failure != "" {
			span.SetStatus(codes.Error, "policy "+d.Failure)
		}
	}
	return d
}

// clip bounds a client-supplied string before it is logged or recorded.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
