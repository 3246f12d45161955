package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/mcpwire"
)

// streamMember is a Go SDK MCP server whose sessions keep their events
// (resumable streams) and accept resource subscriptions; the test sends
// its notifications through server.
type streamMember struct {
	server *mcp.Server
	srv    *httptest.Server
}

func newStreamMember(t *testing.T, tool string) *streamMember {
	t.Helper()
	noop := func(context.Context, *mcp.SubscribeRequest) error { return nil }
	server := mcp.NewServer(&mcp.Implementation{Name: "member", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler:   noop,
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	mcp.AddTool(server, &mcp.Tool{Name: tool}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: tool}}}, nil, nil
	})
	uri := "res://" + tool + "/doc"
	server.AddResource(&mcp.Resource{URI: uri, Name: "doc"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: "doc"}}}, nil
	})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &streamMember{server: server, srv: srv}
}

// updated makes the member announce that uri changed.
func (m *streamMember) updated(t *testing.T, uri string) {
	t.Helper()
	if err := m.server.ResourceUpdated(t.Context(), &mcp.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
}

// streamPolicy allows everything and hides the resources whose URI ends
// in /secret: their updates must not reach the client.
const streamPolicy = `package ctxgate.authz

default allow := true

default visible := true

visible := false if endswith(input.resource.uri, "/secret")
`

func startStreamGateway(t *testing.T, a, b *streamMember, opts gateway.Options) string {
	t.Helper()
	srv, err := startGatewayYAML(t, streamGatewayYAML(a, b), opts)
	if err != nil {
		t.Fatal(err)
	}
	return srv.URL + "/mcp"
}

// streamGatewayYAML is a federated route /mcp over members a and b.
func streamGatewayYAML(a, b *streamMember) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-the-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}}
routes: [{path: /mcp, upstreams: [a, b], prefix: always, member_timeout: 5s}]
`, a.srv.URL, b.srv.URL)
}

// fedStreamClient is one client's merged GET stream.
type fedStreamClient struct {
	resp   *http.Response
	cancel context.CancelFunc
	events *mcpwire.Reader
	lastID string
}

func openFedStream(t *testing.T, url, session, lastID string) *fedStreamClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	if lastID != "" {
		req.Header.Set("Last-Event-Id", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("GET stream: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return &fedStreamClient{resp: resp, cancel: cancel, events: mcpwire.NewReader(resp.Body), lastID: lastID}
}

// streamMessage is what the tests read of a message on the stream.
type streamMessage struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		URI string `json:"uri"`
	} `json:"params"`
}

// next reads the stream's next message, keeping the last event id seen
// (as an SSE client does, with id-only events too).
func (c *fedStreamClient) next(t *testing.T) streamMessage {
	t.Helper()
	for {
		ev, err := c.events.Next()
		if err != nil {
			t.Fatalf("reading the federated stream: %v", err)
		}
		if ev.HasID {
			c.lastID = ev.ID
		}
		if !ev.HasData || len(ev.Data) == 0 {
			continue
		}
		var m streamMessage
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			t.Fatalf("event data %q: %v", ev.Data, err)
		}
		return m
	}
}

func (c *fedStreamClient) close() {
	c.cancel()
	c.resp.Body.Close()
}

func subscribe(t *testing.T, url, session string, uris ...string) {
	t.Helper()
	for i, uri := range uris {
		got := rpc(t, http.MethodPost, url, session, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"resources/subscribe","params":{"uri":%q}}`, 100+i, uri), http.Header{"Mcp-Protocol-Version": {"2025-11-25"}})
		if got.status != http.StatusOK || got.Error != nil {
			t.Fatalf("resources/subscribe %s: HTTP %d %+v", uri, got.status, got.Error)
		}
	}
}

