package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the repository (the Docker build context); ctxgateBin the
// gateway built by the Dockerfile's own build command, set by TestMain.
var repoRoot, ctxgateBin string

// readyDeadline bounds every wait for a process to come up. It is a
// deadline for polling, never a sleep.
const readyDeadline = 60 * time.Second

func TestMain(m *testing.M) {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "ctxgate-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err == nil {
		ctxgateBin = filepath.Join(dir, "ctxgate")
		err = df.runBuild(repoRoot, ctxgateBin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "build ctxgate as the Dockerfile does:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// inCI reports whether missing tools are failures (CI=true) or skips.
func inCI() bool { return os.Getenv("CI") == "true" }

// need skips the test, or fails it in CI, when a tool is missing.
func need(t *testing.T, what, install string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if inCI() {
		t.Fatalf("%s is required in CI (%s): %v", what, install, err)
	}
	t.Skipf("%s is missing (%s): %v", what, install, err)
}

// syncBuffer collects a process's output while the test reads it.
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

// gateway is a running ctxgate serve, its addresses read from its
// "ctxgate listening" log record.
type gateway struct {
	cmd            *exec.Cmd
	stderr, stdout *syncBuffer
	done           chan struct{}
	waitErr        error
	public, admin  string // host:port
}

// startGateway starts cmd (a ctxgate serve) and waits until it listens and
// /readyz answers 200. The process is killed when the test ends, and its
// output shown if the test failed.
func startGateway(t *testing.T, cmd *exec.Cmd) *gateway {
	t.Helper()
	g := &gateway{cmd: cmd, stderr: &syncBuffer{}, stdout: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = g.stdout, g.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		g.waitErr = cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		g.stop()
		if t.Failed() {
			t.Logf("--- ctxgate stdout ---\n%s\n--- ctxgate stderr ---\n%s", g.stdout, g.stderr)
		}
	})
	waitFor(t, "ctxgate to listen", func() bool {
		select {
		case <-g.done:
			t.Fatalf("ctxgate exited: %v\n%s", g.waitErr, g.stderr)
		default:
		}
		rec, ok := findLog(g.stderr.String(), "ctxgate listening")
		if ok {
			g.public, _ = rec["public"].(string)
			g.admin, _ = rec["admin"].(string)
		}
		return ok
	})
	waitFor(t, "ctxgate /readyz", func() bool {
		resp, err := http.Get("http://" + g.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return g
}

// stop kills the process (if it still runs) and waits for it.
func (g *gateway) stop() {
	select {
	case <-g.done:
	default:
		_ = g.cmd.Process.Signal(syscall.SIGKILL)
		<-g.done
	}
}

// waitFor polls cond until it holds or readyDeadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(readyDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", readyDeadline, what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not synchronisation
	}
}

// findLog returns the first JSON log record whose msg is msg.
func findLog(logs, msg string) (map[string]any, bool) {
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == msg {
			return rec, true
		}
	}
	return nil, false
}

// runCtxgate runs the built binary with args and env only (no inherited
// CTXGATE_* variables), returning its combined output.
func runCtxgate(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctxgateBin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mcpPost posts one JSON-RPC message to url with the given headers and
// returns the answer.
func mcpPost(t *testing.T, url, host string, headers map[string]string, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

const initializeBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"deploy-test","version":"1"}}}`
