package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

func anonymousConfig(upstreamURL string) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - {name: everything, url: %q}
`, upstreamURL)
}

// observed is everything a client saw in one scripted session.
type observed struct {
	Tools            *mcp.ListToolsResult
	SimpleText       *mcp.CallToolResult
	Progress         []string
	ProgressResult   *mcp.CallToolResult
	SamplingPrompts  []string
	SamplingResult   *mcp.CallToolResult
	Resource         *mcp.ReadResourceResult
	Prompt           *mcp.GetPromptResult
	NegotiatedServer *mcp.Implementation
}

// script drives a Go SDK client through initialize, tools/list, tools/call
// (plain, streaming progress, and one that asks the client for sampling),
// resources/read, prompts/get, and DELETE on close.
func script(t *testing.T, endpoint string) observed {
	t.Helper()
	var (
		mu  sync.Mutex
		obs observed
	)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, &mcp.ClientOptions{
		// Sampling is deprecated in 2026-07-28 but still part of the legacy
		// revisions the gateway relays; this test checks that relay.
		//lint:ignore SA1019 the legacy sampling relay is what is tested
		CreateMessageHandler: func(_ context.Context, req *mcp.CreateMessageRequest) (*mcp.CreateMessageResult, error) {
			mu.Lock()
			defer mu.Unlock()
			obs.SamplingPrompts = append(obs.SamplingPrompts, req.Params.Messages[0].Content.(*mcp.TextContent).Text)
			//lint:ignore SA1019 the legacy sampling relay is what is tested
			return &mcp.CreateMessageResult{Model: "e2e-model", Role: "assistant", Content: &mcp.TextContent{Text: "sampled answer"}}, nil
		},
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			defer mu.Unlock()
			obs.Progress = append(obs.Progress, fmt.Sprintf("%v %v/%v %s", req.Params.ProgressToken, req.Params.Progress, req.Params.Total, req.Params.Message))
		},
	})
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s via %s: %v", what, endpoint, err)
		}
	}
	obs.NegotiatedServer = cs.InitializeResult().ServerInfo
	obs.Tools, err = cs.ListTools(ctx(t), nil)
	must("tools/list", err)
	obs.SimpleText, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "test_simple_text"})
	must("tools/call test_simple_text", err)
	progress := &mcp.CallToolParams{Name: "test_tool_with_progress"}
	progress.SetProgressToken("e2e-progress")
	obs.ProgressResult, err = cs.CallTool(ctx(t), progress)
	must("tools/call test_tool_with_progress", err)
	obs.SamplingResult, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "test_sampling", Arguments: map[string]any{"prompt": "say hi"}})
	must("tools/call test_sampling", err)
	obs.Resource, err = cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "test://static-text"})
	must("resources/read", err)
	obs.Prompt, err = cs.GetPrompt(ctx(t), &mcp.GetPromptParams{Name: "test_prompt_with_arguments", Arguments: map[string]string{"arg1": "a", "arg2": "b"}})
	must("prompts/get", err)
	must("close (DELETE)", cs.Close())
	mu.Lock()
	defer mu.Unlock()
	return obs
}

// TestGoSDKClientThroughGateway: a real client gets, through the gateway,
// exactly the results it gets directly.
func TestGoSDKClientThroughGateway(t *testing.T) {
	upstream := startEverything(t)
	rec := startRecorder(t, upstream)
	gw := startGateway(t, anonymousConfig(rec.URL))

	direct := script(t, upstream)
	via := script(t, gw.URL+"/mcp/everything")

	// Compared in wire form: what each client received, as JSON.
	if diff := cmp.Diff(asJSON(t, direct), asJSON(t, via)); diff != "" {
		t.Errorf("results through the gateway differ from direct (-direct +gateway):\n%s", diff)
	}
	if len(via.Progress) == 0 || len(via.SamplingPrompts) != 1 {
		t.Errorf("progress %q, sampling prompts %q: the streamed notifications and the sampling request must reach the client", via.Progress, via.SamplingPrompts)
	}
	var deletes int
	for _, r := range rec.requests() {
		if r.method == http.MethodDelete {
			deletes++
		}
		// The client's own headers that must never reach the upstream.
		for _, h := range []string{"Authorization", "Cookie"} {
			if r.header.Get(h) != "" {
				t.Errorf("upstream received client header %s", h)
			}
		}
	}
	if deletes != 1 {
		t.Errorf("upstream saw %d DELETE requests, want 1 (the session end is relayed)", deletes)
	}
}

func asJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func hashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// TestRejections: every malformed or unauthorised request gets its status
// and JSON-RPC error from the gateway, and the upstream sees nothing of it.
func TestRejections(t *testing.T) {
	upstream := startEverything(t)
	rec := startRecorder(t, upstream)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0", max_body_bytes: 8192}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth:
  api_keys:
    - {name: alice, sha256: %q}
    - {name: bob, sha256: %q}
upstreams:
  - {name: a, url: %q}
  - {name: b, url: %q}
`, hashKey("alice-key"), hashKey("bob-key"), rec.URL, rec.URL))

	alice := &rpc{url: gw.URL + "/mcp/a", header: http.Header{"Authorization": {"Bearer alice-key"}}}
	alice.initialize(t)

	tests := []struct {
		name     string
		url      string
		header   http.Header // replaces alice's headers
		session  string      // replaces alice's session; "-" for none
		body     string
		wantCode int
		wantRPC  int64
		wantID   any
	}{
		{name: "duplicate key", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"test_simple_text","name":"test_error_handling"}}`, wantCode: 400, wantRPC: -32600, wantID: float64(7)},
		{name: "case-variant key", body: `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"test_simple_text","NAME":"test_error_handling"}}`, wantCode: 400, wantRPC: -32600, wantID: float64(8)},
		{name: "case-variant envelope", body: `{"jsonrpc":"2.0","id":9,"Method":"tools/call"}`, wantCode: 400, wantRPC: -32600, wantID: float64(9)},
		{name: "not JSON", body: `{"jsonrpc":`, wantCode: 400, wantRPC: -32700},
		{name: "batch in 2025-11-25", body: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, wantCode: 400, wantRPC: -32600},
		{name: "foreign Origin", header: http.Header{"Authorization": {"Bearer alice-key"}, "Origin": {"http://evil.example.com"}}, body: `{"jsonrpc":"2.0","id":2,"method":"ping"}`, wantCode: 403, wantRPC: -31002},
		{name: "foreign Host (DNS rebinding)", header: http.Header{"Authorization": {"Bearer alice-key"}, "Host": {"evil.example.com"}}, body: `{"jsonrpc":"2.0","id":2,"method":"ping"}`, wantCode: 403, wantRPC: -31002},
		{name: "session replayed by another principal", header: http.Header{"Authorization": {"Bearer bob-key"}}, body: `{"jsonrpc":"2.0","id":3,"method":"ping"}`, wantCode: 404, wantRPC: -31003, wantID: float64(3)},
		{name: "session replayed on another route", url: gw.URL + "/mcp/b", body: `{"jsonrpc":"2.0","id":4,"method":"ping"}`, wantCode: 404, wantRPC: -31003, wantID: float64(4)},
		{name: "forged session", session: "AAAA" + alice.session[4:], body: `{"jsonrpc":"2.0","id":5,"method":"ping"}`, wantCode: 404, wantRPC: -31003, wantID: float64(5)},
		{name: "missing session", session: "-", body: `{"jsonrpc":"2.0","id":6,"method":"ping"}`, wantCode: 400, wantRPC: -32600, wantID: float64(6)},
		{name: "no credential", header: http.Header{}, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, wantCode: 401, wantRPC: -31001},
		{name: "unknown key", header: http.Header{"Authorization": {"Bearer mallory"}}, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, wantCode: 401, wantRPC: -31001},
		{name: "unsupported protocol version", header: http.Header{"Authorization": {"Bearer alice-key"}, "Mcp-Protocol-Version": {"1999-01-01"}}, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, wantCode: 400, wantRPC: -32600, wantID: float64(1)},
		{name: "body too large", body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 9000) + `"}}`, wantCode: 413, wantRPC: -31004},
		{name: "wrong content type", header: http.Header{"Authorization": {"Bearer alice-key"}, "Content-Type": {"text/plain"}}, body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, wantCode: 415, wantRPC: -32600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *alice
			if tt.url != "" {
				c.url = tt.url
			}
			if tt.header != nil {
				c.header = tt.header
			}
			switch tt.session {
			case "":
			case "-":
				c.session = ""
			default:
				c.session = tt.session
			}
			before := rec.count()
			resp := c.post(t, tt.body)
			if resp.StatusCode != tt.wantCode {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.wantCode, body)
			}
			got := decodeError(t, resp)
			if got.Error.Code != tt.wantRPC || got.ID != tt.wantID {
				t.Errorf("JSON-RPC error code %d id %v, want %d id %v (%s)", got.Error.Code, got.ID, tt.wantRPC, tt.wantID, got.Error.Message)
			}
			if n := rec.count() - before; n != 0 {
				t.Errorf("upstream received %d request(s); a rejected request must not be forwarded", n)
			}
		})
	}

	// The session is alive for its owner after all that.
	if resp := alice.post(t, `{"jsonrpc":"2.0","id":10,"method":"ping"}`); resp.StatusCode != http.StatusOK {
		t.Errorf("owner's ping after the attacks: %s", resp.Status)
	}
	// The client's API key authenticated it to the gateway and went no further.
	for _, r := range rec.requests() {
		if r.header.Get("Authorization") != "" || r.header.Get("X-Api-Key") != "" {
			t.Errorf("upstream received the client's credential: %v", r.header)
		}
	}
}

