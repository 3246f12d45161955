package main

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/upstream/upstreamtest"
)

// The demo's two principals. Fixed keys, printed in the banner: the demo
// listens on loopback and guards nothing but its own sample files.
const (
	demoAliceKey = "demo-alice-key"
	demoBobKey   = "demo-bob-key"
)

// demoFiles are the sample project (used when --dir is not given) and the
// demo's additions to the shipped policy.
//
//go:embed all:demo/project demo/policy
var demoFiles embed.FS

// demo is one running demo: the sample server it can stop and start, and
// the clock it can move forward (so cached answers expire on request).
type demo struct {
	dir, policyDir, decisionLog string

	mu       sync.Mutex
	project  *upstreamtest.Project
	handler  http.Handler // one for the demo's life: its sessions survive a stop and start
	addr     string       // the sample server's address, kept across restarts
	upstream *http.Server

	offset atomic.Int64 // added to time.Now: the gateway's clock
}

// newDemo prepares a demo's files in a new temporary directory: the sample
// project (unless dir is given), the policy (the shipped authz.rego with
// the demo's data.json and demo.rego) and the decision log.
func newDemo(dir string) (*demo, func(), error) {
	tmp, err := os.MkdirTemp("", "ctxgate-demo-")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	d := &demo{dir: dir, policyDir: filepath.Join(tmp, "policy"), decisionLog: filepath.Join(tmp, "decisions.jsonl")}
	if dir == "" {
		d.dir = filepath.Join(tmp, "project")
		if err := copyTree(demoFiles, "demo/project", d.dir); err != nil {
			cleanup()
			return nil, nil, err
		}
	}
	if err := copyTree(demoFiles, "demo/policy", d.policyDir); err != nil {
		cleanup()
		return nil, nil, err
	}
	rego, err := shippedPolicy.ReadFile("policies/authz.rego")
	if err == nil {
		err = os.WriteFile(filepath.Join(d.policyDir, "authz.rego"), rego, 0o644)
	}
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	if d.project, err = upstreamtest.NewProject(d.dir); err != nil {
		cleanup()
		return nil, nil, err
	}
	d.handler = d.project.Handler()
	return d, func() { d.project.Close(); cleanup() }, nil
}

func copyTree(fsys fs.FS, root, dst string) error {
	return fs.WalkDir(fsys, root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}

func (d *demo) now() time.Time { return time.Now().Add(time.Duration(d.offset.Load())) }

// start serves the sample server (again, on the same address). The sample
// server is a real MCP server on its own loopback port, so the gateway
// proxies it exactly as it would a remote one.
func (d *demo) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.upstream != nil {
		return nil
	}
	addr := d.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("sample server: %w", err)
	}
	d.addr = ln.Addr().String()
	srv := &http.Server{Handler: d.handler, ReadHeaderTimeout: config.DefaultReadHeaderTimeout}
	go func() { _ = srv.Serve(ln) }()
	d.upstream = srv
	return nil
}

// stop closes the sample server and its connections, as a crash would.
func (d *demo) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.upstream != nil {
		d.upstream.Close()
		d.upstream = nil
	}
}

// controls are the demo's admin endpoints (under /demo, behind the admin
// token like every admin endpoint).
func (d *demo) controls() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upstream/stop", func(w http.ResponseWriter, _ *http.Request) {
		d.stop()
		fmt.Fprintln(w, "sample server stopped")
	})
	mux.HandleFunc("POST /upstream/start", func(w http.ResponseWriter, _ *http.Request) {
		if err := d.start(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "sample server started")
	})
	mux.HandleFunc("POST /clock/advance", func(w http.ResponseWriter, r *http.Request) {
		by, err := time.ParseDuration(r.URL.Query().Get("by"))
		if err != nil || by <= 0 || by > 24*time.Hour {
			http.Error(w, "by: a positive duration up to 24h, e.g. ?by=10m", http.StatusBadRequest)
			return
		}
		d.offset.Add(int64(by))
		fmt.Fprintf(w, "demo clock advanced by %s\n", by)
	})
	return mux
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// demoAddrs is where a running demo is.
type demoAddrs struct {
	Endpoint, Admin, Upstream string
}

