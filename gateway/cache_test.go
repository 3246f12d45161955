package gateway_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// countingUpstream is a legacy-era MCP server that counts what it is asked,
// per method, and answers:
//   - tools/list: the tools, plus "roots_tool" for sessions that declared
//     the roots capability (a list shaped by capabilities), and the number
//     of the request, so two answers can be told apart;
//   - prompts/list and resources/list: cacheScope "public" with a ttlMs,
//     fields the legacy era does not define (the Go SDK sends them anyway);
//   - resources/read: over SSE, a progress notification first; for
//     file:///ask a server-to-client request before that; file:///gone 404;
//     file:///cut ends the stream before the answer;
//   - tools/call "search": a result; "broken": isError; "notify": an SSE
//     answer carrying the notification named in its arguments.
//
// With down set it answers every request 503.
type countingUpstream struct {
	mu     sync.Mutex
	counts map[string]int
	caps   map[string]bool // session -> declared roots
	n      atomic.Int64
	down   atomic.Bool
	// hold, if set, blocks tools/list until closed.
	hold chan struct{}
	// streams receives the notifications channel of each GET stream
	// opened; what is sent on it is written to that stream.
	streams chan chan string
}

func newCountingUpstream() *countingUpstream {
	return &countingUpstream{counts: map[string]int{}, caps: map[string]bool{}, streams: make(chan chan string, 4)}
}

func (u *countingUpstream) count(method string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[method]
}

func (u *countingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if u.down.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if r.Method == http.MethodGet {
		u.serveStream(w, r)
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name         string          `json:"name"`
			URI          string          `json:"uri"`
			Arguments    map[string]any  `json:"arguments"`
			Capabilities json.RawMessage `json:"capabilities"`
		} `json:"params"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &msg)
	u.mu.Lock()
	u.counts[msg.Method]++
	session := r.Header.Get("Mcp-Session-Id")
	roots := u.caps[session]
	u.mu.Unlock()
	n := u.n.Add(1)
	reply := func(result string) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, msg.ID, result)
	}
	switch msg.Method {
	case "initialize":
		session = fmt.Sprint("s", n)
		u.mu.Lock()
		u.caps[session] = strings.Contains(string(msg.Params.Capabilities), "roots")
		u.mu.Unlock()
		w.Header().Set("Mcp-Session-Id", session)
		reply(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true}},"serverInfo":{"name":"counting","version":"1"}}`)
	case "tools/list":
		if u.hold != nil {
			<-u.hold
		}
		tools := `{"name":"public_tool"},{"name":"secret_tool"}`
		if roots {
			tools += `,{"name":"roots_tool"}`
		}
		reply(fmt.Sprintf(`{"tools":[%s],"_meta":{"n":%d}}`, tools, n))
	case "prompts/list":
		reply(fmt.Sprintf(`{"prompts":[{"name":"p"}],"ttlMs":60000,"cacheScope":"public","_meta":{"n":%d}}`, n))
	case "resources/list":
		reply(`{"resources":[{"uri":"file:///a","name":"a"}],"ttlMs":0,"cacheScope":"public"}`)
	case "resources/templates/list":
		reply(`{"resourceTemplates":[]}`)
	case "resources/read":
		if msg.Params.URI == "file:///gone" {
			http.Error(w, "session gone", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		if msg.Params.URI == "file:///ask" {
			// The upstream asks the client something before it answers.
			fmt.Fprint(w, "id: e1\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"method\":\"roots/list\"}\n\n")
		}
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n")
		if msg.Params.URI == "file:///cut" {
			return // the stream ends before the answer
		}
		fmt.Fprintf(w, "data: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"contents\":[{\"uri\":%q,\"text\":\"v%d\"}]}}\n\n", msg.ID, msg.Params.URI, n)
	case "tools/call":
		switch msg.Params.Name {
		case "broken":
			reply(`{"content":[{"type":"text","text":"failed"}],"isError":true}`)
		case "notify":
			note, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": msg.Params.Arguments["method"], "params": map[string]any{"uri": msg.Params.Arguments["uri"]}})
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "data: %s\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":%s,\"result\":{\"content\":[]}}\n\n", note, msg.ID)
		default:
			reply(fmt.Sprintf(`{"content":[{"type":"text","text":"result %d"}]}`, n))
		}
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}

