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

// TestBridgeSessionLost: a modern (2026-07-28) client reaches a
// legacy-only server through bridge: true; the server is restarted (a new
// process: every session lost) and answers the bridged session's next
// request as it answers a session it does not know, which the gateway
// reads as the session's end (bridgeSessionLost): that one request is
// answered 502 (-31010), and the next opens a new bridged session and is
// served by the new process. Two real servers: one built as the
// TypeScript SDK's examples build one, which answers 400 with a JSON-RPC
// error for no request, and the Go SDK's everything-server, which answers
// 404. No tools/list comes first: under the shipped policy the decision
// on the call needs the tool's annotations, which the gateway reads on the
// bridged session (a sessionless tools/list is refused by these servers).
func TestBridgeSessionLost(t *testing.T) {
	tests := []struct {
		name   string
		start  func(t *testing.T) (p *proc, url string)
		policy func(t *testing.T) string
		tool   string
		// served is what the tool answers when p serves it.
		served     func(p *proc) string
		lostStatus int
	}{
		{
			name: "TypeScript SDK answers 400",
			start: func(t *testing.T) (*proc, string) {
				p, addr := startNodeScript(t, "ts-streamable-server", tsStreamableServerJS)
				return p, "http://" + addr + "/mcp"
			},
			policy:     copyShippedPolicy,
			tool:       "whoami",
			served:     func(p *proc) string { return fmt.Sprintf("process %d", p.cmd.Process.Pid) },
			lostStatus: http.StatusBadRequest,
		},
		{
			name:  "Go SDK answers 404",
			start: func(t *testing.T) (*proc, string) { return startEverythingProc(t, false) },
			// Its tools carry no annotations, which the shipped policy
			// reads as not read-only.
			policy:     func(*testing.T) string { return allowAllPolicy },
			tool:       "test_simple_text",
			served:     func(*proc) string { return "This is a simple text response for testing." },
			lostStatus: http.StatusNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, target := tt.start(t)
			up := startMovingProxy(t, target)
			gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q}
upstreams:
  - {name: legacy, url: %q, bridge: true}
`, tt.policy(t), up.URL))

			client := mcp.NewClient(&mcp.Implementation{Name: "e2e-modern", Version: "1"}, nil)
			cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp/legacy"}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cs.Close() })
			if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
				t.Fatalf("negotiated %q through the gateway, want 2026-07-28 (bridged)", v)
			}
			call := func() (string, error) {
				res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: tt.tool})
				if err != nil {
					return "", err
				}
				if res.IsError || len(res.Content) != 1 {
					return "", fmt.Errorf("%s: %+v", tt.tool, res)
				}
				return res.Content[0].(*mcp.TextContent).Text, nil
			}
			if got, err := call(); err != nil || got != tt.served(first) {
				t.Fatalf("%s before the restart: %q, %v, want %q", tt.tool, got, err, tt.served(first))
			}

			first.signal(syscall.SIGKILL)
			<-first.done
			second, target := tt.start(t)
			up.move(t, target)

			if got, err := call(); err == nil {
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
			if got, err := call(); err != nil || got != tt.served(second) {
				t.Fatalf("%s after the restart: %q, %v, want the new process's %q", tt.tool, got, err, tt.served(second))
			}

			// What the server saw: a session opened, the call on it, the
			// call on the lost session refused, a new session opened, the
			// call on it.
			var calls []string
			for _, p := range up.posts() {
				if p.method == "tools/call" || p.method == "initialize" {
					calls = append(calls, fmt.Sprintf("%s %d session=%t", p.method, p.status, p.session != ""))
				}
			}
			want := fmt.Sprintf("initialize 200 session=false,tools/call 200 session=true,tools/call %d session=true,initialize 200 session=false,tools/call 200 session=true", tt.lostStatus)
			if got := strings.Join(calls, ","); got != want {
				t.Errorf("the servers saw\n%s\nwant\n%s", got, want)
			}
		})
	}
}
