package e2e

import (
	"context"
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
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestSSEUpstreamShippedPolicy: the real binary fronts an HTTP+SSE
// (2024-11-05) server, the Go SDK's SSEHandler, configured with
// transport: sse; a Streamable HTTP client lists its tools and resources
// (the shipped policy filters them as on any upstream), calls one, and
// reads a resource, and a denied call never reaches the server.
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
	resources, err := cs.ListResources(ctx(t), nil)
	if err != nil || len(resources.Resources) != 1 || resources.Resources[0].URI != "file:///readme" {
		t.Errorf("resources/list: %v %+v, want only file:///readme (secret://vault hidden)", err, resources)
	}
	read, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "file:///readme"})
	if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "contents" {
		t.Errorf("resources/read: %v %+v", err, read)
	}
}

// loopbackPreload makes a Node server that listens on every interface
// (app.listen(PORT)) listen on 127.0.0.1 only: the npm everything-server
// has no option for it, and a test must not open a port to the network.
// It is the fallback where no private network namespace can be made.
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
// (2024-11-05) mode and returns its SSE endpoint as the gateway reaches
// it. The server listens on every interface (app.listen(PORT), no option
// to choose one), so it runs in a private network namespace (unshare -n)
// whose only interface is its own loopback, and the test forwards a port
// of its loopback into it (startInPrivateNetns): nothing but this test
// can reach the server, and the server runs unmodified. Creating a
// network namespace needs CAP_SYS_ADMIN; a process without it (not root,
// or a container that drops it) runs the server in the test's namespace
// instead, with loopbackPreload patching its listen() to 127.0.0.1, and
// logs that it did.
func startNPMEverythingSSE(t *testing.T) string {
	t.Helper()
	requireNodeTool(t, npmEverythingJS)
	node, _ := filepath.Abs(nodeBin)
	script, _ := filepath.Abs(npmEverythingJS)
	newProc := func(args ...string) *proc {
		return &proc{name: "npm-everything-sse", cmd: exec.Command(node, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	}
	// Any port is free in a namespace of the server's own.
	const nsPort = "3001"
	p := newProc(script, "sse")
	p.cmd.Env = append(os.Environ(), "PORT="+nsPort)
	addr, isolated := startInPrivateNetns(t, p, nsPort)
	if !isolated {
		t.Log("no private network namespace (needs CAP_SYS_ADMIN): the npm everything-server runs with its listen() patched to 127.0.0.1")
		preload := filepath.Join(t.TempDir(), "loopback.cjs")
		if err := os.WriteFile(preload, []byte(loopbackPreload), 0o600); err != nil {
			t.Fatal(err)
		}
		addr = reservePort(t)
		_, port, _ := net.SplitHostPort(addr)
		p = newProc("--require", preload, script, "sse")
		p.cmd.Env = append(os.Environ(), "PORT="+port)
		startCmd(t, p)
	}
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
// read-only echo shown, the toggles hidden and refused), echo is called,
// a resource it lists is read, and the progress notifications of a long-running tool
// reach the client.
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

	cs, notes := connectNoting(t, gw.URL+"/mcp/everything")
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
	_, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "toggle-simulated-logging"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("toggle-simulated-logging: %v, want the unknown-tool answer", err)
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

	// The server's progress notifications come on its SSE stream, not as
	// part of the POST's answer: the gateway relays them on the client's
	// GET stream.
	call := &mcp.CallToolParams{Name: "trigger-long-running-operation", Arguments: map[string]any{"duration": 0.1, "steps": 2}}
	call.SetProgressToken("e2e-sse")
	res, err = cs.CallTool(ctx(t), call)
	if err != nil || res.IsError {
		t.Fatalf("trigger-long-running-operation: %v %+v", err, res)
	}
	waitFor(t, "the server's progress notifications", readyDeadline, func() bool { return len(notes.get("progress ")) >= 2 })
	if got, want := notes.get("progress "), []string{"progress e2e-sse 1/2", "progress e2e-sse 2/2"}; !slices.Equal(got, want) {
		t.Errorf("notifications %q, want %q", got, want)
	}
}

// received records the server notifications a client receives.
type received struct {
	mu  sync.Mutex
	got []string
}

func (n *received) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.got = append(n.got, s)
}

// get returns the notifications received so far that start with prefix.
func (n *received) get(prefix string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, s := range n.got {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// connectNoting is connect for a client that records the progress,
// logging and resource-updated notifications it receives.
func connectNoting(t *testing.T, endpoint string) (*mcp.ClientSession, *received) {
	t.Helper()
	n := &received{}
	opts := &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			n.add(fmt.Sprintf("progress %v %v/%v", req.Params.ProgressToken, req.Params.Progress, req.Params.Total))
		},
		//lint:ignore SA1019 a 2024-11-05 server's log notifications are what is relayed
		LoggingMessageHandler: func(_ context.Context, req *mcp.LoggingMessageRequest) {
			n.add(fmt.Sprintf("log %s %v", req.Params.Level, req.Params.Data))
		},
		ResourceUpdatedHandler: func(_ context.Context, req *mcp.ResourceUpdatedNotificationRequest) {
			n.add("updated " + req.Params.URI)
		},
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, opts).Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs, n
}

// tsSSEServerJS is an HTTP+SSE server of our own on the TypeScript SDK's
// SSEServerTransport; what it serves is described in the script.
var tsSSEServerJS = filepath.Join("testdata", "ts-sse-server.cjs")

// nodeModules is where the scripts in testdata find the pinned packages
// (NODE_PATH: they are not under e2e/node).
var nodeModules = filepath.Join("node", "node_modules")

// startNodeScript runs a Node script of testdata that listens on a port it
// picks itself and prints "listening on <addr>" on stderr; it returns the
// process and that address.
func startNodeScript(t *testing.T, name, script string) (*proc, string) {
	t.Helper()
	requireNodeTool(t, filepath.Join(nodeModules, "@modelcontextprotocol", "sdk", "package.json"))
	node, _ := filepath.Abs(nodeBin)
	path, _ := filepath.Abs(script)
	modules, _ := filepath.Abs(nodeModules)
	p := &proc{name: name, cmd: exec.Command(node, path, "0"), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	startCmd(t, p)
	var addr string
	waitFor(t, name+" to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("%s exited: %v: %s", name, p.waitErr, p.stderr.String())
		}
		_, rest, ok := strings.Cut(p.stderr.String(), "listening on ")
		if line, _, complete := strings.Cut(rest, "\n"); ok && complete {
			addr = line
			return true
		}
		return false
	})
	return p, addr
}

