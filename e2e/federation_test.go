package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// npmEverythingJS is the npm everything-server, pinned in node/package.json.
var npmEverythingJS = filepath.Join("node", "node_modules", "@modelcontextprotocol", "server-everything", "dist", "index.js")

// startNPMEverything runs the npm everything-server in streamable HTTP
// mode on a free port (it reads PORT) and returns its endpoint.
func startNPMEverything(t *testing.T) string {
	t.Helper()
	requireNodeTool(t, npmEverythingJS)
	node, _ := filepath.Abs(nodeBin)
	script, _ := filepath.Abs(npmEverythingJS)
	addr := reservePort(t)
	_, port, _ := net.SplitHostPort(addr)
	p := &proc{name: "npm-everything", cmd: exec.Command(node, script, "streamableHttp"), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "PORT="+port)
	startCmd(t, p)
	waitFor(t, "npm everything-server to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("npm everything-server exited: %s", p.stderr.String())
		}
		return strings.Contains(p.stderr.String(), "listening on port")
	})
	return "http://" + addr + "/mcp"
}

// ownServer is the test's own small MCP server: a few tools over two-item
// pages (so a merged list needs several), one of which the policy hides,
// one that collides with the npm server's "echo", and a prompt. hang makes
// it stop answering (a member that is up but slow).
type ownServer struct {
	*httptest.Server
	hang atomic.Bool
}

func startOwnServer(t *testing.T) *ownServer {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "own", Version: "1"}, &mcp.ServerOptions{PageSize: 2})
	type args struct {
		A int `json:"a"`
		B int `json:"b"`
	}
	text := func(s string) *mcp.CallToolResult {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
	}
	mcp.AddTool(server, &mcp.Tool{Name: "add", Description: "adds"}, func(_ context.Context, _ *mcp.CallToolRequest, a args) (*mcp.CallToolResult, any, error) {
		return text(fmt.Sprint(a.A + a.B)), nil, nil
	})
	for _, name := range []string{"echo", "secret", "third", "fourth"} {
		mcp.AddTool(server, &mcp.Tool{Name: name, Description: name}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return text(name), nil, nil
		})
	}
	server.AddPrompt(&mcp.Prompt{Name: "greet"}, func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "hello"}}}}, nil
	})
	o := &ownServer{}
	stop := make(chan struct{})
	h := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if o.hang.Load() {
			// The body read first, so a client that goes away is noticed.
			_, _ = io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(func() { close(stop); o.Close() })
	return o
}

// federationPolicy hides the own server's "secret" tool: written per
// member upstream, un-prefixed, whatever route it is reached through.
const federationPolicy = `package ctxgate.authz

default allow := true

default visible := true

hidden if {
	input.upstream == "own"
	input.tool.name == "secret"
}

allow := false if hidden

visible := false if hidden
`

