package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/upstream"
)

// faultUpstream is an MCP upstream for fault injection. It keeps a ledger
// of every tools/call it received whole (by the nonce in its arguments),
// and misbehaves by tool name or by its current mode:
//
//	echo      answers with the nonce
//	reset     reads the whole request, then closes the connection (a receipt, no answer)
//	hang      never answers (until the client leaves or the test ends)
//	slow      answers once gate is closed
//	rpcerror  answers 200 with a JSON-RPC error
//	flaky     by mode: ok answers, "503" answers 503, "reset" resets
//
// mode "503" makes every request but initialize answer 503, mode "hang"
// never answer. GET opens a stream that sends one event, then stalls.
type faultUpstream struct {
	srv     *httptest.Server
	mode    atomic.Value // string
	gate    chan struct{}
	release chan struct{}

	mu       sync.Mutex
	ledger   map[string]int // nonce -> executions
	receipts atomic.Int64   // every request read whole
	// idempotencyHeader: a request arrived with Idempotency-Key or
	// X-Idempotency-Key, which would let Go's HTTP client re-send it.
	idempotencyHeader atomic.Bool
}

func newFaultUpstream(t *testing.T) *faultUpstream {
	t.Helper()
	u := &faultUpstream{gate: make(chan struct{}), release: make(chan struct{}), ledger: map[string]int{}}
	u.mode.Store("ok")
	u.srv = httptest.NewServer(u)
	t.Cleanup(func() {
		close(u.release)
		u.srv.CloseClientConnections()
		u.srv.Close()
	})
	return u
}

func (u *faultUpstream) setMode(m string) { u.mode.Store(m) }

func (u *faultUpstream) executions(nonce string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.ledger[nonce]
}

func (u *faultUpstream) ledgerCopy() map[string]int {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make(map[string]int, len(u.ledger))
	for k, v := range u.ledger {
		out[k] = v
	}
	return out
}

type faultRequest struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
	Params struct {
		Name      string `json:"name"`
		Arguments struct {
			Nonce string `json:"nonce"`
		} `json:"arguments"`
	} `json:"params"`
}

func (u *faultUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.receipts.Add(1)
	if r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != "" {
		u.idempotencyHeader.Store(true)
	}
	if r.Method == http.MethodGet {
		u.stream(w, r)
		return
	}
	var req faultRequest
	_ = json.Unmarshal(body, &req)
	mode := u.mode.Load().(string)
	switch {
	case req.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "upstream-session")
		u.json(w, req.ID, `{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"fault","version":"1"}}`)
		return
	case req.ID == nil:
		w.WriteHeader(http.StatusAccepted) // a notification or a client's answer
		return
	case mode == "503":
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case mode == "hang":
		u.hang(r)
		return
	case req.Method != "tools/call":
		u.json(w, req.ID, `{"tools":[]}`)
		return
	}
	u.mu.Lock()
	u.ledger[req.Params.Arguments.Nonce]++
	u.mu.Unlock()
	tool := req.Params.Name
	if tool == "flaky" {
		tool = map[string]string{"ok": "echo", "reset": "reset"}[mode]
	}
	switch tool {
	case "echo":
		u.json(w, req.ID, fmt.Sprintf(`{"content":[{"type":"text","text":%q}]}`, req.Params.Arguments.Nonce))
	case "reset":
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case "hang":
		u.hang(r)
	case "slow":
		select {
		case <-u.gate:
			u.json(w, req.ID, fmt.Sprintf(`{"content":[{"type":"text","text":%q}]}`, req.Params.Arguments.Nonce))
		case <-r.Context().Done():
		}
	case "rpcerror":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"error":{"code":-32000,"message":"tool broke"}}`, req.ID)
	default:
		w.WriteHeader(http.StatusServiceUnavailable)
	}
}

func (u *faultUpstream) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-u.release:
	}
}

func (u *faultUpstream) json(w http.ResponseWriter, id json.RawMessage, result string) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":%s}`, id, result)
}

