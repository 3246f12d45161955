package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// startNPMEverythingAt runs the npm everything-server on addr (a restart
// on the same address forgets every session, as a redeployed server does).
func startNPMEverythingAt(t *testing.T, addr string) *proc {
	t.Helper()
	requireNodeTool(t, npmEverythingJS)
	node, _ := filepath.Abs(nodeBin)
	script, _ := filepath.Abs(npmEverythingJS)
	_, port, _ := net.SplitHostPort(addr)
	p := &proc{name: "npm-everything", cmd: exec.Command(node, script, "streamableHttp"), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "PORT="+port)
	startCmd(t, p)
	waitFor(t, "npm everything-server to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("npm everything-server exited: %s", p.stderr.String())
		}
		return strings.Contains(p.stderr.String(), "listening on port")
	})
	return p
}

// startEverythingAt runs the Go SDK everything-server (legacy sessions) on
// addr and waits until it accepts connections.
func startEverythingAt(t *testing.T, addr string) *proc {
	t.Helper()
	p := startProc(t, "everything-server", bins.everything, "-http="+addr, "-stateless=false")
	waitFor(t, "everything-server to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("everything-server exited: %s", p.stderr.String())
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func killProc(t *testing.T, p *proc) {
	t.Helper()
	p.signal(syscall.SIGKILL)
	waitFor(t, p.name+" to exit", readyDeadline, p.exited)
}

// fedAnswer is one raw answer on a federated route: the HTTP status, the
// JSON-RPC error code (0: none) and the result.
type fedAnswer struct {
	status int
	code   int64
	result map[string]json.RawMessage
	raw    string
}

func (c *rpc) fedCall(t *testing.T, body string) fedAnswer {
	t.Helper()
	resp := c.post(t, body)
	raw, _ := io.ReadAll(resp.Body)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		for line := range strings.SplitSeq(string(raw), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(data, `"id"`) {
				raw = []byte(data)
			}
		}
	}
	var msg struct {
		Result map[string]json.RawMessage `json:"result"`
		Error  *struct {
			Code int64 `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &msg)
	a := fedAnswer{status: resp.StatusCode, result: msg.Result, raw: string(raw)}
	if msg.Error != nil {
		a.code = msg.Error.Code
	}
	return a
}

// toolNames are the names of a tools/list result's tools.
func (a fedAnswer) toolNames() []string {
	var tools []struct{ Name string }
	_ = json.Unmarshal(a.result["tools"], &tools)
	var names []string
	for _, tool := range tools {
		names = append(names, tool.Name)
	}
	return names
}

func anyPrefixed(names []string, prefix string) bool {
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

const fedToolsList = `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`

// TestFederationMemberGone: the Go SDK everything-server and the npm
// everything-server behind two federated routes, one that serves a failing
// member's last good page for an hour and one for a millisecond. With the
// Go member killed: its part is stale on the first route and expires on
// the second; calls to it are 502 -31010. With it restarted on the same
// address (so it forgot its sessions): every method on the old session is
// 404 -31003, and a new session works. The npm member restarted likewise
// (it answers 400 for an unknown session) is 404 -31003 too. A
// multi-round-trip tool works on the legacy federated session.
func TestFederationMemberGone(t *testing.T) {
	goAddr, npmAddr := reservePort(t), reservePort(t)
	goProc, npmProc := startEverythingAt(t, goAddr), startNPMEverythingAt(t, npmAddr)
	// go's breaker never opens here, so its restart is seen at once (an
	// open breaker's own answer is the resilience tests').
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
%supstreams:
  - {name: go, url: "http://%s/", retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
  - {name: npm, url: "http://%s/mcp", retry: {max_attempts: 1}}
routes:
  - {path: /mcp, upstreams: [go, npm], member_timeout: 2s, member_stale_for: 1h}
  - {path: /short, upstreams: [go, npm], member_timeout: 2s, member_stale_for: 1ms}
`, policyConfig(), goAddr, npmAddr))

	// A multi-round-trip tool of the Go member, from a legacy client: the
	// member's elicitation reaches the client and its answer the member.
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-mrtr", Version: "1"}, &mcp.ClientOptions{
		ElicitationHandler: func(_ context.Context, _ *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
			return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "ada"}}, nil
		}})
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2025-11-25"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	if got := callText(t, cs, "go__test_input_required_result_elicitation", map[string]any{}); got != "Hello, ada!" {
		t.Errorf("multi-round-trip tool on the federated legacy session: %q, want Hello, ada!", got)
	}
	cs.Close()

	long, short := &rpc{url: gw.URL + "/mcp"}, &rpc{url: gw.URL + "/short"}
	long.initialize(t)
	short.initialize(t)
	for _, c := range []*rpc{long, short} {
		if got := c.fedCall(t, fedToolsList); got.status != http.StatusOK || !anyPrefixed(got.toolNames(), "go__") || got.result["_meta"] != nil {
			t.Fatalf("%s tools/list with both members up: HTTP %d, %s", c.url, got.status, got.raw)
		}
	}

	killProc(t, goProc)
	got := long.fedCall(t, fedToolsList)
	if got.status != http.StatusOK || !anyPrefixed(got.toolNames(), "go__") || !strings.Contains(string(got.result["_meta"]), `"staleAgeMs":{"go":`) {
		t.Errorf("tools/list within member_stale_for, go down: HTTP %d, %s; want go's last good part, marked stale", got.status, got.raw)
	}
	const expired = `{"io.ctxgate/partial":{"missing":["go"],"reasons":{"go":"last good page older than member_stale_for"}}}`
	waitFor(t, "go's last good page to expire on /short", readyDeadline, func() bool {
		got = short.fedCall(t, fedToolsList)
		return string(got.result["_meta"]) == expired
	})
	if anyPrefixed(got.toolNames(), "go__") || !anyPrefixed(got.toolNames(), "npm__") {
		t.Errorf("tools/list past member_stale_for: %v; want npm's tools only", got.toolNames())
	}

	type shape struct {
		status int
		code   int64
	}
	calls := []struct{ name, body string }{
		{"tools/call", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"go__test_simple_text","arguments":{}}}`},
		{"prompts/get", `{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"go__test_simple_prompt"}}`},
		{"resources/read", `{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"go+test://static-text"}}`},
	}
	for _, c := range calls {
		if got := long.fedCall(t, c.body); (shape{got.status, got.code}) != (shape{http.StatusBadGateway, -31010}) {
			t.Errorf("%s with go down: HTTP %d, %s; want 502 -31010", c.name, got.status, got.raw)
		}
	}

	// Back on the same address, without the sessions it had.
	startEverythingAt(t, goAddr)
	for _, c := range append(calls, struct{ name, body string }{"tools/list", fedToolsList}) {
		if got := long.fedCall(t, c.body); (shape{got.status, got.code}) != (shape{http.StatusNotFound, -31003}) {
			t.Errorf("%s after go restarted: HTTP %d, %s; want 404 -31003", c.name, got.status, got.raw)
		}
	}
	fresh := &rpc{url: gw.URL + "/mcp"}
	fresh.initialize(t)
	if got := fresh.fedCall(t, calls[0].body); got.status != http.StatusOK || got.code != 0 {
		t.Errorf("tools/call on a new session: HTTP %d, %s", got.status, got.raw)
	}

	// The npm member restarted: it answers 400 for a session it does not know.
	killProc(t, npmProc)
	startNPMEverythingAt(t, npmAddr)
	echo := `{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"npm__echo","arguments":{"message":"hi"}}}`
	if got := fresh.fedCall(t, echo); (shape{got.status, got.code}) != (shape{http.StatusNotFound, -31003}) {
		t.Errorf("npm__echo after npm restarted: HTTP %d, %s; want 404 -31003", got.status, got.raw)
	}
}

// TestFederationMemberRecovers: the Go SDK everything-server is down when
// a session is initialized on a federated route with the npm
// everything-server; its tools are 503 -31070 (being retried), and once it
// is started it joins that same session: listed, callable.
func TestFederationMemberRecovers(t *testing.T) {
	goAddr, npmAddr := reservePort(t), reservePort(t)
	startNPMEverythingAt(t, npmAddr)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
%supstreams:
  - {name: go, url: "http://%s/", retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
  - {name: npm, url: "http://%s/mcp", retry: {max_attempts: 1}}
routes:
  - {path: /mcp, upstreams: [go, npm], member_timeout: 2s}
`, policyConfig(), goAddr, npmAddr))
	c := &rpc{url: gw.URL + "/mcp"}
	c.initialize(t)
	const call = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"go__test_simple_text","arguments":{}}}`
	if got := c.fedCall(t, call); got.status != http.StatusServiceUnavailable || got.code != -31070 {
		t.Errorf("tools/call go__test_simple_text with go down since initialize: HTTP %d, %s; want 503 -31070", got.status, got.raw)
	}
	if got := c.fedCall(t, fedToolsList); anyPrefixed(got.toolNames(), "go__") || !strings.Contains(string(got.result["_meta"]), `"missing":["go"]`) {
		t.Errorf("tools/list with go down: %s; want go missing", got.raw)
	}
	startEverythingAt(t, goAddr)
	waitFor(t, "go to join the session", readyDeadline, func() bool {
		got := c.fedCall(t, fedToolsList) // the session's requests kick its retries
		return anyPrefixed(got.toolNames(), "go__") && got.result["_meta"] == nil
	})
	if got := c.fedCall(t, call); got.status != http.StatusOK || got.code != 0 || !strings.Contains(got.raw, `"content"`) {
		t.Errorf("tools/call go__test_simple_text after go joined: HTTP %d, %s", got.status, got.raw)
	}
}
