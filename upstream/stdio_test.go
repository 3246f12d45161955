package upstream

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctxgate/ctxgate/config"
)

// The stdio test server is this test binary, re-executed with
// CTXGATE_STDIO_TEST_SERVER set (in the configured env: it gets no other).
// It answers one JSON-RPC request per line:
//   - initialize: a result;
//   - env: its whole environment;
//   - garbage: a line that is not JSON;
//   - crash: exits without answering;
//   - notify: a notification, then the answer;
//   - progress: two notifications/progress with its token, then the answer;
//   - escape: starts a sleeper in a session of its own (setsid: out of
//     the process group) holding its stdout and stderr; answers its pid;
//   - anything else: an echo of the params.
//
// With CTXGATE_STDIO_TEST_IGNORE_TERM it ignores SIGTERM and outlives
// its stdin.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == StdioLaunchArg {
		RunStdioLauncher(os.Args[2:]) // as the gateway's main does
	}
	if os.Getenv("CTXGATE_STDIO_TEST_SLEEPER") != "" {
		time.Sleep(time.Hour) // until killed
		os.Exit(0)
	}
	if os.Getenv("CTXGATE_STDIO_TEST_SERVER") != "" {
		stdioTestServer()
		return
	}
	os.Exit(m.Run())
}

func stdioTestServer() {
	if os.Getenv("CTXGATE_STDIO_TEST_IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	}
	sc := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		if json.Unmarshal(sc.Bytes(), &req) != nil || len(req.ID) == 0 {
			continue
		}
		var result any = req.Params
		switch req.Method {
		case "initialize":
			result = map[string]any{"protocolVersion": "2025-06-18", "capabilities": map[string]any{}, "serverInfo": map[string]any{"name": "test", "version": "1"}}
		case "env":
			result = os.Environ()
		case "garbage":
			fmt.Println("this is not JSON-RPC")
			continue
		case "crash":
			os.Exit(3)
		case "notify":
			_ = out.Encode(map[string]any{"jsonrpc": "2.0", "method": "notifications/message", "params": map[string]any{"data": "hello"}})
		case "progress": // two notifications/progress with the request's token
			var p struct {
				Meta struct {
					ProgressToken any `json:"progressToken"`
				} `json:"_meta"`
			}
			_ = json.Unmarshal(req.Params, &p)
			for i := range 2 {
				_ = out.Encode(map[string]any{"jsonrpc": "2.0", "method": "notifications/progress", "params": map[string]any{"progressToken": p.Meta.ProgressToken, "progress": i + 1}})
			}
		case "escape":
			pid, err := startEscapee()
			if err != nil {
				result = err.Error()
				break
			}
			result = pid
		}
		_ = out.Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}
	for os.Getenv("CTXGATE_STDIO_TEST_IGNORE_TERM") != "" {
		// Outlive stdin too, as a server hanging on shutdown does: only
		// SIGKILL ends it.
		time.Sleep(time.Hour)
	}
}

// startEscapee starts the test binary as a sleeper that leaves the
// process group (setsid) and inherits stdout and stderr, the gateway's
// pipes: what a server's daemonizing helper does.
func startEscapee() (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self)
	cmd.Env = []string{"CTXGATE_STDIO_TEST_SLEEPER=1"}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	return cmd.Process.Pid, nil
}

// newTestStdio is a transport running the test server.
func newTestStdio(t *testing.T, maxProcesses int, env map[string]string) *Stdio {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e := map[string]string{"CTXGATE_STDIO_TEST_SERVER": "1"}
	for k, v := range env {
		e[k] = v
	}
	c := config.Upstream{Name: "test", Transport: config.TransportStdio, Command: []string{self}, Env: e}
	c.Limits = &config.StdioLimits{MemoryMB: 4096, CPUSeconds: 60, OpenFiles: 64}
	c.MaxProcesses, c.IdleTimeout = maxProcesses, time.Hour
	s := NewStdio(c)
	s.grace = 200 * time.Millisecond
	t.Cleanup(func() {
		s.Close()
		if n := s.Running(); n != 0 {
			t.Errorf("%d processes still running after Close", n)
		}
	})
	return s
}

// send posts one message on session and returns the status and body.
func send(t *testing.T, s *Stdio, session, body string) (*http.Response, string, error) {
	t.Helper()
	h := http.Header{}
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	resp, err := s.Send(context.Background(), Message{Body: []byte(body), Header: h})
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw), nil
}

// initialize opens a session (a process) and returns its id and pid.
func initialize(t *testing.T, s *Stdio) (string, int) {
	t.Helper()
	resp, body, err := send(t, s, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, `"protocolVersion"`) {
		t.Fatalf("initialize: %v %v %s", err, resp, body)
	}
	session := resp.Header.Get("Mcp-Session-Id")
	p := s.get(session)
	if p == nil {
		t.Fatal("initialize answered, but no process for its session")
	}
	return session, p.cmd.Process.Pid
}

