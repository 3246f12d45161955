package upstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/time/rate"

	"github.com/ctxgate/ctxgate/config"
)

// A stdio upstream is a local program speaking MCP over its standard input
// and output. A stdio server is one MCP session, so every client session
// gets its own process (the legacy era): an initialize without a session
// starts one and names it with a fresh Mcp-Session-Id, later messages on
// that session go to its stdin, and its answers are matched to the
// requests by JSON-RPC id. The modern era (a pooled process per principal)
// is reached through the route's bridge, which opens such a session.
//
// The process is sandboxed: only the configured environment, no inherited
// file descriptors, its own process group (so ending it ends what it
// spawned), and resource limits applied with prlimit right after start
// (the child runs a few instructions before they apply; an exec'd runtime
// reserves its memory later than that).

const (
	// stdioMaxLine bounds one message from a process; a longer line is a
	// protocol error that ends it.
	stdioMaxLine = 4 << 20
	// stdioGrace is how long a process has to exit after SIGTERM before
	// its group is killed, when stop_grace is unset.
	stdioGrace = config.DefaultStopGrace
	// stdioStreamBuffer is how many unsolicited messages wait for the
	// session's GET stream; more are dropped (and logged).
	stdioStreamBuffer = 64
)

// ErrProcessesFull: a stdio upstream already runs max_processes
// processes; nothing was started or sent.
var ErrProcessesFull = errors.New("stdio upstream: max_processes reached")

// ErrRestartBackoff: the upstream's processes crashed one after another,
// so the next start waits; nothing was started or sent. The error is a
// *RestartBackoff saying how long.
var ErrRestartBackoff = errors.New("stdio upstream: restarts backed off after repeated crashes")

// RestartBackoff is ErrRestartBackoff with the time left to wait.
type RestartBackoff struct {
	Wait    time.Duration
	Crashes int // crashes in a row
}

func (e *RestartBackoff) Error() string {
	return fmt.Sprintf("%v (%d in a row); next start in %s", ErrRestartBackoff, e.Crashes, e.Wait.Round(time.Millisecond))
}

func (e *RestartBackoff) Is(target error) bool { return target == ErrRestartBackoff }

// Restart backoff: the first crash restarts at once (one bad request or
// a one-off fault must not lock users out); each further crash in a row
// doubles the wait from restartBackoffBase, up to restartBackoffMax. A
// process that ran for stableAfter before crashing starts a new streak,
// and one that ends normally (DELETE, idle, shutdown) ends the streak.
const (
	restartBackoffBase = 500 * time.Millisecond
	restartBackoffMax  = 30 * time.Second
	stableAfter        = time.Minute
)

func restartBackoff(crashes int) time.Duration {
	if crashes < 2 {
		return 0
	}
	d := restartBackoffBase << min(crashes-2, 16)
	return min(d, restartBackoffMax)
}

// errProcessExited is a call whose process ended before answering.
var errProcessExited = errors.New("stdio upstream: the process ended before answering")

// Stdio is the stdio transport of one upstream.
type Stdio struct {
	cfg   config.Upstream
	grace time.Duration
	// cred is the account the processes run as (nil: the gateway's);
	// credErr why the configured one cannot be used, which every start
	// then returns (NewPool refuses such an upstream first).
	cred    *syscall.Credential
	credErr error
	// Log receives the processes' stderr and protocol errors; set it
	// before the first Send. Nil: slog.Default().
	Log *slog.Logger

	// Now is the clock of the restart backoff; nil: time.Now.
	Now func() time.Time
	// killGroup sends a signal to a process group; nil: kill(-pgid, sig).
	// Tests record the signals with it.
	killGroup func(pgid int, sig syscall.Signal) error

	mu    sync.Mutex
	procs map[string]*process
	// crashes counts processes that crashed in a row; no start before
	// notBefore.
	crashes   int
	notBefore time.Time

	// Started, Crashed and Reaped count processes over the transport's
	// life: crashed ones ended on their own (or broke the framing),
	// reaped ones were idle for idle_timeout.
	Started, Crashed, Reaped atomic.Int64
}

// The stdio transport is one way to an upstream.
var _ Transport = (*Stdio)(nil)

// NewStdio returns the transport that runs c.Command; c must be a
// validated stdio upstream (defaults applied).
func NewStdio(c config.Upstream) *Stdio {
	s := &Stdio{cfg: c, grace: c.StopGrace, procs: map[string]*process{}}
	if s.grace <= 0 {
		s.grace = stdioGrace
	}
	s.cred, s.credErr = stdioCredential(c, os.Geteuid(), os.Getegid())
	return s
}

// CanRun reports why the processes cannot be started as configured: a
// user or group that does not resolve, or that a gateway not running as
// root cannot switch to (ErrCannotSwitchUser). The error names the field.
func (s *Stdio) CanRun() error { return s.credErr }

// Running is the number of processes running now.
func (s *Stdio) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.procs)
}

