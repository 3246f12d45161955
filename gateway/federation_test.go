package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
)

// sdkServer is a Go SDK MCP server offering the named tools, each
// answering its own name.
func sdkServer(t *testing.T, tools ...string) *httptest.Server {
	t.Helper()
	return sdkServerHooked(t, &memberHooks{}, tools...)
}

// memberHooks change and watch an sdkServer: while forget is set it
// answers 404 to every request on a session, as a restarted server does;
// forget400 answers a request on a session 400 with a JSON-RPC error for
// no request, as the TypeScript SDK's servers answer a session they do not
// know; while fail is set it answers 503 to everything; mcpName is the
// last Mcp-Name header it received; answers counts the JSON-RPC
// responses (a client's answers) POSTed to it, deletes the DELETEs.
type memberHooks struct {
	forget    atomic.Bool
	forget400 atomic.Bool
	fail      atomic.Bool
	mcpName   atomic.Value
	answers   atomic.Int64
	deletes   atomic.Int64
}

func sdkServerHooked(t *testing.T, hooks *memberHooks, tools ...string) *httptest.Server {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "member", Version: "1"}, nil)
	for _, name := range tools {
		mcp.AddTool(server, &mcp.Tool{Name: name}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name}}}, nil, nil
		})
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("Mcp-Name"); v != "" {
			hooks.mcpName.Store(v)
		}
		if r.Method == http.MethodDelete {
			hooks.deletes.Add(1)
		}
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if strings.Contains(string(body), `"result"`) {
				hooks.answers.Add(1)
			}
			r.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		if hooks.fail.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if hooks.forget400.Load() && r.Header.Get("Mcp-Session-Id") != "" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}`)
			return
		}
		if hooks.forget.Load() && r.Header.Get("Mcp-Session-Id") != "" {
			http.Error(w, "session not found", http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// newFederatedGateway serves upstreams a and b at /mcp/a, /mcp/b and,
// federated with prefix mode prefix, at /mcp.
func newFederatedGateway(t *testing.T, aURL, bURL, prefix string) (*httptest.Server, error) {
	t.Helper()
	return startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}}
routes: [{path: /mcp, upstreams: [a, b], prefix: %s, member_timeout: 2s}]
`, aURL, bURL, prefix), gateway.Options{})
}

type rpcAnswer struct {
	status  int
	session string
	Result  map[string]json.RawMessage `json:"result"`
	Error   *struct {
		Code int64 `json:"code"`
	} `json:"error"`
}

func rpc(t *testing.T, method, url, session, body string, h http.Header) rpcAnswer {
	t.Helper()
	resp := send(t, method, url, session, body, h)
	raw, _ := io.ReadAll(resp.Body)
	a := rpcAnswer{status: resp.StatusCode, session: resp.Header.Get("Mcp-Session-Id")}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// The one response event of a streamed answer.
		for line := range strings.SplitSeq(string(raw), "\n") {
			if data, ok := strings.CutPrefix(line, "data: "); ok && strings.Contains(data, `"id"`) {
				raw = []byte(data)
			}
		}
	}
	_ = json.Unmarshal(raw, &a)
	return a
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

