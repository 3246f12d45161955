package e2e

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"syscall"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an in-process OTLP/HTTP traces endpoint that keeps every
// span it is sent.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
}

// receivedSpan is what the test compares of an exported span.
type receivedSpan struct {
	Name, TraceID, SpanID, ParentID string
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req collectortrace.ExportTraceServiceRequest
	if r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "not an OTLP/HTTP protobuf trace export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				o.spans = append(o.spans, receivedSpan{
					Name: s.GetName(), TraceID: hex.EncodeToString(s.GetTraceId()),
					SpanID: hex.EncodeToString(s.GetSpanId()), ParentID: hex.EncodeToString(s.GetParentSpanId()),
				})
			}
		}
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(nil)
}

func (o *otlpReceiver) received() []receivedSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.spans)
}

// TestTracingExport runs the real binary with tracing on, exporting to an
// in-process OTLP receiver: a request that arrives with a traceparent is
// exported, at shutdown at the latest, as one trace continuing the caller's,
// and the upstream's traceparent names the exported attempt span.
func TestTracingExport(t *testing.T) {
	receiver := &otlpReceiver{}
	collector := httptest.NewServer(receiver)
	defer collector.Close()
	rec := startRecorder(t, startEverything(t))
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
tracing: {enabled: true, endpoint: %q, insecure: true, sample_ratio: 0}
upstreams:
  - {name: everything, url: %q}
`, collector.URL+"/v1/traces", rec.URL))

	const callerTrace, callerSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	c := &rpc{url: gw.URL + "/mcp/everything", header: http.Header{
		// Sampled by the caller: recorded although sample_ratio is 0.
		"Traceparent": {"00-" + callerTrace + "-" + callerSpan + "-01"},
	}}
	c.initialize(t)
	gw.signal(syscall.SIGTERM) // shutdown flushes the batched spans
	waitFor(t, "ctxgate to exit", readyDeadline, gw.exited)

	spans := receiver.received()
	byID := map[string]receivedSpan{}
	for _, s := range spans {
		byID[s.SpanID] = s
	}
	type node struct{ Name, Parent string }
	var tree []node
	for _, s := range spans {
		if s.TraceID != callerTrace {
			t.Errorf("span %s in trace %s, want the caller's %s", s.Name, s.TraceID, callerTrace)
		}
		parent := byID[s.ParentID].Name
		if s.ParentID == callerSpan {
			parent = "caller"
		}
		if s.Name == "initialize" || s.Name == "notifications/initialized" {
			tree = append(tree, node{s.Name, parent})
		}
	}
	slices.SortFunc(tree, func(a, b node) int { return cmp.Compare(a.Name+a.Parent, b.Name+b.Parent) })
	want := []node{
		{"initialize", "caller"}, {"initialize", "initialize"},
		{"notifications/initialized", "caller"}, {"notifications/initialized", "notifications/initialized"},
	}
	if diff := gocmp.Diff(want, tree); diff != "" {
		t.Errorf("exported request and attempt spans (-want +got):\n%s\nall spans: %+v", diff, spans)
	}
	// The upstream's parent is an exported attempt span of the trace.
	for _, r := range rec.requests() {
		tp := r.header.Get("Traceparent")
		if len(tp) != 55 || tp[3:35] != callerTrace {
			t.Errorf("upstream traceparent %q, want the caller's trace", tp)
			continue
		}
		if s, ok := byID[tp[36:52]]; !ok || s.ParentID == callerSpan {
			t.Errorf("upstream traceparent %q names no exported attempt span", tp)
		}
	}
}