func TestFederatedStream(t *testing.T) {
	a, b := newStreamMember(t, "a"), newStreamMember(t, "b")
	url := startStreamGateway(t, a, b, gateway.Options{Policy: newEngine(t, streamPolicy, nil, nil)})
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if init.status != http.StatusOK || init.session == "" {
		t.Fatalf("initialize: HTTP %d", init.status)
	}
	var caps struct {
		Resources struct {
			Subscribe bool `json:"subscribe"`
		} `json:"resources"`
		Tools struct {
			ListChanged bool `json:"listChanged"`
		} `json:"tools"`
	}
	_ = json.Unmarshal(init.Result["capabilities"], &caps)
	if !caps.Resources.Subscribe || !caps.Tools.ListChanged {
		t.Errorf("initialize capabilities %s: want resources.subscribe and tools.listChanged, which the merged stream serves", init.Result["capabilities"])
	}
	stream := openFedStream(t, url, init.session, "")
	// Each subscription reaches the member that owns the URI, with the
	// member's own URI.
	subscribe(t, url, init.session, "a+res://a/doc", "b+res://b/doc", "b+res://b/secret", "b+res://b/other")

	a.updated(t, "res://a/doc")
	b.updated(t, "res://b/secret") // hidden by the policy: dropped
	b.updated(t, "res://b/doc")
	var got []string
	for range 2 {
		m := stream.next(t)
		got = append(got, m.Method+" "+m.Params.URI)
	}
	slices.Sort(got)
	want := []string{"notifications/resources/updated a+res://a/doc", "notifications/resources/updated b+res://b/doc"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("updates through the federated stream (-want +got):\n%s", diff)
	}

	// A tool added at runtime: the member's list_changed reaches the
	// client, and the next list has the tool under its federated name.
	mcp.AddTool(b.server, &mcp.Tool{Name: "late"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	if m := stream.next(t); m.Method != "notifications/tools/list_changed" {
		t.Errorf("after a member added a tool, the stream sent %q, want notifications/tools/list_changed", m.Method)
	}
	list := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":20,"method":"tools/list"}`, http.Header{"Mcp-Protocol-Version": {"2025-11-25"}})
	if !strings.Contains(string(list.Result["tools"]), `"b__late"`) {
		t.Errorf("tools/list after list_changed: %s, want b__late", list.Result["tools"])
	}

	// A member's request of the client reaches it under the gateway's id,
	// and the client's answer with that id reaches the member.
	asked := 0
	for ss := range a.server.Sessions() {
		asked++
		pinged := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			pinged <- ss.Ping(ctx, nil)
		}()
		m := stream.next(t)
		var id string
		if err := json.Unmarshal(m.ID, &id); err != nil || m.Method != "ping" || !strings.HasPrefix(id, "ctxgate-member:a:") {
			t.Fatalf("the member's ping reached the client as %s %s, want a ping under the gateway's id for member a", m.Method, m.ID)
		}
		answer := send(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"result":{}}`, http.Header{"Mcp-Protocol-Version": {"2025-11-25"}})
		if answer.StatusCode != http.StatusAccepted {
			t.Errorf("the client's answer to the member's ping: %s, want 202", answer.Status)
		}
		if err := <-pinged; err != nil {
			t.Errorf("the member's ping of the client through the federated stream: %v, want the client's answer", err)
		}
	}
	if asked != 1 {
		t.Errorf("member a has %d sessions, want the federated one", asked)
	}
	stray := send(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":"ctxgate-member:c:1","result":{}}`, http.Header{"Mcp-Protocol-Version": {"2025-11-25"}})
	if stray.StatusCode != http.StatusAccepted {
		t.Errorf("an answer naming no member of the session: %s, want 202 (dropped)", stray.Status)
	}

	// Unsubscribing reaches the owning member too: its next update of the
	// URI is not sent, so the one after it comes first (a member's
	// messages keep their order through the merge).
	unsub := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":21,"method":"resources/unsubscribe","params":{"uri":"b+res://b/doc"}}`, http.Header{"Mcp-Protocol-Version": {"2025-11-25"}})
	if unsub.status != http.StatusOK || unsub.Error != nil {
		t.Fatalf("resources/unsubscribe: HTTP %d %+v", unsub.status, unsub.Error)
	}
	b.updated(t, "res://b/doc")
	b.updated(t, "res://b/other")
	if m := stream.next(t); m.Params.URI != "b+res://b/other" {
		t.Errorf("after unsubscribing b+res://b/doc the stream sent %s %s, want the update of b+res://b/other", m.Method, m.Params.URI)
	}

	other := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	for _, tt := range []struct{ name, session, lastID string }{
		{"another session's id", other.session, stream.lastID},
		{"a tampered id", init.session, stream.lastID[:len(stream.lastID)-2] + "AA"},
		{"a session id", init.session, init.session},
	} {
		t.Run(tt.name+" is refused", func(t *testing.T) {
			got := rpc(t, http.MethodGet, url, tt.session, "", http.Header{"Accept": {"text/event-stream"}, "Mcp-Protocol-Version": {"2025-11-25"}, "Last-Event-Id": {tt.lastID}})
			if got.status != http.StatusBadRequest || got.Error == nil || got.Error.Code != -32600 {
				t.Errorf("GET with %s as Last-Event-ID: HTTP %d %+v, want 400 -32600", tt.name, got.status, got.Error)
			}
		})
	}
}

// TestFederatedStreamResume: events are sent, the client goes away, more
// are sent, and the client comes back with its Last-Event-ID: it gets
// every event of both members exactly once.
func TestFederatedStreamResume(t *testing.T) {
	a, b := newStreamMember(t, "a"), newStreamMember(t, "b")
	url := startStreamGateway(t, a, b, gateway.Options{})
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	const n = 4 // events per member before and after the client is away
	var uris []string
	for i := range 2*n + 1 {
		uris = append(uris, fmt.Sprintf("a+res://a/%d", i), fmt.Sprintf("b+res://b/%d", i))
	}
	first := openFedStream(t, url, init.session, "")
	subscribe(t, url, init.session, uris...)
	seen := map[string]int{}
	for i := range n {
		a.updated(t, fmt.Sprintf("res://a/%d", i))
		b.updated(t, fmt.Sprintf("res://b/%d", i))
	}
	for range 2 * n {
		seen[first.next(t).Params.URI]++
	}
	first.close()
	for i := n; i < 2*n; i++ {
		a.updated(t, fmt.Sprintf("res://a/%d", i))
		b.updated(t, fmt.Sprintf("res://b/%d", i))
	}
	second := openFedStream(t, url, init.session, first.lastID)
	// The last updates, after the client is back, mark the end: each
	// member's own come after everything it replays.
	a.updated(t, fmt.Sprintf("res://a/%d", 2*n))
	b.updated(t, fmt.Sprintf("res://b/%d", 2*n))
	ends := 0
	for ends < 2 {
		uri := second.next(t).Params.URI
		seen[uri]++
		if strings.HasSuffix(uri, fmt.Sprintf("/%d", 2*n)) {
			ends++
		}
	}
	want := map[string]int{}
	for _, uri := range uris {
		want[uri] = 1
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("events received across the reconnection, by URI (-want +got):\n%s", diff)
	}
}

// endingMember is a legacy MCP server whose GET stream sends one event
// (ids 1, 2, ...) and ends (with stall: then sends nothing until the
// client leaves); it records the Last-Event-ID of every GET. With noStream
// it answers GET 405.
type endingMember struct {
	noStream bool
	stall    bool
	mu       sync.Mutex
	lastIDs  []string
}

func (m *endingMember) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	_ = json.NewDecoder(r.Body).Decode(&req)
	if r.Method == http.MethodGet {
		m.mu.Lock()
		m.lastIDs = append(m.lastIDs, r.Header.Get("Last-Event-Id"))
		m.mu.Unlock()
	}
	switch {
	case r.Method == http.MethodGet && m.noStream:
		w.WriteHeader(http.StatusMethodNotAllowed)
	case r.Method == http.MethodGet:
		n := len(m.gets())
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: %d\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"event %d\"}}\n\n", n, n)
		if m.stall {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	case req.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "member-session")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"logging":{}},"serverInfo":{"name":"ending","version":"1"}}}`, req.ID)
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}

func (m *endingMember) gets() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.lastIDs)
}

// TestFederatedStreamReopen: a member whose stream ends, or stalls past
// its streams.idle_timeout, is opened again from its last event id, and
// the client's stream goes on; a member with no stream (405) is left out
// of it.
func TestFederatedStreamReopen(t *testing.T) {
	for _, stall := range []bool{false, true} {
		t.Run(fmt.Sprintf("stall %t", stall), func(t *testing.T) {
			ending, none := &endingMember{stall: stall}, &endingMember{noStream: true}
			a, b := httptest.NewServer(ending), httptest.NewServer(none)
			t.Cleanup(a.Close)
			t.Cleanup(b.Close)
			srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, streams: {idle_timeout: 100ms, keepalive: 50ms}}
  - {name: b, url: %q}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 5s}]
`, a.URL, b.URL), gateway.Options{})
			if err != nil {
				t.Fatal(err)
			}
			url := srv.URL + "/mcp"
			init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
			stream := openFedStream(t, url, init.session, "")
			for range 3 {
				stream.next(t)
			}
			if diff := cmp.Diff([]string{"", "1", "2"}, ending.gets()[:3]); diff != "" {
				t.Errorf("the member's GETs, by Last-Event-ID (-want +got):\n%s", diff)
			}
			if got := len(none.gets()); got != 1 {
				t.Errorf("the member without a stream was asked for it %d times, want once", got)
			}
		})
	}
}

