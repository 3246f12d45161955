package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
)

// oldPeer is a Go SDK server behind Streamable HTTP for the HTTP+SSE
// client tests: echo, a tool that reports progress, forbidden (which the
// test policy denies; executed counts its runs), a resource, and a ledger
// of every HTTP request the upstream received (method and body).
type oldPeer struct {
	server   *mcp.Server
	executed atomic.Int64
	// release ends every call of the tool hang (unhang closes it).
	release  chan struct{}
	unhang   func()
	mu       sync.Mutex
	requests []string // "METHOD body"
}

func newOldPeer(t *testing.T) (*oldPeer, *httptest.Server) {
	t.Helper()
	p := &oldPeer{server: echoServer("old-client-peer"), release: make(chan struct{})}
	mcp.AddTool(p.server, &mcp.Tool{Name: "hang"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		select {
		case <-p.release:
		case <-ctx.Done():
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "released"}}}, nil, nil
	})
	mcp.AddTool(p.server, &mcp.Tool{Name: "forbidden"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		p.executed.Add(1)
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ran"}}}, nil, nil
	})
	mcp.AddTool(p.server, &mcp.Tool{Name: "progress"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: req.Params.GetProgressToken(), Progress: 1, Total: 2, Message: "half way"})
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, err
	})
	p.server.AddResource(&mcp.Resource{URI: "file:///readme", Name: "readme"}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, Text: "contents"}}}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return p.server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		p.mu.Lock()
		p.requests = append(p.requests, r.Method+" "+string(body))
		p.mu.Unlock()
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(p.release) }) })
	p.unhang = func() { once.Do(func() { close(p.release) }) }
	return p, srv
}

func (p *oldPeer) received() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

// TestOldClient: the Go SDK's HTTP+SSE (2024-11-05 transport) client
// reaches a Streamable HTTP upstream through the gateway's <route>/sse:
// initialize, tools/list, tools/call, resources/read, a progress
// notification riding a call's answer, and a tools/list_changed from the
// upstream's GET stream, which the gateway opened for the session; a
// denied call is answered as on the Streamable HTTP endpoint and never
// reaches the upstream; closing the client ends the upstream session.
func TestOldClient(t *testing.T) {
	peer, up := newOldPeer(t)
	g := startResGateway(t, up.URL, "")
	ctx := t.Context()
	progress := make(chan string, 4)
	changed := make(chan struct{}, 16)
	client := mcp.NewClient(&mcp.Implementation{Name: "old", Version: "1"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			progress <- req.Params.Message
		},
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { changed <- struct{}{} },
	})
	cs, err := client.Connect(ctx, &mcp.SSEClientTransport{Endpoint: g.URL + "/sse", HTTPClient: &http.Client{Transport: bearer{aliceKey, http.DefaultTransport}}}, nil)
	if err != nil {
		t.Fatalf("connect to %s/sse: %v", g.URL, err)
	}
	if got := cs.InitializeResult().ServerInfo.Name; got != "old-client-peer" {
		t.Errorf("serverInfo.name %q, want old-client-peer", got)
	}
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if diff := cmp.Diff([]string{"echo", "forbidden", "hang", "progress"}, names); diff != "" {
		t.Errorf("tools/list (-want +got):\n%s", diff)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "old"}})
	if err != nil || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "echo: old" {
		t.Fatalf("tools/call echo: %v %+v", err, res)
	}
	// The message is one MCP operation in the metrics, not two (the POST
	// that carried it is not counted).
	echoOps := func() (n float64) {
		for series, v := range g.series(t) {
			if strings.HasPrefix(series, "mcp_server_operation_duration_seconds_count{") && strings.Contains(series, `mcp_method_name="tools/call"`) {
				n += v
			}
		}
		return n
	}
	waitUntil(t, "the echo call in the metrics", func() bool { return echoOps() > 0 })
	if n := echoOps(); n != 1 {
		t.Errorf("tools/call operations in mcp_server_operation_duration_seconds: %v, want 1 (echo)", n)
	}
	read, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "file:///readme"})
	if err != nil || len(read.Contents) != 1 || read.Contents[0].Text != "contents" {
		t.Errorf("resources/read: %v %+v", err, read)
	}

	// Denied as on the Streamable HTTP endpoint: the unknown-tool answer.
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "forbidden"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("tools/call forbidden: %v, want the policy's denial (-32602)", err)
	}
	if n := peer.executed.Load(); n != 0 {
		t.Errorf("the upstream ran the denied tool %d time(s)", n)
	}

	// A notification on a call's answer stream.
	params := &mcp.CallToolParams{Name: "progress"}
	params.SetProgressToken("p-1")
	if res, err = cs.CallTool(ctx, params); err != nil || res.IsError {
		t.Fatalf("tools/call progress: %v %+v", err, res)
	}
	select {
	case msg := <-progress:
		if msg != "half way" {
			t.Errorf("progress message %q, want half way", msg)
		}
	case <-time.After(20 * time.Second):
		t.Error("the progress notification did not arrive")
	}

	// A notification on the upstream's GET stream: the gateway opens it
	// after notifications/initialized; until it is open the upstream has
	// nowhere to send it, so add tools until one change arrives.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		mcp.AddTool(peer.server, &mcp.Tool{Name: fmt.Sprintf("added-%d", i)}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{}, nil, nil
		})
		select {
		case <-changed:
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no notifications/tools/list_changed reached the HTTP+SSE client")
			}
			continue
		}
		break
	}

	if err := cs.Close(); err != nil {
		t.Logf("close: %v", err)
	}
	waitUntil(t, "the upstream session ended with a DELETE", func() bool {
		for _, r := range peer.received() {
			if strings.HasPrefix(r, http.MethodDelete) {
				return true
			}
		}
		return false
	})
}

