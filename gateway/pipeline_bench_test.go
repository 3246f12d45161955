package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// BenchmarkPipeline measures the gateway's own cost per request, in
// process: the handler is called directly (no client connection), the
// upstream is a real HTTP server on 127.0.0.1 that answers from memory.
// Three pipelines, as the e2e harness's targets:
//
//	pass-through  anonymous, an allow-all policy, no decision log
//	full          an ES256 bearer JWT verified for real (the issuer's keys
//	              fetched once and cached), the shipped policies/ policy and
//	              its decision log written to io.Discard
//	cache-hit     full, with the response cache on for the call
//
// each for a small tools/call, tools/list of 100 and 1,000 tools and a
// tools/call with a 1 MiB result. A benchmark, not a test: nothing here
// asserts a time.
//
//	go test ./gateway/ -run '^$' -bench BenchmarkPipeline -benchmem
//	go test ./gateway/ -run '^$' -bench 'BenchmarkPipeline/full/tools-list-1000' -cpuprofile cpu.out
func BenchmarkPipeline(b *testing.B) {
	up := httptest.NewServer(benchUpstream{})
	b.Cleanup(up.Close)
	idp := newBenchIssuer(b)
	for _, p := range []struct {
		name         string
		full, cached bool
		wantCache    string
	}{
		{name: "pass-through"},
		{name: "full", full: true},
		{name: "cache-hit", full: true, cached: true, wantCache: "hit"},
	} {
		b.Run(p.name, func(b *testing.B) {
			g := newPipelineGateway(b, up.URL, idp, p.full, p.cached)
			for _, c := range []struct{ name, route, body string }{
				{name: "tools-call", route: "/mcp/small", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}`},
				{name: "tools-list-100", route: "/mcp/list100", body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`},
				{name: "tools-list-1000", route: "/mcp/list1000", body: `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`},
				{name: "result-1MiB", route: "/mcp/small", body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"blob","arguments":{"text":"hello"}}}`},
			} {
				b.Run(c.name, func(b *testing.B) {
					session := g.initialize(b, c.route)
					g.post(b, c.route, session, c.body) // warms the catalog and, when on, the cache
					if got := g.post(b, c.route, session, c.body).Header().Get("Ctxgate-Cache"); got != p.wantCache {
						b.Fatalf("Ctxgate-Cache %q, want %q", got, p.wantCache)
					}
					b.ReportAllocs()
					for b.Loop() {
						g.post(b, c.route, session, c.body)
					}
				})
			}
		})
	}
}

// benchUpstream is an MCP upstream answering from memory; a GET opens a
// server stream (BenchmarkStreams). Its path's last
// element is how many tools its tools/list has (/4, /100, /1000); the
// first two are "echo" (a small result) and "blob" (a 1 MiB result). All
// are annotated read-only, so the shipped policy lets any principal call
// them.
type benchUpstream struct{}

const benchBlobSize = 1 << 20

var (
	benchLists = map[string][]byte{}
	benchBlob  []byte
)

func init() {
	for _, n := range []int{4, 100, 1000} {
		tools := make([]map[string]any, n)
		for i := range tools {
			name := fmt.Sprintf("tool_%04d", i)
			switch i {
			case 0:
				name = "echo"
			case 1:
				name = "blob"
			}
			tools[i] = map[string]any{
				"name": name, "description": "Looks up documents by keyword and returns the matching titles.",
				"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"text": map[string]any{"type": "string"}}},
				"annotations": map[string]any{"readOnlyHint": true},
			}
		}
		benchLists[strconv.Itoa(n)], _ = json.Marshal(map[string]any{"tools": tools})
	}
	text := strings.Repeat("lorem ipsum dolor sit amet, consectetur adipiscing elit. ", benchBlobSize/57+1)[:benchBlobSize]
	benchBlob, _ = json.Marshal(map[string]any{"content": []map[string]any{{"type": "text", "text": text}}})
}

func (benchUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		// A server stream: one event, then quiet until the client leaves.
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write([]byte("id: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var msg struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name string `json:"name"`
		} `json:"params"`
	}
	body, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(body, &msg)
	if msg.ID == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	var result []byte
	switch {
	case msg.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "bench-upstream")
		result = []byte(`{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"bench","version":"1"}}`)
	case msg.Method == "tools/list":
		result = benchLists[r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]]
	case msg.Method == "tools/call" && msg.Params.Name == "blob":
		result = benchBlob
	case msg.Method == "tools/call":
		result = []byte(`{"content":[{"type":"text","text":"hello"}]}`)
	default:
		result = []byte(`{}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(`{"jsonrpc":"2.0","id":,"result":}`)+len(msg.ID)+len(result)))
	_, _ = w.Write([]byte(`{"jsonrpc":"2.0","id":`))
	_, _ = w.Write(msg.ID)
	_, _ = w.Write([]byte(`,"result":`))
	_, _ = w.Write(result)
	_, _ = w.Write([]byte(`}`))
}

