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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// process is one running stdio server: one client session.
type process struct {
	owner   *Stdio
	session string
	cmd     *exec.Cmd
	log     *slog.Logger
	idle    *time.Timer
	started time.Time // by the owner's clock

	writeMu sync.Mutex
	stdin   io.WriteCloser

	mu       sync.Mutex
	pending  map[string]chan []byte // by JSON-RPC id: the waiting calls
	progress map[string]chan []byte // by progress token: the calls streaming their progress
	inflight int

	unsolicited chan []byte // the process's own messages, for Open
	streaming   atomic.Bool // Open's stream is being served
	// died closes when the process has exited, exited once it is also
	// reaped and its end recorded (watch).
	died, exited chan struct{}
	ending       atomic.Bool // the gateway ends it: not a crash
	// reapMu orders each signal to the group before the reaping: only
	// while the process is unreaped is its pid, the group's id, surely
	// not another's.
	reapMu sync.Mutex
	reaped bool
	// stdoutDone closes when readStdout returns: at EOF, or at the end of
	// the drain after the process exited (watch).
	stdoutDone chan struct{}
}

// stdioDrain is how long stdout is still read once the process has
// exited and its group is killed: what it wrote before exiting is in the
// pipe by then, so EOF comes at once unless something it started outside
// its group (setsid) holds the pipe, which must not hold the session.
const stdioDrain = 500 * time.Millisecond

// touch restarts the idle clock.
func (p *process) touch() {
	if p.idle != nil {
		p.idle.Reset(p.owner.cfg.IdleTimeout)
	}
}

// write hands one message line to the process.
func (p *process) write(ctx context.Context, body []byte) error {
	p.writeMu.Lock()
	defer p.writeMu.Unlock()
	select {
	case <-p.exited:
		return errProcessExited
	default:
	}
	gotConn(ctx)
	line := append(append(make([]byte, 0, len(body)+1), body...), '\n')
	if _, err := p.stdin.Write(line); err != nil {
		return fmt.Errorf("stdio upstream: write: %w", err)
	}
	return nil
}

// call sends a request and waits for the response with its id.
func (p *process) call(ctx context.Context, session, id string, body []byte) (*http.Response, error) {
	ch := make(chan []byte, 1)
	p.mu.Lock()
	if _, dup := p.pending[id]; dup {
		p.mu.Unlock()
		return jsonAnswer(http.StatusOK, session, rpcError(json.RawMessage(id), -32600, "a request with this id is in progress")), nil
	}
	p.pending[id] = ch
	p.inflight++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, id)
		p.inflight--
		p.mu.Unlock()
		p.touch()
	}()
	if err := p.write(ctx, body); err != nil {
		return nil, err
	}
	select {
	case resp := <-ch:
		return jsonAnswer(http.StatusOK, session, resp), nil
	case <-p.exited:
		return nil, errProcessExited
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// readStdout routes each line the process writes; anything that is not
// one JSON-RPC message ends the process (MCP stdio framing: nothing else
// may appear on stdout), and is never relayed.
func (p *process) readStdout(stdout io.Reader) {
	defer close(p.stdoutDone)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 0, 64<<10), stdioMaxLine)
	dropped := 0 // unsolicited messages nobody read
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var env envelope
		if line[0] != '{' || json.Unmarshal(line, &env) != nil {
			p.log.Warn("stdio upstream wrote something that is not a JSON-RPC message; ending the process", "bytes", len(line))
			p.kill()
			break
		}
		msg := append([]byte(nil), line...)
		if env.Method == "" && len(env.ID) > 0 {
			p.mu.Lock()
			ch := p.pending[string(env.ID)]
			p.mu.Unlock()
			if ch != nil {
				// Never blocks: a process repeating an id before the call
				// took the first answer must not stall its stdout.
				select {
				case ch <- msg:
				default:
					p.log.Warn("stdio upstream answered a request twice; the repeat dropped")
				}
				continue
			}
			p.log.Warn("stdio upstream answered a request nobody is waiting for; dropped")
			continue
		}
		if env.Method == "notifications/progress" && p.progressFor(msg) {
			continue // on its request's stream (stdioprogress.go)
		}
		select {
		case p.unsolicited <- msg:
		default:
			// Logged the first time and every 100th: a session whose
			// stream is never opened (a bridged one) drops every message
			// of a chatty server.
			if dropped++; dropped%100 == 1 {
				p.log.Warn("stdio upstream message dropped: the session's stream is not read", "method", env.Method, "dropped", dropped)
			}
		}
	}
	switch err := sc.Err(); {
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.log.Warn("stdio upstream process exited, but something it started outside its process group still holds its stdout; closing it")
		return
	case err != nil:
		p.log.Warn("stdio upstream framing broken; ending the process", "error", err)
		p.kill()
	}
	// Until EOF or the drain's deadline, so the process never blocks on a
	// full pipe before it is killed.
	_, _ = io.Copy(io.Discard, stdout)
}