func TestFederatedRoute(t *testing.T) {
	hooks := &memberHooks{}
	a := sdkServerHooked(t, hooks, "search", "only_a")
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // member b is down from the start
	srv, err := newFederatedGateway(t, a.URL, down.URL, config.PrefixCollision)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if init.status != http.StatusOK || init.session == "" {
		t.Fatalf("initialize with one member down: HTTP %d, session %q", init.status, init.session)
	}
	if got := string(init.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"]}}` {
		t.Errorf("initialize _meta = %s, want b missing", got)
	}
	list := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
	var tools []struct{ Name string }
	_ = json.Unmarshal(list.Result["tools"], &tools)
	if diff := cmp.Diff([]struct{ Name string }{{"only_a"}, {"search"}}, tools); diff != "" {
		t.Errorf("tools/list (-want +got):\n%s", diff)
	}
	if got := string(list.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"]}}` {
		t.Errorf("tools/list _meta = %s, want b missing", got)
	}
	call := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"only_a","arguments":{}}}`, nil)
	if call.status != http.StatusOK || call.Error != nil || len(call.Result["content"]) == 0 {
		t.Errorf("tools/call only_a: HTTP %d, %+v", call.status, call)
	}

	tests := []struct {
		name, method, session, body string
		header                      http.Header
		wantStatus                  int
		wantCode                    int64
	}{
		{"unknown tool", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"c__x","arguments":{}}}`, nil, http.StatusOK, -32602},
		{"a tool of a member down at initialize, being retried", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"b__x","arguments":{}}}`, nil, http.StatusServiceUnavailable, -31070},
		{"tampered cursor", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"cursor":"AAAA"}}`, nil, http.StatusOK, -32602},
		{"a session id is not a cursor", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"cursor":"` + init.session + `"}}`, nil, http.StatusOK, -32602},
		{"no session", http.MethodPost, "", `{"jsonrpc":"2.0","id":6,"method":"tools/list"}`, nil, http.StatusBadRequest, -32600},
		{"batch", http.MethodPost, init.session, `[{"jsonrpc":"2.0","id":7,"method":"ping"}]`, nil, http.StatusBadRequest, -32600},
		{"modern era, checked as on a single route", http.MethodPost, "", `{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`,
			http.Header{"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/list"}}, http.StatusBadRequest, -32602},
		{"a member name left with a leading space after un-naming", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":13,"method":"tools/call","params":{"name":"a__ search","arguments":{}}}`, nil, http.StatusBadRequest, -32602},
		{"a federated URI with a space before the member's scheme", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":14,"method":"resources/read","params":{"uri":"a+ secret://db"}}`, nil, http.StatusBadRequest, -32602},
		{"a federated URI with a percent-encoded scheme", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":15,"method":"resources/read","params":{"uri":"a+%73ecret://db"}}`, nil, http.StatusBadRequest, -32602},
		{"unsupported method", http.MethodPost, init.session, `{"jsonrpc":"2.0","id":9,"method":"completion/complete","params":{}}`, nil, http.StatusOK, -32601},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rpc(t, tt.method, url, tt.session, tt.body, tt.header)
			code := int64(0)
			if got.Error != nil {
				code = got.Error.Code
			}
			if got.status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("HTTP %d, code %d; want HTTP %d, code %d", got.status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	named := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"a__search","arguments":{}}}`, http.Header{"Mcp-Name": {"a__search"}})
	if named.Error != nil || hooks.mcpName.Load() != "search" {
		t.Errorf("tools/call a__search with Mcp-Name: %+v; the member saw Mcp-Name %v, want search", named.Error, hooks.mcpName.Load())
	}
	hooks.forget.Store(true)
	if got := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":11,"method":"tools/list"}`, nil); got.status != http.StatusNotFound || got.Error == nil || got.Error.Code != -31003 {
		t.Errorf("tools/list after a member forgot its session: HTTP %d %+v, want 404 -31003 (initialize again)", got.status, got.Error)
	}
	hooks.forget.Store(false)
	ping := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":10,"method":"ping"}`, nil)
	if ping.status != http.StatusOK || ping.Error != nil {
		t.Errorf("ping: HTTP %d, %+v", ping.status, ping.Error)
	}
}

func TestFederatedCollisionNever(t *testing.T) {
	a, b := sdkServer(t, "search", "x"), sdkServer(t, "search", "y")
	_, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixNever)
	if err == nil || !strings.Contains(err.Error(), `tool "search" is offered by a and b`) {
		t.Fatalf("New with colliding names and prefix never: %v", err)
	}
	if _, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixCollision); err != nil {
		t.Fatalf("New with colliding names and prefix collision: %v", err)
	}
}

