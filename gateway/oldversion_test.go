package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestProtocol20241105: a client that negotiates 2024-11-05 (and, as that
// revision's clients do, sends no MCP-Protocol-Version header) is served
// initialize, tools/list and tools/call through to a Go SDK server, over a
// Streamable HTTP upstream and an HTTP+SSE one. Before, the gateway
// refused the upstream's 2024-11-05 answer and the client got 502.
func TestProtocol20241105(t *testing.T) {
	server := echoServer("old-peer")
	getServer := func(*http.Request) *mcp.Server { return server }
	for _, tt := range []struct {
		name    string
		handler http.Handler
		keys    string
	}{
		{name: "streamable-http", handler: mcp.NewStreamableHTTPHandler(getServer, &mcp.StreamableHTTPOptions{JSONResponse: true})},
		{name: "sse", handler: mcp.NewSSEHandler(getServer, nil), keys: ", transport: sse"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(tt.handler)
			// The gateway's SSE stream to it stays open (the test gateway's
			// pool is not closed): end it, or Close waits for it.
			t.Cleanup(func() { up.CloseClientConnections(); up.Close() })
			gw := newGatewayOpts(t, up.URL, gateway.Options{}, tt.keys)
			post := func(session, body string) (*http.Response, string) {
				t.Helper()
				resp := send(t, http.MethodPost, gw.URL+"/mcp/up", session, body, nil)
				raw, _ := io.ReadAll(resp.Body)
				return resp, string(raw)
			}
			resp, body := post("", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"old","version":"1"}}}`)
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, `"protocolVersion":"2024-11-05"`) {
				t.Fatalf("initialize: %d %s, want 200 with protocolVersion 2024-11-05", resp.StatusCode, body)
			}
			session := resp.Header.Get("Mcp-Session-Id")
			if session == "" {
				t.Fatal("initialize answer carries no Mcp-Session-Id")
			}
			if resp, body = post(session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("notifications/initialized: %d %s, want 202", resp.StatusCode, body)
			}
			if resp, body = post(session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"name":"echo"`) {
				t.Fatalf("tools/list: %d %s, want 200 listing echo", resp.StatusCode, body)
			}
			if resp, body = post(session, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}`); resp.StatusCode != http.StatusOK || !strings.Contains(body, "echo: hi") {
				t.Fatalf("tools/call: %d %s, want 200 with echo: hi", resp.StatusCode, body)
			}
			// 2024-11-05 has no batches (they arrived in 2025-03-26).
			if resp, body = post(session, `[{"jsonrpc":"2.0","id":4,"method":"tools/list"}]`); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("batch in a 2024-11-05 session: %d %s, want 400", resp.StatusCode, body)
			}
		})
	}
}
