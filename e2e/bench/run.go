package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// sample is one round of one target.
type sample struct {
	Closed, Open     loadResult
	SUTCPU, Upstream time.Duration // CPU time used during the closed phase
	UpstreamRequests int64         // requests the upstream served then
}

// result is one target's samples, or why it was not measured.
type result struct {
	name     string
	skipped  string
	samples  []sample
	failures []string // what failed requests answered, per round and phase
}

// report is a whole run.
type report struct {
	opts    options
	started time.Time
	machine string
	pinned  bool
	results []*result
}

// run starts the fixture and the targets and measures them in interleaved
// rounds. Progress goes to log.
func run(ctx context.Context, o options, log io.Writer) (*report, error) {
	for _, t := range o.targets {
		if !slices.Contains(allTargets, t) {
			return nil, fmt.Errorf("unknown target %q (targets: %s)", t, strings.Join(allTargets, ", "))
		}
	}
	dir, err := os.MkdirTemp("", "ctxgate-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	rep := &report{opts: o, started: time.Now().UTC(), machine: machine()}
	e, side := newEnv(o, dir, rep, log)
	if e.root, err = repoRoot(); err != nil {
		return nil, err
	}
	if e.ctxgate, err = ctxgateBinary(o, dir, e.root, log); err != nil {
		return nil, err
	}
	up, err := startRole(dir, "upstream", "upstream", side, append([]string{"-service-time", o.serviceTime.String(), "-fixture", o.fixture}, o.shape.args()...)...)
	if err != nil {
		return nil, err
	}
	defer up.stop()
	addr, err := up.announced()
	if err != nil {
		return nil, err
	}
	e.upstream = "http://" + addr + "/"
	if e.issuer, err = startIssuer(); err != nil {
		return nil, err
	}
	defer e.issuer.Close()
	targets, err := startTargets(ctx, e, rep, log)
	defer func() {
		for _, t := range targets {
			t.stop()
		}
	}()
	if err != nil {
		return nil, err
	}
	for round := 1; round <= o.rounds; round++ {
		for _, t := range targets {
			fmt.Fprintf(log, "bench: round %d/%d: %s\n", round, o.rounds, t.name)
			s, err := measure(ctx, o, e, side, t, up.pid(), round)
			if err != nil {
				return nil, fmt.Errorf("round %d, %s: %w", round, t.name, err)
			}
			rep.result(t.name).add(round, s, log)
		}
	}
	return rep, nil
}

// newEnv places the system under test on CPU 0 with GOMAXPROCS=1, and
// returns the placement of everything else: CPU 1. Without taskset or a
// second CPU nothing is pinned, and the report says so.
func newEnv(o options, dir string, rep *report, log io.Writer) (*env, placement) {
	e := &env{dir: dir, sessions: o.sessions, timeout: o.policyTime, sut: placement{cpu: -1, env: []string{"GOMAXPROCS=1"}}}
	side := placement{cpu: -1}
	if !o.pin {
		return e, side
	}
	if _, err := exec.LookPath("taskset"); err != nil || runtime.NumCPU() < 2 {
		fmt.Fprintln(log, "bench: not pinning: needs taskset and 2 CPUs")
		return e, side
	}
	e.sut.cpu, side.cpu, rep.pinned = 0, 1, true
	return e, side
}

// startTargets starts every target of the run; nginx, when it is not
// installed, is recorded as skipped.
func startTargets(ctx context.Context, e *env, rep *report, log io.Writer) ([]*target, error) {
	var targets []*target
	for _, name := range rep.opts.targets {
		r := &result{name: name}
		rep.results = append(rep.results, r)
		t, err := e.start(ctx, name)
		if errors.Is(err, errNoNginx) {
			r.skipped = err.Error()
			fmt.Fprintln(log, "bench: skipping", name+":", err)
			continue
		}
		if err != nil {
			return targets, fmt.Errorf("start %s: %w", name, err)
		}
		targets = append(targets, t)
	}
	return targets, nil
}

// add records one round's sample and what its failed requests answered.
func (r *result) add(round int, s sample, log io.Writer) {
	r.samples = append(r.samples, s)
	for _, ph := range []struct {
		name string
		res  loadResult
	}{{"closed", s.Closed}, {"open", s.Open}} {
		if ph.res.Errors > 0 {
			msg := fmt.Sprintf("round %d, %s loop: %d failed, the first: %s", round, ph.name, ph.res.Errors, ph.res.FirstError)
			r.failures = append(r.failures, msg)
			fmt.Fprintf(log, "bench: %s: %s\n", r.name, msg)
		}
	}
}

func (r *report) result(name string) *result {
	for _, res := range r.results {
		if res.name == name {
			return res
		}
	}
	return nil
}

// measure runs one round against one target: a load generator process is
// started and warmed up, then the closed phase runs between two readings of
// the CPU time of the system under test and of the upstream, then the open
// phase.
func measure(ctx context.Context, o options, e *env, p placement, t *target, upstreamPID, round int) (sample, error) {
	args, err := loadArgs(o, e, t, round)
	if err != nil {
		return sample{}, err
	}
	load, err := startRole(e.dir, "load-"+t.name, "load", p, args...)
	if err != nil {
		return sample{}, err
	}
	defer load.stop()
	if line, err := load.next(o.warmup + time.Minute); err != nil || line != "ready" {
		return sample{}, fmt.Errorf("load generator not ready (%q): %v", line, err)
	}
	phaseTimeout := 2*o.duration + time.Minute
	var s sample
	before, err := readCounters(t.pid, upstreamPID, e.upstream)
	if err != nil {
		return s, err
	}
	if err := phase(load, "closed", phaseTimeout, &s.Closed); err != nil {
		return s, err
	}
	after, err := readCounters(t.pid, upstreamPID, e.upstream)
	if err != nil {
		return s, err
	}
	s.SUTCPU, s.Upstream, s.UpstreamRequests = after.sut-before.sut, after.upstream-before.upstream, after.served-before.served
	if err := phase(load, "open", phaseTimeout, &s.Open); err != nil {
		return s, err
	}
	return s, ctx.Err()
}

// loadArgs are the load generator's flags for one round of one target.
// With -fresh-tokens, a JWT target gets a new file of tokens each round.
func loadArgs(o options, e *env, t *target, round int) ([]string, error) {
	args := []string{"-url", t.url, "-sessions", strconv.Itoa(o.sessions),
		"-conns", strconv.Itoa(o.conns), "-warmup", o.warmup.String(), "-duration", o.duration.String(),
		"-rate", strconv.FormatFloat(o.rate, 'f', -1, 64), "-max-inflight", strconv.Itoa(o.maxInflight), "-engine", o.engine}
	args = append(args, o.shape.args()...)
	if o.freshTokens == 0 || t.alg == "" {
		return append(args, "-tokens", t.tokens), nil
	}
	// Fresh tokens all name one subject, so that any of them may be used
	// on any session (sessions are bound to the principal). They are left
	// for the run directory's removal: a file of a few MB per round.
	tokens := filepath.Join(e.dir, fmt.Sprintf("%s-round%d.tokens", t.name, round))
	if err := e.writeTokens(tokens, t.alg, o.freshTokens, func(int) string { return "bench-fresh" }); err != nil {
		return nil, err
	}
	return append(args, "-tokens", tokens, "-fresh"), nil
}

// phase asks the load generator to run one phase and reads its result.
func phase(load *child, name string, timeout time.Duration, r *loadResult) error {
	if _, err := fmt.Fprintln(load.stdin, name); err != nil {
		return err
	}
	line, err := load.next(timeout)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(line), r); err != nil {
		return fmt.Errorf("%s phase: %w: %q", name, err, line)
	}
	return nil
}