// benchIssuer is a minimal OpenID provider (discovery and a JWKS with one
// ES256 key) and the one access token the benchmarks present. The gateway
// fetches the keys from it for real, once.
type benchIssuer struct {
	URL   string
	token string
}

const benchAudience = "https://ctxgate.bench.invalid"

func newBenchIssuer(b *testing.B) *benchIssuer {
	b.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	is := &benchIssuer{}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	is.URL = srv.URL
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "bench-es256", Algorithm: "ES256", Use: "sig"}}}
	writeJSON := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"issuer": is.URL, "jwks_uri": is.URL + "/jwks", "id_token_signing_alg_values_supported": []string{"ES256"}})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, jwks) })
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader(jose.HeaderKey("kid"), "bench-es256"))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{
		"iss": is.URL, "sub": "bench-user", "aud": benchAudience, "client_id": "bench-user",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(24 * time.Hour).Unix(),
		"scope": "docs.read", "groups": []string{"engineering"},
	})
	jws, err := signer.Sign(claims)
	if err != nil {
		b.Fatal(err)
	}
	if is.token, err = jws.CompactSerialize(); err != nil {
		b.Fatal(err)
	}
	return is
}

// pipelineGateway is one gateway of BenchmarkPipeline, with upstreams
// small (4 tools), list100 and list1000 on the benchmark upstream.
type pipelineGateway struct {
	handler http.Handler
	bearer  string // "" for anonymous
}

func newPipelineGateway(b *testing.B, upstreamURL string, idp *benchIssuer, full, cached bool) *pipelineGateway {
	b.Helper()
	auth, dir, decisions := "auth: {anonymous: true}", b.TempDir(), io.Writer(nil)
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte(allowAllRego), 0o600); err != nil {
		b.Fatal(err)
	}
	if full {
		auth = fmt.Sprintf("auth:\n  oidc:\n    - {issuer: %q, audiences: [%q], token_type: at+jwt}", idp.URL, benchAudience)
		dir, decisions = filepath.Join("..", "policies"), io.Discard
	}
	cache := ""
	if cached {
		cache = ", cache: {ttl: {tools/list: 1h, tools/call: 1h}, tools: [echo, blob]}"
	}
	var ups strings.Builder
	for name, n := range map[string]int{"small": 4, "list100": 100, "list1000": 1000} {
		fmt.Fprintf(&ups, "  - {name: %s, url: %q, max_concurrent_per_principal: 100%s}\n", name, upstreamURL+"/"+strconv.Itoa(n), cache)
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
sessions: {keys: ["pipeline-benchmark-session-key-0123456789"]}
# 1 GiB: 256 shards of 4 MiB, so a 1 MiB result fits in one (an entry
# larger than a shard is never stored).
cache: {max_mb: 1024}
%s
policy: {dir: %q}
upstreams:
%s`, auth, dir, ups.String()), func(string) (string, bool) { return "", false })
	if err != nil {
		b.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		b.Fatal(problems)
	}
	engine, err := policy.New(policy.Options{Dir: dir, DecisionLog: decisions})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(engine.Close)
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(cfg, pool, gateway.Options{Policy: engine, HealthInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	g := &pipelineGateway{handler: gw.Handler()}
	if full {
		g.bearer = idp.token
		g.awaitKeys(b)
	}
	return g
}

// awaitKeys polls until the gateway has the issuer's keys (fetched in the
// background from New on): until then a bearer token is answered 503.
func (g *pipelineGateway) awaitKeys(b *testing.B) {
	b.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if g.do("/mcp/small", "", benchInitialize).Code == http.StatusOK {
			return
		}
	}
	b.Fatal("the gateway did not load the issuer's keys within 10s")
}

const benchInitialize = `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"b","version":"1"}}}`

func (g *pipelineGateway) initialize(b *testing.B, route string) string {
	b.Helper()
	return g.post(b, route, "", benchInitialize).Header().Get("Mcp-Session-Id")
}

// post sends one request and fails the benchmark on anything but a 200
// with a JSON-RPC result.
func (g *pipelineGateway) post(b *testing.B, route, session, body string) *httptest.ResponseRecorder {
	rec := g.do(route, session, body)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"result"`) {
		b.Fatalf("%s: status %d: %.300s", route, rec.Code, rec.Body)
	}
	return rec
}

func (g *pipelineGateway) do(route, session, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1"+route, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if g.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+g.bearer)
	}
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	rec := httptest.NewRecorder()
	g.handler.ServeHTTP(rec, req)
	return rec
}
