// Command ctxgate is a hardened reverse proxy for the Model Context Protocol.
//
//	ctxgate serve --config FILE     run the gateway
//	ctxgate check --config FILE     validate a configuration and exit
//	ctxgate demo                    gateway + built-in sample server, no files needed
//	ctxgate hash-key                print the SHA-256 of an API key read from stdin
//	ctxgate policy test|eval|init   work on a policy
//	ctxgate version                 print the version and VCS revision
//	ctxgate help [COMMAND]          usage (also: COMMAND --help)
//
// main only wires the packages together; the behaviour lives in them.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/shared"
	"github.com/ctxgate/ctxgate/upstream"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

//go:embed demo.yaml
var demoConfig []byte

// shippedPolicy is the default policy (policies/authz.rego), embedded so the
// demo needs no files.
//
//go:embed policies/authz.rego
var shippedPolicy embed.FS

const usage = `usage: ctxgate <command> [flags]

commands:
  serve --config FILE   run the gateway
  check --config FILE [--probe]
                        check a configuration, its policy and the files it names;
                        exit 1 listing every problem (--probe: contact upstreams, IdPs)
  demo [--listen ADDR] [--dir DIR]
                        run the gateway in front of a built-in sample MCP server
  demo tour             walk a scripted client through a running demo
  hash-key              read an API key on stdin, print its SHA-256 for auth.api_keys
                        (or an admin token, for admin.token_sha256)
  policy test [-v] [DIR]
                        run the Rego tests (*_test.rego) of a policy directory (default: policies)
  policy eval --config FILE --input FILE
                        what-if: decide one input document and explain which rules decided
  policy build [-o FILE] [--revision REV] [--signing-key PEM --key-id ID] [DIR]
                        write an OPA bundle of a policy directory, optionally signed
  policy init DIR       write a minimal, commented policy and its tests into DIR
  version               print the version and VCS revision
  help [COMMAND]        this overview, or one command's flags (also: COMMAND --help)
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == upstream.StdioLaunchArg {
		// Started by the gateway to run a stdio upstream as another user.
		upstream.RunStdioLauncher(os.Args[2:])
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if _, known := commandHelp[args[0]]; known && wantsHelp(args[1:]) {
		return cmdHelp(args[:1], stdout, stderr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(ctx, args[1:], stderr)
	case "check":
		return cmdCheck(ctx, args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(ctx, args[1:], stdout, stderr)
	case "hash-key":
		err = cmdHashKey(stdin, stdout)
	case "policy":
		return cmdPolicy(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, versionLine())
	case "help":
		return cmdHelp(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "ctxgate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "ctxgate:", err)
		return 1
	}
	return 0
}

func configFlag(name string, args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if *path == "" {
		return "", errors.New(name + ": --config FILE is required")
	}
	return *path, nil
}

// loadValid passes a loaded configuration through Validate; the error lists
// every problem, one per line, with its field path.
func loadValid(cfg *config.Config, err error) (*config.Config, error) {
	if err != nil {
		return nil, err
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "configuration has %d problem(s):", len(problems))
		for _, p := range problems {
			b.WriteString("\n  " + p.Error())
		}
		return nil, errors.New(b.String())
	}
	return cfg, nil
}

func cmdServe(ctx context.Context, args []string, stderr io.Writer) error {
	path, err := configFlag("serve", args, stderr)
	if err != nil {
		return err
	}
	cfg, err := loadValid(config.Load(path))
	if err != nil {
		return err
	}
	return serve(ctx, cfg, stderr, nil, nil)
}

// serve runs the gateway for cfg until ctx is done. policyFS, if set,
// replaces policy.dir. ready, if set, is called with the bound addresses
// once both listeners are up; extra adjusts the gateway's options.
func serve(ctx context.Context, cfg *config.Config, logOut io.Writer, policyFS fs.FS, ready func(public, admin net.Addr), extra ...func(*gateway.Options)) error {
	log := newLogger(cfg.Log.Level, logOut)
	for _, w := range cfg.Warnings() {
		log.Warn("configuration", "path", w.Path, "warning", w.Message)
	}
	// One registry for every series, served on the admin listener.
	metrics := gateway.NewMetrics()
	engine, closeLog, err := newPolicyEngine(cfg.Policy, policyFS, log, metrics.PolicyReloaded)
	if err != nil {
		return err
	}
	defer closeLog()
	defer engine.Close()
	if err := registerDecisionLogMetrics(metrics, engine); err != nil {
		return err
	}
	tracerProvider, err := gateway.NewTracerProvider(cfg.Tracing, buildVersion())
	if err != nil {
		return err
	}
	opts := gateway.Options{Logger: log, Policy: engine, Metrics: metrics}
	if cfg.Redis != nil {
		// One client per process; an unreachable Redis is not a start-up
		// error (on_error applies), refused credentials are.
		rc, err := shared.New(ctx, cfg.Redis, shared.Options{Logger: log, Registerer: metrics.Registry()})
		if err != nil {
			return err
		}
		defer rc.Close()
		opts.Redis = rc
	}
	for _, f := range extra {
		f(&opts) // the demo's clock and controls
	}
	if tracerProvider != nil {
		// Export failures are logged like everything else, not through
		// OpenTelemetry's default stderr logger.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing export", "error", err.Error()) }))
		opts.TracerProvider = tracerProvider
		defer func() {
			// After the gateway stopped: flush the last spans, bounded.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = tracerProvider.Shutdown(ctx)
		}()
	}
	public, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	admin, err := net.Listen("tcp", cfg.Admin.Listen)
	if err != nil {
		public.Close()
		return fmt.Errorf("admin.listen: %w", err)
	}
	// With port 0, a defaulted public URL (the token audience and the
	// metadata URL clients are sent to) must name the port actually bound.
	cfg.Bound(public.Addr().String())
	// After Bound: a defaulted user_oauth redirect_url names the bound port.
	pool, err := upstream.NewPoolFor(cfg)
	if err != nil {
		public.Close()
		admin.Close()
		return err
	}
	// Announced once /readyz says ready, never before: the record is what
	// start-up scripts and the e2e harness wait for before polling.
	opts.OnReady = func() {
		log.Info("ctxgate listening", "version", buildVersion(), "public", public.Addr().String(), "admin", admin.Addr().String(), "public_url", cfg.Server.PublicURL, "upstreams", len(cfg.Upstreams), "policy_revision", engine.Revision())
		if ready != nil {
			ready(public.Addr(), admin.Addr())
		}
	}
	gw, err := gateway.New(cfg, pool, opts)
	if err != nil {
		public.Close()
		admin.Close()
		return err
	}
	return gw.Serve(ctx, public, admin)
}

// newPolicyEngine loads the policy (compiled and prepared once; a broken
// policy fails start-up) with its decision log.
func newPolicyEngine(cfg config.Policy, policyFS fs.FS, log *slog.Logger, onReload func(string, error)) (*policy.Engine, func(), error) {
	var decisions io.Writer
	closeLog := func() {}
	switch cfg.DecisionLog {
	case "off":
	case "stdout":
		decisions = os.Stdout
	case "stderr":
		decisions = os.Stderr
	default:
		f, err := os.OpenFile(cfg.DecisionLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("policy.decision_log: %w", err)
		}
		decisions, closeLog = f, func() { f.Close() }
	}
	opa, err := cfg.OPAConfig()
	if err != nil {
		closeLog()
		return nil, nil, err
	}
	opts := policy.Options{
		Dir: cfg.Dir, Package: cfg.Package, Timeout: cfg.Timeout, ReloadInterval: cfg.ReloadInterval,
		DecisionLog: decisions, Mask: cfg.Mask, Logger: log, OnReload: onReload, OPA: opa,
	}
	if policyFS != nil {
		opts.Dir, opts.FS = "", policyFS
	}
	engine, err := policy.New(opts)
	if err != nil {
		closeLog()
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	return engine, closeLog, nil
}

// registerDecisionLogMetrics exports the counters of OPA's decision-log
// plugin, when decision records are shipped to a log service: a record the
// bounded buffer had to drop is counted, never waited for.
func registerDecisionLogMetrics(m *gateway.Metrics, engine *policy.Engine) error {
	if !engine.ShipsDecisionLogs() {
		return nil
	}
	for _, reason := range []string{"buffer_full", "rate_limit", "encoding"} {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "ctxgate_decision_logs_dropped_total",
			Help:        "Decision records dropped before upload to the log service (policy.opa.decision_logs), by reason.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(engine.DecisionLogStats().Dropped[reason]) })
		if err := m.Registry().Register(c); err != nil {
			return fmt.Errorf("register decision log metrics: %w", err)
		}
	}
	for result, get := range map[string]func(policy.DecisionLogStats) uint64{
		"ok":     func(s policy.DecisionLogStats) uint64 { return s.Uploaded },
		"failed": func(s policy.DecisionLogStats) uint64 { return s.UploadFailed },
	} {
		c := prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "ctxgate_decision_logs_uploads_total",
			Help:        "Batches of decision records sent to the log service (ok) or attempts that failed and are retried with backoff (failed).",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(get(engine.DecisionLogStats())) })
		if err := m.Registry().Register(c); err != nil {
			return fmt.Errorf("register decision log metrics: %w", err)
		}
	}
	return nil
}

func newLogger(level string, out io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: l}))
}

func cmdHashKey(stdin io.Reader, stdout io.Writer) error {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	key := strings.TrimRight(line, "\r\n")
	if key == "" {
		return errors.New("hash-key: write the API key on standard input, e.g.: printf %s \"$KEY\" | ctxgate hash-key")
	}
	sum := sha256.Sum256([]byte(key))
	fmt.Fprintln(stdout, hex.EncodeToString(sum[:]))
	return nil
}

func cmdPolicy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, commandHelp["policy"])
		return 2
	}
	var err error
	switch args[0] {
	case "test":
		fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
		fs.SetOutput(stderr)
		verbose := fs.Bool("v", false, "report every test")
		if err := fs.Parse(args[1:]); err != nil {
			return 2
		}
		dir := "policies"
		if fs.NArg() > 0 {
			dir = fs.Arg(0)
		}
		var failed int
		_, failed, err = policy.RunTests(ctx, dir, stdout, *verbose)
		if err == nil && failed > 0 {
			return 1
		}
	case "eval":
		err = cmdPolicyEval(ctx, args[1:], stdout, stderr)
	case "build":
		err = cmdPolicyBuild(ctx, args[1:], stdout, stderr)
	case "init":
		err = cmdPolicyInit(args[1:], stdout)
	default:
		fmt.Fprintf(stderr, "ctxgate policy: unknown command %q (test, eval, build, init)\n", args[0])
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "ctxgate policy:", err)
		return 1
	}
	return 0
}

// cmdPolicyBuild writes a bundle for an OPA bundle service.
func cmdPolicyBuild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "bundle.tar.gz", "output file")
	opts := policy.BuildOptions{Dir: "policies"}
	fs.StringVar(&opts.Revision, "revision", "", "manifest revision, e.g. a git commit")
	fs.StringVar(&opts.SigningKey, "signing-key", "", "sign with this PEM private key file (or HMAC secret)")
	fs.StringVar(&opts.SigningAlg, "signing-alg", "RS256", "signing algorithm")
	fs.StringVar(&opts.KeyID, "key-id", "", "kid of the signature: the key's name in policy.opa.keys")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		opts.Dir = fs.Arg(0)
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	opts.Output = f
	err = policy.Build(ctx, opts)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out) // never leave half a bundle for a bundle server to serve
		return err
	}
	fmt.Fprintf(stdout, "%s: bundle of %s written (revision %q, signed: %t)\n", *out, opts.Dir, opts.Revision, opts.SigningKey != "")
	return nil
}

// cmdPolicyEval decides one input document with the configured policy and
// prints the decision and the rules that made it.
func cmdPolicyEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (its policy block is used)")
	inputPath := fs.String("input", "", "input document (JSON), as in policies/README.md")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" || *inputPath == "" {
		return errors.New("eval: --config FILE and --input FILE are required")
	}
	cfg, err := loadValid(config.Load(*configPath))
	if err != nil {
		return err
	}
	data, err := os.ReadFile(*inputPath)
	if err != nil {
		return err
	}
	var in policy.Input
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("input %s: %w", *inputPath, err)
	}
	if cfg.Policy.Dir == "" {
		return errors.New("eval: decides with policy.dir; for a bundle, point policy.dir at the directory it was built from")
	}
	// What-if: no decision log, no reload, nothing shipped or reported.
	cfg.Policy.DecisionLog, cfg.Policy.ReloadInterval, cfg.Policy.OPA = "off", 0, nil
	engine, closeLog, err := newPolicyEngine(cfg.Policy, nil, newLogger("error", stderr), nil)
	if err != nil {
		return err
	}
	defer closeLog()
	defer engine.Close()
	d, explanation, err := engine.Explain(ctx, &in)
	if err != nil {
		return err
	}
	out, _ := json.MarshalIndent(d, "", "  ")
	fmt.Fprintf(stdout, "decision:\n%s\n\nexplanation:\n", out)
	for _, line := range explanation {
		fmt.Fprintln(stdout, "  "+line)
	}
	return nil
}
