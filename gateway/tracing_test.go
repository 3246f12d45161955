package gateway_test

import (
	"net/http"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Incoming W3C trace context of the tests: a caller's sampled span.
const (
	callerTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerSpanID  = "00f067aa0ba902b7"
	callerParent  = "00-" + callerTraceID + "-" + callerSpanID + "-01"
)

// spanNode is one recorded span as the test compares it: its name and
// kind, and its parent's name ("caller" for the remote parent, "" for a
// root).
type spanNode struct {
	Name, Kind, Parent string
}

// spanTree returns the spans of one trace, sorted, with parents named.
func spanTree(spans []sdktrace.ReadOnlySpan, traceID trace.TraceID) []spanNode {
	names := map[trace.SpanID]string{}
	for _, s := range spans {
		names[s.SpanContext().SpanID()] = s.Name()
	}
	var out []spanNode
	for _, s := range spans {
		if s.SpanContext().TraceID() != traceID {
			continue
		}
		parent := ""
		switch p := s.Parent(); {
		case p.IsRemote():
			parent = "caller"
		case p.IsValid():
			parent = names[p.SpanID()]
		}
		out = append(out, spanNode{Name: s.Name(), Kind: s.SpanKind().String(), Parent: parent})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// spanNamed finds the recorded span of a trace with the given name and kind.
func spanNamed(spans []sdktrace.ReadOnlySpan, traceID trace.TraceID, name string, kind trace.SpanKind) sdktrace.ReadOnlySpan {
	for _, s := range spans {
		if s.SpanContext().TraceID() == traceID && s.Name() == name && s.SpanKind() == kind {
			return s
		}
	}
	return nil
}

func TestTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	g := startObsGateway(t, obsOptions{tracerProvider: tp})
	c := &obsClient{g: g}
	c.initialize(t)
	callerTrace, _ := trace.TraceIDFromHex(callerTraceID)
	callerSpan, _ := trace.SpanIDFromHex(callerSpanID)
	wantTree := []spanNode{
		{Name: "authenticate", Kind: "internal", Parent: "tools/call echo"},
		{Name: "policy.decide", Kind: "internal", Parent: "tools/call echo"},
		{Name: "tools/call echo", Kind: "client", Parent: "tools/call echo"},
		{Name: "tools/call echo", Kind: "server", Parent: "caller"},
	}

	t.Run("an incoming traceparent continues the trace", func(t *testing.T) {
		c.header = http.Header{"Traceparent": {callerParent}, "Tracestate": {"vendor=opaque"}}
		defer func() { c.header = nil }()
		if resp, body := c.post(t, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("tools/call: %s %s", resp.Status, body)
		}
		sent := g.up.lastHeader()
		var spans []sdktrace.ReadOnlySpan
		waitUntil(t, "the request span to end", func() bool {
			spans = rec.Ended()
			return spanNamed(spans, callerTrace, "tools/call echo", trace.SpanKindServer) != nil
		})
		if diff := cmp.Diff(wantTree, spanTree(spans, callerTrace)); diff != "" {
			t.Errorf("span tree (-want +got):\n%s", diff)
		}
		server := spanNamed(spans, callerTrace, "tools/call echo", trace.SpanKindServer)
		if server.Parent().SpanID() != callerSpan {
			t.Errorf("request span's parent = %s, want the caller's span %s", server.Parent().SpanID(), callerSpanID)
		}
		attempt := spanNamed(spans, callerTrace, "tools/call echo", trace.SpanKindClient)
		// The upstream's parent is the gateway's attempt span, not the
		// caller's span: the client's raw header was replaced.
		want := "00-" + callerTraceID + "-" + attempt.SpanContext().SpanID().String() + "-01"
		if got := sent.Get("Traceparent"); got != want {
			t.Errorf("upstream traceparent = %q, want %q", got, want)
		}
		if got := sent.Get("Tracestate"); got != "vendor=opaque" {
			t.Errorf("upstream tracestate = %q, want the caller's vendor=opaque", got)
		}
		// The same context inside the message, the rest of it unchanged.
		wantBody := `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","_meta":{"traceparent":"` + want + `","tracestate":"vendor=opaque"}}}`
		if diff := cmp.Diff(wantBody, g.up.lastBody()); diff != "" {
			t.Errorf("upstream body (-want +got):\n%s", diff)
		}
	})

	t.Run("without a traceparent a new trace starts", func(t *testing.T) {
		if resp, body := c.post(t, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo"}}`); resp.StatusCode != http.StatusOK {
			t.Fatalf("tools/call: %s %s", resp.Status, body)
		}
		sent := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(t.Context(), propagation.HeaderCarrier(g.up.lastHeader())))
		if !sent.IsValid() {
			t.Fatalf("upstream traceparent %q is not valid", g.up.lastHeader().Get("Traceparent"))
		}
		var spans []sdktrace.ReadOnlySpan
		waitUntil(t, "the request span to end", func() bool {
			spans = rec.Ended()
			return spanNamed(spans, sent.TraceID(), "tools/call echo", trace.SpanKindServer) != nil
		})
		tree := spanTree(spans, sent.TraceID())
		want := append([]spanNode(nil), wantTree...)
		want[3].Parent = ""
		if diff := cmp.Diff(want, tree); diff != "" {
			t.Errorf("span tree (-want +got):\n%s", diff)
		}
		if attempt := spanNamed(spans, sent.TraceID(), "tools/call echo", trace.SpanKindClient); attempt.SpanContext().SpanID() != sent.SpanID() {
			t.Errorf("upstream traceparent names span %s, want the attempt span %s", sent.SpanID(), attempt.SpanContext().SpanID())
		}
	})
}

// TestTracingOff checks what goes upstream without a tracer provider: a
// caller's valid trace context passes through; a malformed one is dropped.
func TestTracingOff(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	c := &obsClient{g: g}
	c.initialize(t)
	tests := []struct {
		name, traceparent, want string
	}{
		{name: "valid: passed on", traceparent: callerParent, want: callerParent},
		{name: "malformed: dropped", traceparent: "00-not-a-trace-01", want: ""},
		{name: "none: none", traceparent: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c.header = http.Header{}
			if tt.traceparent != "" {
				c.header.Set("Traceparent", tt.traceparent)
			}
			const call = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`
			if resp, body := c.post(t, call); resp.StatusCode != http.StatusOK {
				t.Fatalf("tools/call: %s %s", resp.Status, body)
			}
			if got := g.up.lastHeader().Get("Traceparent"); got != tt.want {
				t.Errorf("upstream traceparent = %q, want %q", got, tt.want)
			}
			// Without a trace context the checked bytes go upstream as they are.
			if got := g.up.lastBody(); tt.want == "" && got != call {
				t.Errorf("upstream body = %s, want the client's bytes %s", got, call)
			}
		})
	}
}
