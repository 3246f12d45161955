package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The stdio sandbox, shown with a stdio server of our own
// (testdata/stdioserver: a Go SDK server over mcp.StdioTransport whose
// tools misbehave on request) behind the real gateway binary.

// stdioServer is the built test server; built once, by the first test
// that needs it, into a directory any user may enter (the user test runs
// it as nobody).
var stdioServer struct {
	once sync.Once
	path string
	err  error
}

func stdioServerBin(t *testing.T) string {
	t.Helper()
	stdioServer.once.Do(func() {
		// Beside the gateway's binary, in TestMain's directory (removed at
		// the end), whose 0700 would keep another user from exec'ing it.
		dir := filepath.Dir(bins.ctxgate)
		if err := os.Chmod(dir, 0o755); err != nil {
			stdioServer.err = err
			return
		}
		stdioServer.path = filepath.Join(dir, "stdioserver")
		out, err := exec.Command("go", "build", "-o", stdioServer.path, "github.com/ctxgate/ctxgate/e2e/testdata/stdioserver").CombinedOutput()
		if err != nil {
			stdioServer.err = fmt.Errorf("build the stdio test server: %v\n%s", err, out)
		}
	})
	if stdioServer.err != nil {
		t.Fatal(stdioServer.err)
	}
	return stdioServer.path
}

// The secret in the gateway's own environment, which no child may see.
const (
	gatewaySecretName  = "CTXGATE_E2E_GATEWAY_SECRET"
	gatewaySecretValue = "s3cret-the-gateway-holds"
)

// sandboxEnv is the configured environment of the test server's process.
var sandboxEnv = map[string]string{"HOME": "/nonexistent", "SANDBOX_ONLY": "configured"}