// oldStream opens GET <route>/sse with key and returns the endpoint the
// first event names and the stream to read the rest from.
func oldStream(t *testing.T, route, key string) (string, *bufio.Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, route+"/sse", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET %s/sse: %s %q", route, resp.Status, resp.Header.Get("Content-Type"))
	}
	events := bufio.NewReader(resp.Body)
	ev := readEvent(t, events)
	endpoint, ok := strings.CutPrefix(ev, "event: endpoint\ndata: ")
	if !ok {
		t.Fatalf("first event %q, want the endpoint", ev)
	}
	return strings.TrimSpace(endpoint), events
}

// postOld POSTs body to an HTTP+SSE message endpoint with key.
func postOld(t *testing.T, url, key, body string) (int, int64) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var msg struct {
		Error struct {
			Code int64 `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &msg)
	return resp.StatusCode, msg.Error.Code
}

// TestOldClientRefusals: what the message endpoint refuses before anything
// is accepted (another principal's session, an unknown one, a Streamable
// HTTP session id in its place, malformed or oversized bodies, no
// credential) is an HTTP error with the JSON-RPC error body, and nothing
// of it reaches the upstream; an HTTP+SSE session id is no Mcp-Session-Id
// either.
func TestOldClientRefusals(t *testing.T) {
	peer, up := newOldPeer(t)
	g := startResGateway(t, up.URL, "")
	endpoint, _ := oldStream(t, g.URL, aliceKey)
	if !strings.HasPrefix(endpoint, "/mcp/up/messages?session=") {
		t.Fatalf("endpoint %q, want /mcp/up/messages?session=...", endpoint)
	}
	base := strings.TrimSuffix(g.URL, "/mcp/up")
	url := base + endpoint
	sseID := strings.TrimPrefix(endpoint, "/mcp/up/messages?session=")
	// A Streamable HTTP session of the same principal on the same route
	// (the upstream answers with events, which resClient does not read).
	opened, _ := (&resClient{url: g.URL, key: aliceKey}).post(t.Context(), `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
	if opened == nil || opened.header.Get("Mcp-Session-Id") == "" {
		t.Fatalf("Streamable HTTP initialize: %+v", opened)
	}
	streamable := opened.header.Get("Mcp-Session-Id")
	before := len(peer.received())
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

	for _, tt := range []struct {
		name       string
		url, key   string
		body       string
		wantStatus int
		wantCode   int64
	}{
		{name: "another principal", url: url, key: bobKey, body: initialize, wantStatus: http.StatusNotFound, wantCode: -31003},
		{name: "unknown session", url: base + "/mcp/up/messages?session=bm90LWEtc2Vzc2lvbg", key: aliceKey, body: initialize, wantStatus: http.StatusNotFound, wantCode: -31003},
		{name: "Mcp-Session-Id as the session", url: base + "/mcp/up/messages?session=" + streamable, key: aliceKey, body: initialize, wantStatus: http.StatusNotFound, wantCode: -31003},
		{name: "no session", url: base + "/mcp/up/messages", key: aliceKey, body: initialize, wantStatus: http.StatusBadRequest, wantCode: -32600},
		{name: "no credential", url: url, body: initialize, wantStatus: http.StatusUnauthorized, wantCode: -31001},
		{name: "not JSON", url: url, key: aliceKey, body: `{"jsonrpc":"2.0",`, wantStatus: http.StatusBadRequest, wantCode: -32700},
		{name: "duplicate member", url: url, key: aliceKey, body: `{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}`, wantStatus: http.StatusBadRequest, wantCode: -32600},
		{name: "bad params", url: url, key: aliceKey, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}`, wantStatus: http.StatusBadRequest, wantCode: -32602},
		{name: "too large", url: url, key: aliceKey, body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"` + strings.Repeat("x", 5<<20) + `"}}}`, wantStatus: http.StatusRequestEntityTooLarge, wantCode: -31004},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, code := postOld(t, tt.url, tt.key, tt.body)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("POST: %d %d, want %d %d", status, code, tt.wantStatus, tt.wantCode)
			}
		})
	}
	if got := peer.received()[before:]; len(got) != 0 {
		t.Errorf("refused messages reached the upstream: %q", got)
	}

	// The HTTP+SSE session id is not a Streamable HTTP session.
	c := &resClient{url: g.URL, key: aliceKey, session: sseID}
	a, err := c.post(t.Context(), `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
	if err != nil || a.status != http.StatusNotFound || a.code() != -31003 {
		t.Errorf("HTTP+SSE session id as Mcp-Session-Id: %v %+v, want 404 -31003", err, a)
	}
	// Only GET opens a stream, only POST carries a message.
	if status, _ := postOld(t, g.URL+"/sse", aliceKey, initialize); status != http.StatusMethodNotAllowed {
		t.Errorf("POST /sse: %d, want 405", status)
	}
}

// TestOldClientRaw20241105: the HTTP+SSE exchange on the wire, as a
// 2024-11-05 client speaks it: the endpoint under server.public_url's
// path, every POST answered 202 with its answer on the stream as an
// `event: message`, the negotiated 2024-11-05 kept for the session, and a
// second initialize on one session refused.
func TestOldClientRaw20241105(t *testing.T) {
	server := echoServer("raw-peer")
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{JSONResponse: true}))
	t.Cleanup(func() { up.CloseClientConnections(); up.Close() })
	gw, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0", public_url: "http://localhost/prefix"}
admin: {listen: "127.0.0.1:0"}
auth: {api_keys: [{name: alice, sha256: %q}]}
policy: {dir: unused-the-test-passes-no-engine}
upstreams: [{name: up, url: %q}]
`, hexSHA256(aliceKey), up.URL), gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	endpoint, events := oldStream(t, gw.URL+"/mcp/up", aliceKey)
	path, ok := strings.CutPrefix(endpoint, "/prefix/mcp/up/messages?session=")
	if !ok {
		t.Fatalf("endpoint %q, want it under public_url's path /prefix", endpoint)
	}
	// A path-routing proxy in front strips /prefix.
	url := gw.URL + "/mcp/up/messages?session=" + path
	exchange := func(body, want string) {
		t.Helper()
		if status, code := postOld(t, url, aliceKey, body); status != http.StatusAccepted {
			t.Fatalf("POST %s: %d %d, want 202", body, status, code)
		}
		if want == "" {
			return
		}
		ev := readEvent(t, events)
		if !strings.HasPrefix(ev, "event: message\ndata: ") || !strings.Contains(ev, want) {
			t.Fatalf("after %s the stream sent %q, want a message with %s", body, ev, want)
		}
	}
	exchange(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"old","version":"1"}}}`, `"protocolVersion":"2024-11-05"`)
	exchange(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, "")
	exchange(`{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, `"name":"echo"`)
	exchange(`{"jsonrpc":"2.0","id":"three","method":"tools/call","params":{"name":"echo","arguments":{"text":"raw"}}}`, `"id":"three","result":{"content":[{"type":"text","text":"echo: raw"}]`)
	// An error answer (here the upstream's 400 to a server-only method,
	// as the gateway relays it) goes to the stream too, with the id.
	exchange(`{"jsonrpc":"2.0","id":4,"method":"sampling/createMessage","params":{"messages":[],"maxTokens":1}}`, `"id":4,"error":{"code":`)
	if status, code := postOld(t, url, aliceKey, `{"jsonrpc":"2.0","id":5,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"old","version":"1"}}}`); status != http.StatusBadRequest || code != -32600 {
		t.Errorf("second initialize on one session: %d %d, want 400 -32600", status, code)
	}
}

