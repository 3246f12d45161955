package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSSEUpstreamShippedPolicy: the real binary fronts an HTTP+SSE
// (2024-11-05) server, the Go SDK's SSEHandler, configured with
// transport: sse; a Streamable HTTP client lists its tools (the shipped
// policy filters them as on any upstream), calls one, and reads a
// resource, and a denied call never reaches the server.
func TestSSEUpstreamShippedPolicy(t *testing.T) {
	f := &policyFixture{}
	server := f.server()
	up := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil))
	t.Cleanup(up.Close)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q}
upstreams:
  - {name: old, url: %q, transport: sse}
`, copyShippedPolicy(t), up.URL+"/sse"))

	cs := connect(t, gw.URL+"/mcp/old")
	if got := cs.InitializeResult().ServerInfo.Name; got != "policy-fixture" {
		t.Errorf("serverInfo.name %q, want policy-fixture", got)
	}
	tools, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if !slices.Equal(names, []string{"search"}) {
		t.Errorf("anonymous sees tools %v, want only the read-only [search]", names)
	}
	_, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "delete_file"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("delete_file: %v, want the unknown-tool answer", err)
	}
	if n := f.executed.Load(); n != 0 {
		t.Errorf("the upstream executed %d denied call(s)", n)
	}
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "search"})
	if err != nil || res.IsError || f.executed.Load() != 1 {
		t.Fatalf("search: %v %+v (executed %d)", err, res, f.executed.Load())
	}
	read, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "file:///readme"})
	if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "contents" {
		t.Errorf("resources/read: %v %+v", err, read)
	}
}

// loopbackPreload makes a Node server that listens on every interface
// (app.listen(PORT)) listen on 127.0.0.1 only: the npm everything-server
// has no option for it, and a test must not open a port to the network.
const loopbackPreload = `const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || typeof args[0] === 'string') {
    return listen.call(this, Number(args[0]), '127.0.0.1', args.find((a) => typeof a === 'function'));
  }
  return listen.apply(this, args);
};
`

// startNPMEverythingSSE runs the npm everything-server in its HTTP+SSE
// (2024-11-05) mode on a free loopback port and returns its SSE endpoint.
func startNPMEverythingSSE(t *testing.T) string {
	t.Helper()
	requireNodeTool(t, npmEverythingJS)
	node, _ := filepath.Abs(nodeBin)
	script, _ := filepath.Abs(npmEverythingJS)
	preload := filepath.Join(t.TempDir(), "loopback.cjs")
	if err := os.WriteFile(preload, []byte(loopbackPreload), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := reservePort(t)
	_, port, _ := net.SplitHostPort(addr)
	p := &proc{name: "npm-everything-sse", cmd: exec.Command(node, "--require", preload, script, "sse"), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "PORT="+port)
	startCmd(t, p)
	waitFor(t, "npm everything-server (sse) to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("npm everything-server exited: %s", p.stderr.String())
		}
		return strings.Contains(p.stderr.String(), "Server is running on port")
	})
	return "http://" + addr + "/sse"
}

// TestSSEUpstreamNPMEverything: the real binary fronts the npm
// everything-server's HTTP+SSE mode (a server nobody here wrote) for a
// Streamable HTTP client: the shipped policy filters its tool list (the
// read-only echo shown, the toggles hidden), echo is called, and a
// resource it lists is read.
func TestSSEUpstreamNPMEverything(t *testing.T) {
	up := startNPMEverythingSSE(t)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q}
upstreams:
  - {name: everything, url: %q, transport: sse}
`, copyShippedPolicy(t), up))

	cs := connect(t, gw.URL+"/mcp/everything")
	tools, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if !slices.Contains(names, "echo") || slices.Contains(names, "toggle-simulated-logging") {
		t.Errorf("anonymous sees tools %v, want echo (read-only) and not toggle-simulated-logging", names)
	}
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"message": "through sse"}})
	if err != nil || res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "through sse") {
		t.Fatalf("echo: %v %+v", err, res)
	}
	resources, err := cs.ListResources(ctx(t), nil)
	if err != nil || len(resources.Resources) == 0 {
		t.Fatalf("resources/list: %v %+v", err, resources)
	}
	uri := resources.Resources[0].URI
	read, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: uri})
	if err != nil || len(read.Contents) == 0 || read.Contents[0].URI != uri {
		t.Errorf("resources/read %s: %v %+v", uri, err, read)
	}
}
