package gateway_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/shared"
	"github.com/ctxgate/ctxgate/upstream"
)

// The credentials of the observability tests. Their values must never show
// in a log line.
const (
	obsAPIKey     = "obs-test-api-key-6f1d2c3b4a59"
	obsAdminToken = "obs-test-admin-token-0a9b8c7d"
	obsCookie     = "obs-test-cookie-5e4d3c2b1a"
)

// obsPolicy allows everything but calling the tool "forbidden".
const obsPolicy = `package ctxgate.authz

default allow := false

allow if input.method != "tools/call"

allow if {
	input.method == "tools/call"
	input.tool.name != "forbidden"
}

default visible := true
`

// obsUpstream is an MCP upstream scripted for the observability tests: it
// lists the tools echo, fails and forbidden, answers a call to echo, a call
// to fails with an isError result, any other tool with the JSON-RPC error
// for an unknown tool, holds GET streams
// open until the client leaves, and records every request's headers.
type obsUpstream struct {
	// tools, when set, is the tools array tools/list answers with.
	tools atomic.Pointer[string]
	// script, when set, answers first; it reports whether it did (the
	// hostile upstreams of hostile_test.go).
	script  func(w http.ResponseWriter, r *http.Request, method, name string, id json.RawMessage) bool
	mu      sync.Mutex
	headers []http.Header
	bodies  [][]byte
}

func (u *obsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.headers = append(u.headers, r.Header.Clone())
	u.bodies = append(u.bodies, body)
	u.mu.Unlock()
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name   string `json:"name"`
			Cursor string `json:"cursor"`
		} `json:"params"`
	}
	_ = json.Unmarshal(body, &msg)
	reply := func(result string) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,%s}`, msg.ID, result)
	}
	switch {
	case u.script != nil && u.script(w, r, msg.Method, msg.Params.Name+msg.Params.Cursor, msg.ID):
	case r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": open\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusOK)
	case msg.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "upstream-session")
		reply(`"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"obs","version":"1"}}`)
	case msg.ID == nil:
		w.WriteHeader(http.StatusAccepted)
	case untrustedAnswer(w, msg.Method, msg.Params.Name+msg.Params.Cursor, msg.ID):
	case msg.Method == "tools/list" && u.tools.Load() != nil:
		reply(`"result":{"tools":` + *u.tools.Load() + `}`)
	case msg.Method == "tools/list":
		reply(`"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"fails","inputSchema":{"type":"object"}},{"name":"forbidden","inputSchema":{"type":"object"}}]}`)
	case msg.Method == "tools/call" && msg.Params.Name == "echo":
		reply(`"result":{"content":[{"type":"text","text":"echo"}]}`)
	case msg.Method == "tools/call" && msg.Params.Name == "smuggle":
		// Two readings of one answer: "result" for a case-sensitive
		// parser, "Result" for Go's encoding/json.
		reply(`"result":{"content":[]},"Result":{"content":[{"type":"text","text":"unfiltered"}]}`)
	case msg.Method == "tools/call" && msg.Params.Name == "fails":
		reply(`"result":{"content":[{"type":"text","text":"it failed"}],"isError":true}`)
	default:
		reply(`"error":{"code":-32602,"message":"unknown tool"}`)
	}
}

// lastHeader is the headers of the last request the upstream received.
func (u *obsUpstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers[len(u.headers)-1]
}

// lastBody is the body of the last request the upstream received.
func (u *obsUpstream) lastBody() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return string(u.bodies[len(u.bodies)-1])
}

// obsGateway is a gateway serving on real listeners (port 0), in front of
// an obsUpstream ("up") and an unreachable upstream ("down"), with API-key
// authentication, a policy engine and an admin token.
type obsGateway struct {
	URL, Admin string
	up         *obsUpstream
	logPath    string
}