// Runnable reports whether the command can be started: argv[0] is an
// executable file (absolute, or found on PATH). It is the stdio upstream's
// reachability: there is no address to dial, and a process is started
// only for a session.
func (s *Stdio) Runnable() error {
	if len(s.cfg.Command) == 0 {
		return errors.New("no command")
	}
	_, err := exec.LookPath(s.cfg.Command[0])
	return err
}

func (s *Stdio) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// ended records how a process ended, for the restart backoff; s.mu held.
func (s *Stdio) ended(crashed bool, ran time.Duration) {
	switch {
	case !crashed:
		s.crashes = 0
	case ran >= stableAfter:
		s.crashes = 1
	default:
		s.crashes++
	}
	s.notBefore = s.now().Add(restartBackoff(s.crashes))
}

func (s *Stdio) signalGroup(pgid int, sig syscall.Signal) error {
	if s.killGroup != nil {
		return s.killGroup(pgid, sig)
	}
	return syscall.Kill(-pgid, sig)
}

func (s *Stdio) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// envelope is what the transport reads of a message: enough to route it.
type envelope struct {
	ID     json.RawMessage `json:"id"`
	Method string          `json:"method"`
}

// Send writes m to its session's process and returns the answer.
func (s *Stdio) Send(ctx context.Context, m Message) (*http.Response, error) {
	body := bytes.TrimSpace(m.Body)
	var env envelope
	if len(body) == 0 || body[0] != '{' || json.Unmarshal(body, &env) != nil {
		return jsonAnswer(http.StatusBadRequest, "", rpcError(nil, -32600, "a stdio upstream takes one JSON-RPC message (no batch)")), nil
	}
	session := m.Header.Get("Mcp-Session-Id")
	var p *process
	switch {
	case session == "" && env.Method == "initialize":
		var err error
		if p, session, err = s.start(); err != nil {
			return nil, err
		}
	case session == "":
		// As a Streamable HTTP server answers a message outside a session.
		return jsonAnswer(http.StatusBadRequest, "", rpcError(env.ID, -32600, "no session: send initialize first")), nil
	default:
		if p = s.get(session); p == nil {
			return jsonAnswer(http.StatusNotFound, "", rpcError(env.ID, -32600, "session not found")), nil
		}
	}
	if env.Method == "" || len(env.ID) == 0 || string(env.ID) == "null" {
		// A notification, or the client's response to a server request.
		if err := p.write(ctx, body); err != nil {
			return nil, err
		}
		return jsonAnswer(http.StatusAccepted, session, nil), nil
	}
	if key := requestProgressKey(body); key != "" && acceptsEventStream(m.Header) {
		return p.callStreaming(ctx, session, string(env.ID), key, body) // stdioprogress.go
	}
	return p.call(ctx, session, string(env.ID), body)
}

// Open returns the session's stream of the process's own messages
// (notifications and requests to the client).
func (s *Stdio) Open(ctx context.Context, h http.Header) (*http.Response, error) {
	p := s.get(h.Get("Mcp-Session-Id"))
	if p == nil {
		return jsonAnswer(http.StatusNotFound, "", rpcError(nil, -32600, "session not found")), nil
	}
	if !p.streaming.CompareAndSwap(false, true) {
		return jsonAnswer(http.StatusConflict, "", rpcError(nil, -32600, "the session's stream is already open")), nil
	}
	pr, pw := io.Pipe()
	go func() {
		defer p.streaming.Store(false)
		for {
			select {
			case line := <-p.unsolicited:
				if _, err := fmt.Fprintf(pw, "event: message\ndata: %s\n\n", line); err != nil {
					return // the reader closed the stream
				}
			case <-p.exited:
				pw.Close()
				return
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
	}()
	resp := jsonAnswer(http.StatusOK, "", nil)
	resp.Header.Set("Content-Type", "text/event-stream")
	resp.Body = pr
	return resp, nil
}

// End ends the session's process: SIGTERM to its group, SIGKILL after
// the grace.
func (s *Stdio) End(ctx context.Context, h http.Header) (*http.Response, error) {
	session := h.Get("Mcp-Session-Id")
	s.mu.Lock()
	p := s.procs[session]
	delete(s.procs, session)
	s.mu.Unlock()
	if p == nil {
		return jsonAnswer(http.StatusNotFound, "", rpcError(nil, -32600, "session not found")), nil
	}
	p.stop(s.grace)
	return jsonAnswer(http.StatusOK, "", nil), nil
}

// Close ends every process; call it at shutdown.
func (s *Stdio) Close() {
	s.mu.Lock()
	ps := s.procs
	s.procs = map[string]*process{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { p.stop(s.grace) })
	}
	wg.Wait()
}

func (s *Stdio) get(session string) *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.procs[session]
	if p != nil {
		p.touch()
	}
	return p
}

// start runs a new process for a new session.
func (s *Stdio) start() (*process, string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	session := hex.EncodeToString(b[:])
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.procs) >= s.cfg.MaxProcesses {
		return nil, "", ErrProcessesFull
	}
	if s.credErr != nil {
		return nil, "", fmt.Errorf("stdio upstream %s: %w", s.cfg.Name, s.credErr)
	}
	if wait := s.notBefore.Sub(s.now()); wait > 0 {
		return nil, "", &RestartBackoff{Wait: wait, Crashes: s.crashes}
	}
	p, err := s.spawn(session)
	if err != nil {
		return nil, "", err
	}
	s.procs[session] = p
	s.Started.Add(1)
	return p, session, nil
}