// gone reports that no process pid exists (exited and waited for).
func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

func TestStdioEnvironmentIsOnlyTheConfiguredOne(t *testing.T) {
	t.Setenv("CTXGATE_GATEWAY_SECRET", "do-not-leak")
	s := newTestStdio(t, 2, map[string]string{"GREETING": "hi"})
	session, _ := initialize(t, s)
	resp, body, err := send(t, s, session, `{"jsonrpc":"2.0","id":2,"method":"env"}`)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("env: %v %v", err, resp)
	}
	var msg struct{ Result []string }
	if err := json.Unmarshal([]byte(body), &msg); err != nil {
		t.Fatal(err)
	}
	slices.Sort(msg.Result)
	want := []string{"CTXGATE_STDIO_TEST_SERVER=1", "GREETING=hi"}
	if !slices.Equal(msg.Result, want) {
		t.Errorf("the process's environment is %q, want exactly %q", msg.Result, want)
	}
}

func TestStdioSessionsAreProcesses(t *testing.T) {
	s := newTestStdio(t, 1, nil)
	session, pid := initialize(t, s)
	if _, err := s.Send(context.Background(), Message{Body: []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize"}`), Header: http.Header{}}); !errors.Is(err, ErrProcessesFull) {
		t.Errorf("a second session over max_processes 1: %v, want ErrProcessesFull", err)
	}
	if resp, _, _ := send(t, s, "", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a request outside a session answered %d, want 400", resp.StatusCode)
	}
	if resp, _, _ := send(t, s, "nope", `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("an unknown session answered %d, want 404", resp.StatusCode)
	}
	resp, body, err := send(t, s, session, `{"jsonrpc":"2.0","id":"x","method":"echo","params":{"a":1}}`)
	if err != nil || resp.StatusCode != http.StatusOK || body != `{"id":"x","jsonrpc":"2.0","result":{"a":1}}` {
		t.Errorf("echo: %v %d %q", err, resp.StatusCode, body)
	}
	if resp, _, _ := send(t, s, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); resp.StatusCode != http.StatusAccepted {
		t.Errorf("a notification answered %d, want 202", resp.StatusCode)
	}
	if resp, err := s.End(context.Background(), http.Header{"Mcp-Session-Id": {session}}); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("End: %v %v", err, resp)
	}
	if !gone(pid) {
		t.Errorf("process %d still exists after End", pid)
	}
	if resp, _, _ := send(t, s, session, `{"jsonrpc":"2.0","id":3,"method":"echo"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the ended session answered %d, want 404", resp.StatusCode)
	}
	initialize(t, s) // the slot is free again
	if got := s.Started.Load(); got != 2 {
		t.Errorf("started %d, want 2", got)
	}
}

func TestStdioGarbageEndsOnlyThatProcess(t *testing.T) {
	s := newTestStdio(t, 2, nil)
	bad, badPid := initialize(t, s)
	good, _ := initialize(t, s)
	if _, _, err := send(t, s, bad, `{"jsonrpc":"2.0","id":2,"method":"garbage"}`); !errors.Is(err, errProcessExited) {
		t.Errorf("a call answered with garbage: %v, want errProcessExited", err)
	}
	if resp, _, _ := send(t, s, bad, `{"jsonrpc":"2.0","id":3,"method":"echo"}`); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the broken session answered %d, want 404 (the client re-initializes)", resp.StatusCode)
	}
	if !gone(badPid) {
		t.Errorf("process %d still exists", badPid)
	}
	if resp, _, err := send(t, s, good, `{"jsonrpc":"2.0","id":2,"method":"echo"}`); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("the other session: %v %v", err, resp)
	}
	if got := s.Crashed.Load(); got != 1 {
		t.Errorf("crashed %d, want 1", got)
	}
}

func TestStdioCrashMidCall(t *testing.T) {
	s := newTestStdio(t, 2, nil)
	session, pid := initialize(t, s)
	if _, _, err := send(t, s, session, `{"jsonrpc":"2.0","id":2,"method":"crash"}`); !errors.Is(err, errProcessExited) {
		t.Errorf("a call whose process crashed: %v, want errProcessExited", err)
	}
	if !gone(pid) || s.Running() != 0 || s.Crashed.Load() != 1 {
		t.Errorf("after a crash: pid %d gone %v, running %d, crashed %d", pid, gone(pid), s.Running(), s.Crashed.Load())
	}
}

