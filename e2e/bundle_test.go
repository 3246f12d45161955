package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// bundlePolicy allows tools/call only for the tools the bundle's data
// lists in tools.allowed: the data decides.
const bundlePolicy = `package ctxgate.authz

default allow := false

allow if input.method != "tools/call"

allow if data.tools.allowed[input.tool.name]

visible := true

reason := "tool not allowed by the bundle" if not allow
`

// bundleLogMask is OPA's own decision-log mask policy, shipped in the
// bundle: it erases the query argument from shipped records.
const bundleLogMask = `package system.log

mask contains "/input/tool/arguments/q"
`

// opaServer is the bundle, decision-log and status service of the OPA
// protocols, as a security team runs it (nginx serving `opa build` output,
// a log service, a status service): bundles with ETags, gzipped batches of
// decision events, status reports.
type opaServer struct {
	*httptest.Server
	t *testing.T

	mu      sync.Mutex
	bundle  []byte // nil: the bundle service answers 503 (down)
	etag    string
	events  []map[string]any
	bodies  []string // decoded decision-log uploads, for "no secret left"
	status  []map[string]any
	hold    chan struct{} // non-nil: decision-log uploads wait for it
	holding chan struct{} // closed when an upload is waiting on hold
}

func startOPAServer(t *testing.T) *opaServer {
	t.Helper()
	s := &opaServer{t: t}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(func() {
		s.release()
		s.Close()
	})
	return s
}

func (s *opaServer) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/bundles/authz.tar.gz":
		s.mu.Lock()
		b, etag := s.bundle, s.etag
		s.mu.Unlock()
		switch {
		case b == nil:
			http.Error(w, "bundle service down", http.StatusServiceUnavailable)
		case r.Header.Get("If-None-Match") == etag:
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", "application/gzip")
			w.Write(b)
		}
	case r.Method == http.MethodPost && r.URL.Path == "/logs":
		s.mu.Lock()
		hold, holding := s.hold, s.holding
		s.mu.Unlock()
		if hold != nil {
			select {
			case <-holding:
			default:
				close(holding)
			}
			<-hold
		}
		var events []map[string]any
		body := decodeGzipJSON(s.t, r, &events)
		s.mu.Lock()
		s.events = append(s.events, events...)
		s.bodies = append(s.bodies, body)
		s.mu.Unlock()
	case r.Method == http.MethodPost && r.URL.Path == "/status":
		var report map[string]any
		decodeGzipJSON(s.t, r, &report)
		s.mu.Lock()
		s.status = append(s.status, report)
		s.mu.Unlock()
	default:
		http.NotFound(w, r)
	}
}

// decodeGzipJSON decodes a (possibly gzipped) JSON body and returns it.
func decodeGzipJSON(t *testing.T, r *http.Request, v any) string {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("%s: gzip: %v", r.URL.Path, err)
			return ""
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil || json.Unmarshal(b, v) != nil {
		t.Errorf("%s: body %q: %v", r.URL.Path, b, err)
	}
	return string(b)
}

func (s *opaServer) publish(b []byte) {
	sum := sha256.Sum256(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundle, s.etag = b, `"`+hex.EncodeToString(sum[:8])+`"`
}

// holdUploads makes decision-log uploads wait until release.
func (s *opaServer) holdUploads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold, s.holding = make(chan struct{}), make(chan struct{})
}

func (s *opaServer) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
}

func (s *opaServer) uploadHeld() bool {
	s.mu.Lock()
	holding := s.holding
	s.mu.Unlock()
	select {
	case <-holding:
		return true
	default:
		return false
	}
}

func (s *opaServer) decisionEvents() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.events...)
}

func (s *opaServer) statusReports() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.status...)
}