// TestUpstreamSessionHidden: the client only ever holds the gateway's sealed
// session id; the upstream only ever sees its own.
func TestUpstreamSessionHidden(t *testing.T) {
	upstream := startEverything(t)
	rec := startRecorder(t, upstream)
	gw := startGateway(t, anonymousConfig(rec.URL))
	c := &rpc{url: gw.URL + "/mcp/everything", header: http.Header{"Cookie": {"sid=secret"}, "X-Forwarded-User": {"admin"}}}
	c.initialize(t)

	reqs := rec.requests()
	if len(reqs) < 2 {
		t.Fatalf("upstream saw %d requests, want initialize and initialized", len(reqs))
	}
	upstreamSession := reqs[1].header.Get("Mcp-Session-Id")
	if upstreamSession == "" || upstreamSession == c.session || strings.Contains(c.session, upstreamSession) {
		t.Errorf("client session %q must be the gateway's own, not the upstream's %q", c.session, upstreamSession)
	}
	for _, r := range reqs {
		for _, h := range []string{"Cookie", "X-Forwarded-User"} {
			if r.header.Get(h) != "" {
				t.Errorf("upstream received client header %s: %q", h, r.header.Get(h))
			}
		}
	}
	// DELETE ends the upstream session; the sealed id then leads to the
	// upstream's 404, which tells the client to re-initialize.
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodDelete, c.url, nil)
	req.Header.Set("Mcp-Session-Id", c.session)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	if resp := c.post(t, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("request on a deleted session: %s, want 404", resp.Status)
	}
}