// TestFederatedStreamBounds: a federated GET stream takes one
// server.max_streams slot (a second is refused 503 -31018), gets the
// members' keep-alive comments and ends cleanly at their max_duration.
func TestFederatedStreamBounds(t *testing.T) {
	a, b := newStreamMember(t, "a"), newStreamMember(t, "b")
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0", max_streams: 1}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, streams: {keepalive: 10ms, max_duration: 1s}}
  - {name: b, url: %q, streams: {max_duration: 1h}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 5s}]
`, a.srv.URL, b.srv.URL), gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	stream := openFedStream(t, url, init.session, "")
	second := rpc(t, http.MethodGet, url, init.session, "", http.Header{"Accept": {"text/event-stream"}, "Mcp-Protocol-Version": {"2025-11-25"}})
	if second.status != http.StatusServiceUnavailable || second.Error == nil || second.Error.Code != -31018 {
		t.Errorf("a second stream over server.max_streams: HTTP %d %+v, want 503 -31018", second.status, second.Error)
	}
	keepalives := 0
	for {
		ev, err := stream.events.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the stream ended with %v, want a clean end at max_duration", err)
		}
		if slices.Contains(ev.Comments, " keepalive") || slices.Contains(ev.Comments, "keepalive") {
			keepalives++
		}
	}
	if keepalives == 0 {
		t.Error("no keep-alive comment on a quiet stream")
	}
}

// TestFederatedMemberRequestOnCall: a member's request of the client sent
// while it serves a routed tools/call (on that call's answer stream)
// reaches the client under the gateway's id; the client's answer reaches
// the member, and the call completes.
func TestFederatedMemberRequestOnCall(t *testing.T) {
	a, b := newStreamMember(t, "a"), newStreamMember(t, "b")
	mcp.AddTool(a.server, &mcp.Tool{Name: "asks"}, func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
		text := "answered"
		if err := req.Session.Ping(ctx, nil); err != nil {
			text = "unanswered: " + err.Error()
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
	})
	url := startStreamGateway(t, a, b, gateway.Options{Policy: newEngine(t, streamPolicy, nil, nil)})
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	h := http.Header{"Mcp-Protocol-Version": {"2025-11-25"}}
	call := send(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"a__asks","arguments":{}}}`, h)
	if !strings.HasPrefix(call.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("tools/call a__asks: %s %q, want an event stream", call.Status, call.Header.Get("Content-Type"))
	}
	events := mcpwire.NewReader(call.Body)
	type answerMessage struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Result json.RawMessage `json:"result"`
	}
	next := func() answerMessage {
		t.Helper()
		return nextMessage[answerMessage](t, events, "the call's answer")
	}
	ping := next()
	if ping.Method != "ping" || !strings.HasPrefix(string(ping.ID), `"ctxgate-member:a:`) {
		t.Fatalf("first message of the call's answer: %s %s, want the member's ping under the gateway's id", ping.Method, ping.ID)
	}
	if answer := send(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":`+string(ping.ID)+`,"result":{}}`, h); answer.StatusCode != http.StatusAccepted {
		t.Errorf("the client's answer: %s, want 202", answer.Status)
	}
	result := next()
	if string(result.ID) != "5" || !strings.Contains(string(result.Result), `"answered"`) {
		t.Errorf("the call's result: id %s %s, want the member's text answered", result.ID, result.Result)
	}
}

