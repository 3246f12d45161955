package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.yaml.in/yaml/v3"

	"github.com/ctxgate/ctxgate/upstream/upstreamtest"
)

const (
	rulesFile     = "prometheus/rules.yaml"
	rulesTestFile = "prometheus/rules_test.yaml"
	dashboardFile = "grafana/ctxgate.json"
)

// ruleFile is the Prometheus rule file format, decoded strictly.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return rf
}

// TestAlertRules runs promtool's checks and unit tests on the rules, and
// checks that every alert has a severity, a summary and a runbook that
// exists in the README.
func TestAlertRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	need(t, "promtool", "apt-get install prometheus; test.sh does in CI", err)
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTestFile}} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rf := readRules(t)
	var alerts []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", r.Alert)
			}
			if want := "https://github.com/ctxgate/ctxgate#" + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !bytes.Contains(readme, []byte("\n#### "+r.Alert+"\n")) {
				t.Errorf("%s: the README has no runbook heading #### %s", r.Alert, r.Alert)
			}
		}
	}
	// The alerts issue 18 asks for that the gateway has series for.
	for _, want := range []string{"CtxgateHighErrorRatio", "CtxgateHighLatencyP99", "CtxgateCircuitBreakerOpen", "CtxgatePolicyReloadFailing", "CtxgateCacheHitRatioCollapse", "CtxgateDecisionLogsDropped", "CtxgateRedisFallbackActive"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing", want)
		}
	}
}

// dashboard is the part of the Grafana dashboard model the tests read.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Title      string `json:"title"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// TestDashboard checks the dashboard's structure: a uid, unique panel ids,
// every panel querying the selectable data source, and a panel for each
// thing issue 18 asks to see.
func TestDashboard(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Error("no datasource variable: the dashboard would be bound to one Prometheus")
	}
	ids := map[int]bool{}
	var titles []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		titles = append(titles, p.Title)
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q: want ${datasource}, targets and a grid position", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: a target without a query", p.Title)
			}
		}
	}
	for _, want := range []string{"Request rate", "Errors by outcome", "Latency by method (p50, p95, p99)", "Policy decisions", "Policy decision latency", "Cache hit ratio", "Cache served age", "Circuit breakers", "Rate limiting and load shedding", "Open streams"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q", want)
		}
	}
}

// PromQL without a parser: strings, label matchers, ranges and grouping
// clauses are removed; what remains that is not a function, keyword or
// number is a metric name.
var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchers = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`(^|[^a-zA-Z0-9_:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?`)
	promLabel    = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	promKeywords = []string{"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"}
)

// promMetrics returns the metric names a PromQL expression reads, and for
// each the label names its matchers use.
func promMetrics(expr string) map[string][]string {
	out := map[string][]string{}
	expr = promString.ReplaceAllString(expr, `""`)
	for _, m := range promMatchers.FindAllStringSubmatch(expr, -1) {
		if m[1] == "" {
			continue // {__name__=...} selectors are not used here
		}
		labels := out[m[1]]
		for _, l := range promLabel.FindAllStringSubmatch(m[2], -1) {
			if !slices.Contains(labels, l[1]) {
				labels = append(labels, l[1])
			}
		}
		out[m[1]] = labels
	}
	expr = promMatchers.ReplaceAllString(expr, "$1")
	expr = promRange.ReplaceAllString(expr, "")
	expr = promGrouping.ReplaceAllString(expr, "")
	for _, m := range promIdent.FindAllStringSubmatch(expr, -1) {
		if m[3] != "" || slices.Contains(promKeywords, m[2]) {
			continue // a function call, or a keyword
		}
		if _, ok := out[m[2]]; !ok {
			out[m[2]] = nil
		}
	}
	return out
}

func TestPromMetrics(t *testing.T) {
	tests := []struct {
		expr string
		want map[string][]string
	}{
		{
			expr: `histogram_quantile(0.99, sum by (le, route) (rate(mcp_server_operation_duration_seconds_bucket{mcp_method_name!="tools/call"}[5m]))) > 1`,
			want: map[string][]string{"mcp_server_operation_duration_seconds_bucket": {"mcp_method_name"}},
		},
		{
			expr: `sum by (route) (rate(ctxgate_requests_total{outcome="error",route=~"$route"}[$__rate_interval])) / sum by (route) (rate(ctxgate_requests_total[5m])) > 0.05`,
			want: map[string][]string{"ctxgate_requests_total": {"outcome", "route"}},
		},
		{
			expr: `max by (upstream) (ctxgate_circuit_breaker_state{state="open"}) == 1 and on (upstream) ctxgate_cache_entries offset 1h unless 1e3 < up`,
			want: map[string][]string{"ctxgate_circuit_breaker_state": {"state"}, "ctxgate_cache_entries": nil, "up": nil},
		},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, promMetrics(tt.expr)); diff != "" {
			t.Errorf("promMetrics(%s) (-want +got):\n%s", tt.expr, diff)
		}
	}
}

var labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// queried collects every metric (with the labels its matchers use) the
// dashboard and the rules query, each with where it is used.
func queried(t *testing.T) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	add := func(where string, m map[string][]string) {
		for name, labels := range m {
			if out[name] == nil {
				out[name] = map[string][]string{}
			}
			out[name][where] = append(out[name][where], labels...)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			add("alert "+r.Alert, promMetrics(r.Expr))
		}
	}
	d := readDashboard(t)
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			add("panel "+p.Title, promMetrics(tg.Expr))
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
		}
		add("variable "+v.Name, map[string][]string{m[1]: {m[2]}})
	}
	return out
}

// TestQueriedMetricsExist starts the real gateway in front of a real MCP
// server, sends traffic that exercises the cache, the policy, rate limits
// and authentication, scrapes /metrics and checks that every metric the
// dashboard and the alert rules query is exported, with the labels their
// matchers name.
func TestQueriedMetricsExist(t *testing.T) {
	want := queried(t)
	if len(want) < 10 {
		t.Fatalf("only %d metrics found in the dashboard and rules: the extraction is broken", len(want))
	}
	samples := scrapeAfterTraffic(t)
	for name, uses := range want {
		labels, ok := samples[name]
		if !ok {
			t.Errorf("%s is not exported by the gateway (queried by %v)", name, keys(uses))
			continue
		}
		for where, ls := range uses {
			for _, l := range ls {
				if !labels[l] {
					t.Errorf("%s has no label %s (queried by %s)", name, l, where)
				}
			}
		}
	}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? `)

// scrapeAfterTraffic returns, per sample name in /metrics, the label
// names seen on it.
func scrapeAfterTraffic(t *testing.T) map[string]map[string]bool {
	t.Helper()
	project, err := upstreamtest.NewProject(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups, not defers: they run after the gateway's (registered
	// later) has stopped it, so no gateway connection holds Close up.
	t.Cleanup(func() { project.Close() })
	upstream := httptest.NewServer(project.Handler())
	t.Cleanup(upstream.Close)

	// A log service, so that the decision-log shipping series exist.
	logService := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(logService.Close)

	// A Redis (in-process, speaking the protocol), so that the shared
	// state's series exist; the rate limit below is then Redis's.
	redis := miniredis.RunT(t)

	const key, token = "metrics-test-key", "metrics-test-admin-token"
	cfg := fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0", token_sha256: %q}
auth: {api_keys: [{name: ci, sha256: %q}]}
policy:
  dir: %q
  decision_log: "off"
  opa:
    services: {logs: {url: %q}}
    decision_logs: {service: logs}
redis: {url: %q}
upstreams:
  - name: project
    url: %q
    cache: {ttl: {tools/list: 5m}}
    rate_limit: {per_tool: {search: {rps: 0.001, burst: 1}}}
`, sha256Hex(token), sha256Hex(key), filepath.Join(repoRoot, "policies"), logService.URL, "redis://"+redis.Addr()+"/0", upstream.URL+"/")
	path := filepath.Join(t.TempDir(), "ctxgate.yaml")
	write(t, path, []byte(cfg))
	g := startGateway(t, exec.Command(ctxgateBin, "serve", "--config", path))
	endpoint := "http://" + g.public + "/mcp/project"

	ctx := t.Context()
	client := mcp.NewClient(&mcp.Implementation{Name: "deploy-metrics", Version: "1"}, nil)
	httpClient := &http.Client{Transport: bearer{key: key, next: http.DefaultTransport}}
	cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: endpoint, HTTPClient: httpClient}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a cache miss, then a hit
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_files", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	// Denied by the policy: a tool the upstream never listed.
	if res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "drop_database", Arguments: map[string]any{}}); err == nil && !res.IsError {
		t.Fatal("an unlisted tool was called")
	}
	// The second search is over the per-tool rate limit (429).
	for range 2 {
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: "search", Arguments: map[string]any{"query": "ctxgate"}})
	}
	_ = cs.Close()
	if resp, _ := mcpPost(t, endpoint, "", nil, initializeBody); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("initialize without a key: %d, want 401", resp.StatusCode)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.admin+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	samples := map[string]map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		if samples[m[1]] == nil {
			samples[m[1]] = map[string]bool{}
		}
		for _, l := range promLabel.FindAllStringSubmatch(m[3], -1) {
			samples[m[1]][l[1]] = true
		}
	}
	for _, must := range []string{`ctxgate_rate_limited_total{upstream="project"} 1`, `ctxgate_cache_results_total{result="hit",upstream="project"} 1`, `outcome="denied",route="project"`} {
		if !strings.Contains(string(body), must) {
			t.Errorf("the traffic did not produce %s:\n%s", must, body)
		}
	}
	return samples
}

// bearer adds the API key to every request of the MCP client.
type bearer struct {
	key  string
	next http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.next.RoundTrip(r)
}