// serveStream is a session's GET stream: the test writes notifications to
// it through the channel it gets from u.streams.
func (u *countingUpstream) serveStream(w http.ResponseWriter, r *http.Request) {
	notes := make(chan string)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	select {
	case u.streams <- notes:
	case <-r.Context().Done():
		return
	}
	for {
		select {
		case n := <-notes:
			fmt.Fprintf(w, "data: %s\n\n", n)
			w.(http.Flusher).Flush()
		case <-r.Context().Done():
			return
		}
	}
}

// testClock is the injected clock of the cache: a fixed start plus what
// the test added.
type testClock struct {
	start  time.Time
	offset atomic.Int64
}

func (c *testClock) Now() time.Time      { return c.start.Add(time.Duration(c.offset.Load())) }
func (c *testClock) Add(d time.Duration) { c.offset.Add(int64(d)) }

// cachingGateway is a gateway with a response cache on an injected clock,
// the policy in dir, API keys "alice" and "bob", and anonymous access.
type cachingGateway struct {
	URL    string
	admin  string
	clock  *testClock
	store  *cache.Store
	policy *policy.Engine
	dir    string
	// handler is the public handler, for benchmarks that skip the network.
	handler http.Handler
	gw      *gateway.Server
}

const allowAllRego = "package ctxgate.authz\n\ndefault allow := true\n\ndefault visible := true\n"

func newCachingGateway(t testing.TB, upstreamURL, upstreamExtra string) *cachingGateway {
	t.Helper()
	hash := func(k string) string { s := sha256.Sum256([]byte(k)); return hex.EncodeToString(s[:]) }
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth:
  anonymous: true
  api_keys: [{name: alice, sha256: %s}, {name: bob, sha256: %s}]
policy: {dir: unused}
cache: {max_mb: 4}
upstreams:
  - name: up
    url: %q
    cache:
      ttl: {tools/list: 1m, prompts/list: 1m, resources/list: 1m, resources/read: 1m, tools/call: 1m}
      stale_if_error: 1h
      tools: [search, broken]
%s`, hash("alice-key"), hash("bob-key"), upstreamURL, upstreamExtra), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	g := &cachingGateway{clock: &testClock{start: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}, dir: t.TempDir()}
	g.writePolicy(t, allowAllRego)
	if g.policy, err = policy.New(policy.Options{Dir: g.dir, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.policy.Close)
	if g.store, err = cache.New(cfg, cache.Options{Now: g.clock.Now}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.store.Close() })
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(cfg, pool, gateway.Options{Policy: g.policy, Cache: g.store})
	if err != nil {
		t.Fatal(err)
	}
	g.gw, g.handler = gw, gw.Handler()
	srv := httptest.NewServer(g.handler)
	t.Cleanup(srv.Close)
	adm := httptest.NewServer(gw.AdminHandler())
	t.Cleanup(adm.Close)
	g.URL, g.admin = srv.URL+"/mcp/up", adm.URL
	return g
}

// startCaching starts a counting upstream and a caching gateway in front
// of it.
func startCaching(t *testing.T) (*countingUpstream, *cachingGateway) {
	t.Helper()
	up := newCountingUpstream()
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	return up, newCachingGateway(t, upSrv.URL, "")
}

func (g *cachingGateway) writePolicy(t testing.TB, rego string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(g.dir, "authz.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
}

// client is one principal's session on the gateway.
type client struct {
	g       *cachingGateway
	key     string
	session string
	id      int
}

func (g *cachingGateway) connect(t *testing.T, key, capabilities string) *client {
	t.Helper()
	c := &client{g: g, key: key}
	resp := c.post(t, `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":`+capabilities+`,"clientInfo":{"name":"t","version":"1"}}}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize: %s", resp.Status)
	}
	c.session = resp.Header.Get("Mcp-Session-Id")
	return c
}

func (c *client) post(t *testing.T, body string) *http.Response {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + c.key}, "Mcp-Protocol-Version": {"2025-11-25"}}
	return send(t, http.MethodPost, c.g.URL, c.session, body, h)
}

// answer is one response as a test sees it.
type answer struct {
	status int
	cache  string
	result map[string]any
	error  map[string]any
}