// spawn starts the command, sandboxed.
func (s *Stdio) spawn(session string) (*process, error) {
	c := s.cfg
	cmd := exec.Command(c.Command[0], c.Command[1:]...)
	// Never nil: a nil Env is the gateway's whole environment, its secrets.
	cmd.Env = make([]string, 0, len(c.Env))
	for k, v := range c.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Dir = c.Dir
	// Its own group, so SIGTERM and SIGKILL reach whatever it spawned (npx
	// runs node as a child); ExtraFiles stays nil: no inherited fds.
	// Credential (when set) drops to the configured account with no
	// supplementary groups.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cred}
	if s.cred != nil {
		// Another account: the launcher applies the limits (stdiolaunch.go).
		if cmd.Err != nil {
			return nil, fmt.Errorf("stdio upstream: %w", cmd.Err)
		}
		cmd.Args = launchArgs(stdioLauncher, cmd.Path, c.Command, c.Limits)
		cmd.Path = stdioLauncher
	}
	if err := closeOnExec(); err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("stdio upstream: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("stdio upstream: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("stdio upstream: %w", err)
	}
	if err := cmd.Start(); err != nil {
		if s.cred != nil {
			return nil, fmt.Errorf("stdio upstream: start %s as uid %d gid %d (through the gateway's binary): %w", c.Command[0], s.cred.Uid, s.cred.Gid, err)
		}
		return nil, fmt.Errorf("stdio upstream: start %s: %w", c.Command[0], err)
	}
	if s.cred == nil { // else the launcher set them
		if err := setLimits(cmd.Process.Pid, c.Limits); err != nil {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			return nil, err
		}
	}
	p := &process{
		owner: s, session: session, cmd: cmd, stdin: stdin, started: s.now(),
		pending: map[string]chan []byte{}, unsolicited: make(chan []byte, stdioStreamBuffer),
		died: make(chan struct{}), exited: make(chan struct{}), stdoutDone: make(chan struct{}), log: s.log().With("upstream", c.Name, "pid", cmd.Process.Pid),
	}
	if c.IdleTimeout > 0 {
		p.idle = time.AfterFunc(c.IdleTimeout, p.reapIfIdle)
	}
	go p.readStderr(stderr)
	go p.readStdout(stdout)
	go p.watch(stdout)
	return p, nil
}

// closeOnExec marks every descriptor of the gateway from 3 up
// close-on-exec, so that a child gets only its stdin, stdout and stderr.
// Those the gateway opens are already (Go opens every one so), but one it
// inherited from its parent is not, and would pass to every process
// (found by the e2e test: a file its parent left open).
func closeOnExec() error {
	err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Before Linux 5.11: one by one.
	if ferr := closeOnExecEach(); ferr != nil {
		return fmt.Errorf("stdio upstream: close-on-exec: %w (and %w)", err, ferr)
	}
	return nil
}

// closeOnExecEach is closeOnExec without close_range.
func closeOnExecEach() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			// The listing's own descriptor is closed by now: EBADF.
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC)
		}
	}
	return nil
}

// setLimits applies the configured rlimits to the running child.
func setLimits(pid int, l *config.StdioLimits) error {
	if l == nil {
		return nil
	}
	for _, r := range []struct {
		resource int
		value    uint64
	}{
		{unix.RLIMIT_AS, uint64(l.MemoryMB) << 20},
		{unix.RLIMIT_CPU, uint64(l.CPUSeconds)},
		{unix.RLIMIT_NOFILE, uint64(l.OpenFiles)},
	} {
		if r.value == 0 {
			continue
		}
		lim := unix.Rlimit{Cur: r.value, Max: r.value}
		if err := unix.Prlimit(pid, r.resource, &lim, nil); err != nil {
			return fmt.Errorf("stdio upstream: prlimit: %w", err)
		}
	}
	return nil
}

// jsonAnswer is an answer as a Streamable HTTP server gives it.
func jsonAnswer(status int, session string, body []byte) *http.Response {
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", status, http.StatusText(status)), StatusCode: status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}
}

func rpcError(id json.RawMessage, code int, message string) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": message}})
	return b
}

// gotConn tells the executor the message was handed to the process, the
// stdio equivalent of a connection: from here it is not safe to repeat.
func gotConn(ctx context.Context) {
	if t := httptrace.ContextClientTrace(ctx); t != nil && t.GotConn != nil {
		t.GotConn(httptrace.GotConnInfo{})
	}
}

// stderrRate bounds the log lines one process's stderr may write.
func stderrLimiter() *rate.Limiter { return rate.NewLimiter(20, 100) }

// sanitizeLog keeps a stderr line printable for the log.
func sanitizeLog(line string) string {
	return strings.ToValidUTF8(line, "?")
}