// TestFederatedStreamRefused: a GET every member refuses for good is
// answered as a single route's would be.
func TestFederatedStreamRefused(t *testing.T) {
	t.Run("every member ended the session", func(t *testing.T) {
		hooks := &memberHooks{}
		a, b := sdkServerHooked(t, hooks, "x"), sdkServerHooked(t, hooks, "y")
		srv, err := newFederatedGateway(t, a.URL, b.URL, "always")
		if err != nil {
			t.Fatal(err)
		}
		init := rpc(t, http.MethodPost, srv.URL+"/mcp", "", initializeBody, nil)
		hooks.forget.Store(true)
		got := rpc(t, http.MethodGet, srv.URL+"/mcp", init.session, "", http.Header{"Accept": {"text/event-stream"}, "Mcp-Protocol-Version": {"2025-11-25"}})
		if got.status != http.StatusNotFound || got.Error == nil || got.Error.Code != -31003 {
			t.Errorf("GET: HTTP %d %+v, want 404 -31003 (initialize again)", got.status, got.Error)
		}
	})
	t.Run("no member has a stream", func(t *testing.T) {
		a, b := httptest.NewServer(&endingMember{noStream: true}), httptest.NewServer(&endingMember{noStream: true})
		t.Cleanup(a.Close)
		t.Cleanup(b.Close)
		srv, err := newFederatedGateway(t, a.URL, b.URL, "always")
		if err != nil {
			t.Fatal(err)
		}
		init := rpc(t, http.MethodPost, srv.URL+"/mcp", "", initializeBody, nil)
		got := rpc(t, http.MethodGet, srv.URL+"/mcp", init.session, "", http.Header{"Accept": {"text/event-stream"}, "Mcp-Protocol-Version": {"2025-11-25"}})
		if got.status != http.StatusMethodNotAllowed || got.Error == nil || got.Error.Code != -32600 {
			t.Errorf("GET: HTTP %d %+v, want 405 -32600", got.status, got.Error)
		}
	})
}