// logs returns what the gateway has logged so far. The log is a file:
// slog's handler serialises its writes, and the test reads it whole.
func (g *obsGateway) logs(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(g.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

type obsOptions struct {
	pprof          bool
	tracerProvider trace.TracerProvider
	// upstreamConfig is added to the "up" upstream's config (", key: value").
	upstreamConfig string
	// policy replaces obsPolicy.
	policy string
	// decisions receives the decision log (nil: none).
	decisions io.Writer
	// redis is the Redis the gateway shares its state on (nil: none).
	redis *miniredis.Miniredis
}

func hexSHA256(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func startObsGateway(t *testing.T, o obsOptions) *obsGateway {
	t.Helper()
	return startObsGatewayWith(t, o, &obsUpstream{})
}

// startObsGatewayWith is startObsGateway in front of a prepared upstream.
func startObsGatewayWith(t *testing.T, o obsOptions, up *obsUpstream) *obsGateway {
	t.Helper()
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // connection refused from now on
	redisBlock := ""
	if o.redis != nil {
		redisBlock = fmt.Sprintf("redis: {url: %q, key_prefix: \"t:\", timeout: 2s}\n", "redis://"+o.redis.Addr()+"/0")
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token_sha256: %q, pprof: %t}
auth: {api_keys: [{name: ci, sha256: %q}]}
policy: {dir: unused-the-test-passes-an-engine}
upstreams: [{name: up, url: %q%s}, {name: down, url: %q}]
%s`, hexSHA256(obsAdminToken), o.pprof, hexSHA256(obsAPIKey), upSrv.URL, o.upstreamConfig, dead.URL, redisBlock), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	logPath := filepath.Join(t.TempDir(), "gateway.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logFile.Close() })
	log := slog.New(slog.NewJSONHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug}))
	rego := obsPolicy
	if o.policy != "" {
		rego = o.policy
	}
	engine := newEngine(t, rego, log, o.decisions)
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	public, admin := listen(t), listen(t)
	cfg.Bound(public.Addr().String())
	opts := gateway.Options{Logger: log, Policy: engine, TracerProvider: o.tracerProvider, Metrics: gateway.NewMetrics()}
	if o.redis != nil {
		rc, err := shared.New(context.Background(), cfg.Redis, shared.Options{Logger: log, Registerer: opts.Metrics.Registry()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.Close() })
		opts.Redis = rc
	}
	gw, err := gateway.New(cfg, pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, public, admin) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if b, _ := os.ReadFile(logPath); t.Failed() {
			t.Logf("gateway log:\n%s", b)
		}
	})
	g := &obsGateway{URL: "http://" + public.Addr().String() + "/mcp/up", Admin: "http://" + admin.Addr().String(), up: up, logPath: logPath}
	waitUntil(t, "the gateway to be ready", func() bool {
		resp, err := http.Get(g.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g
}

// newObsEngine runs obsPolicy, writing decision records to decisions (nil:
// none).
func newObsEngine(t *testing.T, log *slog.Logger, decisions io.Writer) *policy.Engine {
	t.Helper()
	return newEngine(t, obsPolicy, log, decisions)
}

// newEngine runs the policy rego.
func newEngine(t *testing.T, rego string, log *slog.Logger, decisions io.Writer) *policy.Engine {
	t.Helper()
	engine, err := policy.New(policy.Options{FS: fstest.MapFS{"authz.rego": {Data: []byte(rego)}}, DecisionLog: decisions, Logger: log, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return engine
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// waitUntil polls cond until it holds, failing the test after a deadline.
// Polling with a deadline is readiness checking, not sleeping to
// synchronise: what the gateway records after answering (the access
// record, metrics, the request span) lands just after the client is done.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// obsClient is a client of the obs gateway with the API key and a cookie.
type obsClient struct {
	g       *obsGateway
	session string
	header  http.Header
}

func (c *obsClient) post(t *testing.T, body string) (*http.Response, string) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + obsAPIKey}, "Cookie": {"session=" + obsCookie}}
	if c.session != "" {
		h.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	for k, vs := range c.header {
		h[k] = vs
	}
	resp := send(t, http.MethodPost, c.g.URL, c.session, body, h)
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// initialize opens a session and lists the tools, so the gateway's catalog
// knows them.
func (c *obsClient) initialize(t *testing.T) {
	t.Helper()
	resp, body := c.post(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	c.session = resp.Header.Get("Mcp-Session-Id")
	if resp.StatusCode != http.StatusOK || c.session == "" {
		t.Fatalf("initialize: %s %s", resp.Status, body)
	}
	if resp, body := c.post(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %s %s", resp.Status, body)
	}
	if resp, body := c.post(t, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list: %s %s", resp.Status, body)
	}
}

// adminPost posts to an admin endpoint with the admin token.
func (g *obsGateway) adminPost(t *testing.T, path string) (int, string) {
	t.Helper()
	resp := send(t, http.MethodPost, g.Admin+path, "", "", http.Header{"Authorization": {"Bearer " + obsAdminToken}, "X-Ctxgate-Admin": {"1"}})
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// adminGet fetches an admin endpoint, with the admin token if withToken.
func (g *obsGateway) adminGet(t *testing.T, path string, withToken bool) (int, string) {
	t.Helper()
	var h http.Header
	if withToken {
		h = http.Header{"Authorization": {"Bearer " + obsAdminToken}}
	}
	resp := send(t, http.MethodGet, g.Admin+path, "", "", h)
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// scrape reads /metrics into a map from series (name and labels exactly as
// exposed, labels sorted by name) to value.
func (g *obsGateway) scrape(t *testing.T) map[string]float64 {
	t.Helper()
	status, body := g.adminGet(t, "/metrics", true)
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d %s", status, body)
	}
	return parseMetrics(t, body)
}

// parseMetrics reads the Prometheus text format into series -> value,
// the series written as in the exposition (name{labels}).
func parseMetrics(t *testing.T, body string) map[string]float64 {
	t.Helper()
	series := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		series[line[:i]] = v
	}
	return series
}
