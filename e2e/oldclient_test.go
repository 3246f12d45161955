package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// oldClientJS is the TypeScript SDK SSEClientTransport client.
var oldClientJS = filepath.Join("testdata", "oldclient-sse.mjs")

// tickingGET wraps a Streamable HTTP server so that its GET stream (the
// one the gateway opens for an HTTP+SSE client's session) sends a
// notifications/message every 100 ms, whether or not the client set a
// log level: the notification an old client must receive through the
// gateway.
func tickingGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"tick\"}}\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-tick.C:
			}
		}
	})
}

// startOldClientGateway runs the real binary with the shipped policy in
// front of the policy fixture (Streamable HTTP, its GET stream ticking),
// and returns the fixture and the route's HTTP+SSE endpoint. The fixture
// gains status, a read-only tool that logs a message while it runs.
func startOldClientGateway(t *testing.T) (*policyFixture, string) {
	t.Helper()
	f := &policyFixture{}
	server := f.server()
	mcp.AddTool(server, &mcp.Tool{Name: "status", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
			// A notification on the call's own answer stream. Logging is
			// deprecated in 2026-07-28, not in the revisions an HTTP+SSE
			// client speaks.
			//lint:ignore SA1019 the notification an old client receives
			err := req.Session.Log(ctx, &mcp.LoggingMessageParams{Level: "info", Data: "status logged"})
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "status: ok"}}}, nil, err
		})
	up := httptest.NewServer(tickingGET(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)))
	t.Cleanup(func() { up.CloseClientConnections(); up.Close() })
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q, decision_log: off}
upstreams:
  - {name: fixture, url: %q}
`, copyShippedPolicy(t), up.URL))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ctxgate stderr:\n%s", gw.stderr.String())
		}
	})
	return f, gw.URL + "/mcp/fixture/sse"
}

// TestOldClientTypeScriptSSE: the TypeScript SDK's SSEClientTransport (an
// HTTP+SSE, 2024-11-05 transport client) through the real binary: the
// shipped policy filters its tool and resource lists as on the
// Streamable HTTP endpoint, search is called (and its key redacted), the
// denied delete_file is the unknown-tool answer and never runs, the readme
// is read, and a notification from the server's GET stream arrives.
func TestOldClientTypeScriptSSE(t *testing.T) {
	requireNodeTool(t, oldClientJS)
	f, endpoint := startOldClientGateway(t)
	script, _ := filepath.Abs(oldClientJS)
	cmd := exec.CommandContext(ctx(t), nodeBin, script, endpoint, "search", "delete_file")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("TypeScript SSE client: %v\nstdout: %s\nstderr: %s", err, out, stderr.String())
	}
	type call struct {
		Text    string `json:"text,omitempty"`
		IsError bool   `json:"isError,omitempty"`
		Code    int    `json:"code,omitempty"`
	}
	var got struct {
		ServerName   string          `json:"serverName"`
		Tools        []string        `json:"tools"`
		Calls        map[string]call `json:"calls"`
		Resources    []string        `json:"resources"`
		Read         string          `json:"read"`
		Notification string          `json:"notification"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("client output %q: %v", out, err)
	}
	// The message of delete_file's error is the SDK's, not compared.
	want := got
	want.ServerName, want.Tools, want.Resources, want.Read, want.Notification = "policy-fixture", []string{"search", "status"}, []string{"file:///readme"}, "contents", "tick"
	want.Calls = map[string]call{
		"search":      {Text: "found: key [REDACTED] in config"},
		"delete_file": {Code: -32602},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("what the TypeScript SSE client saw (-want +got):\n%s", diff)
	}
	if n := f.executed.Load(); n != 1 {
		t.Errorf("the upstream ran %d tool call(s), want 1 (search; delete_file denied)", n)
	}
}

// streamTap is a reverse proxy in front of the gateway that keeps a copy
// of every event stream it relays to its client: what reached an HTTP+SSE
// client that shows no notifications itself (the Inspector CLI).
type streamTap struct {
	URL  string
	seen syncBuffer
}

func startStreamTap(t *testing.T, target string) *streamTap {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tap := &streamTap{}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = u.Host },
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				resp.Body = struct {
					io.Reader
					io.Closer
				}{io.TeeReader(resp.Body, &tap.seen), resp.Body}
			}
			return nil
		},
	}
	srv := httptest.NewServer(rp)
	t.Cleanup(srv.Close)
	tap.URL = srv.URL
	return tap
}

// TestOldClientInspectorSSE: the MCP Inspector CLI with --transport sse
// through the real binary: tools/list filtered by the shipped policy,
// tools/call, resources/read, and the server's log message during a call
// (the CLI sets the level at connect) on the Inspector's stream, which the
// CLI does not print, so a tap in front of the gateway reads it.
func TestOldClientInspectorSSE(t *testing.T) {
	requireNodeTool(t, inspectorCLIJS)
	f, endpoint := startOldClientGateway(t)
	gwURL, route, _ := strings.Cut(strings.TrimPrefix(endpoint, "http://"), "/")
	tap := startStreamTap(t, "http://"+gwURL)
	endpoint = tap.URL + "/" + route
	run := func(args ...string) json.RawMessage {
		t.Helper()
		cmd := exec.CommandContext(ctx(t), nodeBin, append([]string{inspectorCLIJS, "--cli", endpoint, "--transport", "sse", "--format", "json"}, args...)...)
		cmd.Dir = t.TempDir()
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if exit, ok := err.(*exec.ExitError); ok {
				stderr = string(exit.Stderr)
			}
			t.Fatalf("inspector %v: %v\n%s%s", args, err, out, stderr)
		}
		var answer struct {
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(out, &answer); err != nil || answer.Result == nil {
			t.Fatalf("inspector %v printed %q, want {\"result\": ...}: %v", args, out, err)
		}
		return answer.Result
	}

	var list struct {
		Tools []struct {
			Name string `json:"name"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(run("--method", "tools/list"), &list); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range list.Tools {
		names = append(names, tool.Name)
	}
	if diff := cmp.Diff([]string{"search", "status"}, names); diff != "" {
		t.Errorf("tools/list through the Inspector (-want +got):\n%s", diff)
	}
	if out := run("--method", "tools/call", "--tool-name", "search"); !strings.Contains(string(out), "found: key [REDACTED] in config") {
		t.Errorf("tools/call search: %s", out)
	}
	if n := f.executed.Load(); n != 1 {
		t.Errorf("the upstream ran %d tool call(s), want 1", n)
	}
	var read struct {
		Contents []struct {
			URI  string `json:"uri"`
			Text string `json:"text"`
		} `json:"contents"`
	}
	if err := json.Unmarshal(run("--method", "resources/read", "--uri", "file:///readme"), &read); err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "contents" {
		t.Errorf("resources/read: %v %+v", err, read)
	}
	if out := run("--method", "tools/call", "--tool-name", "status"); !strings.Contains(string(out), "status: ok") {
		t.Errorf("tools/call status: %s", out)
	}
	if seen := tap.seen.String(); !strings.Contains(seen, `"method":"notifications/message"`) || !strings.Contains(seen, "status logged") {
		t.Errorf("the Inspector's HTTP+SSE stream carried no log message from the server:\n%s", seen)
	}
}
