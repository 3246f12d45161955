package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// stdioEverythingConfig is a gateway fronting the Go SDK's conformance
// everything-server as a stdio upstream, named everything: the fixture
// serves over stdin and stdout when it is given no -http address, so no
// adapter is needed. extra is appended to the upstream's block.
func stdioEverythingConfig(auth, extra string) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: %s
upstreams:
  - name: everything
    transport: stdio
    command: [%q]
%s`, auth, bins.everything, extra)
}

// stdioConformanceExceptions are the checks that pass over HTTP and not
// over stdio, each for a reason of the transport, not of the gateway.
var stdioConformanceExceptions = map[string]string{
	// SEP-1699 inspects the SSE stream a server answers a POST with. A stdio
	// upstream answers a request without a progress token with one JSON
	// message, relayed as JSON (Streamable HTTP lets the server choose):
	// the suite records "Server returned JSON for all requests - SSE
	// streaming is optional" (INFO) ...
	"server-sse-multiple-streams/server-sse-streams-functional": "POST answers are JSON over stdio, not SSE streams",
	// ... and stops before its retry-field check ("Server returned JSON
	// instead of SSE stream - priming event tests not applicable").
	"server-sse-polling/server-sse-retry-field": "POST answers are JSON over stdio: no SSE stream to carry a retry field",
}

// TestConformanceStdio runs the conformance suite's 2025-11-25
// requirements against the everything-server over HTTP and through
// ctxgate in front of the same server run as a stdio upstream (one process
// per client session): every check that passes directly must pass through
// the gateway.
func TestConformanceStdio(t *testing.T) {
	requireNodeTool(t, conformanceJS)
	upstream := startEverything(t)
	gw := startGateway(t, stdioEverythingConfig("{anonymous: true}", ""))
	direct, via := runConformance(t, upstream, "2025-11-25"), runConformance(t, gw.URL+"/mcp/everything", "2025-11-25")
	requireStdioPasses(t, direct, via, stdioConformanceExceptions)
	if started := gw.metric(t, `ctxgate_stdio_processes_total{event="started",upstream="everything"}`); started == 0 {
		t.Error("no stdio process was started: the suite did not reach the stdio upstream")
	}
	t.Logf("conformance --requirements 2025-11-25: %d checks pass directly, %d through ctxgate over stdio", countPassed(direct), countPassed(via))
}

// requireStdioPasses is requireSamePasses but for the exceptions, each of
// which must still be one: passing directly and not over stdio.
func requireStdioPasses(t *testing.T, direct, via map[string]string, exceptions map[string]string) {
	t.Helper()
	requireSamePasses(t, direct, via, func(id string) bool { _, ok := exceptions[id]; return ok })
	for id, reason := range exceptions {
		switch {
		case direct[id] != "SUCCESS":
			t.Errorf("%s does not pass directly (%q): remove it from the exceptions (%s)", id, direct[id], reason)
		case via[id] == "SUCCESS":
			t.Errorf("%s now passes over stdio: remove it from the exceptions (%s)", id, reason)
		}
	}
}

// Why checks of the 2026-07-28 requirements that pass against the
// stateless everything-server do not pass through a bridged stdio
// upstream: the limits of the bridge (README, Protocol eras) and of stdio.
const (
	// The stateless server asks the client for input with input_required
	// results; the same server over stdio runs a legacy session and asks
	// with server-to-client requests, which the bridged session (it
	// declares no client capabilities) cannot carry.
	noInputRequests = "input is asked for with server-to-client requests, not input_required results, in a bridged legacy session"
	// subscriptions/listen is 404 -32601 on a bridged route: the suite
	// skips its listen-stream checks.
	noListen = "no subscriptions/listen through the bridge"
	// Checking Mcp-Param-* headers against the arguments (SEP-2243) is a
	// modern server's job: the gateway relays them, and a stdio server
	// has no headers.
	noParamHeaders = "Mcp-Param-* headers are the modern server's to check; a stdio server sees none"
)

// stdioModernConformanceExceptions are the checks of the 2026-07-28
// requirements that pass directly and not through a bridged stdio
// upstream, by id, each with its reason.
var stdioModernConformanceExceptions = map[string]string{
	"server-sse-multiple-streams/server-sse-streams-functional":                         stdioConformanceExceptions["server-sse-multiple-streams/server-sse-streams-functional"],
	"input-required-result-basic-elicitation/sep-2322-elicitation-complete":             noInputRequests,
	"input-required-result-basic-elicitation/sep-2322-elicitation-incomplete":           noInputRequests,
	"input-required-result-basic-list-roots/sep-2322-list-roots-complete":               noInputRequests,
	"input-required-result-basic-list-roots/sep-2322-list-roots-incomplete":             noInputRequests,
	"input-required-result-basic-sampling/sep-2322-sampling-complete":                   noInputRequests,
	"input-required-result-basic-sampling/sep-2322-sampling-incomplete":                 noInputRequests,
	"input-required-result-capability-check/sep-2322-respect-client-capabilities":       noInputRequests,
	"input-required-result-missing-input-response/sep-2322-missing-response-rerequests": noInputRequests,
	"input-required-result-multi-round/sep-2322-multi-round-r1":                         noInputRequests,
	"input-required-result-multi-round/sep-2322-multi-round-r2":                         noInputRequests,
	"input-required-result-multi-round/sep-2322-multi-round-r3":                         noInputRequests,
	"input-required-result-multiple-input-requests/sep-2322-multiple-inputs-complete":   noInputRequests,
	"input-required-result-multiple-input-requests/sep-2322-multiple-inputs-incomplete": noInputRequests,
	"input-required-result-non-tool-request/sep-2322-non-tool-complete":                 noInputRequests,
	"input-required-result-non-tool-request/sep-2322-non-tool-incomplete":               noInputRequests,
	"input-required-result-request-state/sep-2322-request-state-complete":               noInputRequests,
	"input-required-result-request-state/sep-2322-request-state-incomplete":             noInputRequests,
	"input-required-result-result-type/sep-2322-result-type-included":                   noInputRequests,
	"input-required-result-tampered-state/sep-2322-reject-tampered-state":               noInputRequests,
	"server-stateless/sep-2575-server-honors-notification-filter":                       noListen,
	"server-stateless/sep-2575-server-sends-prompts-list-changed-on-subscription":       noListen,
	"server-stateless/sep-2575-server-sends-subscription-ack":                           noListen,
	"server-stateless/sep-2575-server-sends-tools-list-changed-on-subscription":         noListen,
	"server-stateless/sep-2575-server-tags-subscription-id":                             noListen,
	"http-custom-header-server-validation/sep-2243-server-reject-invalid-param-chars":   noParamHeaders,
	"http-custom-header-server-validation/sep-2243-server-reject-param-mismatch":        noParamHeaders,
	"http-custom-header-server-validation/sep-2243-server-validate-param-match":         noParamHeaders,
}

// TestConformanceModernStdio runs the suite's 2026-07-28 requirements
// against the stateless everything-server over HTTP and through ctxgate in
// front of the same server as a bridged stdio upstream (one process per
// principal): every check that passes directly passes through the
// gateway, but the exceptions listed with their reasons.
func TestConformanceModernStdio(t *testing.T) {
	requireNodeTool(t, conformanceJS)
	upstream := startEverythingMode(t, true)
	gw := startGateway(t, stdioEverythingConfig("{anonymous: true}", "    bridge: true\n"))
	direct, via := runConformance(t, upstream, "2026-07-28"), runConformance(t, gw.URL+"/mcp/everything", "2026-07-28")
	requireStdioPasses(t, direct, via, stdioModernConformanceExceptions)
	if running, _ := stdioProcesses(t, gw); running != 1 {
		t.Errorf("%v processes running after the suite, want 1: the anonymous principal's", running)
	}
	t.Logf("conformance --requirements 2026-07-28: %d checks pass directly, %d through ctxgate over bridged stdio", countPassed(direct), countPassed(via))
}

// TestStdioEverythingNotifications: the npm server-everything in stdio
// mode behind the shipped policy. A principal without groups sees only its
// read-only tools; an admin (group mcp-admin) sees and calls
// toggle-simulated-logging, and the log messages the process then writes on
// its own reach the admin's client on its GET stream through the gateway;
// tools/call and resources work over the same process.
func TestStdioEverythingNotifications(t *testing.T) {
	requireNodeTool(t, npmEverythingJS)
	js, _ := filepath.Abs(npmEverythingJS) // the process runs in a dir of its own
	argv, _ := json.Marshal([]string{nodeBin, js, "stdio"})
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: off}
auth:
  api_keys:
    - {name: viewer, sha256: %q}
    - {name: admin, sha256: %q, groups: [mcp-admin]}
upstreams:
  - name: everything
    transport: stdio
    command: %s
    dir: %q
`, copyShippedPolicy(t), hashKey("viewer-key"), hashKey("admin-key"), argv, t.TempDir()))
	route := gw.URL + "/mcp/everything"

	viewer := connectAs(t, route, "viewer-key", nil)
	names := toolNames(t, viewer)
	for _, want := range []string{"echo", "get-sum"} {
		if !slices.Contains(names, want) {
			t.Errorf("viewer does not see read-only %s; sees %v", want, names)
		}
	}
	for _, hidden := range []string{"toggle-simulated-logging", "toggle-subscriber-updates", "gzip-file-as-resource"} {
		if slices.Contains(names, hidden) {
			t.Errorf("viewer sees %s, which is not read-only; sees %v", hidden, names)
		}
	}
	if text, err := stdioCall(t, viewer, "get-sum", map[string]any{"a": 2, "b": 40}); err != nil || !strings.Contains(text, "42") {
		t.Errorf("get-sum as viewer: %q, %v", text, err)
	}
	if _, err := stdioCall(t, viewer, "toggle-simulated-logging", map[string]any{}); err == nil {
		t.Error("viewer called toggle-simulated-logging, which the shipped policy hides from it")
	}
	res, err := viewer.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "demo://resource/dynamic/text/7"})
	if err != nil || len(res.Contents) != 1 || !strings.Contains(res.Contents[0].Text, "7") {
		t.Errorf("resources/read of a dynamic text resource: %+v, %v", res, err)
	}

	logs := make(chan string, 16)
	admin := connectAs(t, route, "admin-key", &mcp.ClientOptions{
		//lint:ignore SA1019 the legacy era's log notifications are what a stdio server sends
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) {
			data, _ := req.Params.Data.(string)
			select {
			case logs <- data:
			default:
			}
		},
	})
	if names := toolNames(t, admin); !slices.Contains(names, "toggle-simulated-logging") {
		t.Fatalf("admin does not see toggle-simulated-logging; sees %v", names)
	}
	if _, err := stdioCall(t, admin, "toggle-simulated-logging", map[string]any{}); err != nil {
		t.Fatalf("toggle-simulated-logging as admin: %v", err)
	}
	// The server logs other things too (it asks for the client's roots
	// after initialize and logs the answer); the simulated messages are
	// "Debug-level message", ..., "Alert level-message".
	simulated := regexp.MustCompile(`level[- ]message`)
	var seen []string
	for wait := ctx(t); ; {
		select {
		case data := <-logs:
			seen = append(seen, data)
		case <-wait.Done():
			t.Fatalf("no simulated notifications/message from the stdio server reached the client; got %q", seen)
		}
		if simulated.MatchString(seen[len(seen)-1]) {
			break
		}
	}
	if got := gw.metric(t, `ctxgate_stdio_processes{upstream="everything"}`); got != 2 {
		t.Errorf("ctxgate_stdio_processes = %v with two sessions, want 2", got)
	}
}

