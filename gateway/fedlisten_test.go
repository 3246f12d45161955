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
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/mcpwire"
)

// newListenMember is a stateless (modern) Go SDK server with the resource
// res://<tool>/doc, resource subscriptions and the tool named tool.
func newListenMember(t *testing.T, tool string) *streamMember {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "member", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	mcp.AddTool(server, &mcp.Tool{Name: tool}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	uri := "res://" + tool + "/doc"
	server.AddResource(&mcp.Resource{URI: uri, Name: "doc"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, Text: "doc"}}}, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true}))
	t.Cleanup(srv.Close)
	return &streamMember{server: server, srv: srv}
}

// TestFederatedListen: a modern subscriptions/listen on a federated route
// is acknowledged once for both members (URIs under their federated
// names), then carries each member's resource updates, renamed, and a
// member's tools/list_changed.
func TestFederatedListen(t *testing.T) {
	a, b := newListenMember(t, "a"), newListenMember(t, "b")
	srv, err := newFederatedGateway(t, a.srv.URL, b.srv.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	disc := rpc(t, http.MethodPost, url, "", modernCall("server/discover", ""), modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "server/discover"))
	if caps := string(disc.Result["capabilities"]); !strings.Contains(caps, `"subscribe":true`) || !strings.Contains(caps, `"listChanged":true`) {
		t.Errorf("server/discover capabilities %s: want subscribe and listChanged, which the merged listen serves", caps)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	body := modernCall("subscriptions/listen", `"notifications":{"toolsListChanged":true,"resourceSubscriptions":["a+res://a/doc","b+res://b/doc","c+res://c/doc"]}`)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	req.Header = modernHeader("Content-Type", "application/json", "Accept", "application/json, text/event-stream",
		"Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("listen: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	events := mcpwire.NewReader(resp.Body)
	type listenMessage struct {
		Method string `json:"method"`
		Params struct {
			URI           string `json:"uri"`
			Notifications struct {
				ToolsListChanged      bool     `json:"toolsListChanged"`
				ResourceSubscriptions []string `json:"resourceSubscriptions"`
			} `json:"notifications"`
			Meta map[string]any `json:"_meta"`
		} `json:"params"`
	}
	next := func() listenMessage {
		t.Helper()
		return nextMessage[listenMessage](t, events, "the listen stream")
	}
	ack := next()
	got := ack.Params.Notifications.ResourceSubscriptions
	slices.Sort(got)
	if ack.Method != "notifications/subscriptions/acknowledged" || !ack.Params.Notifications.ToolsListChanged ||
		!cmp.Equal(got, []string{"a+res://a/doc", "b+res://b/doc"}) || ack.Params.Meta["io.modelcontextprotocol/subscriptionId"] != float64(7) {
		t.Errorf("first message %+v: want one acknowledgement of both members' URIs, toolsListChanged, subscriptionId 7", ack)
	}
	a.updated(t, "res://a/doc")
	b.updated(t, "res://b/doc")
	var uris []string
	for range 2 {
		m := next()
		uris = append(uris, m.Method+" "+m.Params.URI)
	}
	slices.Sort(uris)
	if diff := cmp.Diff([]string{"notifications/resources/updated a+res://a/doc", "notifications/resources/updated b+res://b/doc"}, uris); diff != "" {
		t.Errorf("updates on the listen stream (-want +got):\n%s", diff)
	}
	mcp.AddTool(b.server, &mcp.Tool{Name: "late"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	if m := next(); m.Method != "notifications/tools/list_changed" {
		t.Errorf("after a member added a tool the listen stream sent %q, want notifications/tools/list_changed", m.Method)
	}
	// Closing the stream cancels the listen: every member's is closed.
	listening := func() int {
		n := 0
		for range a.server.Sessions() {
			n++
		}
		for range b.server.Sessions() {
			n++
		}
		return n
	}
	if n := listening(); n != 2 {
		t.Errorf("%d member sessions while listening, want one per member", n)
	}
	resp.Body.Close()
	waitUntil(t, "both members' listens to end", func() bool { return listening() == 0 })
}

// endingListener is a modern MCP server whose subscriptions/listen
// acknowledges, sends one tools/list_changed and ends with its result.
type endingListener struct{}

func (endingListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if answerProbe(w, body) {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	for _, msg := range []string{
		`{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"toolsListChanged":true},"_meta":{"io.modelcontextprotocol/subscriptionId":7}}}`,
		`{"jsonrpc":"2.0","method":"notifications/tools/list_changed","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":7}}}`,
		`{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete","_meta":{"io.modelcontextprotocol/subscriptionId":7}}}`,
	} {
		fmt.Fprintf(w, "event: message\ndata: %s\n\n", msg)
	}
}

// TestFederatedListenEnds: when every member's listen has ended, the
// client gets the listen's one result and its stream ends.
func TestFederatedListenEnds(t *testing.T) {
	a, b := httptest.NewServer(endingListener{}), httptest.NewServer(endingListener{})
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	resp := send(t, http.MethodPost, srv.URL+"/mcp", "", modernCall("subscriptions/listen", `"notifications":{"toolsListChanged":true}`),
		modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen"))
	var got []string
	events := mcpwire.NewReader(resp.Body)
	for {
		ev, err := events.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the listen stream ended with %v, want a clean end", err)
		}
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Result json.RawMessage `json:"result"`
		}
		if ev.HasData && json.Unmarshal(ev.Data, &m) == nil {
			got = append(got, m.Method+string(m.ID)+string(m.Result))
		}
	}
	want := []string{
		"notifications/subscriptions/acknowledged",
		"notifications/tools/list_changed",
		"notifications/tools/list_changed",
		`7{"_meta":{"io.modelcontextprotocol/subscriptionId":7},"resultType":"complete"}`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the listen stream (-want +got):\n%s", diff)
	}
}

// TestFederatedListenNothing: a listen that asks no member for anything
// (a URI no member owns, no flag) is acknowledged and ended at once.
func TestFederatedListenNothing(t *testing.T) {
	a, b := newListenMember(t, "a"), newListenMember(t, "b")
	srv, err := newFederatedGateway(t, a.srv.URL, b.srv.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	resp := send(t, http.MethodPost, srv.URL+"/mcp", "", modernCall("subscriptions/listen", `"notifications":{"resourceSubscriptions":["c+res://c/doc"]}`),
		modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen"))
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"method":"notifications/subscriptions/acknowledged","params":{"_meta":{"io.modelcontextprotocol/subscriptionId":7},"notifications":{}}`) ||
		!strings.Contains(string(body), `"id":7,"result":{"_meta":{"io.modelcontextprotocol/subscriptionId":7},"resultType":"complete"}`) {
		t.Errorf("listen for nothing: %s\n%s\nwant an empty acknowledgement and the result", resp.Status, body)
	}
}
