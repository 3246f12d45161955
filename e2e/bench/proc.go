package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// roleEnv names the role a re-executed harness binary plays: "upstream",
// "goproxy" or "load". Each runs in its own process so that its CPU time
// can be read, and charged, separately.
const roleEnv = "CTXGATE_BENCH_ROLE"

// runRole runs the role named in the environment, if any, and reports
// whether there was one.
func runRole() (ran bool, err error) {
	roles := map[string]func([]string) error{"upstream": runUpstream, "goproxy": runGoProxy, "load": runLoad}
	role := os.Getenv(roleEnv)
	if role == "" {
		return false, nil
	}
	run, ok := roles[role]
	if !ok {
		return true, fmt.Errorf("unknown role %q", role)
	}
	return true, run(os.Args[1:])
}

// child is a process the harness started. Its stdout lines arrive on lines;
// its stderr goes to a log file in the run's directory.
type child struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	log   string
	done  chan struct{}
	err   error
}

// placement says where a child runs: on which CPU (-1: anywhere) and with
// which extra environment.
type placement struct {
	cpu   int
	env   []string
	talks bool // the child speaks the harness's line protocol on stdout
}

// startChild starts path with args, pinned with taskset when p.cpu >= 0.
// taskset execs the program, so the pid is the program's own.
func startChild(dir, name string, p placement, path string, args ...string) (*child, error) {
	if p.cpu >= 0 {
		args = append([]string{"-c", strconv.Itoa(p.cpu), path}, args...)
		path = "taskset"
	}
	c := &child{name: name, cmd: exec.Command(path, args...), lines: make(chan string, 16),
		log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), p.env...)
	// A child must not outlive a harness that is killed outright.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logFile, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	c.cmd.Stderr = logFile
	// Only the harness's own roles talk on stdout; anything else's output
	// goes to the log, where it cannot fill a pipe nobody reads.
	stdout := io.Reader(strings.NewReader(""))
	if p.talks {
		if stdout, err = c.cmd.StdoutPipe(); err != nil {
			return nil, err
		}
	} else {
		c.cmd.Stdout = logFile
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// startRole re-executes this binary in a role.
func startRole(dir, name, role string, p placement, args ...string) (*child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	p.env, p.talks = append(slices.Clip(p.env), roleEnv+"="+role), true
	return startChild(dir, name, p, exe, args...)
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// next waits for the child's next stdout line.
func (c *child) next(timeout time.Duration) (string, error) {
	select {
	case line := <-c.lines:
		return line, nil
	case <-c.done:
		select {
		case line := <-c.lines:
			return line, nil
		default:
		}
		return "", fmt.Errorf("%s exited (%v): %s", c.name, c.err, c.tail())
	case <-time.After(timeout):
		return "", fmt.Errorf("%s: no answer within %s: %s", c.name, timeout, c.tail())
	}
}

// announced waits for the "listening <addr>" line of a role and returns
// the address.
func (c *child) announced() (string, error) {
	line, err := c.next(30 * time.Second)
	if err != nil {
		return "", err
	}
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		return "", fmt.Errorf("%s: unexpected first line %q", c.name, line)
	}
	return addr, nil
}

// tail is the end of the child's log, for error messages.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// stop kills the child and waits for it.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Kill()
	for {
		select {
		case <-c.lines:
		case <-c.done:
			return
		}
	}
}