// runDemo runs a demo until ctx ends; ready is called once it serves.
func runDemo(ctx context.Context, listen, dir string, logOut io.Writer, ready func(*demo, demoAddrs)) error {
	d, cleanup, err := newDemo(dir)
	if err != nil {
		return err
	}
	defer cleanup()
	if err := d.start(); err != nil {
		return err
	}
	defer d.stop()
	env := map[string]string{
		"DEMO_LISTEN": listen, "DEMO_ADMIN_LISTEN": "127.0.0.1:0", "DEMO_UPSTREAM_URL": "http://" + d.addr + "/",
		"DEMO_ALICE_SHA256": sha256Hex(demoAliceKey), "DEMO_BOB_SHA256": sha256Hex(demoBobKey),
		"DEMO_POLICY_DIR": d.policyDir, "DEMO_DECISION_LOG": d.decisionLog,
	}
	cfg, err := loadValid(config.Parse(demoConfig, func(k string) (string, bool) { v, ok := env[k]; return v, ok }))
	if err != nil {
		return fmt.Errorf("demo configuration: %w", err)
	}
	return serve(ctx, cfg, logOut, nil, func(public, admin net.Addr) {
		ready(d, demoAddrs{Endpoint: "http://" + public.String() + "/mcp/project", Admin: "http://" + admin.String(), Upstream: "http://" + d.addr + "/"})
	}, func(o *gateway.Options) {
		o.Now = d.now
		o.AdminRoutes = map[string]http.Handler{"/demo": d.controls()}
	})
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "tour" {
		return cmdTour(ctx, args[1:], stdout, stderr)
	}
	flags := flag.NewFlagSet("demo", flag.ContinueOnError)
	flags.SetOutput(stderr)
	listen := flags.String("listen", "127.0.0.1:8080", "gateway address (port 0 picks a free one)")
	dir := flags.String("dir", "", "directory the sample context server describes (default: a built-in sample project)")
	quiet := flags.Bool("quiet-log", false, "discard the gateway's own log (the decision log is still written)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	logOut := stderr
	if *quiet {
		logOut = io.Discard
	}
	return runDemo(ctx, *listen, *dir, logOut, func(d *demo, a demoAddrs) {
		printBanner(stdout, d, a)
	})
}

func printBanner(w io.Writer, d *demo, a demoAddrs) {
	fmt.Fprintf(w, `ctxgate demo is running.

  MCP endpoint (gateway):  %s
  sample context server:   %s  (describes %s)
  principals (API keys, as Authorization: Bearer <key>):
    alice  %s   group mcp-admin: sees and may call every tool
    bob    %s     no group, team support: search is hidden, e-mail addresses redacted
    (no key: anonymous, like bob without the redaction)
  policy:                  %s  (the shipped authz.rego + demo.rego + data.json; edits reload)
  decision log:            %s  (tail -f it)
  admin:                   %s
    status page:           %s/status
    metrics:               %s/metrics
    readiness:             %s/readyz
    stop / start the sample server (stale answers, circuit breaker):
      curl -X POST -H 'X-Ctxgate-Admin: 1' %s/demo/upstream/stop
      curl -X POST -H 'X-Ctxgate-Admin: 1' %s/demo/upstream/start
    move the gateway's clock forward (cached answers expire):
      curl -X POST -H 'X-Ctxgate-Admin: 1' '%s/demo/clock/advance?by=10m'

See what the gateway does, step by step, in a second demo of its own:

  go run . demo tour

List the tools through the gateway with the MCP Inspector CLI:

  npx -y @modelcontextprotocol/inspector@2.12.0 --cli %s --transport http --method tools/list

Press Ctrl-C to stop.
`, a.Endpoint, a.Upstream, d.dir, demoAliceKey, demoBobKey, d.policyDir, d.decisionLog,
		a.Admin, a.Admin, a.Admin, a.Admin, a.Admin, a.Admin, a.Admin, a.Endpoint)
}

var errTourFailed = errors.New("tour: a step did not show what it should (see above)")