// connectAs is connect with an API key.
func connectAs(t *testing.T, endpoint, key string, opts *mcp.ClientOptions) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, opts).Connect(ctx(t), &mcp.StreamableClientTransport{
		Endpoint: endpoint, HTTPClient: &http.Client{Transport: &bearer{token: key, base: http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// modernCall sends one 2026-07-28 request (no session) as the holder of
// key and returns the answer's status and body.
func modernCall(t *testing.T, route, key, method, name, params string) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":1,"method":%q,"params":{%s"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`, method, params)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, route, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"},
		"Accept": {"application/json, text/event-stream"}, "Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {method}}
	if name != "" {
		req.Header.Set("Mcp-Name", name)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(got)
}

// simpleText calls the everything-server's test_simple_text in the modern
// era and fails unless it answers.
func simpleText(t *testing.T, route, key string) {
	t.Helper()
	status, body := modernCall(t, route, key, "tools/call", "test_simple_text", `"name":"test_simple_text","arguments":{},`)
	if status != http.StatusOK || !strings.Contains(body, "This is a simple text response for testing.") || !strings.Contains(body, `"resultType":"complete"`) {
		t.Fatalf("modern tools/call as %s: %d %.300s; want the result, complete", key, status, body)
	}
}

// stdioModernConfig is the everything-server as a stdio upstream with
// bridge: bridge, for two API key holders; sessions sets sessions.ttl when
// not empty, and key: value pairs in upstream are added to the upstream.
func stdioModernConfig(bridge bool, sessions string, upstream ...string) string {
	cfg := fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth:
  api_keys:
    - {name: alice, sha256: %q}
    - {name: bob, sha256: %q}
upstreams:
  - name: everything
    transport: stdio
    command: [%q]
    bridge: %t
`, hashKey("alice-key"), hashKey("bob-key"), bins.everything, bridge)
	for _, kv := range upstream {
		cfg += "    " + kv + "\n"
	}
	if sessions != "" {
		cfg += "sessions: {ttl: " + sessions + "}\n"
	}
	return cfg
}

// stdioProcesses is the everything upstream's process counts.
func stdioProcesses(t *testing.T, gw *gatewayProc) (running, started float64) {
	t.Helper()
	return gw.metric(t, `ctxgate_stdio_processes{upstream="everything"}`),
		gw.metric(t, `ctxgate_stdio_processes_total{event="started",upstream="everything"}`)
}

// TestStdioModernEra: a 2026-07-28 client on a stdio route. Without
// bridge it is told the route is legacy only, and no process is started
// to find that out. With bridge: true it is served in the modern era over
// one process per principal: the same principal's requests share its
// process, another principal gets its own, and a process ends with its
// bridged session, whether the gateway replaces the session (sessions.ttl)
// or the process is reaped idle (the next request opens a new one, unseen
// by the client).
func TestStdioModernEra(t *testing.T) {
	t.Run("not bridged: legacy only", func(t *testing.T) {
		gw := startGateway(t, stdioModernConfig(false, ""))
		route := gw.URL + "/mcp/everything"
		for range 2 { // the second is answered from what the first learned
			status, body := modernCall(t, route, "alice-key", "tools/list", "", "")
			var refusal struct {
				Error struct {
					Code int `json:"code"`
					Data struct {
						Supported []string `json:"supported"`
					} `json:"data"`
				} `json:"error"`
			}
			_ = json.Unmarshal([]byte(body), &refusal)
			if status != http.StatusBadRequest || refusal.Error.Code != -32022 || !slices.Contains(refusal.Error.Data.Supported, "2025-11-25") || slices.Contains(refusal.Error.Data.Supported, "2026-07-28") {
				t.Errorf("modern tools/list, not bridged: %d %.300s; want -32022 listing the legacy revisions", status, body)
			}
		}
		if running, started := stdioProcesses(t, gw); running != 0 || started != 0 {
			t.Errorf("%v running, %v started; want none: learning the era (server/discover, refused without a session) starts no process", running, started)
		}
	})
	t.Run("one process per principal", func(t *testing.T) {
		gw := startGateway(t, stdioModernConfig(true, ""))
		route := gw.URL + "/mcp/everything"
		if running, started := stdioProcesses(t, gw); running != 0 || started != 0 {
			t.Errorf("before any request: %v running, %v started; want none", running, started)
		}
		status, body := modernCall(t, route, "alice-key", "server/discover", "", "")
		if status != http.StatusOK || !strings.Contains(body, `"2026-07-28"`) {
			t.Fatalf("modern server/discover: %d %.300s; want the route to serve 2026-07-28", status, body)
		}
		status, body = modernCall(t, route, "alice-key", "tools/list", "", "")
		if status != http.StatusOK || !strings.Contains(body, `"test_simple_text"`) {
			t.Fatalf("modern tools/list: %d %.300s", status, body)
		}
		simpleText(t, route, "alice-key")
		if running, started := stdioProcesses(t, gw); running != 1 || started != 1 {
			t.Errorf("after three requests by alice: %v running, %v started; want 1 (her process)", running, started)
		}
		// Bob with the Go SDK's client, which prefers 2026-07-28.
		bob, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-modern", Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{
			Endpoint: route, HTTPClient: &http.Client{Transport: &bearer{token: "bob-key", base: http.DefaultTransport}}}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
		if err != nil {
			t.Fatal(err)
		}
		if v := bob.InitializeResult().ProtocolVersion; v != "2026-07-28" {
			t.Errorf("the Go SDK client negotiated %q, want 2026-07-28 (bridged)", v)
		}
		if text, err := stdioCall(t, bob, "test_simple_text", nil); err != nil || !strings.Contains(text, "simple text") {
			t.Errorf("Go SDK modern tools/call: %q, %v", text, err)
		}
		bob.Close()
		simpleText(t, route, "alice-key")
		if running, started := stdioProcesses(t, gw); running != 2 || started != 2 {
			t.Errorf("after requests by alice and bob: %v running, %v started; want 2 (one each)", running, started)
		}
		var admin struct {
			Upstreams []struct {
				Processes map[string]int `json:"processes"`
			} `json:"upstreams"`
		}
		resp, err := http.Get(gw.Admin + "/admin/upstreams")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&admin); err != nil || len(admin.Upstreams) != 1 || admin.Upstreams[0].Processes["started"] != 2 {
			t.Errorf("/admin/upstreams: %+v (%v), want 2 processes started", admin, err)
		}
	})
	t.Run("ends with its session", func(t *testing.T) {
		gw := startGateway(t, stdioModernConfig(true, "1s"))
		route := gw.URL + "/mcp/everything"
		simpleText(t, route, "alice-key")
		// Once the session is older than sessions.ttl, the next request
		// opens a new one; the old one is ended, and with it its process.
		waitFor(t, "a request after sessions.ttl to open a new session", readyDeadline, func() bool {
			simpleText(t, route, "alice-key")
			_, started := stdioProcesses(t, gw)
			return started >= 2 // more, on a machine slower than the ttl
		})
		waitFor(t, "the replaced session's process to end", readyDeadline, func() bool {
			running, _ := stdioProcesses(t, gw)
			return running == 1
		})
	})
	t.Run("reaped idle, replaced unseen", func(t *testing.T) {
		gw := startGateway(t, stdioModernConfig(true, "", "idle_timeout: 1s"))
		route := gw.URL + "/mcp/everything"
		simpleText(t, route, "alice-key")
		waitFor(t, "the idle process to be reaped", readyDeadline, func() bool {
			running, _ := stdioProcesses(t, gw)
			return running == 0
		})
		_, before := stdioProcesses(t, gw)
		simpleText(t, route, "alice-key") // not the ended session's 404
		// The first call, before any list, was decided on the tool's
		// annotations read on alice's bridged session (a stdio server
		// answers no sessionless list).
		if rec, ok := findLog(gw.stderr.String(), "could not read the upstream's tools/list before a call; the tool is decided as unknown"); ok {
			t.Errorf("the gateway could not learn the tool before the first call: %v", rec)
		}
		// Not how many run now: the new process is reaped too a second after.
		if _, started := stdioProcesses(t, gw); started != before+1 {
			t.Errorf("after the reap and a request: %v processes started, want %v: a new one", started, before+1)
		}
	})
	t.Run("full: 503, as an initialize", func(t *testing.T) {
		gw := startGateway(t, stdioModernConfig(true, "", "max_processes: 1"))
		route := gw.URL + "/mcp/everything"
		simpleText(t, route, "alice-key")
		status, body := modernCall(t, route, "bob-key", "tools/list", "", "")
		if status != http.StatusServiceUnavailable || !strings.Contains(body, `"code":-31050`) {
			t.Errorf("bob's modern request with alice's process the only one allowed: %d %.300s; want 503 -31050", status, body)
		}
		simpleText(t, route, "alice-key") // hers still serves
	})
}