func (c *client) call(t *testing.T, method, params string) answer {
	t.Helper()
	c.id++
	resp := c.post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":%q,"params":%s}`, c.id, method, params))
	body, _ := io.ReadAll(resp.Body)
	var msg struct {
		ID     int            `json:"id"`
		Result map[string]any `json:"result"`
		Error  map[string]any `json:"error"`
	}
	data := body
	if i := strings.LastIndex(string(body), "data: "); strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") && i >= 0 {
		data = []byte(strings.TrimSpace(string(body[i+len("data: "):])))
	}
	if err := json.Unmarshal(data, &msg); err != nil {
		t.Fatalf("%s: answer is not JSON-RPC: %v: %q", method, err, body)
	}
	if msg.ID != c.id && msg.Error == nil {
		t.Errorf("%s: answer id %d, want %d", method, msg.ID, c.id)
	}
	return answer{status: resp.StatusCode, cache: resp.Header.Get("Ctxgate-Cache"), result: msg.Result, error: msg.Error}
}

func toolNames(a answer) []string {
	var names []string
	tools, _ := a.result["tools"].([]any)
	for _, tool := range tools {
		names = append(names, tool.(map[string]any)["name"].(string))
	}
	return names
}

func metaN(a answer) any {
	meta, _ := a.result["_meta"].(map[string]any)
	return meta["n"]
}