// TestOldClientFederated: an HTTP+SSE client on a federated route is
// served by the federation: the members' merged tools/list and calls
// routed by name.
func TestOldClientFederated(t *testing.T) {
	b := mcp.NewServer(&mcp.Implementation{Name: "b", Version: "1"}, nil)
	mcp.AddTool(b, &mcp.Tool{Name: "search"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "found"}}}, nil, nil
	})
	var urls []string
	for _, server := range []*mcp.Server{echoServer("a"), b} {
		up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
		t.Cleanup(func() { up.CloseClientConnections(); up.Close() })
		urls = append(urls, up.URL)
	}
	gw, err := newFederatedGateway(t, urls[0], urls[1], config.PrefixCollision)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "old", Version: "1"}, nil).Connect(ctx, &mcp.SSEClientTransport{Endpoint: gw.URL + "/mcp/sse"}, nil)
	if err != nil {
		t.Fatalf("connect to the federated route's /sse: %v", err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if diff := cmp.Diff([]string{"echo", "search"}, names); diff != "" {
		t.Errorf("federated tools/list (-want +got):\n%s", diff)
	}
	for tool, want := range map[string]string{"echo": "echo: fed", "search": "found"} {
		params := &mcp.CallToolParams{Name: tool}
		if tool == "echo" {
			params.Arguments = map[string]any{"text": "fed"}
		}
		res, err := cs.CallTool(ctx, params)
		if err != nil || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != want {
			t.Errorf("tools/call %s: %v %+v, want %q", tool, err, res, want)
		}
	}
}

// TestOldClientInflightBound: an HTTP+SSE session has at most 64 requests
// in progress; one more is refused 503 -31091 before anything is sent,
// and the 64 are answered on the stream once the upstream answers.
func TestOldClientInflightBound(t *testing.T) {
	peer, up := newOldPeer(t)
	g := startResGateway(t, up.URL, "max_concurrent: 400\nmax_concurrent_per_principal: 200")
	endpoint, events := oldStream(t, g.URL, aliceKey)
	url := strings.TrimSuffix(g.URL, "/mcp/up") + endpoint
	if status, _ := postOld(t, url, aliceKey, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`); status != http.StatusAccepted {
		t.Fatalf("initialize: %d", status)
	}
	if ev := readEvent(t, events); !strings.Contains(ev, `"protocolVersion"`) {
		t.Fatalf("initialize answer: %q", ev)
	}
	if status, _ := postOld(t, url, aliceKey, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); status != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %d", status)
	}
	call := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"hang","arguments":{}}}`, id)
	}
	for id := 10; id < 10+64; id++ {
		if status, code := postOld(t, url, aliceKey, call(id)); status != http.StatusAccepted {
			t.Fatalf("call %d: %d %d, want 202", id, status, code)
		}
	}
	if status, code := postOld(t, url, aliceKey, call(99)); status != http.StatusServiceUnavailable || code != -31091 {
		t.Errorf("request 65 in progress: %d %d, want 503 -31091", status, code)
	}
	hanging := func() (n int, refused bool) {
		for _, r := range peer.received() {
			n += strings.Count(r, `"name":"hang"`)
			refused = refused || strings.Contains(r, `"id":99,`)
		}
		return n, refused
	}
	waitUntil(t, "the 64 calls reached the upstream", func() bool { n, _ := hanging(); return n == 64 })
	if _, refused := hanging(); refused {
		t.Error("the refused request reached the upstream")
	}
	peer.unhang()
	answered := map[string]bool{}
	for len(answered) < 64 {
		ev := readEvent(t, events)
		if strings.Contains(ev, `"released"`) {
			answered[ev] = true
		}
	}
}

// TestOldClientToSSEUpstream: an HTTP+SSE client in front of an HTTP+SSE
// upstream (transport: sse), old on both sides of the gateway.
func TestOldClientToSSEUpstream(t *testing.T) {
	server := echoServer("sse-both-sides")
	up := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil))
	t.Cleanup(func() { up.CloseClientConnections(); up.Close() })
	gw := newGatewayOpts(t, up.URL, gateway.Options{}, ", transport: sse")
	ctx := t.Context()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "old", Version: "1"}, nil).Connect(ctx, &mcp.SSEClientTransport{Endpoint: gw.URL + "/mcp/up/sse"}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	if got := cs.InitializeResult().ServerInfo.Name; got != "sse-both-sides" {
		t.Errorf("serverInfo.name %q, want sse-both-sides", got)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "old to old"}})
	if err != nil || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "echo: old to old" {
		t.Fatalf("tools/call: %v %+v", err, res)
	}
}