// startSandboxGateway runs the gateway, with the secret in its
// environment, in front of the test server as upstream "sb"; extra are
// more keys of the upstream (YAML, indented four spaces).
func startSandboxGateway(t *testing.T, extra string) *gatewayProc {
	t.Helper()
	bin := stdioServerBin(t)
	// The gateway inherits the test's environment (startProc sets no Env).
	t.Setenv(gatewaySecretName, gatewaySecretValue)
	envJSON, _ := json.Marshal(sandboxEnv)
	gw := startGatewayInheriting(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
%supstreams:
  - name: sb
    transport: stdio
    command: [%q]
    env: %s
    dir: /
%s`, policyConfig(), bin, envJSON, extra))
	return gw
}

// inheritedMarker names the file the sandbox gateway inherits open, as
// fd 3, without close-on-exec: as from a careless parent, or a service
// manager passing a socket.
const inheritedMarker = "gateway-inherited-fd"

// startGatewayInheriting is startGateway (harness_test.go) for a gateway
// that holds an inherited descriptor, the marker, which no stdio child may
// hold.
func startGatewayInheriting(t *testing.T, cfg string) *gatewayProc {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "ctxgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	marker, err := os.Create(filepath.Join(dir, inheritedMarker))
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close() // the gateway has its own copy
	p := &proc{name: "ctxgate", cmd: exec.Command(bins.ctxgate, "serve", "--config", path), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.ExtraFiles = []*os.File{marker}
	startCmd(t, p)
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

// sandboxSession is a raw session on the sb route: the tests assert the
// exact status and JSON-RPC error of each answer.
type sandboxSession struct {
	rpc
	nextID int
}

func openSandboxSession(t *testing.T, gw *gatewayProc) *sandboxSession {
	t.Helper()
	s := &sandboxSession{rpc: rpc{url: gw.URL + "/mcp/sb"}, nextID: 1}
	s.initialize(t)
	return s
}

// call sends tools/call name(args) and returns the answer's status and body.
func (s *sandboxSession) call(t *testing.T, name string, args map[string]any) (int, []byte) {
	t.Helper()
	s.nextID++
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": s.nextID, "method": "tools/call",
		"params": map[string]any{"name": name, "arguments": args}})
	resp := s.post(t, string(body))
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// text calls a tool that must succeed and returns its text.
func (s *sandboxSession) text(t *testing.T, name string, args map[string]any) string {
	t.Helper()
	status, body := s.call(t, name, args)
	var res struct {
		Result struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
			IsError bool `json:"isError"`
		} `json:"result"`
	}
	if err := json.Unmarshal(sseData(body), &res); status != http.StatusOK || err != nil || res.Result.IsError || len(res.Result.Content) != 1 {
		t.Fatalf("%s: %d %s (%v), want a result with one text", name, status, body, err)
	}
	return res.Result.Content[0].Text
}

// sseData is the JSON of an answer sent as one SSE event, or the body.
func sseData(body []byte) []byte {
	for line := range bytes.Lines(body) {
		if d, ok := bytes.CutPrefix(line, []byte("data: ")); ok {
			return bytes.TrimSpace(d)
		}
	}
	return body
}

// end DELETEs the session.
func (s *sandboxSession) end(t *testing.T) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodDelete, s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Mcp-Session-Id", s.session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// assertEnded: a call on a session whose process is gone is a clear
// JSON-RPC error (the outcome of a call the process took is unknown), and
// the session is then over: 404, so the client initializes again.
func (s *sandboxSession) assertEnded(t *testing.T, status int, body []byte, what string) {
	t.Helper()
	var e rpcError
	if err := json.Unmarshal(sseData(body), &e); err != nil || status != http.StatusBadGateway ||
		(e.Error.Code != -31016 && e.Error.Code != -31010) || e.Error.Message == "" {
		t.Errorf("%s: %d %s, want 502 with JSON-RPC error -31016 or -31010", what, status, body)
	}
	if status, body := s.call(t, "echo", map[string]any{"text": "after"}); status != http.StatusNotFound {
		t.Errorf("after %s, the session answers %d %s, want 404 (initialize again)", what, status, body)
	}
}

// children counts the gateway's child processes, from /proc.
func (g *gatewayProc) children(t *testing.T) []int {
	t.Helper()
	gwPID := g.cmd.Process.Pid
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(gwPID) {
			kids = append(kids, pid)
		}
	}
	return kids
}

// pidGone reports that no process pid exists: it exited and was waited for.
func pidGone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// sandboxRecords are the gateway's log records with msg, of upstream sb.
func sandboxRecords(gw *gatewayProc, msg string) []map[string]any {
	var out []map[string]any
	for _, rec := range logRecords(gw.stderr.String()) {
		if rec["msg"] == msg && rec["upstream"] == "sb" {
			out = append(out, rec)
		}
	}
	return out
}

// waitForRecord waits for a log record of upstream sb: the gateway's
// stderr is copied into the buffer a little after it is written.
func waitForRecord(t *testing.T, gw *gatewayProc, msg string) {
	t.Helper()
	waitFor(t, "a log record "+msg, readyDeadline, func() bool { return len(sandboxRecords(gw, msg)) > 0 })
}

// assertNoLeaks: once every session is over, the gateway has no child
// process left and its goroutines are back to what they were before.
func assertNoLeaks(t *testing.T, gw *gatewayProc, baseline float64) {
	t.Helper()
	// The tests' own keep-alive connections hold server goroutines.
	http.DefaultClient.CloseIdleConnections()
	// A process is reaped before it leaves the gauge: wait for both.
	waitFor(t, "no stdio process left, and none counted", readyDeadline, func() bool {
		return len(gw.children(t)) == 0 && gw.metric(t, `ctxgate_stdio_processes{upstream="sb"}`) == 0
	})
	waitFor(t, fmt.Sprintf("go_goroutines back to its baseline of %v", baseline), readyDeadline, func() bool {
		http.DefaultClient.CloseIdleConnections()
		return gw.metric(t, "go_goroutines") <= baseline
	})
}

// goroutineBaseline is the gateway's goroutines before any session, read
// twice so the admin connection of the scrape itself is counted.
func goroutineBaseline(t *testing.T, gw *gatewayProc) float64 {
	t.Helper()
	gw.metric(t, "go_goroutines")
	return gw.metric(t, "go_goroutines")
}

// requireRoot skips a test that starts processes as another user unless
// it runs as root; in CI, where the tests run as root, it fails instead.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s must run as root in CI: only root can start a process as another user", t.Name())
	}
	t.Skip("needs root: only root can start a process as another user (run the e2e tests as root, as CI does)")
}

// TestStdioSandboxEnvironment: the child's environment is exactly the
// configured env (the secret in the gateway's own is not inherited), and
// it holds none of the gateway's file descriptors.
func TestStdioSandboxEnvironment(t *testing.T) {
	gw := startSandboxGateway(t, "")
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", gw.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(environ), "\x00"), gatewaySecretName+"="+gatewaySecretValue) {
		t.Fatalf("the gateway's environment lacks %s: the test would prove nothing", gatewaySecretName)
	}
	baseline := goroutineBaseline(t, gw)

	s := openSandboxSession(t, gw)
	var got []string
	if err := json.Unmarshal([]byte(s.text(t, "env", nil)), &got); err != nil {
		t.Fatal(err)
	}
	var want []string
	for k, v := range sandboxEnv {
		want = append(want, k+"="+v)
	}
	slices.Sort(got)
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("the stdio process's environment (-configured +got):\n%s", diff)
	}

	// No descriptor of the gateway's (its listeners, connections, files,
	// what it inherited): stdin, stdout and stderr are pipes, the rest
	// the Go runtime's own (epoll, its wake-up eventfd, the cgroup CPU
	// files it reads for GOMAXPROCS) or the /proc listing.
	if fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", gw.cmd.Process.Pid)); err != nil || len(fds) < 4 {
		t.Fatalf("the gateway holds %d fds (%v): the marker is not inherited, the test would prove nothing", len(fds), err)
	}
	var fds map[string]string
	if err := json.Unmarshal([]byte(s.text(t, "fds", nil)), &fds); err != nil {
		t.Fatal(err)
	}
	for fd, target := range fds {
		switch {
		case fd == "0" || fd == "1" || fd == "2":
			if !strings.HasPrefix(target, "pipe:") {
				t.Errorf("fd %s of the stdio process is %s, want a pipe to the gateway", fd, target)
			}
		case strings.HasPrefix(target, "anon_inode:"), strings.HasPrefix(target, "/proc/"), strings.HasPrefix(target, "/sys/fs/cgroup/"):
		default:
			t.Errorf("the stdio process holds fd %s: %s, not its own", fd, target)
		}
	}
	if len(fds) < 3 {
		t.Errorf("the stdio process lists fds %v: the listing is broken", fds)
	}
	if status := s.end(t); status != http.StatusOK {
		t.Errorf("DELETE: %d", status)
	}
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxGarbageOnStdout: a line on stdout that is not JSON-RPC
// ends that process only: its caller gets a clear JSON-RPC error and then
// 404, while another session's process keeps working; the line itself is
// logged as a protocol error, never relayed.
func TestStdioSandboxGarbageOnStdout(t *testing.T) {
	gw := startSandboxGateway(t, "")
	baseline := goroutineBaseline(t, gw)
	bad, good := openSandboxSession(t, gw), openSandboxSession(t, gw)
	if got := len(gw.children(t)); got != 2 {
		t.Fatalf("%d stdio processes for two sessions, want 2", got)
	}

	status, body := bad.call(t, "garbage", nil)
	if bytes.Contains(body, []byte("this is not JSON-RPC")) {
		t.Errorf("the garbage was relayed to the client: %s", body)
	}
	bad.assertEnded(t, status, body, "garbage on stdout")
	if got := good.text(t, "echo", map[string]any{"text": "still here"}); got != "still here" {
		t.Errorf("the other session's echo: %q", got)
	}
	const protocolError = "stdio upstream wrote something that is not a JSON-RPC message; ending the process"
	waitForRecord(t, gw, protocolError)
	if recs := sandboxRecords(gw, protocolError); len(recs) != 1 {
		t.Errorf("%d protocol error records of upstream sb, want 1", len(recs))
	}
	if strings.Contains(gw.stderr.String(), "this is not JSON-RPC") {
		t.Errorf("the garbage itself reached the gateway's log")
	}
	if got := gw.metric(t, `ctxgate_stdio_processes_total{event="crashed",upstream="sb"}`); got != 1 {
		t.Errorf("crashed = %v, want 1", got)
	}
	// A new session gets a new process.
	again := openSandboxSession(t, gw)
	if got := again.text(t, "echo", map[string]any{"text": "new"}); got != "new" {
		t.Errorf("echo on a new session after the garbage: %q", got)
	}
	good.end(t)
	again.end(t)
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxStderrFlood: 10,000 lines on stderr reach the gateway's
// log rate limited (a burst of 100, then 20 a second), each record
// attributed to the upstream, the number dropped reported; the session
// keeps working.
func TestStdioSandboxStderrFlood(t *testing.T) {
	gw := startSandboxGateway(t, "")
	baseline := goroutineBaseline(t, gw)
	start := time.Now()
	s := openSandboxSession(t, gw)
	const flood = 10000
	if got := s.text(t, "flood", map[string]any{"lines": flood}); got != fmt.Sprintf("wrote %d lines to stderr", flood) {
		t.Fatalf("flood: %q", got)
	}
	// A line after the flood is logged once the limiter refills, with
	// how many were dropped before it.
	var dropped float64
	waitFor(t, "a stderr record reporting dropped lines", readyDeadline, func() bool {
		s.text(t, "flood", map[string]any{"lines": 1})
		for _, rec := range sandboxRecords(gw, "stdio upstream stderr") {
			if d, _ := rec["dropped_before"].(float64); d > dropped {
				dropped = d
			}
		}
		return dropped > 0
	})
	recs := sandboxRecords(gw, "stdio upstream stderr")
	// A token bucket of 100 refilled at 20/s cannot have let more through
	// since the process started, whatever the machine's speed.
	bound := 100 + 20*int(time.Since(start).Seconds()+1)
	if len(recs) > bound || len(recs) < 1 {
		t.Errorf("%d stderr records for %d lines in %s, want 1 to %d", len(recs), flood, time.Since(start), bound)
	}
	if dropped < flood/2 {
		t.Errorf("at most %v lines reported dropped of %d", dropped, flood)
	}
	for _, rec := range recs {
		if line, _ := rec["line"].(string); !strings.HasPrefix(line, "flood line ") || rec["pid"] == nil {
			t.Errorf("a stderr record without its line or pid: %v", rec)
			break
		}
	}
	if got := s.text(t, "echo", map[string]any{"text": "after the flood"}); got != "after the flood" {
		t.Errorf("echo after the flood: %q", got)
	}
	s.end(t)
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxMemoryLimit: a process allocating past limits.memory_mb
// dies (RLIMIT_AS refuses the memory), and its caller gets a clear error.
// The Go runtime reserves about 1.6 GiB of address space at start (of
// which the limit, applied right after start, may see all or none), so the
// limit is 2 GiB and the allocation 4 GiB.
func TestStdioSandboxMemoryLimit(t *testing.T) {
	gw := startSandboxGateway(t, "    limits: {memory_mb: 2048}\n")
	baseline := goroutineBaseline(t, gw)
	s := openSandboxSession(t, gw)
	if got := s.text(t, "echo", map[string]any{"text": "small"}); got != "small" {
		t.Fatalf("echo under the limit: %q", got)
	}
	status, body := s.call(t, "allocate", map[string]any{"mb": 4096})
	s.assertEnded(t, status, body, "allocating past memory_mb")
	waitFor(t, "the runtime's out of memory on stderr in the log", readyDeadline, func() bool {
		for _, rec := range sandboxRecords(gw, "stdio upstream stderr") {
			if line, _ := rec["line"].(string); strings.Contains(line, "out of memory") {
				return true
			}
		}
		return false
	})
	if got := gw.metric(t, `ctxgate_stdio_processes_total{event="crashed",upstream="sb"}`); got != 1 {
		t.Errorf("crashed = %v, want 1", got)
	}
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxSIGKILLAfterGrace: a process ignoring SIGTERM (and
// outliving its stdin) is killed stop_grace after it, on DELETE and at
// shutdown.
func TestStdioSandboxSIGKILLAfterGrace(t *testing.T) {
	gw := startSandboxGateway(t, "    stop_grace: 200ms\n")
	baseline := goroutineBaseline(t, gw)
	const killed = "stdio upstream process did not exit within the grace after SIGTERM; killing its group"

	s := openSandboxSession(t, gw)
	pid, err := strconv.Atoi(s.text(t, "ignore_sigterm", nil))
	if err != nil {
		t.Fatal(err)
	}
	if status := s.end(t); status != http.StatusOK {
		t.Errorf("DELETE: %d", status)
	}
	// DELETE answers once the process has exited.
	if !pidGone(pid) {
		t.Errorf("process %d, ignoring SIGTERM, still exists after DELETE", pid)
	}
	waitForRecord(t, gw, killed)
	if recs := sandboxRecords(gw, killed); len(recs) != 1 || recs[0]["grace"] != "200ms" {
		t.Errorf("kill records after DELETE: %v, want one with grace 200ms", recs)
	}
	if got := gw.metric(t, `ctxgate_stdio_processes_total{event="crashed",upstream="sb"}`); got != 0 {
		t.Errorf("a process ended by DELETE counted as crashed: %v", got)
	}
	assertNoLeaks(t, gw, baseline)

	s = openSandboxSession(t, gw)
	if pid, err = strconv.Atoi(s.text(t, "ignore_sigterm", nil)); err != nil {
		t.Fatal(err)
	}
	gw.signal(syscall.SIGTERM)
	waitFor(t, "the gateway to shut down", readyDeadline, gw.exited)
	if gw.waitErr != nil {
		t.Errorf("gateway exit: %v", gw.waitErr)
	}
	if !pidGone(pid) {
		t.Errorf("process %d, ignoring SIGTERM, outlived the gateway's shutdown", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if recs := sandboxRecords(gw, killed); len(recs) != 2 {
		t.Errorf("%d kill records after shutdown, want 2", len(recs))
	}
}

// TestStdioSandboxCrashMidCall: a process exiting in the middle of a
// tools/call gives its caller a clear error, and the session is over; the
// first crash does not hold back the next session's process.
func TestStdioSandboxCrashMidCall(t *testing.T) {
	gw := startSandboxGateway(t, "")
	baseline := goroutineBaseline(t, gw)
	s := openSandboxSession(t, gw)
	status, body := s.call(t, "crash", nil)
	s.assertEnded(t, status, body, "a crash mid-call")
	waitFor(t, "the crash in the log", readyDeadline, func() bool {
		for _, rec := range sandboxRecords(gw, "stdio upstream process ended; its session is over") {
			if rec["error"] == "exit status 3" {
				return true
			}
		}
		return false
	})
	again := openSandboxSession(t, gw)
	if got := again.text(t, "echo", map[string]any{"text": "restarted"}); got != "restarted" {
		t.Errorf("echo on a new session after the crash: %q", got)
	}
	again.end(t)
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxUser: with user: nobody the process runs as nobody,
// with nobody's group and no supplementary groups (the gateway's root
// groups are not kept), its limits still in force. Needs a gateway
// running as root.
func TestStdioSandboxUser(t *testing.T) {
	requireRoot(t)
	// The gateway's binary starts the process as nobody (it applies the
	// limits), so nobody must be able to run it: stdioServerBin opened
	// TestMain's directory to all.
	gw := startSandboxGateway(t, "    user: nobody\n    limits: {open_files: 40}\n")
	baseline := goroutineBaseline(t, gw)
	s := openSandboxSession(t, gw)
	var id struct {
		UID    int    `json:"uid"`
		GID    int    `json:"gid"`
		Groups []int  `json:"groups"`
		Files  uint64 `json:"open_files"`
	}
	if err := json.Unmarshal([]byte(s.text(t, "whoami", nil)), &id); err != nil {
		t.Fatal(err)
	}
	if id.UID != 65534 || id.GID != 65534 || len(id.Groups) != 0 || id.Files != 40 {
		t.Errorf("user: nobody runs as %+v, want uid 65534, gid 65534, no supplementary groups, 40 open files", id)
	}
	s.end(t)
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxCheckUser: `ctxgate check` names a user or group the
// host does not have; run by a user other than root, it names the user a
// gateway not running as root cannot switch to (as serve refuses to start).
func TestStdioSandboxCheckUser(t *testing.T) {
	bin := stdioServerBin(t)
	dir := t.TempDir() // and its parent: 0700, which nobody could not enter
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	check := func(t *testing.T, account string, cred *syscall.Credential) string {
		t.Helper()
		cfg := filepath.Join(dir, "ctxgate.yaml")
		body := fmt.Sprintf("auth: {anonymous: true}\n%supstreams:\n  - {name: sb, transport: stdio, command: [%q], %s}\n", policyConfig(), bin, account)
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bins.ctxgate, "check", "--config", cfg)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("check exited 0 with %s:\n%s", account, out)
		}
		return string(out)
	}
	out := check(t, "user: ctxgate-no-such-user, group: ctxgate-no-such-group", nil)
	for _, want := range []string{
		"upstreams[0].user: unknown user ctxgate-no-such-user",
		"upstreams[0].group: unknown group ctxgate-no-such-group",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	requireRoot(t) // the rest runs check as nobody
	// nobody runs the gateway's binary: stdioServerBin opened TestMain's
	// directory to all.
	out = check(t, "user: root", &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}})
	if want := "upstreams[0].user: the gateway is not root, so it cannot run a process as another user or group"; !strings.Contains(out, want) {
		t.Errorf("check as nobody with user: root lacks %q:\n%s", want, out)
	}
}

// TestStdioSandboxProcessGroup: what a stdio server starts ends with it:
// on DELETE (SIGTERM to its group) and when it crashes (its group is
// killed once it has exited).
func TestStdioSandboxProcessGroup(t *testing.T) {
	gw := startSandboxGateway(t, "    stop_grace: 200ms\n")
	baseline := goroutineBaseline(t, gw)
	for _, end := range []struct {
		name string
		end  func(t *testing.T, s *sandboxSession)
	}{
		{"DELETE", func(t *testing.T, s *sandboxSession) {
			if status := s.end(t); status != http.StatusOK {
				t.Errorf("DELETE: %d", status)
			}
		}},
		{"crash", func(t *testing.T, s *sandboxSession) {
			status, body := s.call(t, "crash", nil)
			s.assertEnded(t, status, body, "a crash")
		}},
	} {
		t.Run(end.name, func(t *testing.T) {
			s := openSandboxSession(t, gw)
			child, err := strconv.Atoi(s.text(t, "spawn", nil))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if alive(child) {
					_ = syscall.Kill(child, syscall.SIGKILL)
				}
			})
			if !alive(child) {
				t.Fatalf("the server's child %d is not running", child)
			}
			end.end(t, s)
			waitFor(t, fmt.Sprintf("the server's child %d to end with it", child), readyDeadline, func() bool { return !alive(child) })
		})
	}
	assertNoLeaks(t, gw, baseline)
}

// TestStdioSandboxDescendantOutOfGroup: a child the server starts in a
// session of its own (setsid), holding the server's stdout, does not hold
// the session once the server has exited: a crash mid-call answers 502
// and frees the session, DELETE and shutdown return. The child outlives it
// (it left the group, which is what is killed).
func TestStdioSandboxDescendantOutOfGroup(t *testing.T) {
	gw := startSandboxGateway(t, "    stop_grace: 200ms\n    max_processes: 1\n")
	baseline := goroutineBaseline(t, gw)
	const holds = "stdio upstream process exited, but something it started outside its process group still holds its stdout; closing it"
	escape := func(t *testing.T, s *sandboxSession) {
		t.Helper()
		child, err := strconv.Atoi(s.text(t, "spawn", map[string]any{"escape": true}))
		if err != nil {
			t.Fatal(err)
		}
		// Before the gateway's own cleanup: without the fix, the child's
		// end is what lets the session, and the gateway, end.
		t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	}
	t.Run("crash", func(t *testing.T) {
		s := openSandboxSession(t, gw)
		escape(t, s)
		s.nextID++
		status, body := answerWithin(t, s.request(t, http.MethodPost, fmt.Sprintf(
			`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"crash","arguments":{}}}`, s.nextID)))
		s.assertEnded(t, status, body, "a crash mid-call")
		waitForRecord(t, gw, holds)
	})
	t.Run("DELETE", func(t *testing.T) {
		s := openSandboxSession(t, gw) // max_processes 1: the crashed one's slot is free
		escape(t, s)
		if status, body := answerWithin(t, s.request(t, http.MethodDelete, "")); status != http.StatusOK {
			t.Errorf("DELETE: %d %s", status, body)
		}
	})
	assertNoLeaks(t, gw, baseline)
	t.Run("shutdown", func(t *testing.T) {
		s := openSandboxSession(t, gw)
		escape(t, s)
		gw.signal(syscall.SIGTERM)
		waitFor(t, "the gateway to shut down", readyDeadline, gw.exited)
		if gw.waitErr != nil {
			t.Errorf("gateway exit: %v", gw.waitErr)
		}
	})
}

// request is a request on the session, not bound to the test's context
// (answerWithin may leave it waiting after the test).
func (s *sandboxSession) request(t *testing.T, method, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, s.url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Mcp-Session-Id", s.session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	return req
}

// answerWithin sends req and returns the answer's status and body,
// failing the test if none has come within readyDeadline.
func answerWithin(t *testing.T, req *http.Request) (int, []byte) {
	t.Helper()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{resp.StatusCode, b, err}
	}()
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, a.err)
		}
		return a.status, a.body
	case <-time.After(readyDeadline):
		t.Fatalf("%s %s: no answer after %s", req.Method, req.URL, readyDeadline)
		return 0, nil
	}
}

// alive reports that pid runs: it exists and is not a zombie (a child
// orphaned into a container whose init does not reap stays one).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}