// escape has the session's process start a sleeper out of its group that
// holds its stdout and stderr open, killed at the end of the test.
func escape(t *testing.T, s *Stdio, session string) int {
	t.Helper()
	resp, body, err := send(t, s, session, `{"jsonrpc":"2.0","id":"esc","method":"escape"}`)
	var msg struct{ Result int }
	if err != nil || resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &msg) != nil || msg.Result <= 0 {
		t.Fatalf("escape: %v %v %s", err, resp, body)
	}
	pid := msg.Result
	// Registered after newTestStdio's cleanup, so it runs first: without
	// the fix, the sleeper's end is what lets Close return.
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	return pid
}

// TestStdioDescendantOutOfGroup: a process that exits while something it
// started outside its group (setsid) still holds its stdout is reaped at
// once: the call in progress gets errProcessExited (not its context's
// end), the session's max_processes slot is free, and End and Close
// return. The sleeper outlives it (it left the group), but no longer
// holds the session.
func TestStdioDescendantOutOfGroup(t *testing.T) {
	// Generous: without the fix, the call and End wait for ever.
	const patience = 30 * time.Second
	t.Run("crash", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		s := newTestStdio(t, 1, nil)
		session, pid := initialize(t, s)
		sleeper := escape(t, s, session)
		h := http.Header{"Mcp-Session-Id": {session}}
		_, err := s.Send(ctx, Message{Body: []byte(`{"jsonrpc":"2.0","id":2,"method":"crash"}`), Header: h})
		if !errors.Is(err, errProcessExited) {
			t.Fatalf("a call whose process crashed, its escaped child holding stdout: %v, want errProcessExited", err)
		}
		if !gone(pid) || s.Running() != 0 {
			t.Errorf("after the crash: pid %d gone %v, running %d", pid, gone(pid), s.Running())
		}
		initialize(t, s) // the slot is free again
		if gone(sleeper) {
			t.Errorf("the escaped sleeper %d is gone: the test shows nothing", sleeper)
		}
	})
	for _, end := range []struct {
		name string
		end  func(s *Stdio, session string)
	}{
		{"End", func(s *Stdio, session string) {
			_, _ = s.End(context.Background(), http.Header{"Mcp-Session-Id": {session}})
		}},
		{"Close", func(s *Stdio, _ string) { s.Close() }},
	} {
		t.Run(end.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			s := newTestStdio(t, 1, nil)
			session, pid := initialize(t, s)
			escape(t, s, session)
			done := make(chan struct{})
			go func() {
				defer close(done)
				end.end(s, session)
			}()
			select {
			case <-done:
			case <-ctx.Done():
				t.Fatalf("%s still blocked while the escaped child holds stdout", end.name)
			}
			if !gone(pid) || s.Running() != 0 {
				t.Errorf("after %s: pid %d gone %v, running %d", end.name, pid, gone(pid), s.Running())
			}
		})
	}
}

// TestStdioRepeatedResponseDropped: a process that repeats a response id
// before the call has taken the first does not stall its stdout: the
// repeat is dropped, and what follows is still routed.
func TestStdioRepeatedResponseDropped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ch := make(chan []byte, 1) // as call makes it
		p := &process{
			log: slog.New(slog.DiscardHandler), pending: map[string]chan []byte{"7": ch},
			unsolicited: make(chan []byte, 1), stdoutDone: make(chan struct{}),
		}
		resp := `{"jsonrpc":"2.0","id":7,"result":{}}` + "\n"
		note := `{"jsonrpc":"2.0","method":"notifications/message"}` + "\n"
		go p.readStdout(strings.NewReader(resp + resp + note))
		synctest.Wait()
		select {
		case <-p.stdoutDone:
		default:
			t.Error("readStdout is blocked on the repeated response")
			<-ch // unblock it, so the bubble can end
			<-ch
			<-p.stdoutDone
			return
		}
		if got := string(<-ch); got != strings.TrimSpace(resp) {
			t.Errorf("the call got %q, want %q", got, strings.TrimSpace(resp))
		}
		select {
		case got := <-p.unsolicited:
			if string(got) != strings.TrimSpace(note) {
				t.Errorf("the stream got %q, want %q", got, strings.TrimSpace(note))
			}
		default:
			t.Error("the notification after the repeat was not routed")
		}
	})
}