// TestBatch: JSON-RPC batches pass in revision 2025-03-26, where they exist,
// and only if every element passes the strict decode.
func TestBatch(t *testing.T) {
	upstream := startEverything(t)
	rec := startRecorder(t, upstream)
	gw := startGateway(t, anonymousConfig(rec.URL))
	c := &rpc{url: gw.URL + "/mcp/everything"}
	resp := c.post(t, strings.Replace(initializeBody, "2025-11-25", "2025-03-26", 1))
	c.session = resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || c.session == "" {
		t.Fatalf("initialize 2025-03-26: %s", resp.Status)
	}
	// No MCP-Protocol-Version header: the session's negotiated version applies.
	send := func(body string) *http.Response {
		req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, c.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", c.session)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	if resp := send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("initialized: %s", resp.Status)
	}

	resp = send(`[{"jsonrpc":"2.0","id":"b1","method":"ping"},{"jsonrpc":"2.0","id":"b2","method":"ping"}]`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"id":"b1"`) || !strings.Contains(string(body), `"id":"b2"`) {
		t.Errorf("batch in 2025-03-26: %s %s", resp.Status, body)
	}

	for name, batch := range map[string]string{
		"duplicate key in one element": `[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"ping","method":"tools/list"}]`,
		"initialize inside a batch":    `[` + initializeBody + `]`,
		"empty batch":                  `[]`,
	} {
		before := rec.count()
		if resp := send(batch); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %s, want 400", name, resp.Status)
		}
		if rec.count() != before {
			t.Errorf("%s: forwarded upstream", name)
		}
	}
}