// exit reaps the process and records its end: its waiters fail, its
// session ends.
func (p *process) exit() {
	p.reapMu.Lock()
	err := p.cmd.Wait() // closes its pipes: stdout is no longer read
	p.reaped = true
	p.reapMu.Unlock()
	if p.idle != nil {
		p.idle.Stop()
	}
	o := p.owner
	o.mu.Lock()
	if o.procs[p.session] == p {
		delete(o.procs, p.session)
	}
	// Recorded before exited closes, so a caller told the process ended
	// already meets the backoff.
	o.ended(!p.ending.Load(), o.now().Sub(p.started))
	o.mu.Unlock()
	if !p.ending.Load() {
		o.Crashed.Add(1)
		p.log.Warn("stdio upstream process ended; its session is over", "error", err)
	}
	close(p.exited)
}

// watch waits for the process to exit, and only for that (not for EOF on
// its stdout, which a descendant outside its group may hold open for
// ever), then kills what is left of its group, gives stdout a bounded
// drain, and reaps it. What it started (a helper, or the server npx runs)
// thus ends with it, whether it crashed or was ended. It waits without
// reaping, so that its pid, which is the group's id, cannot be reused
// before the kill.
func (p *process) watch(stdout io.Reader) {
	pid := p.cmd.Process.Pid
	if err := waitExited(pid); err != nil {
		p.log.Warn("stdio upstream: waiting for the process", "error", err)
	} else if err := p.signal(syscall.SIGKILL); err == nil {
		p.log.Debug("stdio upstream process exited; killed what was left of its group")
	}
	close(p.died)
	// What the process wrote is routed before its waiters are failed.
	if d, ok := stdout.(interface{ SetReadDeadline(time.Time) error }); ok && d.SetReadDeadline(time.Now().Add(stdioDrain)) == nil {
		<-p.stdoutDone
	}
	p.exit()
}

// waitExited waits for the child pid to exit, leaving it unreaped.
func waitExited(pid int) error {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// readStderr logs what the process writes on stderr, rate limited.
func (p *process) readStderr(stderr io.Reader) {
	lim := stderrLimiter()
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 0, 4<<10), 64<<10)
	dropped := 0
	for sc.Scan() {
		if !lim.Allow() {
			dropped++
			continue
		}
		p.log.Info("stdio upstream stderr", "line", sanitizeLog(sc.Text()), "dropped_before", dropped)
		dropped = 0
	}
	_, _ = io.Copy(io.Discard, stderr)
}

// kill ends the whole group at once (a protocol error).
func (p *process) kill() {
	_ = p.signal(syscall.SIGKILL)
}

// signal sends sig to the process's group, unless the process is reaped:
// its pid, which was the group's id, may be another's by then.
func (p *process) signal(sig syscall.Signal) error {
	p.reapMu.Lock()
	defer p.reapMu.Unlock()
	if p.reaped {
		return os.ErrProcessDone
	}
	return p.owner.signalGroup(p.cmd.Process.Pid, sig)
}

// stop ends the process: SIGTERM to its group, SIGKILL after grace. It
// returns when the process has exited and is reaped.
func (p *process) stop(grace time.Duration) {
	p.ending.Store(true)
	select {
	case <-p.exited:
		return // reaped already: nothing of it to signal
	default:
	}
	_ = p.stdin.Close()
	if err := p.signal(syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) && !errors.Is(err, os.ErrProcessDone) {
		p.log.Warn("stdio upstream: SIGTERM", "error", err)
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.died:
	case <-t.C:
		p.log.Warn("stdio upstream process did not exit within the grace after SIGTERM; killing its group", "grace", grace.String())
		_ = p.signal(syscall.SIGKILL)
	}
	<-p.exited // at most stdioDrain after it died
}

// reapIfIdle ends a process idle for idle_timeout; one with a call in
// flight is not idle.
func (p *process) reapIfIdle() {
	p.mu.Lock()
	busy := p.inflight > 0
	p.mu.Unlock()
	if busy {
		p.touch()
		return
	}
	o := p.owner
	o.mu.Lock()
	mine := o.procs[p.session] == p
	if mine {
		delete(o.procs, p.session)
	}
	o.mu.Unlock()
	if mine {
		o.Reaped.Add(1)
		p.stop(o.grace)
	}
}