// stream sends one event, then stalls until the client leaves.
func (u *faultUpstream) stream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n")
	w.(http.Flusher).Flush()
	select {
	case <-r.Context().Done():
	case <-u.release:
	}
}

// The principals of the resilience tests.
const (
	aliceKey = "alice-test-api-key-0123456789"
	bobKey   = "bob-test-api-key-9876543210ab"
)

// resGateway is a gateway with obsPolicy (everything but the tool
// "forbidden") in front of one upstream configured by extra (YAML keys of
// upstreams[0]).
type resGateway struct {
	URL       string
	pool      *upstream.Pool
	metrics   *gateway.Metrics
	decisions string // the decision log's path
}

func startResGateway(t *testing.T, upstreamURL, extra string, opts ...func(*gateway.Options)) *resGateway {
	t.Helper()
	var indented strings.Builder
	for line := range strings.SplitSeq(strings.TrimSpace(extra), "\n") {
		if line != "" {
			indented.WriteString("    " + line + "\n")
		}
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
auth: {api_keys: [{name: alice, sha256: %q}, {name: bob, sha256: %q}]}
policy: {dir: unused-the-test-passes-an-engine}
upstreams:
  - name: up
    url: %q
%s`, hexSHA256(aliceKey), hexSHA256(bobKey), upstreamURL, indented.String()), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	up := &cfg.Upstreams[0]
	if up.Retry.Backoff == config.DefaultRetryBackoff {
		// Fast tests; the policy is the same.
		up.Retry.Backoff, up.Retry.MaxBackoff = time.Millisecond, 2*time.Millisecond
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	g := &resGateway{metrics: gateway.NewMetrics(), decisions: filepath.Join(t.TempDir(), "decisions.log")}
	decisions, err := os.Create(g.decisions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { decisions.Close() })
	engine := newObsEngine(t, slog.New(slog.DiscardHandler), decisions)
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.CloseIdleConnections)
	g.pool = pool
	o := gateway.Options{Policy: engine, Metrics: g.metrics}
	for _, f := range opts {
		f(&o)
	}
	gw, err := gateway.New(cfg, pool, o)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	g.URL = srv.URL + "/mcp/up"
	return g
}

// series scrapes the gateway's metrics.
func (g *resGateway) series(t *testing.T) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	g.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return parseMetrics(t, rec.Body.String())
}

// resClient is one principal's session on a resGateway. Its methods
// return errors instead of failing the test, so goroutines can use them.
type resClient struct {
	url, key, session string
	client            *http.Client
}

// resAnswer is what a client got: status, headers and the JSON-RPC body.
type resAnswer struct {
	status int
	header http.Header
	body   []byte
	msg    struct {
		ID     any             `json:"id"`
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int64  `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
}

func (a *resAnswer) code() int64 {
	if a.msg.Error == nil {
		return 0
	}
	return a.msg.Error.Code
}

func (c *resClient) post(ctx context.Context, body string, h http.Header) (*resAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+c.key)
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	client := c.client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	a := &resAnswer{status: resp.StatusCode, header: resp.Header}
	if a.body, err = io.ReadAll(resp.Body); err != nil {
		return nil, err
	}
	if len(a.body) > 0 {
		if err := json.Unmarshal(a.body, &a.msg); err != nil {
			return a, fmt.Errorf("answer is not one JSON-RPC message: %w: %s", err, a.body)
		}
	}
	return a, nil
}

// open initializes a session for the principal with the given key.
func (g *resGateway) open(t *testing.T, key string) *resClient {
	t.Helper()
	c := &resClient{url: g.URL, key: key}
	a, err := c.post(t.Context(), `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
	if err != nil || a.status != http.StatusOK {
		t.Fatalf("initialize: %v %+v", err, a)
	}
	c.session = a.header.Get("Mcp-Session-Id")
	if c.session == "" {
		t.Fatalf("initialize: no session in %v", a.header)
	}
	return c
}

// callBody is a tools/call with a nonce the upstream echoes.
func callBody(id int, tool, nonce string) string {
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"nonce":%q}}}`, id, tool, nonce)
}