func federationConfig(t *testing.T, goURL, npmURL, ownURL, prefix string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(federationPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: off}
auth: {anonymous: true}
upstreams:
  - {name: go, url: %q}
  - {name: npm, url: %q}
  - {name: own, url: %q, timeout: 1s, retry: {max_attempts: 1}}
routes:
  - {path: /mcp, upstreams: [go, npm, own], prefix: %s, member_timeout: 2s}
`, dir, goURL, npmURL, ownURL, prefix)
}

// listAllTools pages through tools/list and returns every page's names.
func listAllTools(t *testing.T, cs *mcp.ClientSession) (names []string, pages int, metas []mcp.Meta) {
	t.Helper()
	params := &mcp.ListToolsParams{}
	for {
		res, err := cs.ListTools(ctx(t), params)
		if err != nil {
			t.Fatalf("tools/list: %v", err)
		}
		pages++
		for _, tool := range res.Tools {
			names = append(names, tool.Name)
		}
		if res.Meta != nil {
			metas = append(metas, res.Meta)
		}
		if res.NextCursor == "" {
			return names, pages, metas
		}
		params.Cursor = res.NextCursor
	}
}

func callText(t *testing.T, cs *mcp.ClientSession, name string, args any) string {
	t.Helper()
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	if res.IsError || len(res.Content) == 0 {
		t.Fatalf("tools/call %s: error result %+v", name, res)
	}
	text, _ := res.Content[0].(*mcp.TextContent)
	if text == nil {
		return ""
	}
	return text.Text
}

// TestFederation puts three real MCP servers (the Go SDK everything-server,
// the npm everything-server, the test's own) behind one gateway URL.
func TestFederation(t *testing.T) {
	goURL, npmURL, own := startEverything(t), startNPMEverything(t), startOwnServer(t)
	gw := startGateway(t, federationConfig(t, goURL, npmURL, own.URL, "always"))
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-federation", Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp"}, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()

	names, pages, metas := listAllTools(t, cs)
	if pages < 2 {
		t.Errorf("tools/list took %d page(s); the own server's two-item pages should need several", pages)
	}
	if len(metas) > 0 {
		t.Errorf("a list with every member up is marked: %v", metas)
	}
	seen := map[string]int{}
	for _, n := range names {
		seen[n]++
	}
	for n, c := range seen {
		if c != 1 {
			t.Errorf("tool %q listed %d times, want exactly once", n, c)
		}
		if !strings.HasPrefix(n, "go__") && !strings.HasPrefix(n, "npm__") && !strings.HasPrefix(n, "own__") {
			t.Errorf("tool %q has no member prefix", n)
		}
	}
	for _, want := range []string{"go__test_simple_text", "npm__echo", "own__echo", "own__add", "own__third", "own__fourth"} {
		if seen[want] != 1 {
			t.Errorf("tool %q missing from the merged list %v", want, names)
		}
	}
	if seen["own__secret"] != 0 {
		t.Errorf("own__secret is listed; the policy hides it")
	}

	// One call to each member, each under its member's own name.
	if got := callText(t, cs, "go__test_simple_text", map[string]any{}); got == "" {
		t.Errorf("go__test_simple_text: empty answer")
	}
	if got := callText(t, cs, "npm__echo", map[string]any{"message": "hi"}); !strings.Contains(got, "hi") {
		t.Errorf("npm__echo: %q, want the message echoed", got)
	}
	if got := callText(t, cs, "own__add", map[string]any{"a": 2, "b": 3}); got != "5" {
		t.Errorf("own__add: %q, want 5", got)
	}
	if res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "own__secret", Arguments: map[string]any{}}); err == nil && !res.IsError {
		t.Errorf("own__secret was called; the policy hides it")
	}

	// Resources: URIs namespaced as member+uri, read back through the
	// owning member; every resource of every page exactly once.
	uris := map[string]int{}
	for res, err := range cs.Resources(ctx(t), nil) {
		if err != nil {
			t.Fatalf("resources/list: %v", err)
		}
		uris[res.URI]++
	}
	var npmURI string
	for uri, c := range uris {
		if c != 1 {
			t.Errorf("resource %q listed %d times, want exactly once", uri, c)
		}
		if strings.HasPrefix(uri, "npm+") && npmURI == "" {
			npmURI = uri
		}
	}
	if npmURI == "" {
		t.Fatalf("no npm+ resource in the merged list: %v", uris)
	}
	if read, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: npmURI}); err != nil || len(read.Contents) == 0 {
		t.Errorf("resources/read %s: %v %+v", npmURI, err, read)
	} else if read.Contents[0].URI != npmURI {
		t.Errorf("resources/read %s: contents[0].uri %q, want the federated URI", npmURI, read.Contents[0].URI)
	}
	if got, err := cs.GetPrompt(ctx(t), &mcp.GetPromptParams{Name: "own__greet"}); err != nil || len(got.Messages) != 1 {
		t.Errorf("prompts/get own__greet: %v %+v", err, got)
	}

	// A member that hangs: lists come back within its deadline, marked,
	// with its last good part where there is one (tools/list) and without
	// it where there is none (prompts/list, never listed before).
	own.hang.Store(true)
	names, _, metas = listAllTools(t, cs)
	if !slices.Contains(names, "own__add") {
		t.Errorf("tools/list with own hanging lost own's last good part: %v", names)
	}
	if !hasPartial(metas, "staleAgeMs", "own") {
		t.Errorf("tools/list with own hanging is not marked stale for own: %v", metas)
	}
	prompts, err := cs.ListPrompts(ctx(t), nil)
	if err != nil {
		t.Fatalf("prompts/list with own hanging: %v", err)
	}
	if !hasPartial([]mcp.Meta{prompts.Meta}, "missing", "own") {
		t.Errorf("prompts/list with own hanging is not marked missing own: %+v", prompts.Meta)
	}
	if got := callText(t, cs, "npm__echo", map[string]any{"message": "still"}); !strings.Contains(got, "still") {
		t.Errorf("npm__echo with own hanging: %q", got)
	}
	if got := callText(t, cs, "go__test_simple_text", map[string]any{}); got == "" {
		t.Errorf("go__test_simple_text with own hanging: empty answer")
	}
	if !strings.Contains(get(t, gw.Admin+"/metrics"), `ctxgate_federation_partial_total{how="missing",member="own",route="/mcp"}`) {
		t.Errorf("the partial answer is not counted in ctxgate_federation_partial_total")
	}
}

// hasPartial reports whether any of metas marks member under how
// ("missing" or "staleAgeMs") in io.ctxgate/partial.
func hasPartial(metas []mcp.Meta, how, member string) bool {
	for _, m := range metas {
		raw, _ := json.Marshal(m["io.ctxgate/partial"])
		var p map[string]json.RawMessage
		if json.Unmarshal(raw, &p) != nil {
			continue
		}
		if strings.Contains(string(p[how]), `"`+member+`"`) {
			return true
		}
	}
	return false
}

// TestFederationCollisionRejected: with prefix never, two members offering
// the same tool name stop the gateway at start-up, saying which and how to
// fix it.
func TestFederationCollisionRejected(t *testing.T) {
	goURL, npmURL, own := startEverything(t), startNPMEverything(t), startOwnServer(t)
	path := filepath.Join(t.TempDir(), "ctxgate.yaml")
	if err := os.WriteFile(path, []byte(federationConfig(t, goURL, npmURL, own.URL, "never")), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "ctxgate", bins.ctxgate, "serve", "--config", path)
	waitFor(t, "ctxgate to exit", readyDeadline, p.exited)
	logs := p.stderr.String()
	if p.waitErr == nil {
		t.Fatalf("ctxgate started with colliding names:\n%s", logs)
	}
	if !strings.Contains(logs, `tool "echo" is offered by npm and own`) || !strings.Contains(logs, "prefix: collision or always") {
		t.Errorf("start-up error does not name the collision and the fix:\n%s", logs)
	}
}

// TestFederationModern: a Go SDK client speaking 2026-07-28 in front of a
// federated route of two stateless Go SDK everything-servers gets the
// modern era (no session), the merged prefixed tools, and reaches a tool
// of each member.
func TestFederationModern(t *testing.T) {
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
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-federation-modern", Version: "1"}, nil)
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer cs.Close()
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Errorf("negotiated %q, want 2026-07-28 (the modern era, not a fallback to initialize)", v)
	}
	if id := cs.ID(); id != "" {
		t.Errorf("the modern era has no session; got session %q", id)
	}
	names, _, metas := listAllTools(t, cs)
	if len(metas) > 0 {
		t.Errorf("a list with every member up is marked: %v", metas)
	}
	count := map[string]int{}
	for _, n := range names {
		member, _, ok := strings.Cut(n, "__")
		if !ok || (member != "one" && member != "two") {
			t.Errorf("tool %q has no member prefix", n)
		}
		count[member]++
	}
	if count["one"] == 0 || count["one"] != count["two"] {
		t.Errorf("tools per member = %v, want the same non-zero number from each", count)
	}
	for _, name := range []string{"one__test_simple_text", "two__test_simple_text"} {
		if text := callText(t, cs, name, map[string]any{}); text == "" {
			t.Errorf("tools/call %s: no text", name)
		}
	}
}