func TestCacheHitMiss(t *testing.T) {
	up, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)

	steps := []struct {
		name      string
		method    string
		params    string
		wantCache string
		wantCount int // upstream requests of the method so far
	}{
		{name: "first list", method: "tools/list", params: `{}`, wantCache: "miss", wantCount: 1},
		{name: "second list", method: "tools/list", params: `{}`, wantCache: "hit", wantCount: 1},
		{name: "_meta is not part of the key", method: "tools/list", params: `{"_meta":{"progressToken":"p"}}`, wantCache: "hit", wantCount: 1},
		{name: "another page", method: "tools/list", params: `{"cursor":"2"}`, wantCache: "miss", wantCount: 2},
		{name: "that page again", method: "tools/list", params: `{"cursor":"2"}`, wantCache: "hit", wantCount: 2},
		{name: "read over SSE", method: "resources/read", params: `{"uri":"file:///a"}`, wantCache: "miss", wantCount: 1},
		{name: "read again", method: "resources/read", params: `{"uri":"file:///a"}`, wantCache: "hit", wantCount: 1},
		{name: "listed tool", method: "tools/call", params: `{"name":"search","arguments":{"q":"x"}}`, wantCache: "miss", wantCount: 1},
		{name: "listed tool again", method: "tools/call", params: `{"name":"search","arguments":{"q":"x"}}`, wantCache: "hit", wantCount: 1},
		{name: "other arguments", method: "tools/call", params: `{"name":"search","arguments":{"q":"y"}}`, wantCache: "miss", wantCount: 2},
		{name: "isError is never cached", method: "tools/call", params: `{"name":"broken"}`, wantCache: "bypass", wantCount: 3},
		{name: "isError again", method: "tools/call", params: `{"name":"broken"}`, wantCache: "bypass", wantCount: 4},
		{name: "unlisted tool is not cached", method: "tools/call", params: `{"name":"other"}`, wantCache: "", wantCount: 5},
		{name: "unlisted tool again", method: "tools/call", params: `{"name":"other"}`, wantCache: "", wantCount: 6},
		{name: "no ttl for the method: proxied as without a cache", method: "resources/templates/list", params: `{}`, wantCache: "", wantCount: 1},
		{name: "and again", method: "resources/templates/list", params: `{}`, wantCache: "", wantCount: 2},
		{name: "legacy ttlMs 0 is not protocol", method: "resources/list", params: `{}`, wantCache: "miss", wantCount: 1},
		{name: "the configured ttl applies", method: "resources/list", params: `{}`, wantCache: "hit", wantCount: 1},
	}
	for _, st := range steps {
		a := alice.call(t, st.method, st.params)
		if a.status != http.StatusOK || a.cache != st.wantCache || up.count(st.method) != st.wantCount {
			t.Errorf("%s: status %d, Ctxgate-Cache %q, upstream %s requests %d; want 200, %q, %d",
				st.name, a.status, a.cache, st.method, up.count(st.method), st.wantCache, st.wantCount)
		}
	}
	t.Run("TTL", func(t *testing.T) {
		g.clock.Add(61 * time.Second)
		if a := alice.call(t, "tools/list", `{}`); a.cache != "miss" || up.count("tools/list") != 3 {
			t.Errorf("after the TTL: %q, %d upstream requests", a.cache, up.count("tools/list"))
		}
	})
	t.Run("stats", func(t *testing.T) {
		st := g.store.Stats()
		if st.Hits == 0 || st.Misses == 0 || st.Bypass != 2 || st.Entries == 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// Two principals never share a private entry; in the legacy era every
// entry is private, whatever cacheScope the upstream writes.
func TestCachePrincipals(t *testing.T) {
	up, g := startCaching(t)
	alice, bob := g.connect(t, "alice-key", `{}`), g.connect(t, "bob-key", `{}`)

	a1, b1 := alice.call(t, "tools/list", `{}`), bob.call(t, "tools/list", `{}`)
	if b1.cache != "miss" || metaN(a1) == metaN(b1) || up.count("tools/list") != 2 {
		t.Errorf("bob got alice's private (no cacheScope) tools/list: %q, n %v and %v", b1.cache, metaN(a1), metaN(b1))
	}
	if a2 := alice.call(t, "tools/list", `{}`); a2.cache != "hit" || metaN(a2) != metaN(a1) {
		t.Errorf("alice's second list: %q, n %v, want her own entry", a2.cache, metaN(a2))
	}
	pa, pb := alice.call(t, "prompts/list", `{}`), bob.call(t, "prompts/list", `{}`)
	if pb.cache != "miss" || metaN(pa) == metaN(pb) || up.count("prompts/list") != 2 {
		t.Errorf("a legacy upstream's cacheScope public shared alice's prompts/list with bob: %q, %d upstream requests", pb.cache, up.count("prompts/list"))
	}
}

// The client-capability digest sealed in the session separates lists a
// legacy server shapes by capabilities.
func TestCacheCapabilities(t *testing.T) {
	up, g := startCaching(t)
	plain := g.connect(t, "alice-key", `{}`)
	roots := g.connect(t, "alice-key", `{"roots":{"listChanged":true}}`)
	p, r := plain.call(t, "tools/list", `{}`), roots.call(t, "tools/list", `{}`)
	if r.cache != "miss" || len(toolNames(r)) != 3 || len(toolNames(p)) != 2 {
		t.Errorf("with roots declared: %q %v; without: %v", r.cache, toolNames(r), toolNames(p))
	}
	other := g.connect(t, "alice-key", `{ "roots": {"listChanged": true} }`)
	if a := other.call(t, "tools/list", `{}`); a.cache != "hit" || len(toolNames(a)) != 3 || up.count("tools/list") != 2 {
		t.Errorf("same capabilities, another session: %q %v, %d upstream lists", a.cache, toolNames(a), up.count("tools/list"))
	}
}

// 200 concurrent misses for one key make one upstream request.
func TestCacheSingleFlight(t *testing.T) {
	up, g := startCaching(t)
	release := up.holdLists(t)
	alice := g.connect(t, "alice-key", `{}`)
	const n = 200
	var wg sync.WaitGroup
	results := make([]int, n)
	for i := range n {
		wg.Go(func() {
			if resp, err := alice.list(context.Background(), i+1); err == nil {
				results[i] = resp.StatusCode
			}
		})
	}
	// Every request has looked the key up (and missed) before the upstream
	// answers.
	waitUntil(t, "every request to miss", func() bool { return g.store.Stats().Misses >= n })
	release()
	wg.Wait()
	if c := up.count("tools/list"); c != 1 {
		t.Errorf("%d upstream tools/list requests for %d concurrent misses, want 1", c, n)
	}
	for i, s := range results {
		if s != http.StatusOK {
			t.Fatalf("request %d: status %d", i, s)
		}
	}
}

// Each change notification relayed from the upstream drops what it names.
func TestCacheInvalidation(t *testing.T) {
	tests := []struct {
		name, notification, uri string
		dropped, kept           []string // "method params"
	}{
		{name: "tools", notification: "notifications/tools/list_changed", dropped: []string{"tools/list {}"}, kept: []string{"resources/list {}"}},
		{name: "prompts", notification: "notifications/prompts/list_changed", dropped: []string{"prompts/list {}"}, kept: []string{"tools/list {}"}},
		{name: "resources", notification: "notifications/resources/list_changed", dropped: []string{"resources/list {}"}, kept: []string{"tools/list {}", `resources/read {"uri":"file:///a"}`}},
		{name: "resource updated", notification: "notifications/resources/updated", uri: "file:///a",
			dropped: []string{`resources/read {"uri":"file:///a"}`}, kept: []string{`resources/read {"uri":"file:///b"}`, "resources/list {}"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, g := startCaching(t)
			alice := g.connect(t, "alice-key", `{}`)
			all := append(append([]string{}, tt.dropped...), tt.kept...)
			for _, c := range all {
				method, params, _ := strings.Cut(c, " ")
				alice.call(t, method, params)
			}
			alice.call(t, "tools/call", fmt.Sprintf(`{"name":"notify","arguments":{"method":%q,"uri":%q}}`, tt.notification, tt.uri))
			for _, c := range all {
				method, params, _ := strings.Cut(c, " ")
				want := "hit"
				if strings.Contains(strings.Join(tt.dropped, "\n"), c) {
					want = "miss"
				}
				if a := alice.call(t, method, params); a.cache != want {
					t.Errorf("after %s: %s is %q, want %q", tt.notification, c, a.cache, want)
				}
			}
		})
	}
}

// A policy change applies to cached answers at once: the cache holds the
// raw result, the policy filters every hit.
func TestCachePolicyChange(t *testing.T) {
	up, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	if a := alice.call(t, "tools/list", `{}`); strings.Join(toolNames(a), ",") != "public_tool,secret_tool" {
		t.Fatalf("before: %v", toolNames(a))
	}
	g.writePolicy(t, allowAllRego+"\nvisible := false if input.tool.name == \"secret_tool\"\n")
	if _, err := g.policy.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := alice.call(t, "tools/list", `{}`)
	if a.cache != "hit" || strings.Join(toolNames(a), ",") != "public_tool" || up.count("tools/list") != 1 {
		t.Errorf("after the policy change: %q %v; want a hit without secret_tool", a.cache, toolNames(a))
	}
}

// With the upstream failing, a stale entry within stale_if_error is served
// marked; past it, the upstream error. tools/call is never served stale.
func TestCacheStaleOnError(t *testing.T) {
	up, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	alice.call(t, "tools/list", `{}`)
	alice.call(t, "tools/call", `{"name":"search"}`)
	up.down.Store(true)
	g.clock.Add(2 * time.Minute)

	a := alice.call(t, "tools/list", `{}`)
	meta, _ := a.result["_meta"].(map[string]any)
	stale, _ := meta["io.ctxgate/stale"].(map[string]any)
	if a.status != http.StatusOK || a.cache != "stale; age=120" || stale["ageMs"] != float64(120000) || meta["n"] == nil || len(toolNames(a)) != 2 {
		t.Errorf("within the window: %d %q _meta %v tools %v", a.status, a.cache, meta, toolNames(a))
	}
	// Failures open the breaker; stale answers keep coming while it is
	// open, without a request upstream.
	for i := range 8 {
		if a := alice.call(t, "tools/list", `{}`); a.cache != "stale; age=120" {
			t.Fatalf("stale answer %d with the upstream down: %d %q %v", i, a.status, a.cache, a.error)
		}
	}
	if resp, err := http.Get(g.admin + "/admin/upstreams"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `"circuit_breaker":"open"`) {
			t.Errorf("breaker not open after repeated failures: %s", body)
		}
	}
	if c := alice.call(t, "tools/call", `{"name":"search"}`); c.status != http.StatusServiceUnavailable || c.error["code"] != float64(gateway.CodeBreakerOpen) || c.result != nil {
		t.Errorf("tools/call with the breaker open: %d %q %v %v; want 503 -31013, never stale", c.status, c.cache, c.error, c.result)
	}
	g.clock.Add(time.Hour)
	// By now the failures have opened the upstream's circuit breaker: the
	// answer is its fast failure (or, had it not opened, the upstream's).
	a = alice.call(t, "tools/list", `{}`)
	if code := a.error["code"]; a.result != nil || !(a.status == http.StatusBadGateway && code == float64(gateway.CodeUpstreamUnavailable) ||
		a.status == http.StatusServiceUnavailable && code == float64(gateway.CodeBreakerOpen)) {
		t.Errorf("past the window: %d %v %v; want the upstream error (502 -31010 or, breaker open, 503 -31013)", a.status, a.error, a.result)
	}
	if st := g.store.Stats(); st.StaleServed != 9 {
		t.Errorf("stale served %d, want 9", st.StaleServed)
	}

	t.Run("connection refused", func(t *testing.T) {
		up := newCountingUpstream()
		upSrv := httptest.NewServer(up)
		g := newCachingGateway(t, upSrv.URL, "")
		alice := g.connect(t, "alice-key", `{}`)
		alice.call(t, "resources/read", `{"uri":"file:///a"}`)
		upSrv.Close()
		g.clock.Add(5 * time.Minute)
		if a := alice.call(t, "resources/read", `{"uri":"file:///a"}`); a.cache != "stale; age=300" {
			t.Errorf("refused: %d %q", a.status, a.cache)
		}
	})
}

// Answers the cache cannot store are relayed exactly as without it.
func TestCacheRelaysWhatItCannotStore(t *testing.T) {
	up, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	t.Run("server request mid-stream", func(t *testing.T) {
		for i := 1; i <= 2; i++ {
			resp := alice.post(t, `{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"file:///ask"}}`)
			body, _ := io.ReadAll(resp.Body)
			if resp.Header.Get("Ctxgate-Cache") != "bypass" || !strings.Contains(string(body), "id: e1\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"srv-1\",\"method\":\"roots/list\"}\n\n") ||
				!strings.Contains(string(body), `"text":"v`) {
				t.Errorf("read %d: Ctxgate-Cache %q, body %q; want the stream relayed whole", i, resp.Header.Get("Ctxgate-Cache"), body)
			}
		}
		if c := up.count("resources/read"); c != 2 {
			t.Errorf("%d upstream reads, want 2 (never cached)", c)
		}
	})
	t.Run("stream ends without an answer", func(t *testing.T) {
		a := alice.call(t, "resources/read", `{"uri":"file:///cut"}`)
		if a.status != http.StatusBadGateway || a.error["code"] != float64(gateway.CodeUpstreamUnavailable) {
			t.Errorf("status %d error %v; want 502 -31010", a.status, a.error)
		}
	})
	t.Run("non-200", func(t *testing.T) {
		resp := alice.post(t, `{"jsonrpc":"2.0","id":6,"method":"resources/read","params":{"uri":"file:///gone"}}`)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Ctxgate-Cache") != "bypass" {
			t.Errorf("status %s, Ctxgate-Cache %q; want the upstream's 404 relayed", resp.Status, resp.Header.Get("Ctxgate-Cache"))
		}
	})
}

