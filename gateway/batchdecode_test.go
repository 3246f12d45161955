package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestBatchElementsDecidedOnTheirOwnParams: each element of a 2025-03-26
// batch is decided on its own params, however large (the decoded messages
// keep slices of what they decode: of the body, which never changes, not
// of a decoder's buffer, which jsontext only promises until its next
// read), so "bad" is never decided as the "good" after it.
func TestBatchElementsDecidedOnTheirOwnParams(t *testing.T) {
	var forwarded atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if strings.Contains(string(body), `"initialize"`) {
			w.Header().Set("Mcp-Session-Id", "s1")
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-03-26","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
			return
		}
		if strings.Contains(string(body), `"tools/list"`) {
			// The gateway's own fetch for a tool it has not seen listed
			// (calls before lists): not a client message.
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":0,"result":{"tools":[]}}`)
			return
		}
		forwarded.Add(1)
		_, _ = io.WriteString(w, `[]`)
	}))
	defer up.Close()
	engine := newEngine(t, `package ctxgate.authz
default allow := false
allow if not input.tool
allow if input.tool.name == "good"
`, nil, io.Discard)
	srv, err := startGatewayYAML(t, `
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused}
upstreams: [{name: up, url: "`+up.URL+`"}]
`, gateway.Options{Policy: engine})
	if err != nil {
		t.Fatal(err)
	}
	init := send(t, http.MethodPost, srv.URL+"/mcp/up", "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
	session := init.Header.Get("Mcp-Session-Id")
	pad := strings.Repeat("x", 200_000) // larger than a decoder's first buffer
	call := func(id, tool string) string {
		return `{"jsonrpc":"2.0","id":"` + id + `","method":"tools/call","params":{"name":"` + tool + `","arguments":{"pad":"` + pad + `"}}}`
	}
	resp := send(t, http.MethodPost, srv.URL+"/mcp/up", session, "["+call("1", "bad")+","+call("2", "good")+"]", nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"code":-32602`) || forwarded.Load() != 0 {
		t.Errorf("batch with a denied element: %s %.200s, %d forwarded; want the denial and nothing forwarded", resp.Status, body, forwarded.Load())
	}
}
