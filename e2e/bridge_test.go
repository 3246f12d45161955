package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// tsStreamableServerJS is a Streamable HTTP server on the TypeScript SDK,
// built as its examples build one; see the script.
var tsStreamableServerJS = filepath.Join("testdata", "ts-streamable-server.cjs")

// movingProxy is the upstream address the gateway is configured with, in
// front of a server that is restarted on another port (each start takes
// port 0): the test moves it to the new process. It records what each
// POST was and how the server answered it.
type movingProxy struct {
	URL    string
	target atomic.Pointer[url.URL]
	mu     sync.Mutex
	seen   []proxied
}

type proxied struct {
	method, session string // the JSON-RPC method, the Mcp-Session-Id sent
	status          int
}

func startMovingProxy(t *testing.T, target string) *movingProxy {
	t.Helper()
	p := &movingProxy{}
	p.move(t, target)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := p.target.Load()
			pr.SetURL(u)
			pr.Out.Host = u.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.Request.Method == http.MethodPost {
				p.mu.Lock()
				p.seen = append(p.seen, proxied{resp.Request.Header.Get("X-E2e-Method"), resp.Request.Header.Get("Mcp-Session-Id"), resp.StatusCode})
				p.mu.Unlock()
			}
			return nil
		},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			// The method, read here so the record needs no body copy.
			var m struct {
				Method string `json:"method"`
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			_ = json.Unmarshal(body, &m)
			r.Header.Set("X-E2e-Method", m.Method)
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *movingProxy) move(t *testing.T, target string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(u)
}

func (p *movingProxy) posts() []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxied(nil), p.seen...)
}

// TestBridgeTypeScriptSessionLost: a modern (2026-07-28) client reaches a
// legacy-only TypeScript SDK Streamable HTTP server through bridge: true.
// The server is restarted (a new process: every session lost); it answers
// the bridged session's next request 400 with a JSON-RPC error for no
// request, as the SDK's examples do, which the gateway reads as the
// session's end (bridgeSessionLost): that one request is answered 502
// (-31010), and the next opens a new bridged session and is served by the
// new process. No tools/list comes first: the shipped policy's decision
// on the call needs the tool's annotations, which the gateway reads on the
// bridged session (a sessionless tools/list is refused by this server).
func TestBridgeTypeScriptSessionLost(t *testing.T) {
	first, addr := startNodeScript(t, "ts-streamable-server", tsStreamableServerJS)
	up := startMovingProxy(t, "http://"+addr)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q}
upstreams:
  - {name: ts, url: %q, bridge: true}
`, copyShippedPolicy(t), up.URL+"/mcp"))

	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-modern", Version: "1"}, nil)
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp/ts"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %q through the gateway, want 2026-07-28 (bridged)", v)
	}
	whoami := func() (string, error) {
		res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "whoami"})
		if err != nil {
			return "", err
		}
		if res.IsError || len(res.Content) != 1 {
			return "", fmt.Errorf("whoami: %+v", res)
		}
		return res.Content[0].(*mcp.TextContent).Text, nil
	}
	if got, err := whoami(); err != nil || got != fmt.Sprintf("process %d", first.cmd.Process.Pid) {
		t.Fatalf("whoami before the restart: %q, %v", got, err)
	}

	first.signal(syscall.SIGKILL)
	<-first.done
	second, addr := startNodeScript(t, "ts-streamable-server (restarted)", tsStreamableServerJS)
	up.move(t, "http://"+addr)

	if got, err := whoami(); err == nil {
		t.Errorf("the call that finds the session lost: %q, want the gateway's 502", got)
	}
	// The access record is written once the answer is: polled for.
	var lost []map[string]any
	waitFor(t, "the 502's access record", readyDeadline, func() bool {
		lost = nil
		for _, rec := range logRecords(gw.stderr.String()) {
			if rec["msg"] == "request" && rec["rpc_method"] == "tools/call" && rec["status"] == float64(http.StatusBadGateway) {
				lost = append(lost, rec)
			}
		}
		return len(lost) > 0
	})
	if len(lost) != 1 || lost[0]["rpc_error"] != float64(-31010) || !strings.Contains(fmt.Sprint(lost[0]["error"]), "ended the bridged session") {
		t.Errorf("tools/call answered 502: %v, want one, -31010, ended the bridged session", lost)
	}
	if got, err := whoami(); err != nil || got != fmt.Sprintf("process %d", second.cmd.Process.Pid) {
		t.Fatalf("whoami after the restart: %q, %v, want the new process's answer", got, err)
	}

	// What the server saw: a session opened, the call on it, the call on
	// the lost session answered 400, a new session opened, the call on it.
	var calls []string
	for _, p := range up.posts() {
		if p.method == "tools/call" || p.method == "initialize" {
			calls = append(calls, fmt.Sprintf("%s %d session=%t", p.method, p.status, p.session != ""))
		}
	}
	want := "initialize 200 session=false,tools/call 200 session=true,tools/call 400 session=true,initialize 200 session=false,tools/call 200 session=true"
	if got := strings.Join(calls, ","); got != want {
		t.Errorf("the server saw\n%s\nwant\n%s", got, want)
	}
}