// statelessMember is a stateless Go SDK MCP server (it serves the modern
// era) offering the named tools, each answering its own name; it records
// the last Mcp-Name header it received.
func statelessMember(t *testing.T, hooks *memberHooks, tools ...string) *httptest.Server {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "member", Version: "1"}, nil)
	for _, name := range tools {
		mcp.AddTool(server, &mcp.Tool{Name: name}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: name}}}, nil, nil
		})
	}
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("Mcp-Name"); v != "" {
			hooks.mcpName.Store(v)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestFederatedModern: a 2026-07-28 request on a federated route of two
// modern members is answered without a session: tools/list is the merged,
// prefixed list of both, tools/call reaches the owning member under its
// own name (Mcp-Name too), server/discover is the gateway's.
func TestFederatedModern(t *testing.T) {
	hooksA, hooksB := &memberHooks{}, &memberHooks{}
	a, b := statelessMember(t, hooksA, "search", "only_a"), statelessMember(t, hooksB, "search", "only_b")
	srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	list := rpc(t, http.MethodPost, url, "", modernCall("tools/list", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"))
	if list.status != http.StatusOK || list.Error != nil || list.session != "" {
		t.Fatalf("modern tools/list: HTTP %d, %+v, session %q", list.status, list.Error, list.session)
	}
	var tools []struct{ Name string }
	_ = json.Unmarshal(list.Result["tools"], &tools)
	if diff := cmp.Diff([]struct{ Name string }{{"a__only_a"}, {"a__search"}, {"b__only_b"}, {"b__search"}}, tools); diff != "" {
		t.Errorf("modern tools/list (-want +got):\n%s", diff)
	}
	if meta := list.Result["_meta"]; meta != nil {
		t.Errorf("modern tools/list with both members up is partial: %s", meta)
	}
	for _, tc := range []struct {
		name, want string
		hooks      *memberHooks
	}{{"a__search", "search", hooksA}, {"b__only_b", "only_b", hooksB}} {
		call := rpc(t, http.MethodPost, url, "", modernCall("tools/call", `"name":"`+tc.name+`","arguments":{}`),
			modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", tc.name))
		if call.status != http.StatusOK || call.Error != nil || !strings.Contains(string(call.Result["content"]), `"`+tc.want+`"`) {
			t.Errorf("modern tools/call %s: HTTP %d, %+v, content %s", tc.name, call.status, call.Error, call.Result["content"])
		}
		if got := tc.hooks.mcpName.Load(); got != tc.want {
			t.Errorf("modern tools/call %s: the member saw Mcp-Name %v, want %s", tc.name, got, tc.want)
		}
	}
	disc := rpc(t, http.MethodPost, url, "", modernCall("server/discover", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "server/discover"))
	if disc.Error != nil || !strings.Contains(string(disc.Result["supportedVersions"]), "2026-07-28") || !strings.Contains(string(disc.Result["capabilities"]), `"tools"`) {
		t.Errorf("modern server/discover: %+v, result %v", disc.Error, disc.Result)
	}

	tests := []struct {
		name, body string
		header     http.Header
		wantStatus int
		wantCode   int64
	}{
		{"unknown tool", modernCall("tools/call", `"name":"c__x","arguments":{}`), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "c__x"), http.StatusOK, -32602},
		{"Mcp-Name mismatch", modernCall("tools/call", `"name":"a__search","arguments":{}`), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "b__search"), http.StatusBadRequest, -32020},
		{"no Mcp-Method", modernCall("tools/list", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28"), http.StatusBadRequest, -32020},
		{"listen without notifications", modernCall("subscriptions/listen", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen"), http.StatusBadRequest, -32602},
		{"unknown version", `{"jsonrpc":"2.0","id":8,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2099-01-01","io.modelcontextprotocol/clientCapabilities":{}}}}`,
			modernHeader("Mcp-Protocol-Version", "2099-01-01", "Mcp-Method", "tools/list"), http.StatusBadRequest, -32022},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := rpc(t, http.MethodPost, url, "", tt.body, tt.header)
			code := int64(0)
			if got.Error != nil {
				code = got.Error.Code
			}
			if got.status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("HTTP %d, code %d; want HTTP %d, code %d", got.status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

// TestFederatedModernLegacyMember: a member that speaks only the legacy
// era is left out of a modern answer, named partial with the reason.
func TestFederatedModernLegacyMember(t *testing.T) {
	a := statelessMember(t, &memberHooks{}, "only_a")
	up, b := &modernUpstream{legacy: true}, (*httptest.Server)(nil)
	b = httptest.NewServer(up)
	t.Cleanup(b.Close)
	srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	list := rpc(t, http.MethodPost, srv.URL+"/mcp", "", modernCall("tools/list", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"))
	if got := string(list.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"],"reasons":{"b":"legacy only"}}}` {
		t.Errorf("modern tools/list with a legacy-only member: HTTP %d %+v, _meta %s", list.status, list.Error, got)
	}
	if !strings.Contains(string(list.Result["tools"]), `"a__only_a"`) {
		t.Errorf("modern tools/list lacks a's tool: %s", list.Result["tools"])
	}
}

// TestFederatedModernBridgedMember: a legacy-only member configured with
// bridge: true takes part in a modern answer through its bridge.
func TestFederatedModernBridgedMember(t *testing.T) {
	a, b := statelessMember(t, &memberHooks{}, "only_a"), sdkServer(t, "only_b")
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}, bridge: true}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 2s}]
`, a.URL, b.URL), gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	list := rpc(t, http.MethodPost, url, "", modernCall("tools/list", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"))
	var tools []struct{ Name string }
	_ = json.Unmarshal(list.Result["tools"], &tools)
	if diff := cmp.Diff([]struct{ Name string }{{"a__only_a"}, {"b__only_b"}}, tools); diff != "" || list.Result["_meta"] != nil {
		t.Errorf("modern tools/list with a bridged member (-want +got):\n%s_meta %s", diff, list.Result["_meta"])
	}
	call := rpc(t, http.MethodPost, url, "", modernCall("tools/call", `"name":"b__only_b","arguments":{}`),
		modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "b__only_b"))
	if call.Error != nil || !strings.Contains(string(call.Result["content"]), `"only_b"`) {
		t.Errorf("modern tools/call of the bridged member: HTTP %d, %+v, content %s", call.status, call.Error, call.Result["content"])
	}
	disc := rpc(t, http.MethodPost, url, "", modernCall("server/discover", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "server/discover"))
	if disc.Error != nil || disc.Result["_meta"] == nil || strings.Contains(string(disc.Result["_meta"]), "partial") {
		t.Errorf("modern server/discover with a bridged member: %+v, _meta %s", disc.Error, disc.Result["_meta"])
	}
}