// TestSSEUpstreamTypeScriptSDK: the real binary fronts an HTTP+SSE
// (2024-11-05) server on the TypeScript SDK's SSEServerTransport for a
// Streamable HTTP client: the shipped policy filters its tools (the
// read-only lookup shown, the destructive wipe hidden and refused before
// the server) and its resources (secret://vault hidden), lookup is called,
// note://readme read; the notifications the server sends on its stream
// during the call reach the client's GET stream, except the update of the
// resource the caller may not see.
func TestSSEUpstreamTypeScriptSDK(t *testing.T) {
	server, addr := startNodeScript(t, "ts-sse-server", tsSSEServerJS)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q}
upstreams:
  - {name: ts, url: %q, transport: sse}
`, copyShippedPolicy(t), "http://"+addr+"/sse"))

	cs, notes := connectNoting(t, gw.URL+"/mcp/ts")
	if got := cs.InitializeResult().ServerInfo.Name; got != "ts-sse-server" {
		t.Errorf("serverInfo.name %q, want ts-sse-server", got)
	}
	tools, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if !slices.Equal(names, []string{"lookup"}) {
		t.Errorf("anonymous sees tools %v, want only the read-only [lookup]", names)
	}
	_, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "wipe"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("wipe: %v, want the unknown-tool answer", err)
	}

	resources, err := cs.ListResources(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, r := range resources.Resources {
		uris = append(uris, r.URI)
	}
	if !slices.Equal(uris, []string{"note://readme"}) {
		t.Errorf("anonymous sees resources %v, want only [note://readme]", uris)
	}
	read, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "note://readme"})
	if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "contents of readme" {
		t.Errorf("resources/read note://readme: %v %+v", err, read)
	}

	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "lookup", Arguments: map[string]any{"query": "through sse"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "found through sse" {
		t.Fatalf("lookup: %v %+v", err, res)
	}
	// The server sent the vault's update, the readme's, then the log
	// message, in that order on one stream: once the log message is here,
	// the vault's update was dropped, not late.
	waitFor(t, "the server's log message", readyDeadline, func() bool { return len(notes.get("log ")) > 0 })
	if got, want := notes.get(""), []string{"updated note://readme", "log info looked up through sse"}; !slices.Equal(got, want) {
		t.Errorf("notifications %q, want %q", got, want)
	}
	// The server's stderr is copied in by a goroutine of its own: polled
	// for lookup's line, after which a wipe's, written earlier, would be
	// there too.
	waitFor(t, "the server's record of lookup", readyDeadline, func() bool { return strings.Contains(server.stderr.String(), "executed lookup") })
	if got := strings.Count(server.stderr.String(), "executed "); got != 1 {
		t.Errorf("the server executed %d tool(s), want only lookup:\n%s", got, server.stderr.String())
	}
}
