package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// The targets, in table order.
const (
	targetDirect  = "direct"
	targetGoProxy = "go-proxy"
	targetNginx   = "nginx"
	targetPass    = "ctxgate"
	targetES256   = "ctxgate-full-es256"
	targetRS256   = "ctxgate-full-rs256"
	targetCached  = "ctxgate-cached"
)

var allTargets = []string{targetDirect, targetGoProxy, targetNginx, targetPass, targetES256, targetRS256, targetCached}

// descriptions say what each target is, under the table.
var descriptions = map[string]string{
	targetDirect:  "the load generator talks to the upstream fixture itself: the floor",
	targetGoProxy: "a bare `httputil.ReverseProxy` (Rewrite + SetURL, tuned transport) in its own process: the Go floor for one hop",
	targetNginx:   "nginx `proxy_pass`, one worker, `proxy_buffering off`, HTTP/1.1 keep-alive upstream",
	targetPass:    "ctxgate serve, anonymous, allow-all policy (`e2e/testdata/allow-all`): pass-through",
	targetES256:   "ctxgate serve, OIDC JWT (ES256) + the shipped Rego policy (`policies/`) + decision log + forward",
	targetRS256:   "as above with RS256 tokens",
	targetCached:  "ctxgate-full-es256 with the upstream's response cache on for tools/list, resources/read and tools/call of the fixture's tools (TTL " + cacheTTL.String() + "): after warm-up every answer is a hit, served without the upstream",
}

// cacheTTL is the cached target's TTL: longer than any run, so that the
// steady state is hits only.
const cacheTTL = time.Hour

// target is a running system under test.
type target struct {
	name   string
	url    string                  // the MCP endpoint the load goes to
	pid    int                     // the system under test's process; 0 for direct
	tokens string                  // file of bearer tokens, or ""
	alg    jose.SignatureAlgorithm // the JWT targets' token algorithm
	stop   func()
}

// env is what the targets are started in.
type env struct {
	dir      string // the run's scratch directory
	root     string // the repository
	ctxgate  string // the ctxgate binary
	upstream string // the fixture's URL
	issuer   *issuer
	sut      placement
	sessions int
	timeout  time.Duration // policy.timeout of the ctxgate targets
}

func (e *env) start(ctx context.Context, name string) (*target, error) {
	switch name {
	case targetDirect:
		return &target{name: name, url: e.upstream, stop: func() {}}, nil
	case targetGoProxy:
		c, err := startRole(e.dir, name, "goproxy", e.sut, "-target", e.upstream)
		if err != nil {
			return nil, err
		}
		addr, err := c.announced()
		if err != nil {
			c.stop()
			return nil, err
		}
		return &target{name: name, url: "http://" + addr + "/", pid: c.pid(), stop: c.stop}, nil
	case targetNginx:
		return e.startNginx()
	case targetPass:
		return e.startCtxgate(ctx, name, "", "", false)
	case targetES256, targetRS256, targetCached:
		alg := map[string]jose.SignatureAlgorithm{targetES256: jose.ES256, targetRS256: jose.RS256, targetCached: jose.ES256}[name]
		// One client per session, each with its own token, reused as a
		// client reuses its access token until it expires.
		tokens := filepath.Join(e.dir, name+".tokens")
		if err := e.writeTokens(tokens, alg, max(e.sessions, 1), func(i int) string { return fmt.Sprintf("bench-client-%d", i) }); err != nil {
			return nil, err
		}
		t, err := e.startCtxgate(ctx, name, e.issuer.URL, tokens, name == targetCached)
		if t != nil {
			t.alg = alg
		}
		return t, err
	}
	return nil, fmt.Errorf("unknown target %q (targets: %s)", name, strings.Join(allTargets, ", "))
}

// writeTokens signs n tokens, token i for subject sub(i), and writes them
// to path, one per line. RS256 signing is slow, so the work is spread over
// the CPUs; nothing is being measured while it runs.
func (e *env) writeTokens(path string, alg jose.SignatureAlgorithm, n int, sub func(int) string) error {
	tokens := make([]string, n)
	errs := make([]error, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				tokens[i], errs[i] = e.issuer.token(alg, sub(i), 24*time.Hour)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strings.Join(tokens, "\n")+"\n"), 0o600)
}

// ctxgateOptions are the parts of a generated ctxgate configuration.
type ctxgateOptions struct {
	upstream    string
	policyDir   string
	decisionLog string // off, or a path
	issuer      string // OIDC issuer; "" for anonymous access
	sessionKey  string
	timeout     time.Duration // policy.timeout; 0: the gateway's default
	cached      bool          // cache tools/list, resources/read and the fixture's tools/call for cacheTTL
}

// ctxgateConfig writes the configuration of a ctxgate target. The load
// comes from one principal (anonymous, or few token subjects), so the
// per-principal share of max_concurrent is off (equal to max_concurrent):
// the figures measure the pipeline, not the share.
func ctxgateConfig(o ctxgateOptions) string {
	auth := "auth: {anonymous: true}\n"
	if o.issuer != "" {
		auth = fmt.Sprintf("auth:\n  oidc:\n    - {issuer: %q, audiences: [%q], token_type: at+jwt}\n", o.issuer, benchAudience)
	}
	timeout := ""
	if o.timeout > 0 {
		timeout = ", timeout: " + o.timeout.String()
	}
	cache := ""
	if o.cached {
		tools, _ := json.Marshal(fixtureTools)
		cache = fmt.Sprintf(", cache: {ttl: {tools/list: %[1]s, tools/call: %[1]s, resources/read: %[1]s}, max_ttl: %[1]s, tools: %[2]s}", cacheTTL, tools)
	}
	return fmt.Sprintf(`server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
sessions: {keys: [%q]}
%spolicy: {dir: %q, decision_log: %q%s}
upstreams:
  - {name: fixture, url: %q, max_concurrent_per_principal: 100%s}
`, o.sessionKey, auth, o.policyDir, o.decisionLog, timeout, o.upstream, cache)
}

