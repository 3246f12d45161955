package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// streamingMember is the test's own Go SDK server for the federated
// stream: it keeps its sessions' events (resumable streams) and accepts
// resource subscriptions; the test makes it announce updates.
type streamingMember struct {
	server *mcp.Server
	url    string
}

func startStreamingMember(t *testing.T, tool string) *streamingMember {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "streaming", Version: "1"}, &mcp.ServerOptions{
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	mcp.AddTool(server, &mcp.Tool{Name: tool}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	server.AddResource(&mcp.Resource{URI: "res://doc", Name: "doc"}, func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: "res://doc", Text: "doc"}}}, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{EventStore: mcp.NewMemoryEventStore(nil)}))
	t.Cleanup(srv.Close)
	return &streamingMember{server: server, url: srv.URL}
}

func (m *streamingMember) updated(t *testing.T, uri string) {
	t.Helper()
	if err := m.server.ResourceUpdated(ctx(t), &mcp.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
		t.Fatal(err)
	}
}

// updates counts the resource updates a client received, by URI.
type updates struct {
	mu   sync.Mutex
	seen map[string]int
}

func (u *updates) add(uri string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.seen[uri]++
}

func (u *updates) count(uri string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.seen[uri]
}

func (u *updates) all() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return maps.Clone(u.seen)
}

// TestFederationStreamRestart: the Go SDK client on a federated route of
// two real Go SDK servers subscribes to a resource of each and gets both
// members' updates on its GET stream; the gateway is restarted (SIGTERM,
// then a new process on the same port and keys), more updates are sent
// while it is down, and the client's own reconnection with the gateway's
// Last-Event-ID gets every update of both members exactly once; a
// member's tools/list_changed reaches it too.
func TestFederationStreamRestart(t *testing.T) {
	a, b := startStreamingMember(t, "search"), startStreamingMember(t, "fetch")
	cfg := fmt.Sprintf(`
server: {listen: %q}
admin: {listen: "127.0.0.1:0"}
%sauth: {anonymous: true}
sessions: {keys: ["e2e-federated-stream-session-key-0123456789"]}
upstreams:
  - {name: a, url: %q}
  - {name: b, url: %q}
routes:
  - {path: /mcp, upstreams: [a, b], prefix: always, member_timeout: 5s}
`, reservePort(t), policyConfig(), a.url, b.url)
	gw := startGateway(t, cfg)
	got := &updates{seen: map[string]int{}}
	listChanged := make(chan struct{}, 1)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-fedstream", Version: "1"}, &mcp.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) { got.add(r.Params.URI) },
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		},
	})
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp", MaxRetries: 20}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	const n = 3 // updates per member before the restart, during it, and one after
	var want []string
	for i := range 2*n + 1 {
		for _, m := range []string{"a", "b"} {
			uri := fmt.Sprintf("%s+res://doc/%d", m, i)
			want = append(want, uri)
			if err := cs.Subscribe(ctx(t), &mcp.SubscribeParams{URI: uri}); err != nil {
				t.Fatalf("resources/subscribe %s: %v", uri, err)
			}
		}
	}
	openStreams := func(g *gatewayProc) bool {
		return strings.Contains(get(t, g.Admin+"/metrics"), `ctxgate_open_streams{kind="get",route="/mcp"} 1`)
	}
	// The client opens its GET stream on its own: once the gateway counts
	// it, both members are delivering to it.
	waitFor(t, "the client's federated GET stream", readyDeadline, func() bool { return openStreams(gw) })
	send := func(from, to int) {
		for i := from; i < to; i++ {
			a.updated(t, fmt.Sprintf("res://doc/%d", i))
			b.updated(t, fmt.Sprintf("res://doc/%d", i))
		}
	}
	send(0, n)
	waitFor(t, "the first updates", readyDeadline, func() bool {
		return got.count(fmt.Sprintf("b+res://doc/%d", n-1)) == 1 && got.count(fmt.Sprintf("a+res://doc/%d", n-1)) == 1
	})

	gw.signal(syscall.SIGTERM)
	<-gw.done
	send(n, 2*n) // kept by the members for the stream's resumption
	gw = startGateway(t, cfg)
	waitFor(t, "the client to resume its stream on the new gateway", readyDeadline, func() bool { return openStreams(gw) })
	send(2*n, 2*n+1)
	waitFor(t, "the last updates", readyDeadline, func() bool {
		return got.count(fmt.Sprintf("a+res://doc/%d", 2*n)) > 0 && got.count(fmt.Sprintf("b+res://doc/%d", 2*n)) > 0
	})
	wantCounts := map[string]int{}
	for _, uri := range want {
		wantCounts[uri] = 1
	}
	if diff := cmp.Diff(wantCounts, got.all()); diff != "" {
		t.Errorf("updates received across the gateway's restart, by URI (-want +got):\n%s", diff)
	}

	mcp.AddTool(b.server, &mcp.Tool{Name: "late"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{}, nil, nil
	})
	waitFor(t, "tools/list_changed from member b", readyDeadline, func() bool { return len(listChanged) == 1 })
	tools, err := cs.ListTools(ctx(t), nil)
	var names []string
	if err == nil {
		for _, tool := range tools.Tools {
			names = append(names, tool.Name)
		}
	}
	if diff := cmp.Diff([]string{"a__search", "b__fetch", "b__late"}, names); diff != "" {
		t.Errorf("tools/list after list_changed (%v) (-want +got):\n%s", err, diff)
	}
}

