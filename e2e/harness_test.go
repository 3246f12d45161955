// Package e2e runs ctxgate as a real process between real MCP peers: the
// binary is built once, the Go SDK's conformance everything-server is the
// upstream, the Go SDK client and the official conformance suite are the
// clients. Only what is outside the system is faked.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Built binaries, set by TestMain.
var bins struct {
	ctxgate, everything, everythingClient string
}

// allowAllPolicy is the policy of tests that are about the proxy, not the
// policy: `policy: {dir: ...}` is required in every configuration.
var allowAllPolicy = filepath.Join("testdata", "allow-all")

// policyConfig is the policy block for such tests.
func policyConfig() string {
	return fmt.Sprintf("policy: {dir: %q, decision_log: off}\n", allowAllPolicy)
}

const readyDeadline = 20 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ctxgate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, p := range []*string{&nodeBin, &conformanceJS, &inspectorCLIJS, &oidcProviderJS, &allowAllPolicy} {
		*p, _ = filepath.Abs(*p)
	}
	bins.ctxgate = filepath.Join(dir, "ctxgate")
	bins.everything = filepath.Join(dir, "everything-server")
	bins.everythingClient = filepath.Join(dir, "everything-client")
	for _, b := range []struct{ out, pkg string }{
		{bins.ctxgate, "github.com/ctxgate/ctxgate"},
		{bins.everything, "github.com/modelcontextprotocol/go-sdk/conformance/everything-server"},
		{bins.everythingClient, "github.com/modelcontextprotocol/go-sdk/conformance/everything-client"},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n", b.pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a child process that is killed when the test ends and whose
// output is printed if the test failed.
type proc struct {
	name           string
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	waitErr        error
}

func startProc(t *testing.T, name, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	startCmd(t, p)
	return p
}

// startCmd starts a prepared proc and arranges its cleanup.
func startCmd(t *testing.T, p *proc) {
	t.Helper()
	if err := tryStartCmd(t, p); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
}

// tryStartCmd is startCmd for a caller that handles a failed start.
func tryStartCmd(t *testing.T, p *proc) error {
	t.Helper()
	name := p.name
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
		if t.Failed() {
			t.Logf("--- %s stdout ---\n%s", name, p.stdout.String())
			t.Logf("--- %s stderr ---\n%s", name, p.stderr.String())
		}
	})
	return nil
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor polls cond until it holds or the deadline passes. Polling with a
// deadline is readiness checking, not sleeping as synchronisation.
func waitFor(t *testing.T, what string, deadline time.Duration, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(deadline)
	for !cond() {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("timed out after %s waiting for %s", deadline, what)
		}
	}
}

// gatewayProc is a running ctxgate serve.
type gatewayProc struct {
	*proc
	URL   string // http://127.0.0.1:port
	Admin string // http://127.0.0.1:port
}

// startGateway writes cfg to a file and runs `ctxgate serve` on it. The
// config should listen on port 0; the bound addresses are read from the
// gateway's "ctxgate listening" log record.
func startGateway(t *testing.T, cfg string) *gatewayProc {
	t.Helper()
	g := startGatewayListening(t, cfg)
	waitFor(t, "ctxgate /readyz", readyDeadline, func() bool {
		resp, err := http.Get(g.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g
}

// startGatewayListening is startGateway for a gateway that is expected not
// to become ready: it returns once the gateway listens.
func startGatewayListening(t *testing.T, cfg string) *gatewayProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctxgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "ctxgate", bins.ctxgate, "serve", "--config", path)
	g := &gatewayProc{proc: p}
	waitFor(t, "ctxgate to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("ctxgate exited: %v\n%s", p.waitErr, p.stderr.String())
		}
		rec, ok := findLog(p.stderr.String(), "ctxgate listening")
		if ok {
			g.URL = "http://" + rec["public"].(string)
			g.Admin = "http://" + rec["admin"].(string)
		}
		return ok
	})
	return g
}

// findLog returns the first JSON log record with the given msg.
func findLog(logs, msg string) (map[string]any, bool) {
	for _, rec := range logRecords(logs) {
		if rec["msg"] == msg {
			return rec, true
		}
	}
	return nil, false
}

func logRecords(logs string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// startEverything runs the Go SDK's conformance everything-server (stateful)
// and returns its URL. The server cannot report a port it picked itself, so
// a free port is reserved and handed to it; if another process takes the
// port first, the server exits and a new port is tried.
func startEverything(t *testing.T) string {
	t.Helper()
	_, url := startEverythingProc(t, false)
	return url
}

// startEverythingMode runs the everything-server stateful (legacy sessions)
// or stateless (the only mode in which it serves 2026-07-28).
func startEverythingMode(t *testing.T, stateless bool) string {
	t.Helper()
	_, url := startEverythingProc(t, stateless)
	return url
}

// startEverythingProc is startEverythingMode for tests that also stop the
// server (to see the gateway answer without its upstream).
func startEverythingProc(t *testing.T, stateless bool) (*proc, string) {
	t.Helper()
	for attempt := 0; attempt < 5; attempt++ {
		addr := reservePort(t)
		p := startProc(t, "everything-server", bins.everything, "-http="+addr, fmt.Sprintf("-stateless=%t", stateless))
		up := false
		waitFor(t, "everything-server to listen", readyDeadline, func() bool {
			if p.exited() {
				return true
			}
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				up = true
			}
			return up
		})
		if up {
			return p, "http://" + addr + "/"
		}
	}
	t.Fatal("everything-server did not start")
	return nil, ""
}

func reservePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// recorder is an in-test reverse proxy between ctxgate and its upstream
// that records every request ctxgate forwards, so tests can assert what the
// upstream saw, and that it saw nothing.
type recorder struct {
	URL string
	mu  sync.Mutex
	got []recorded
}

type recorded struct {
	method string
	header http.Header
	body   []byte
}

func startRecorder(t *testing.T, target string) *recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
		pr.SetURL(u)
		pr.Out.Host = u.Host
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.got = append(rec.got, recorded{method: r.Method, header: r.Header.Clone(), body: body})
		rec.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rec.URL = srv.URL + "/"
	return rec
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.got...)
}

// rpc is a raw Streamable HTTP exchange, for tests that must control every
// header and byte.
type rpc struct {
	url     string
	session string
	header  http.Header
}

func (c *rpc) post(t *testing.T, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, c.url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	}
	for k, vs := range c.header {
		req.Header[k] = vs
	}
	if host := c.header.Get("Host"); host != "" {
		req.Host = host // net/http sends req.Host, not a Host header
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"e2e","version":"1"}}}`

// initialize opens a session and sends notifications/initialized.
func (c *rpc) initialize(t *testing.T) {
	t.Helper()
	resp := c.post(t, initializeBody)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("initialize: %s: %s", resp.Status, body)
	}
	c.session = resp.Header.Get("Mcp-Session-Id")
	if c.session == "" {
		t.Fatalf("initialize: no Mcp-Session-Id in %v", resp.Header)
	}
	if resp := c.post(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %s", resp.Status)
	}
}

// rpcError is the JSON-RPC error of a gateway rejection.
type rpcError struct {
	ID    any `json:"id"`
	Error struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decodeError(t *testing.T, resp *http.Response) rpcError {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	var e rpcError
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body is not JSON-RPC: %v: %q", err, body)
	}
	return e
}

// ctx returns a context bounded for one e2e step.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}