// startCtxgate runs `ctxgate serve`: pass-through when issuer is "", else
// the full pipeline with the shipped policy, with the response cache on
// when cached.
func (e *env) startCtxgate(ctx context.Context, name, issuerURL, tokens string, cached bool) (*target, error) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	o := ctxgateOptions{upstream: e.upstream, policyDir: filepath.Join(e.root, "e2e", "testdata", "allow-all"),
		decisionLog: "off", issuer: issuerURL, sessionKey: base64.StdEncoding.EncodeToString(key), timeout: e.timeout, cached: cached}
	if issuerURL != "" {
		// The decision log is written, as in production, but to nowhere:
		// its cost is encoding and a write per decision, not disk.
		o.policyDir, o.decisionLog = filepath.Join(e.root, "policies"), os.DevNull
	}
	cfg := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(ctxgateConfig(o)), 0o600); err != nil {
		return nil, err
	}
	c, err := startChild(e.dir, name, e.sut, e.ctxgate, "serve", "--config", cfg)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, pid: c.pid(), tokens: tokens, stop: c.stop}
	if err := waitCtxgate(ctx, c, t, issuerURL != ""); err != nil {
		c.stop()
		return nil, err
	}
	return t, nil
}

// waitCtxgate reads the bound addresses from the "ctxgate listening" log
// record, then polls /readyz until the gateway, and with OIDC its keys,
// are ready.
func waitCtxgate(ctx context.Context, c *child, t *target, oidc bool) error {
	deadline := time.Now().Add(30 * time.Second)
	var admin string
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return fmt.Errorf("%s exited: %v: %s", c.name, c.err, c.tail())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if admin == "" {
			public, a := listeningRecord(c.log)
			if a == "" {
				continue
			}
			t.url, admin = "http://"+public+"/mcp/fixture", "http://"+a
		}
		if ready(admin, oidc) {
			return nil
		}
	}
	return fmt.Errorf("%s not ready within 30s: %s", c.name, c.tail())
}

// listeningRecord finds ctxgate's "ctxgate listening" record in its log.
func listeningRecord(log string) (public, admin string) {
	b, _ := os.ReadFile(log)
	for line := range strings.Lines(string(b)) {
		var rec struct{ Msg, Public, Admin string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "ctxgate listening" {
			return rec.Public, rec.Admin
		}
	}
	return "", ""
}

func ready(admin string, oidc bool) bool {
	resp, err := http.Get(admin + "/readyz")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var detail struct {
		OIDCKeysLoaded bool `json:"oidc_keys_loaded"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&detail)
	return resp.StatusCode == http.StatusOK && (!oidc || detail.OIDCKeysLoaded)
}

// nginxConfig is a one-worker nginx in front of the upstream, with the
// settings an MCP (SSE) proxy needs: no response buffering, HTTP/1.1 with
// keep-alive to the upstream. master_process off makes the one process the
// worker, so its CPU time is nginx's.
func nginxConfig(prefix, listen, upstream string) string {
	return fmt.Sprintf(`worker_processes 1;
daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    upstream mcp {
        server %[3]s;
        keepalive 64;
    }
    server {
        listen %[2]s;
        location / {
            proxy_pass http://mcp;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The SDK upstream refuses a non-loopback Host (DNS rebinding
            # protection); pass the client's, which is loopback.
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_cache off;
            proxy_read_timeout 1h;
        }
    }
}
`, prefix, listen, upstream)
}

// errNoNginx is the nginx target's note when nginx is not installed.
var errNoNginx = errors.New("nginx is not installed (apt-get update && apt-get install -y nginx)")

func (e *env) startNginx() (*target, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return nil, errNoNginx
	}
	prefix := filepath.Join(e.dir, "nginx")
	if err := os.MkdirAll(prefix, 0o755); err != nil {
		return nil, err
	}
	upstreamHost := strings.TrimSuffix(strings.TrimPrefix(e.upstream, "http://"), "/")
	// nginx cannot report a port it picked, so a free one is reserved and
	// handed to it; if another process takes it first, nginx exits and
	// another is tried.
	for range 5 {
		listen, err := freePort()
		if err != nil {
			return nil, err
		}
		conf := filepath.Join(prefix, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConfig(prefix, listen, upstreamHost)), 0o644); err != nil {
			return nil, err
		}
		c, err := startChild(e.dir, "nginx", e.sut, bin, "-e", filepath.Join(prefix, "error.log"), "-p", prefix, "-c", conf)
		if err != nil {
			return nil, err
		}
		if waitDial(c, listen) {
			return &target{name: targetNginx, url: "http://" + listen + "/", pid: c.pid(), stop: c.stop}, nil
		}
		c.stop()
	}
	return nil, errors.New("nginx did not start; see nginx/error.log in the run directory")
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitDial polls addr until it accepts a connection or the child exits.
func waitDial(c *child, addr string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.done:
			return false
		case <-time.After(20 * time.Millisecond):
		}
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return true
		}
	}
	return false
}