// tsSubscribeClientJS is the TypeScript SDK client of
// TestFederationEverythingSubscribe.
var tsSubscribeClientJS = filepath.Join("testdata", "ts-subscribe-client.cjs")

// TestFederationEverythingSubscribe: a TypeScript SDK client on a
// federated route of the Go SDK everything-server and the npm
// everything-server subscribes to a resource of each and receives each
// member's updates on its GET stream, under the federated URIs (the Go
// server updates its watched resource every 3 s; the npm server sends its
// subscribers' updates once its toggle-subscriber-updates tool is called,
// then every 5 s).
func TestFederationEverythingSubscribe(t *testing.T) {
	requireNodeTool(t, filepath.Join(nodeModules, "@modelcontextprotocol", "sdk", "package.json"))
	_, goURL := startEverythingProc(t, false)
	npmURL := startNPMEverything(t)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
%sauth: {anonymous: true}
upstreams:
  - {name: go, url: %q}
  - {name: npm, url: %q}
routes:
  - {path: /mcp, upstreams: [go, npm], prefix: always, member_timeout: 5s}
`, policyConfig(), goURL, npmURL))
	const goURI, npmURI = "go+test://watched-resource", "npm+demo://resource/static/document/architecture.md"
	node, _ := filepath.Abs(nodeBin)
	script, _ := filepath.Abs(tsSubscribeClientJS)
	modules, _ := filepath.Abs(nodeModules)
	p := &proc{name: "ts-subscribe-client", cmd: exec.Command(node, script, gw.URL+"/mcp", "npm__toggle-subscriber-updates", goURI, npmURI),
		stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	startCmd(t, p)
	waitFor(t, "both members' updates at the TypeScript client", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("the client exited: %v: %s", p.waitErr, p.stderr.String())
		}
		out := p.stdout.String()
		return strings.Contains(out, "updated "+goURI+"\n") && strings.Contains(out, "updated "+npmURI+"\n")
	})
	for line := range strings.SplitSeq(p.stdout.String(), "\n") {
		if uri, ok := strings.CutPrefix(line, "updated "); ok && uri != goURI && uri != npmURI {
			t.Errorf("the client got an update of %q, which it did not subscribe to under that name", uri)
		}
	}
}

// TestFederationModernListen: the Go SDK client speaking 2026-07-28
// subscribes (a subscriptions/listen per URI, as the SDK does) to the
// watched resource of two stateless Go SDK everything-servers behind one
// federated route, and gets both members' updates under the federated
// URIs (each server updates it every 3 s).
func TestFederationModernListen(t *testing.T) {
	one, two := startEverythingMode(t, true), startEverythingMode(t, true)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - {name: one, url: %q}
  - {name: two, url: %q}
routes:
  - {path: /mcp, upstreams: [one, two], prefix: always, member_timeout: 5s}
`, one, two))
	got := &updates{seen: map[string]int{}}
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-fedlisten", Version: "1"}, &mcp.ClientOptions{
		ResourceUpdatedHandler: func(_ context.Context, r *mcp.ResourceUpdatedNotificationRequest) { got.add(r.Params.URI) },
	})
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	uris := []string{"one+test://watched-resource", "two+test://watched-resource"}
	for _, uri := range uris {
		go func() { _ = cs.Subscribe(context.Background(), &mcp.SubscribeParams{URI: uri}) }() // returns when the listen ends
	}
	waitFor(t, "both members' updates on the federated listens", readyDeadline, func() bool {
		return got.count(uris[0]) > 0 && got.count(uris[1]) > 0
	})
	for uri := range got.all() {
		if uri != uris[0] && uri != uris[1] {
			t.Errorf("an update of %q, which the client did not subscribe to under that name", uri)
		}
	}
}

// TestFederationStreamMemberJoins: the Go SDK everything-server is down
// when the Go SDK client initializes on a federated route with the npm
// everything-server; once it is started and joins the session, the
// client's own GET stream (the SDK opens it after initialize) carries the
// gateway's tools/list_changed, and its next tools/list has the member's
// tools.
func TestFederationStreamMemberJoins(t *testing.T) {
	goAddr, npmAddr := reservePort(t), reservePort(t)
	startNPMEverythingAt(t, npmAddr)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
%supstreams:
  - {name: go, url: "http://%s/", retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
  - {name: npm, url: "http://%s/mcp", retry: {max_attempts: 1}}
routes:
  - {path: /mcp, upstreams: [go, npm], member_timeout: 2s}
`, policyConfig(), goAddr, npmAddr))
	listChanged := make(chan struct{}, 16)
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-fedjoin", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) {
			select {
			case listChanged <- struct{}{}:
			default:
			}
		},
	})
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	waitFor(t, "the client's federated GET stream", readyDeadline, func() bool {
		return strings.Contains(get(t, gw.Admin+"/metrics"), `ctxgate_open_streams{kind="get",route="/mcp"} 1`)
	})
	startEverythingAt(t, goAddr)
	waitFor(t, "tools/list_changed when go joins", readyDeadline, func() bool {
		_ = cs.Ping(ctx(t), nil) // the session's requests kick its retries
		return len(listChanged) > 0
	})
	tools, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatalf("tools/list after go joined: %v", err)
	}
	joined := false
	for _, tool := range tools.Tools {
		joined = joined || strings.HasPrefix(tool.Name, "go__")
	}
	if !joined {
		t.Errorf("tools/list after tools/list_changed has no go__ tool: %d tools", len(tools.Tools))
	}
}
