// Command bench measures what ctxgate costs, against the physical floor, in
// one run on one machine:
//
//	go run ./e2e/bench                         # every target, 3 rounds of 5s
//	go run ./e2e/bench -rounds 5 -duration 10s -rate 300 -service-time 2ms
//	go run ./e2e/bench -targets direct,go-proxy,ctxgate -fixture raw -closed wrk
//
// It starts an upstream MCP fixture (the official Go SDK server with fixed
// tools, or with -fixture raw a minimal handler with the same answers), puts each target in front of it (none, a bare Go reverse proxy,
// nginx, ctxgate pass-through, ctxgate with JWTs and the shipped policy,
// the same with the response cache on), and drives the same MCP workload
// through each on established sessions (tools/call with arguments cycling
// through callKeys keys, and of every five requests one tools/list and one
// resources/read), in interleaved rounds. The load generator counts the Ctxgate-Cache header
// of every answer, so the cached target's hit ratio is reported.
// Each round of a target has two phases:
//
//   - closed loop: -conns requests in flight until -duration is over (the
//     harness's Go generator, or wrk with -closed wrk); throughput, and the CPU time per request of the system under test
//     and of the upstream, read from /proc/<pid>/stat before and after;
//   - open loop: -rate requests per second on a fixed schedule, each
//     latency measured from its intended send time (coordinated-omission
//     safe); p50, p90, p99, max.
//
// The system under test runs on CPU 0 with GOMAXPROCS=1 (nginx: one
// worker), the upstream and the load generator on CPU 1. Every piece the
// harness runs is its own process (this binary re-executed in a role, see
// roleEnv; nginx; ctxgate built from the checkout), so its CPU is its own. Output is a markdown table; see README.md, "Benchmarks".
//
// Not measured yet: the stateless 2026-07-28 protocol era, which the
// gateway does not implement yet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"time"
)

// options are the harness's flags.
type options struct {
	targets     []string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	rate        float64
	conns       int
	sessions    int
	maxInflight int
	serviceTime time.Duration
	fixture     string        // sdk or raw
	engine      string        // closed-loop generator: go or wrk
	policyTime  time.Duration // ctxgate's policy.timeout; 0: its default
	ctxgate     string        // a built ctxgate binary; "" builds one
	pin         bool
	freshTokens int // tokens signed per round for a new token every request; 0: reuse
	shape       shape
	out         string
}

func main() {
	if ran, err := runRole(); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		return
	}
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rep, err := run(ctx, o, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	table := rep.markdown()
	fmt.Print(table)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(table), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	targets := fs.String("targets", strings.Join(allTargets, ","), "comma-separated targets, of: "+strings.Join(allTargets, ", "))
	fs.IntVar(&o.rounds, "rounds", 3, "interleaved rounds (A B C A B C ...)")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each phase (closed loop, open loop) of a round")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "closed-loop warm-up before each round's measurement")
	fs.Float64Var(&o.rate, "rate", 200, "open-loop rate, requests per second (keep it below the slowest target's closed-loop req/s)")
	fs.IntVar(&o.conns, "conns", 16, "closed-loop requests in flight")
	fs.IntVar(&o.sessions, "sessions", 16, "MCP sessions (each with its own token on the JWT targets)")
	fs.IntVar(&o.maxInflight, "max-inflight", 256, "open-loop limit of requests in flight (late ones still count from their due time)")
	fs.DurationVar(&o.serviceTime, "service-time", 0, "time the upstream takes for every tools/list, tools/call and resources/read")
	fs.StringVar(&o.fixture, "fixture", fixtureSDK, "upstream: sdk (the official Go SDK server) or raw (a minimal Streamable HTTP handler, much cheaper)")
	fs.StringVar(&o.engine, "closed", engineGo, "closed-loop generator: go (the harness's, in its own process) or wrk (needs wrk installed)")
	fs.DurationVar(&o.policyTime, "policy-timeout", 0, "ctxgate's policy.timeout (default: the gateway's, 100ms); a slower decision is a deny, which an overloaded CPU shows as errors")
	fs.StringVar(&o.ctxgate, "ctxgate", "", "ctxgate binary to measure (default: build this checkout)")
	fs.IntVar(&o.freshTokens, "fresh-tokens", 0, "JWT targets: sign this many tokens per round and send a new one with every request, so each signature is verified (0: each session reuses its token, as clients do, and the gateway's token cache answers)")
	fs.BoolVar(&o.pin, "pin", true, "pin the system under test to CPU 0, upstream and load generator to CPU 1 (taskset)")
	fs.StringVar(&o.out, "out", "", "also write the table to this file")
	o.shape.flags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.targets = strings.Split(*targets, ",")
	if err := o.shape.check(); err != nil {
		fmt.Fprintln(fs.Output(), err)
		return o, err
	}
	if _, err := fixtureHandler(o.fixture, 0, o.shape); err != nil {
		fmt.Fprintln(fs.Output(), err)
		return o, err
	}
	if o.freshTokens > 0 && o.engine == engineWrk {
		err := errors.New("-fresh-tokens needs -closed go: the wrk script reuses each session's token")
		fmt.Fprintln(fs.Output(), err)
		return o, err
	}
	if err := checkEngine(o.engine); err != nil {
		fmt.Fprintln(fs.Output(), err)
		return o, err
	}
	if o.rounds < 1 || o.duration <= 0 || o.rate <= 0 || o.conns < 1 || o.sessions < 1 || o.maxInflight < 1 {
		err := fmt.Errorf("-rounds, -duration, -rate, -conns, -sessions and -max-inflight must be positive")
		fmt.Fprintln(fs.Output(), err)
		return o, err
	}
	return o, nil
}

// checkEngine accepts a closed-loop generator that can run here.
func checkEngine(engine string) error {
	switch engine {
	case engineGo:
		return nil
	case engineWrk:
		if _, err := exec.LookPath("wrk"); err != nil {
			return errors.New("-closed wrk: wrk is not installed (apt-get install -y wrk)")
		}
		return nil
	}
	return fmt.Errorf("-closed %q: want %s or %s", engine, engineGo, engineWrk)
}
