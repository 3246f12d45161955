package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// memberAsk is a call of a multi-round-trip tool whose member request
// came to the client: its federated id, and the rest of its stream.
type memberAsk struct {
	id     string
	lines  *bufio.Scanner
	cancel context.CancelFunc
}

// askIDs numbers askClient's calls: an id is not used again while an
// earlier call under it may still be in progress (the member refuses it).
var askIDs atomic.Int64

// askClient calls tool on the session and reads its stream up to the
// member's request of the client.
func askClient(t *testing.T, url, session, tool string) *memberAsk {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{}}}`, 500+askIDs.Add(1), tool)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		data, ok := strings.CutPrefix(lines.Text(), "data: ")
		var msg struct {
			ID     any    `json:"id"`
			Method string `json:"method"`
		}
		if ok && json.Unmarshal([]byte(data), &msg) == nil && msg.Method == "elicitation/create" {
			id, _ := msg.ID.(string)
			return &memberAsk{id: id, lines: lines, cancel: cancel}
		}
	}
	t.Fatalf("tools/call %s: HTTP %d, no elicitation on its stream", tool, resp.StatusCode)
	return nil
}

// TestFederatedClientAnswer: a client's answer is sent to a member only
// under an id the gateway relayed to this session's client for one of
// its members' requests, and once; any other is accepted and dropped
// (member ids are predictable: the client must not answer a request the
// policy denied, or one never made). An answer to a member that ended its
// session is 404 -31003, as every other message to it.
func TestFederatedClientAnswer(t *testing.T) {
	var got atomic.Value
	var forget atomic.Bool
	var answers atomic.Int64
	a := gated(t, mrtrMember(t, &got, false), func(w http.ResponseWriter, r *http.Request, body []byte) bool {
		if r.Method == http.MethodPost && bytes.Contains(body, []byte(`"result"`)) && !bytes.Contains(body, []byte(`"method"`)) {
			answers.Add(1)
		}
		if forget.Load() && r.Header.Get("Mcp-Session-Id") != "" {
			http.Error(w, "session not found", http.StatusNotFound) // as a restarted server
			return true
		}
		return false
	})
	b := sdkServer(t, "other")
	srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", strings.Replace(initializeBody, `"capabilities":{}`, `"capabilities":{"elicitation":{}}`, 1), nil)
	other := rpc(t, http.MethodPost, url, "", strings.Replace(initializeBody, `"capabilities":{}`, `"capabilities":{"elicitation":{}}`, 1), nil)
	first := askClient(t, url, init.session, "a__ask")
	quoted := func(s string) string { raw, _ := json.Marshal(s); return string(raw) }
	const decline = `{"action":"decline"}`
	tests := []struct {
		name, session, id, result string
		forget                    bool
		wantStatus                int
		wantCode                  int64
		wantSent                  int64
	}{
		{"an id the gateway did not give", init.session, `7`, decline, false, http.StatusAccepted, 0, 0},
		{"a member not on the route", init.session, `"ctxgate-member:c:1"`, decline, false, http.StatusAccepted, 0, 0},
		{"a malformed member id", init.session, `"ctxgate-member:a:{"`, decline, false, http.StatusAccepted, 0, 0},
		{"a member's id the gateway did not relay", init.session, `"ctxgate-member:a:99"`, decline, false, http.StatusAccepted, 0, 0},
		{"a relayed id, on another session", other.session, quoted(first.id), decline, false, http.StatusAccepted, 0, 0},
		{"a relayed id", init.session, quoted(first.id), `{"action":"accept","content":{"name":"ada"}}`, false, http.StatusAccepted, 0, 1},
		{"a relayed id answered again", init.session, quoted(first.id), decline, false, http.StatusAccepted, 0, 0},
		{"a member that ended its session", init.session, "", decline, true, http.StatusNotFound, -31003, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.id == "" {
				tt.id = quoted(askClient(t, url, tt.session, "a__ask").id)
			}
			forget.Store(tt.forget)
			before := answers.Load()
			answer := rpc(t, http.MethodPost, url, tt.session, `{"jsonrpc":"2.0","id":`+tt.id+`,"result":`+tt.result+`}`, nil)
			code := int64(0)
			if answer.Error != nil {
				code = answer.Error.Code
			}
			if answer.status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("HTTP %d, code %d; want HTTP %d, code %d", answer.status, code, tt.wantStatus, tt.wantCode)
			}
			if sent := answers.Load() - before; sent != tt.wantSent {
				t.Errorf("%d answers reached member a, want %d", sent, tt.wantSent)
			}
		})
	}
	// The relayed answer finished the call, on its stream.
	var result string
	for first.lines.Scan() {
		if strings.Contains(first.lines.Text(), "hello ada") {
			result = first.lines.Text()
			break
		}
	}
	if result == "" || got.Load() != "ada" {
		t.Errorf("tools/call a__ask after the answer: no \"hello ada\" on its stream; the member was given %v", got.Load())
	}
}

// TestFederatedDeniedRequestAnswer: a member request the policy denied is
// refused to the member by the gateway and never reaches the client; the
// client's answer under its (predictable) federated id does not reach the
// member either.
func TestFederatedDeniedRequestAnswer(t *testing.T) {
	const policy = "package ctxgate.authz\n\ndefault allow := true\n\ndefault visible := true\n\nallow := false if input.method == \"elicitation/create\"\n"
	var got atomic.Value
	var answers atomic.Int64
	refused := make(chan string, 1)
	a := gated(t, mrtrMember(t, &got, false), func(_ http.ResponseWriter, r *http.Request, body []byte) bool {
		var msg struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Result json.RawMessage `json:"result"`
			Error  json.RawMessage `json:"error"`
		}
		if r.Method != http.MethodPost || json.Unmarshal(body, &msg) != nil || msg.Method != "" {
			return false
		}
		if msg.Error != nil {
			select {
			case refused <- string(msg.ID): // the gateway's refusal names the member's own id
			default:
			}
		}
		if msg.Result != nil {
			answers.Add(1)
		}
		return false
	})
	b := sdkServer(t, "other")
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-an-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 5s}]
`, a.URL, b.URL), gateway.Options{Policy: newEngine(t, policy, nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", strings.Replace(initializeBody, `"capabilities":{}`, `"capabilities":{"elicitation":{}}`, 1), nil)
	call := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a__ask","arguments":{}}}`, nil)
	var own string
	select {
	case own = <-refused:
	case <-time.After(10 * time.Second):
		t.Fatalf("the member's elicitation was never refused; tools/call: HTTP %d", call.status)
	}
	id, _ := json.Marshal("ctxgate-member:a:" + own)
	answer := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":`+string(id)+`,"result":{"action":"accept","content":{"name":"mallory"}}}`, nil)
	if answer.status != http.StatusAccepted || answers.Load() != 0 || got.Load() != nil {
		t.Errorf("answer to the denied request %s: HTTP %d; %d answers reached the member, which was given %v", id, answer.status, answers.Load(), got.Load())
	}
}
