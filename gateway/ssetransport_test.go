package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestSSEUpstream: a route whose upstream speaks only HTTP+SSE (2024-11-05,
// transport: sse) serves a Streamable HTTP client: initialize, tools/list
// and tools/call go through the gateway's one way to an upstream; a lost
// upstream stream ends the client's session with 404, and the client's new
// session works.
func TestSSEUpstream(t *testing.T) {
	server := echoServer("sse-peer")
	up := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil))
	defer up.Close()
	gw := newGatewayOpts(t, up.URL, gateway.Options{}, ", transport: sse")

	ctx := context.Background()
	connect := func() *mcp.ClientSession {
		client := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, nil)
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp/up", DisableStandaloneSSE: true}, nil)
		if err != nil {
			t.Fatalf("connect through the gateway: %v", err)
		}
		return cs
	}
	cs := connect()
	defer cs.Close()
	if got := cs.InitializeResult().ServerInfo.Name; got != "sse-peer" {
		t.Errorf("serverInfo.name %q, want sse-peer", got)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) != 1 || tools.Tools[0].Name != "echo" {
		t.Fatalf("tools/list: %v %+v", err, tools)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hi"}})
	if err != nil || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "echo: hi" {
		t.Fatalf("tools/call: %v %+v", err, res)
	}

	// The upstream's streams are cut: the client's session is gone (404),
	// and a new one is served.
	up.CloseClientConnections()
	if _, err := cs.ListTools(ctx, nil); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("tools/list on a session whose upstream stream was lost: %v, want the session missing (404)", err)
	}
	cs2 := connect()
	defer cs2.Close()
	if _, err := cs2.ListTools(ctx, nil); err != nil {
		t.Errorf("tools/list on a new session: %v", err)
	}
}

// echoServer is a Go SDK server named name with one tool, echo, answering
// "echo: " and its text argument.
func echoServer(name string) *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: name, Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
	})
	return server
}
