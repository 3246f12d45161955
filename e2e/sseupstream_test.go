package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
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