// TestStdioNoSignalAfterReap: once a process is reaped, its pid, which
// was its group's id, may be another's: stop and kill then signal nothing.
func TestStdioNoSignalAfterReap(t *testing.T) {
	s := newTestStdio(t, 1, nil)
	var mu sync.Mutex
	var sent []syscall.Signal
	s.killGroup = func(pgid int, sig syscall.Signal) error {
		mu.Lock()
		sent = append(sent, sig)
		mu.Unlock()
		return syscall.Kill(-pgid, sig)
	}
	signals := func() []syscall.Signal {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sent)
	}
	session, _ := initialize(t, s)
	p := s.get(session)
	if _, _, err := send(t, s, session, `{"jsonrpc":"2.0","id":2,"method":"crash"}`); !errors.Is(err, errProcessExited) {
		t.Fatalf("crash: %v, want errProcessExited", err)
	}
	<-p.exited // closed once reaped
	if got, want := signals(), []syscall.Signal{syscall.SIGKILL}; !slices.Equal(got, want) {
		t.Errorf("signals to the group up to its reaping: %v, want %v (what was left of it killed)", got, want)
	}
	p.stop(s.grace)
	p.kill()
	if got := signals(); len(got) != 1 {
		t.Errorf("signals to the group after its reaping: %v", got[1:])
	}
}

func TestStdioSIGKILLAfterGrace(t *testing.T) {
	s := newTestStdio(t, 2, map[string]string{"CTXGATE_STDIO_TEST_IGNORE_TERM": "1"})
	session, pid := initialize(t, s)
	if _, err := s.End(context.Background(), http.Header{"Mcp-Session-Id": {session}}); err != nil {
		t.Fatal(err)
	}
	if !gone(pid) {
		t.Errorf("process %d ignoring SIGTERM still exists after End", pid)
	}
	if s.Crashed.Load() != 0 {
		t.Errorf("an ended process counted as crashed")
	}
}

func TestStdioStreamCarriesUnsolicited(t *testing.T) {
	s := newTestStdio(t, 2, nil)
	session, _ := initialize(t, s)
	h := http.Header{"Mcp-Session-Id": {session}}
	stream, err := s.Open(context.Background(), h)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("Open: %v %v", err, stream)
	}
	defer stream.Body.Close()
	if _, _, err := send(t, s, session, `{"jsonrpc":"2.0","id":2,"method":"notify"}`); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stream.Body)
	for _, want := range []string{"event: message\n", `data: {"jsonrpc":"2.0","method":"notifications/message","params":{"data":"hello"}}` + "\n"} {
		if line, err := r.ReadString('\n'); err != nil || line != want {
			t.Errorf("stream line %q (%v), want %q", line, err, want)
		}
	}
}

func TestStdioLimitsApplied(t *testing.T) {
	s := newTestStdio(t, 2, nil)
	_, pid := initialize(t, s)
	var got syscallRlimit
	if err := getLimit(pid, &got); err != nil {
		t.Fatal(err)
	}
	if got.Cur != 64 || got.Max != 64 {
		t.Errorf("RLIMIT_NOFILE of the child is %+v, want 64", got)
	}
}

type syscallRlimit = unix.Rlimit

func getLimit(pid int, out *unix.Rlimit) error {
	return unix.Prlimit(pid, unix.RLIMIT_NOFILE, nil, out)
}

// TestStdioRestartBackoff: the first crash restarts at once; the second in
// a row makes the next start wait (refused with the time left, nothing
// started); once the wait is over it starts, and a process that ends
// normally ends the streak.
func TestStdioRestartBackoff(t *testing.T) {
	s := newTestStdio(t, 4, nil)
	clock := time.Unix(1_800_000_000, 0)
	s.Now = func() time.Time { return clock }
	crash := func() {
		t.Helper()
		session, _ := initialize(t, s)
		if _, _, err := send(t, s, session, `{"jsonrpc":"2.0","id":2,"method":"crash"}`); !errors.Is(err, errProcessExited) {
			t.Fatalf("crash: %v, want errProcessExited", err)
		}
	}
	crash()
	crash() // the first crash did not delay this start
	started := s.Started.Load()
	_, _, err := send(t, s, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`)
	var backoff *RestartBackoff
	if !errors.As(err, &backoff) || !errors.Is(err, ErrRestartBackoff) || backoff.Wait != restartBackoffBase || backoff.Crashes != 2 {
		t.Fatalf("a start after two crashes in a row: %v, want a RestartBackoff of %s", err, restartBackoffBase)
	}
	if s.Started.Load() != started {
		t.Error("a backed-off start started a process")
	}
	clock = clock.Add(restartBackoffBase)
	session, _ := initialize(t, s) // the wait is over
	if resp, _ := s.End(context.Background(), http.Header{"Mcp-Session-Id": {session}}); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	crash() // a normal end ended the streak: this is the first again
	initialize(t, s)
	if got := s.Crashed.Load(); got != 3 {
		t.Errorf("crashed %d, want 3", got)
	}
	for crashes, want := range map[int]time.Duration{0: 0, 1: 0, 2: restartBackoffBase, 3: 2 * restartBackoffBase, 50: restartBackoffMax} {
		if got := restartBackoff(crashes); got != want {
			t.Errorf("restartBackoff(%d) = %s, want %s", crashes, got, want)
		}
	}
}