// A fetch runs on the context of the client that started it; when that
// client goes away, the request waiting on the same fetch asks again and
// still gets its answer.
func TestCacheLeaderGoesAway(t *testing.T) {
	up, g := startCaching(t)
	release := up.holdLists(t)
	alice := g.connect(t, "alice-key", `{}`)
	leaderCtx, leave := context.WithCancel(t.Context())
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		_, _ = alice.list(leaderCtx, 1)
	}()
	waitUntil(t, "the leader's fetch to reach the upstream", func() bool { return up.count("tools/list") == 1 })
	type result struct {
		status int
		cache  string
	}
	follower := make(chan result, 1)
	go func() {
		resp, err := alice.list(t.Context(), 2)
		if err != nil {
			follower <- result{}
			return
		}
		follower <- result{resp.StatusCode, resp.Header.Get("Ctxgate-Cache")}
	}()
	waitUntil(t, "the follower to miss", func() bool { return g.store.Stats().Misses == 2 })
	leave()
	<-leaderDone
	waitUntil(t, "the follower to ask again", func() bool { return up.count("tools/list") == 2 })
	release()
	if got := <-follower; got.status != http.StatusOK || got.cache != "miss" {
		t.Errorf("follower: %d %q; want 200 miss", got.status, got.cache)
	}
}

// list sends tools/list with its own context and reads the answer away.
func (c *client) list(ctx context.Context, id int) (*http.Response, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.g.URL, strings.NewReader(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id)))
	req.Header = http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"},
		"Authorization": {"Bearer " + c.key}, "Mcp-Session-Id": {c.session}, "Mcp-Protocol-Version": {"2025-11-25"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// holdLists makes tools/list wait until release is called (at the latest
// when the test ends, so a failed test never leaves the upstream blocked).
func (u *countingUpstream) holdLists(t *testing.T) (release func()) {
	u.hold = make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(u.hold) }) }
	t.Cleanup(release)
	return release
}