// TestFederatedStreamInvalidatesCache: a member's
// notifications/resources/updated on the merged stream drops the member's
// cached resources/read of that URI, as on its own route.
func TestFederatedStreamInvalidatesCache(t *testing.T) {
	var version atomic.Int64
	server := mcp.NewServer(&mcp.Implementation{Name: "member", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	server.AddResource(&mcp.Resource{URI: "res://doc", Name: "doc"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "res://doc", Text: fmt.Sprintf("version %d", version.Load())}}}, nil
	})
	a := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	t.Cleanup(a.Close)
	b := newStreamMember(t, "b")
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-the-engine}
upstreams:
  - {name: a, url: %q, cache: {ttl: {resources/read: 1h}}}
  - {name: b, url: %q}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 5s}]
`, a.URL, b.srv.URL), gateway.Options{Policy: newEngine(t, streamPolicy, nil, nil)})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	h := http.Header{"Mcp-Protocol-Version": {"2025-11-25"}}
	read := func() string {
		got := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"a+res://doc"}}`, h)
		return string(got.Result["contents"])
	}
	first := read()
	version.Store(1)
	if again := read(); again != first {
		t.Fatalf("second read %s, want the cached %s", again, first)
	}
	stream := openFedStream(t, url, init.session, "")
	subscribe(t, url, init.session, "a+res://doc")
	if err := server.ResourceUpdated(t.Context(), &mcp.ResourceUpdatedNotificationParams{URI: "res://doc"}); err != nil {
		t.Fatal(err)
	}
	if m := stream.next(t); m.Params.URI != "a+res://doc" {
		t.Fatalf("the stream sent %s %s, want the update of a+res://doc", m.Method, m.Params.URI)
	}
	waitUntil(t, "the cached read to be dropped", func() bool { return strings.Contains(read(), "version 1") })
}

// TestFederatedStreamMemberJoins: a member down at initialize that joins
// the session later (fedrecover.go) joins the open merged stream too: the
// client is sent tools/list_changed, and the member's own notifications
// come on the stream from then on.
func TestFederatedStreamMemberJoins(t *testing.T) {
	a := newStreamMember(t, "a")
	server := mcp.NewServer(&mcp.Implementation{Name: "late", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	mcp.AddTool(server, &mcp.Tool{Name: "late"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	server.AddResource(&mcp.Resource{URI: "res://b/doc", Name: "doc"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "res://b/doc", Text: "doc"}}}, nil
	})
	var down atomic.Bool
	down.Store(true)
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(b.Close)
	clock := &testClock{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 2s}]
`, a.srv.URL, b.URL), gateway.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if got := string(init.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"]}}` {
		t.Fatalf("initialize with b down: _meta %s", got)
	}
	stream := openFedStream(t, url, init.session, "")
	messages := make(chan streamMessage, 64)
	go func() {
		for {
			ev, err := stream.events.Next()
			if err != nil {
				return
			}
			var m streamMessage
			if ev.HasData && json.Unmarshal(ev.Data, &m) == nil {
				messages <- m
			}
		}
	}()
	// seen polls the stream's messages so far for one with method (and
	// uri, if set), while kick keeps the session busy.
	seen := func(method, uri string, kick func()) func() bool {
		return func() bool {
			kick()
			for {
				select {
				case m := <-messages:
					if m.Method == method && (uri == "" || m.Params.URI == uri) {
						return true
					}
				default:
					return false
				}
			}
		}
	}
	down.Store(false)
	clock.Add(time.Second) // b's retry is due
	ping := func() { rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":2,"method":"ping"}`, nil) }
	waitUntil(t, "tools/list_changed when b joins", seen("notifications/tools/list_changed", "", ping))
	subscribe(t, url, init.session, "b+res://b/doc")
	update := func() {
		_ = server.ResourceUpdated(t.Context(), &mcp.ResourceUpdatedNotificationParams{URI: "res://b/doc"})
	}
	waitUntil(t, "b's own update on the stream it joined", seen("notifications/resources/updated", "b+res://b/doc", update))
}
