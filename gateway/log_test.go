package gateway_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// logRecords parses every log line as JSON; a line that is not is an error.
func logRecords(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("log line is not JSON: %v: %s", err, sc.Bytes())
			continue
		}
		out = append(out, rec)
	}
	return out
}

// TestAccessLog checks the access record of a tools/call: its fields, and
// the correlation ids the upstream received.
func TestAccessLog(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	g := startObsGateway(t, obsOptions{tracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))})
	c := &obsClient{g: g}
	c.initialize(t)
	c.header = http.Header{"Traceparent": {callerParent}}
	resp, body := c.post(t, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/call: %s %s", resp.Status, body)
	}
	id := resp.Header.Get("X-Request-Id")
	if got := g.up.lastHeader().Get("X-Request-Id"); got != id || id == "" {
		t.Errorf("upstream X-Request-Id = %q, want the gateway's %q", got, id)
	}
	var access map[string]any
	waitUntil(t, "the access record", func() bool {
		for _, r := range logRecords(t, g.logs(t)) {
			if r["msg"] == "request" && r["request_id"] == id {
				access = r
			}
		}
		return access != nil
	})
	fields := []string{"request_id", "trace_id", "principal", "rpc_method", "tool", "route", "upstream", "decision", "protocol_version", "status"}
	got := map[string]any{}
	for _, f := range fields {
		got[f] = access[f]
	}
	want := map[string]any{
		"request_id": id, "trace_id": callerTraceID, "principal": "api_key:ci", "rpc_method": "tools/call",
		"tool": "echo", "route": "up", "upstream": "up", "decision": "allow", "protocol_version": "2025-11-25",
		"status": float64(200),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("access record (-want +got):\n%s", diff)
	}
	// initialize is logged with the negotiated version (c.initialize asked
	// for 2025-11-25), not the header default 2025-03-26.
	initialized := false
	for _, r := range logRecords(t, g.logs(t)) {
		if r["msg"] == "request" && r["rpc_method"] == "initialize" {
			initialized = true
			if r["protocol_version"] != "2025-11-25" {
				t.Errorf("initialize logged with protocol_version %v, want the negotiated 2025-11-25", r["protocol_version"])
			}
		}
	}
	if !initialized {
		t.Error("no access record for initialize")
	}
	// span_id is the gateway's request span: its child's id went upstream.
	traceID, _ := trace.TraceIDFromHex(callerTraceID)
	server := spanNamed(rec.Ended(), traceID, "tools/call echo", trace.SpanKindServer)
	if server == nil || access["span_id"] != server.SpanContext().SpanID().String() {
		t.Errorf("span_id = %v, want the request span's id", access["span_id"])
	}
}

// TestLogsHoldNoSecrets sends credentials every way a client can and checks
// no log line shows any of them.
func TestLogsHoldNoSecrets(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	c := &obsClient{g: g}
	c.initialize(t) // Authorization and Cookie on every request
	c.post(t, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`)
	const wrongKey = "obs-wrong-key-that-is-a-secret-too"
	const wrongJWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzZWNyZXQifQ.c2lnbmF0dXJlLXNlY3JldA"
	for _, h := range []http.Header{
		{"Authorization": {"Bearer " + wrongKey}},
		{"Authorization": {"Bearer " + wrongJWT}},
		{"Authorization": {"Basic " + wrongKey}},
		{"X-Api-Key": {wrongKey}},
		{"Authorization": {"Bearer " + obsAPIKey, "Bearer " + wrongKey}},
	} {
		send(t, http.MethodPost, g.URL, "", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, h)
	}
	g.adminGet(t, "/metrics", true)
	g.adminGet(t, "/metrics", false)
	waitUntil(t, "every access record", func() bool {
		n := 0
		for _, r := range logRecords(t, g.logs(t)) {
			if r["msg"] == "request" {
				n++
			}
		}
		return n == 4+5 // initialize, notification, list, call; 5 refused
	})
	logs := g.logs(t)
	for _, secret := range []string{obsAPIKey, obsCookie, obsAdminToken, wrongKey, wrongJWT} {
		if strings.Contains(logs, secret) {
			t.Errorf("a log line shows the secret %q", secret)
		}
	}
}
