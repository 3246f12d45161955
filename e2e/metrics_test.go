package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMetricsAfterToolCall runs a real client session through the real
// binary, then scrapes the admin /metrics (behind its token) and checks the
// series the session must have produced.
func TestMetricsAfterToolCall(t *testing.T) {
	const token = "e2e-admin-token-3f9a1c"
	sum := sha256.Sum256([]byte(token))
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token_sha256: %q}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - {name: everything, url: %q}
`, hex.EncodeToString(sum[:]), startEverything(t)))

	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-metrics", Version: "1"}, nil)
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp/everything"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	version := cs.InitializeResult().ProtocolVersion
	// tools/list first: the gateway names a tool in metrics only once the
	// upstream has listed it.
	if _, err := cs.ListTools(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Close(); err != nil {
		t.Fatal(err)
	}

	scrape := func(authz string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, gw.Admin+"/metrics", nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if status, _ := scrape(""); status != http.StatusUnauthorized {
		t.Errorf("/metrics without the admin token: %d, want 401", status)
	}
	op := fmt.Sprintf(`{error_type="",gen_ai_tool_name="test_simple_text",mcp_method_name="tools/call",mcp_protocol_version=%q,`, version)
	want := []string{
		"mcp_server_operation_duration_seconds_count" + op + `route="everything"} 1`,
		"mcp_client_operation_duration_seconds_count" + op + `upstream="everything"} 1`,
		`ctxgate_sessions_started_total{route="everything"} 1`,
		`ctxgate_sessions_ended_total{route="everything"} 1`,
		`ctxgate_policy_reloads_total{result="failed"} 0`,
	}
	var body string
	// A request's record lands when its handler returns, which can be just
	// after the client has its answer (a streamed tools/call answer is read
	// before the handler sees the upstream's stream end, and the DELETE's
	// record follows the client's Close): wait for the calls and the
	// session's end.
	waitFor(t, "the call and the session's end to be counted", readyDeadline, func() bool {
		var status int
		status, body = scrape("Bearer " + token)
		return status == http.StatusOK && strings.Contains(body, "\n"+want[0]+"\n") &&
			strings.Contains(body, "\n"+want[1]+"\n") && strings.Contains(body, "\n"+want[3]+"\n")
	})
	for _, series := range want {
		if !strings.Contains(body, "\n"+series+"\n") {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	// Every request of the session was allowed and forwarded.
	for _, re := range []string{
		`\nctxgate_requests_total\{outcome="allowed",route="everything"\} [1-9]`,
		`\nctxgate_upstream_attempts_total\{result="ok",upstream="everything"\} [1-9]`,
		`\nctxgate_policy_revision_info\{revision="[0-9a-f]+"\} 1\n`,
		`\nctxgate_policy_decision_duration_seconds_count\{phase="request",result="allow"\} [1-9]`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			t.Errorf("/metrics does not match %s", re)
		}
	}
	for _, outcome := range []string{"denied", "unauthenticated"} {
		if strings.Contains(body, `ctxgate_requests_total{outcome="`+outcome+`"`) {
			t.Errorf("/metrics counts %s requests; the session had none", outcome)
		}
	}
	// The one error: the SDK client first tries the 2026 protocol era
	// (server/discover), which the gateway refuses with -32022 because this
	// upstream is stateful (legacy only); the client then initializes.
	probe := `mcp_server_operation_duration_seconds_count{error_type="-32022",gen_ai_tool_name="",mcp_method_name="server/discover",mcp_protocol_version="2026-07-28",route="everything"} 1`
	if !strings.Contains(body, `ctxgate_requests_total{outcome="error",route="everything"} 1`+"\n") || !strings.Contains(body, "\n"+probe+"\n") {
		t.Errorf("/metrics: want exactly one error request, the server/discover probe")
	}
}

// TestMetricsPolicyReload checks the reload series of the real binary: a
// changed policy is counted ok and moves the revision gauge, a broken one
// is counted failed and leaves it.
func TestMetricsPolicyReload(t *testing.T) {
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "authz.rego")
	rego, err := os.ReadFile(filepath.Join(allowAllPolicy, "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(content string) {
		if err := os.WriteFile(policyFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(string(rego))
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: off, reload_interval: 100ms}
auth: {anonymous: true}
upstreams:
  - {name: everything, url: "http://127.0.0.1:1/"}
`, dir))
	metrics := func() string {
		resp, err := http.Get(gw.Admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	revision := regexp.MustCompile(`\nctxgate_policy_revision_info\{revision="([0-9a-f]+)"\} 1\n`)
	first := revision.FindStringSubmatch(metrics())
	if first == nil {
		t.Fatalf("no revision gauge in /metrics")
	}

	write(string(rego) + "\n# changed\n")
	var body string
	// Wait for what is asserted: the reload counted and the gauge moved to
	// one series of another revision (a gauge that never moves times out).
	waitFor(t, "the reload to be counted and the revision gauge to move", readyDeadline, func() bool {
		body = metrics()
		m := revision.FindAllStringSubmatch(body, -1)
		return strings.Contains(body, "\nctxgate_policy_reloads_total{result=\"ok\"} 1\n") && len(m) > 0 && m[0][1] != first[1]
	})
	if m := revision.FindAllStringSubmatch(body, -1); len(m) != 1 {
		t.Errorf("revision gauge after the reload: %v, want one series", m)
	}

	write("package ctxgate.authz\n\nallow if {\n")
	waitFor(t, "the failed reload to be counted", readyDeadline, func() bool {
		body = metrics()
		return strings.Contains(body, "\nctxgate_policy_reloads_total{result=\"failed\"} 1\n")
	})
	if !strings.Contains(body, "\nctxgate_policy_reloads_total{result=\"ok\"} 1\n") {
		t.Errorf("a rejected reload changed the ok count")
	}
}
