package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
)

// mrtrMember is a Go SDK server (legacy sessions) with a multi-round-trip
// tool "ask": it answers input requests (an elicitation) until it is
// called again with the answer, then greets the name it got. On a legacy
// session the SDK turns the input requests into an elicitation/create
// request of the client. got is the last name it was given. A stateless
// member serves the modern era, where the client gets the input requests
// in an input_required result.
func mrtrMember(t *testing.T, got *atomic.Value, stateless bool) *httptest.Server {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "member", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "ask"}, func(_ context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		if r, ok := req.Params.InputResponses["name"].(*mcp.ElicitResult); ok {
			name := fmt.Sprint(r.Content["name"])
			got.Store(name)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "hello " + name}}}, nil, nil
		}
		return &mcp.CallToolResult{InputRequests: mcp.InputRequestMap{"name": &mcp.ElicitParams{Message: "name?",
			RequestedSchema: map[string]any{"type": "object", "properties": map[string]any{"name": map[string]any{"type": "string"}}}}}}, nil, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: stateless}))
	t.Cleanup(srv.Close)
	return srv
}

// TestFederatedMultiRoundTrip: a multi-round-trip tool of a member works
// on a legacy federated session, with and without a policy: the member's
// elicitation reaches the client (under a federated id), the client's
// answer reaches the member, and the tool's result reaches the client.
func TestFederatedMultiRoundTrip(t *testing.T) {
	const allowAll = "package ctxgate.authz\n\ndefault allow := true\n\ndefault visible := true\n"
	for _, tt := range []struct {
		name, policy, version string
		wantErr               bool
	}{
		{name: "no policy", version: "2025-11-25"},
		{name: "policy", policy: allowAll, version: "2025-11-25"},
		{name: "the policy denies the elicitation", policy: allowAll + "\nallow := false if input.method == \"elicitation/create\"\n", version: "2025-11-25", wantErr: true},
		{name: "modern era, policy", policy: allowAll, version: "2026-07-28"},
		{name: "modern era, no policy", version: "2026-07-28"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got atomic.Value
			modern := tt.version == "2026-07-28"
			a, b := mrtrMember(t, &got, modern), sdkServer(t, "other")
			if modern {
				b = statelessMember(t, &memberHooks{}, "other")
			}
			var opts gateway.Options
			if tt.policy != "" {
				opts.Policy = newEngine(t, tt.policy, nil, nil)
			}
			srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-an-engine-or-none}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 5s}]
`, a.URL, b.URL), opts)
			if err != nil {
				t.Fatal(err)
			}
			client := mcp.NewClient(&mcp.Implementation{Name: "t", Version: "1"}, &mcp.ClientOptions{
				ElicitationHandler: func(context.Context, *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
					return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"name": "ada"}}, nil
				}})
			ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
			defer cancel()
			cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: tt.version})
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if ir := cs.InitializeResult(); ir == nil || ir.ProtocolVersion != tt.version {
				t.Fatalf("the client speaks %+v, want %s", ir, tt.version)
			}
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "a__ask", Arguments: map[string]any{}})
			if tt.wantErr {
				// The member's own error, carrying the gateway's refusal.
				if err == nil || !strings.Contains(err.Error(), "request denied by policy") || got.Load() != nil {
					t.Errorf("tools/call a__ask with the elicitation denied: %v, %+v; the member was given %v", err, res, got.Load())
				}
				return
			}
			if err != nil {
				t.Fatalf("tools/call a__ask: %v", err)
			}
			if text, _ := res.Content[0].(*mcp.TextContent); res.IsError || text == nil || text.Text != "hello ada" {
				t.Errorf("tools/call a__ask: %+v, want the text \"hello ada\"", res)
			}
			if got.Load() != "ada" {
				t.Errorf("the member was given %v, want ada", got.Load())
			}
		})
	}
}

// TestFederatedClientAnswer: a client's answer is sent to a member only
// under an id the gateway gave one of the session's members' requests;
// any other is accepted and dropped. An answer to a member that ended its
// session is 404 -31003, as every other message to it.
func TestFederatedClientAnswer(t *testing.T) {
	hooks := &memberHooks{}
	a, b := sdkServerHooked(t, hooks, "search"), sdkServer(t, "other")
	srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	tests := []struct {
		name, id   string
		forget     bool
		wantStatus int
		wantCode   int64
		wantSent   int64
	}{
		{"an id the gateway did not give", `7`, false, http.StatusAccepted, 0, 0},
		{"a member not on the route", `"ctxgate-member:c:1"`, false, http.StatusAccepted, 0, 0},
		{"a malformed member id", `"ctxgate-member:a:{"`, false, http.StatusAccepted, 0, 0},
		{"a member's request", `"ctxgate-member:a:1"`, false, http.StatusAccepted, 0, 1},
		{"a member that ended its session", `"ctxgate-member:a:1"`, true, http.StatusNotFound, -31003, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hooks.forget.Store(tt.forget)
			before := hooks.answers.Load()
			got := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":`+tt.id+`,"result":{"action":"decline"}}`, nil)
			code := int64(0)
			if got.Error != nil {
				code = got.Error.Code
			}
			if got.status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("HTTP %d, code %d; want HTTP %d, code %d", got.status, code, tt.wantStatus, tt.wantCode)
			}
			if sent := hooks.answers.Load() - before; sent != tt.wantSent {
				t.Errorf("%d answers reached member a, want %d", sent, tt.wantSent)
			}
		})
	}
}
