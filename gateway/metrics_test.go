package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMetrics scripts traffic through a gateway and checks that /metrics
// shows the series and label values that traffic must produce.
func TestMetrics(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	c := &obsClient{g: g}
	c.initialize(t)
	calls := []string{
		`{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}`,
		// A name the upstream never listed must not become a label value.
		`{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"made-up-tool-8d2f"}}`,
		`{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"forbidden"}}`,
		`{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"fails"}}`,
	}
	for _, body := range calls {
		if resp, answer := c.post(t, body); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s %s", body, resp.Status, answer)
		}
	}
	for _, h := range []http.Header{nil, {"Authorization": {"Bearer not-a-key"}}} {
		resp := send(t, http.MethodPost, g.URL, "", `{"jsonrpc":"2.0","id":9,"method":"ping"}`, h)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("headers %v: %s, want 401", h, resp.Status)
		}
	}
	// An upstream that refuses connections.
	down := &obsClient{g: &obsGateway{URL: g.URL[:len(g.URL)-len("up")] + "down"}}
	if resp, body := down.post(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("initialize on down: %s %s, want 502", resp.Status, body)
	}

	t.Run("a GET stream is open while it lasts", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL, nil)
		req.Header = http.Header{"Authorization": {"Bearer " + obsAPIKey}, "Accept": {"text/event-stream"},
			"Mcp-Session-Id": {c.session}, "Mcp-Protocol-Version": {"2025-11-25"}}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		const open = `ctxgate_open_streams{kind="get",route="up"}`
		if got := g.scrape(t)[open]; got != 1 {
			t.Errorf("%s = %v while the stream is open, want 1", open, got)
		}
		cancel()
		resp.Body.Close()
		waitUntil(t, "the stream to be counted closed", func() bool { return g.scrape(t)[open] == 0 })
	})
	if resp := send(t, http.MethodDelete, g.URL, c.session, "", http.Header{"Authorization": {"Bearer " + obsAPIKey}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %s", resp.Status)
	}

	// initialize, notifications/initialized, tools/list, 4 calls, GET,
	// DELETE on up; 2 refused; 1 on down.
	const requests = 12
	var got map[string]float64
	waitUntil(t, "every request to be counted", func() bool {
		got = g.scrape(t)
		n := 0.0
		for _, outcome := range []string{"allowed", "denied", "unauthenticated", "error"} {
			for _, route := range []string{"up", "down"} {
				n += got[`ctxgate_requests_total{outcome="`+outcome+`",route="`+route+`"}`]
			}
		}
		return n == requests
	})
	_, policyStatus := g.adminGet(t, "/admin/policy", true)
	var st struct{ Revision string }
	if err := json.Unmarshal([]byte(policyStatus), &st); err != nil || st.Revision == "" {
		t.Fatalf("/admin/policy: %s (%v)", policyStatus, err)
	}
	const (
		serverOp = "mcp_server_operation_duration_seconds_count"
		clientOp = "mcp_client_operation_duration_seconds_count"
	)
	want := map[string]float64{
		`ctxgate_requests_total{outcome="allowed",route="up"}`:                   8,
		`ctxgate_requests_total{outcome="denied",route="up"}`:                    1,
		`ctxgate_requests_total{outcome="unauthenticated",route="up"}`:           2,
		`ctxgate_requests_total{outcome="error",route="down"}`:                   1,
		`ctxgate_authentication_failures_total{reason="missing",route="up"}`:     1,
		`ctxgate_authentication_failures_total{reason="unknown_key",route="up"}`: 1,
		// initialize is labelled with the version negotiated (asked for,
		// when no answer came), not the header default 2025-03-26 (which
		// "down" gets: its initialize names no version).
		serverOp + `{error_type="",gen_ai_tool_name="",mcp_method_name="initialize",mcp_protocol_version="2025-11-25",route="up"}`:            1,
		serverOp + `{error_type="",gen_ai_tool_name="",mcp_method_name="tools/list",mcp_protocol_version="2025-11-25",route="up"}`:            1,
		serverOp + `{error_type="",gen_ai_tool_name="echo",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",route="up"}`:        1,
		serverOp + `{error_type="-32602",gen_ai_tool_name="other",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",route="up"}`: 1,
		// Denied, and answered as an unknown tool would be.
		serverOp + `{error_type="-32602",gen_ai_tool_name="forbidden",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",route="up"}`: 1,
		serverOp + `{error_type="tool_error",gen_ai_tool_name="fails",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",route="up"}`: 1,
		serverOp + `{error_type="-31010",gen_ai_tool_name="",mcp_method_name="initialize",mcp_protocol_version="2025-03-26",route="down"}`:        1,
		clientOp + `{error_type="",gen_ai_tool_name="echo",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",upstream="up"}`:         1,
		clientOp + `{error_type="",gen_ai_tool_name="other",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",upstream="up"}`:        1,
		// The denied call never left the gateway.
		clientOp + `{error_type="",gen_ai_tool_name="forbidden",mcp_method_name="tools/call",mcp_protocol_version="2025-11-25",upstream="up"}`: 0,
		// Connection refused: never sent, so retried up to max_attempts (3).
		clientOp + `{error_type="transport_error",gen_ai_tool_name="",mcp_method_name="initialize",mcp_protocol_version="2025-03-26",upstream="down"}`: 3,
		`ctxgate_upstream_attempts_total{result="ok",upstream="up"}`:                                                                                   8,
		`ctxgate_upstream_attempts_total{result="transport_error",upstream="down"}`:                                                                    3,
		`ctxgate_sessions_started_total{route="up"}`:                                                                                                   1,
		`ctxgate_sessions_ended_total{route="up"}`:                                                                                                     1,
		`ctxgate_open_streams{kind="get",route="up"}`:                                                                                                  0,
		`ctxgate_policy_decision_duration_seconds_count{phase="request",result="allow"}`:                                                               7, // 6 on up, 1 on down
		`ctxgate_policy_decision_duration_seconds_count{phase="request",result="deny"}`:                                                                1,
		`ctxgate_policy_reloads_total{result="ok"}`:                                                                                                    0,
		`ctxgate_policy_reloads_total{result="failed"}`:                                                                                                0,
		`ctxgate_policy_revision_info{revision="` + st.Revision + `"}`:                                                                                 1,
	}
	picked := map[string]float64{}
	for k := range want {
		picked[k] = got[k] // absent is 0: a histogram series that never saw an event is not exposed
	}
	if diff := cmp.Diff(want, picked); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	for k := range got {
		if strings.Contains(k, "made-up") {
			t.Errorf("a tool name the upstream never listed became a label: %s", k)
		}
	}
}