// counters are what is read before and after a closed phase.
type counters struct {
	sut, upstream time.Duration // CPU time; sut is 0 for direct
	served        int64         // requests the fixture has served
}

// readCounters reads the CPU time of the system under test (pid 0: none)
// and of the upstream, and the fixture's request count.
func readCounters(sutPID, upstreamPID int, upstream string) (counters, error) {
	var c counters
	var err error
	if sutPID != 0 {
		if c.sut, err = cpuTime(sutPID); err != nil {
			return c, err
		}
	}
	if c.upstream, err = cpuTime(upstreamPID); err != nil {
		return c, err
	}
	c.served, err = upstreamRequests(upstream)
	return c, err
}

// ctxgateBinary builds this checkout's ctxgate unless -ctxgate names one.
func ctxgateBinary(o options, dir, root string, log io.Writer) (string, error) {
	if o.ctxgate != "" {
		return o.ctxgate, nil
	}
	if !slices.ContainsFunc(o.targets, func(t string) bool { return strings.HasPrefix(t, "ctxgate") }) {
		return "", nil
	}
	bin := filepath.Join(dir, "ctxgate")
	fmt.Fprintln(log, "bench: building ctxgate")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir, cmd.Stdout, cmd.Stderr = root, log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build ctxgate: %w", err)
	}
	return bin, nil
}

// repoRoot finds the ctxgate checkout from the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/ctxgate/ctxgate\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the harness inside the ctxgate repository (go run ./e2e/bench)")
		}
		dir = parent
	}
}

// machine describes the CPU and load, for the report.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	b, _ := os.ReadFile("/proc/loadavg")
	load := strings.Fields(string(b))
	return fmt.Sprintf("%s, %d CPUs, %s, %s/%s; load average at start: %s", model, runtime.NumCPU(),
		runtime.Version(), runtime.GOOS, runtime.GOARCH, strings.Join(load[:min(3, len(load))], " "))
}

// perRequest is CPU microseconds per request, NaN when nothing ran.
func perRequest(cpu time.Duration, requests int64) float64 {
	if requests == 0 {
		return math.NaN()
	}
	return float64(cpu.Microseconds()) / float64(requests)
}