// signingKey writes an RSA key pair and returns the private key file and
// the public key PEM for policy.opa.keys.
func signingKey(t *testing.T) (string, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	priv := filepath.Join(t.TempDir(), "bundle-signing.pem")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return priv, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

// buildBundle builds a bundle of bundlePolicy with the data allowing tools,
// with `ctxgate policy build` (OPA's compiler and signer); signingKey ""
// builds it unsigned.
func buildBundle(t *testing.T, revision, signingKey string, tools ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	allowed := map[string]bool{}
	for _, tool := range tools {
		allowed[tool] = true
	}
	data, _ := json.Marshal(map[string]any{"tools": map[string]any{"allowed": allowed}})
	for name, content := range map[string][]byte{"authz.rego": []byte(bundlePolicy), "mask.rego": []byte(bundleLogMask), "data.json": data} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	args := []string{"policy", "build", "-o", out, "--revision", revision}
	if signingKey != "" {
		args = append(args, "--signing-key", signingKey, "--key-id", "global")
	}
	cmd := exec.Command(bins.ctxgate, append(args, dir)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ctxgate %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tamper rewrites /data.json of a bundle, keeping its signatures: what an
// attacker between the build and the gateway would do.
func tamper(t *testing.T, bundle []byte, data string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	tr := tar.NewReader(zr)
	changed := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if strings.TrimPrefix(h.Name, "/") == "data.json" {
			b, changed = []byte(data), true
			h.Size = int64(len(b))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(b)
	}
	tw.Close()
	zw.Close()
	if !changed {
		t.Fatal("the bundle has no /data.json to tamper with")
	}
	return out.Bytes()
}

// bundleConfig is a gateway configuration taking its policy from the
// bundle service srv, in OPA's configuration format.
func bundleConfig(srv, publicKey, decisionLog, upstream string, bufferEvents int) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy:
  decision_log: %q
  mask: [tool.arguments.password]
  opa:
    services:
      acme: {url: %q, response_header_timeout_seconds: 300}
    keys:
      global: {key: %q, algorithm: RS256}
    bundles:
      authz:
        service: acme
        resource: bundles/authz.tar.gz
        polling: {min_delay_seconds: 1, max_delay_seconds: 1}
    decision_logs:
      service: acme
      reporting: {buffer_type: event, buffer_size_limit_events: %d, min_delay_seconds: 1, max_delay_seconds: 1}
    status: {service: acme}
    labels: {team: e2e}
upstreams:
  - {name: tools, url: %q}
`, decisionLog, srv, publicKey, bufferEvents, upstream)
}

// startGatewayUnready starts ctxgate serve and waits only for it to
// listen, not for /readyz.
func startGatewayUnready(t *testing.T, cfg string) *gatewayProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctxgate.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "ctxgate", bins.ctxgate, "serve", "--config", path)
	g := &gatewayProc{proc: p}
	waitFor(t, "ctxgate to listen", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("ctxgate exited: %v\n%s", p.waitErr, p.stderr.String())
		}
		rec, ok := findLog(p.stderr.String(), "ctxgate listening")
		if ok {
			g.URL = "http://" + rec["public"].(string)
			g.Admin = "http://" + rec["admin"].(string)
		}
		return ok
	})
	return g
}

// adminPolicy is /admin/policy.
type adminPolicy struct {
	Ready    bool   `json:"ready"`
	Revision string `json:"revision"`
	Bundles  map[string]struct {
		ActiveRevision string `json:"active_revision"`
		Error          string `json:"error"`
	} `json:"bundles"`
}

func (g *gatewayProc) policyStatus(t *testing.T) adminPolicy {
	t.Helper()
	resp, err := http.Get(g.Admin + "/admin/policy")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st adminPolicy
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (g *gatewayProc) readyz(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(g.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// metric reads one sample of the gateway's /metrics.
func (g *gatewayProc) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(g.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("/metrics has no %s", series)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// localDecisionIDs reads the decision ids of the gateway's local log.
func localDecisionIDs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, rec := range logRecords(string(b)) {
		ids = append(ids, rec["decision_id"].(string))
	}
	return ids
}

func callSearch(t *testing.T, cs *mcp.ClientSession, args map[string]any) (bool, error) {
	t.Helper()
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "search", Arguments: args})
	if err != nil {
		return false, err
	}
	return !res.IsError, nil
}

// TestBundleRevisions: a team's signed bundles decide; a new revision is
// in force within the polling bound; a tampered or unsigned one is refused
// while the last good one keeps deciding; decision records reach the log
// service masked, with their bundle revision; status reports the revision.
func TestBundleRevisions(t *testing.T) {
	fixture := startPolicyFixture(t, true)
	srv := startOPAServer(t)
	priv, pub := signingKey(t)
	decisionLog := filepath.Join(t.TempDir(), "decisions.log")
	gw := startGatewayUnready(t, bundleConfig(srv.URL, pub, decisionLog, fixture.URL, 1000))

	// The bundle service is down: not ready, and requests are denied.
	waitFor(t, "a failed bundle download in /admin/policy", readyDeadline, func() bool {
		return gw.policyStatus(t).Bundles["authz"].Error != ""
	})
	if st := gw.policyStatus(t); st.Ready || st.Revision != "" {
		t.Errorf("/admin/policy with the bundle service down = %+v, want not ready and no revision", st)
	}
	if code := gw.readyz(t); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with no bundle = %d, want 503", code)
	}
	if early, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: gw.URL + "/mcp/tools"}, nil); err == nil {
		// Whether or not initialize is decided, no call gets through.
		if ok, _ := callSearch(t, early, nil); ok || fixture.executed.Load() != 0 {
			t.Errorf("search without a policy revision was allowed, want denied")
		}
		early.Close()
	}

	// Revision 1 allows search: the data of the bundle decides.
	srv.publish(buildBundle(t, "1", priv, "search"))
	waitFor(t, "revision 1 to decide", readyDeadline, func() bool { return gw.policyStatus(t).Revision == "1" })
	if code := gw.readyz(t); code != http.StatusOK {
		t.Errorf("/readyz with revision 1 active = %d, want 200", code)
	}
	cs := connect(t, gw.URL+"/mcp/tools")
	if ok, err := callSearch(t, cs, map[string]any{"q": "x", "password": "hunter2"}); !ok || err != nil {
		t.Fatalf("search under revision 1: allowed %t, %v; want allowed", ok, err)
	}

	// Revision 2 allows nothing.
	srv.publish(buildBundle(t, "2", priv))
	waitFor(t, "revision 2 to decide", readyDeadline, func() bool { return gw.policyStatus(t).Revision == "2" })
	before := fixture.executed.Load()
	if ok, _ := callSearch(t, cs, nil); ok {
		t.Errorf("search under revision 2 was allowed, want denied")
	}
	// A burst within the decision-log buffer: none of it may be lost.
	var burst sync.WaitGroup
	for range 40 {
		burst.Go(func() {
			if ok, _ := callSearch(t, cs, nil); ok {
				t.Errorf("search under revision 2 was allowed, want denied")
			}
		})
	}
	burst.Wait()

	// Revision 3 is revision 1's data in revision 2's signed bundle; then
	// an unsigned bundle. Both are refused; revision 2 keeps deciding.
	for _, bad := range []struct {
		name   string
		bundle []byte
		why    string // in the bundle's error on /admin/policy
	}{
		{"tampered", tamper(t, buildBundle(t, "3", priv), `{"tools":{"allowed":{"search":true}}}`), "data.json: digest mismatch"},
		{"unsigned", buildBundle(t, "4", "", "search"), "bundle missing .signatures.json file"},
	} {
		srv.publish(bad.bundle)
		waitFor(t, "the "+bad.name+" bundle to be refused", readyDeadline, func() bool {
			return strings.Contains(gw.policyStatus(t).Bundles["authz"].Error, bad.why)
		})
		if st := gw.policyStatus(t); st.Revision != "2" || !st.Ready {
			t.Errorf("after a %s bundle: /admin/policy = %+v, want revision 2 still deciding", bad.name, st)
		}
		if ok, _ := callSearch(t, cs, nil); ok {
			t.Errorf("search after a %s bundle was allowed, want revision 2's deny", bad.name)
		}
	}
	if n := fixture.executed.Load() - before; n != 0 {
		t.Errorf("the upstream executed %d call(s) revision 2 denies", n)
	}

	// Every decision reaches the log service, masked, with its revision.
	want := localDecisionIDs(t, decisionLog)
	waitFor(t, "every decision at the log service", readyDeadline, func() bool {
		return len(srv.decisionEvents()) >= len(want)
	})
	got := map[string]map[string]any{}
	for _, ev := range srv.decisionEvents() {
		got[ev["decision_id"].(string)] = ev
	}
	for _, id := range want {
		if got[id] == nil {
			t.Errorf("decision %s is in the local log but not at the log service", id)
		}
	}
	var searched map[string]any
	for _, ev := range got {
		in, _ := ev["input"].(map[string]any)
		if tool, _ := in["tool"].(map[string]any); tool != nil && tool["name"] == "search" {
			if args, _ := tool["arguments"].(map[string]any); args["password"] != nil {
				searched = ev
			}
		}
	}
	switch {
	case searched == nil:
		t.Errorf("no decision for the search with a password at the log service")
	default:
		args := searched["input"].(map[string]any)["tool"].(map[string]any)["arguments"].(map[string]any)
		bundles, _ := searched["bundles"].(map[string]any)
		authz, _ := bundles["authz"].(map[string]any)
		result, _ := searched["result"].(map[string]any)
		erased, _ := searched["erased"].([]any)
		if args["password"] != "***" || args["q"] != nil || len(erased) != 1 || erased[0] != "/input/tool/arguments/q" ||
			authz["revision"] != "1" || result["allow"] != true || searched["labels"].(map[string]any)["team"] != "e2e" {
			t.Errorf("decision event = %v; want password masked (policy.mask), q erased (the bundle's system.log.mask), revision 1, allowed, labels", searched)
		}
	}
	for _, body := range srv.bodies {
		if strings.Contains(body, "hunter2") {
			t.Errorf("the masked password left the process: %s", body)
		}
	}
	if v := gw.metric(t, `ctxgate_decision_logs_dropped_total{reason="buffer_full"}`); v != 0 {
		t.Errorf("%v decision records dropped within the buffer, want 0", v)
	}

	// Status reports carry the active revision.
	waitFor(t, "a status report with revision 2", readyDeadline, func() bool {
		for _, r := range srv.statusReports() {
			b, _ := r["bundles"].(map[string]any)
			authz, _ := b["authz"].(map[string]any)
			if authz["active_revision"] == "2" {
				return true
			}
		}
		return false
	})
}

// TestBundleServiceDownAtStart: with no bundle service at all the gateway
// never becomes ready and denies.
func TestBundleServiceDownAtStart(t *testing.T) {
	fixture := startPolicyFixture(t, true)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there now
	_, pub := signingKey(t)
	gw := startGatewayUnready(t, bundleConfig(down.URL, pub, filepath.Join(t.TempDir(), "d.log"), fixture.URL, 100))
	waitFor(t, "a failed bundle download in /admin/policy", readyDeadline, func() bool {
		return gw.policyStatus(t).Bundles["authz"].Error != ""
	})
	if code := gw.readyz(t); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the bundle service down = %d, want 503", code)
	}
	if st := gw.policyStatus(t); st.Ready {
		t.Errorf("/admin/policy = %+v, want not ready", st)
	}
}

// TestBundleDecisionLogDrops: beyond the bounded buffer, records are
// dropped and counted, never waited for; every record is either delivered
// or counted.
func TestBundleDecisionLogDrops(t *testing.T) {
	const buffer = 5
	fixture := startPolicyFixture(t, true)
	srv := startOPAServer(t)
	priv, pub := signingKey(t)
	srv.publish(buildBundle(t, "1", priv, "search"))
	decisionLog := filepath.Join(t.TempDir(), "decisions.log")
	gw := startGateway(t, bundleConfig(srv.URL, pub, decisionLog, fixture.URL, buffer))

	// The first upload waits at the log service; meanwhile a burst of
	// decisions overflows the buffer.
	srv.holdUploads()
	cs := connect(t, gw.URL+"/mcp/tools")
	waitFor(t, "a decision-log upload to wait at the log service", readyDeadline, srv.uploadHeld)
	for range 3 * buffer {
		if ok, err := callSearch(t, cs, nil); !ok || err != nil {
			t.Fatalf("search: %t %v", ok, err)
		}
	}
	if v := gw.metric(t, `ctxgate_decision_logs_dropped_total{reason="buffer_full"}`); v == 0 {
		t.Errorf("no record dropped with %d decisions past a buffer of %d", 3*buffer, buffer)
	}
	srv.release()
	total := len(localDecisionIDs(t, decisionLog))
	waitFor(t, "every decision delivered or counted as dropped", readyDeadline, func() bool {
		dropped := gw.metric(t, `ctxgate_decision_logs_dropped_total{reason="buffer_full"}`)
		return len(srv.decisionEvents())+int(dropped) == total
	})
}
