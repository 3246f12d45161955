package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// TestAdminToken checks which admin endpoints need the admin token.
func TestAdminToken(t *testing.T) {
	g := startObsGateway(t, obsOptions{pprof: true})
	tests := []struct {
		path               string
		without, withToken int
	}{
		{path: "/healthz", without: http.StatusOK, withToken: http.StatusOK},
		{path: "/readyz", without: http.StatusOK, withToken: http.StatusOK},
		{path: "/metrics", without: http.StatusUnauthorized, withToken: http.StatusOK},
		{path: "/admin/upstreams", without: http.StatusUnauthorized, withToken: http.StatusOK},
		{path: "/admin/policy", without: http.StatusUnauthorized, withToken: http.StatusOK},
		{path: "/debug/pprof/", without: http.StatusUnauthorized, withToken: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got, _ := g.adminGet(t, tt.path, false); got != tt.without {
				t.Errorf("without the token: %d, want %d", got, tt.without)
			}
			if got, _ := g.adminGet(t, tt.path, true); got != tt.withToken {
				t.Errorf("with the token: %d, want %d", got, tt.withToken)
			}
			resp := send(t, http.MethodGet, g.Admin+tt.path, "", "", http.Header{"Authorization": {"Bearer " + obsAdminToken + "x"}})
			if resp.StatusCode != tt.without {
				t.Errorf("with a wrong token: %d, want %d", resp.StatusCode, tt.without)
			}
		})
	}
}

func TestPProfOffByDefault(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	if got, _ := g.adminGet(t, "/debug/pprof/", true); got != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without admin.pprof: %d, want 404", got)
	}
}

// TestReadyzDetail checks /readyz tells probes only its status, and the
// operator (with the token) what is deployed.
func TestReadyzDetail(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	_, policyBody := g.adminGet(t, "/admin/policy", true)
	var policyStatus map[string]any
	if err := json.Unmarshal([]byte(policyBody), &policyStatus); err != nil {
		t.Fatalf("/admin/policy: %v: %s", err, policyBody)
	}
	for _, k := range []string{"revision", "loaded_at", "reloads", "reload_failures"} {
		if _, ok := policyStatus[k]; !ok {
			t.Errorf("/admin/policy lacks %q: %s", k, policyBody)
		}
	}
	tests := []struct {
		name      string
		withToken bool
		want      map[string]any
	}{
		{name: "probe", want: map[string]any{"status": "ready"}},
		{name: "operator", withToken: true, want: map[string]any{
			"status": "ready", "policy_revision": policyStatus["revision"], "upstreams": []any{"up", "down"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := g.adminGet(t, "/readyz", tt.withToken)
			var got map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusOK {
				t.Fatalf("/readyz: %d %s (%v)", status, body, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("/readyz (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAdminUpstreams checks the per-upstream counts and last error after
// traffic to a working and to an unreachable upstream.
func TestAdminUpstreams(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	c := &obsClient{g: g}
	c.initialize(t) // 3 requests to up
	down := &obsClient{g: &obsGateway{URL: strings.TrimSuffix(g.URL, "up") + "down"}}
	down.post(t, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`)
	type entry struct {
		Name        string `json:"name"`
		URL         string `json:"url"`
		Requests    int    `json:"requests"`
		Errors      int    `json:"errors"`
		LastError   string `json:"last_error"`
		LastErrorAt string `json:"last_error_at"`
		Breaker     string `json:"circuit_breaker"`
		Retries     int    `json:"retries"`
	}
	var got struct{ Upstreams []entry }
	waitUntil(t, "the attempts to be counted", func() bool {
		_, body := g.adminGet(t, "/admin/upstreams", true)
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("/admin/upstreams: %v: %s", err, body)
		}
		// A refused connection provably never reached the upstream, so
		// the initialize was tried retry.max_attempts (3) times.
		return len(got.Upstreams) == 2 && got.Upstreams[0].Requests == 3 && got.Upstreams[1].Requests == 3
	})
	for _, e := range got.Upstreams {
		if !strings.HasPrefix(e.URL, "http://127.0.0.1:") {
			t.Errorf("%s: url %q", e.Name, e.URL)
		}
	}
	if !strings.Contains(got.Upstreams[1].LastError, "connection refused") || got.Upstreams[1].LastErrorAt == "" {
		t.Errorf("down: last error %q at %q, want connection refused with a time", got.Upstreams[1].LastError, got.Upstreams[1].LastErrorAt)
	}
	want := []entry{{Name: "up", Requests: 3, Breaker: "closed"}, {Name: "down", Requests: 3, Errors: 3, Breaker: "closed", Retries: 2}}
	if diff := cmp.Diff(want, got.Upstreams, cmpopts.IgnoreFields(entry{}, "URL", "LastError", "LastErrorAt")); diff != "" {
		t.Errorf("/admin/upstreams (-want +got):\n%s", diff)
	}
}

// adminRequest sends one request to the admin listener with the given
// Host (empty: the listener's address) and headers.
func (g *obsGateway) adminRequest(t *testing.T, method, path, host string, header http.Header) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, g.Admin+path, strings.NewReader(""))
	req.Header = header
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminCrossSite: the admin listener refuses what a web page in the
// operator's browser could send it: a DNS-rebinding Host, a foreign
// Origin, a simple (text/plain) POST. Probes and scrapes by IP still work.
func TestAdminCrossSite(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	port := g.Admin[strings.LastIndex(g.Admin, ":")+1:]
	token := "Bearer " + obsAdminToken
	tests := []struct {
		name, method, path, host string
		header                   http.Header
		want                     int
		wantBody, notBody        string
	}{
		{name: "rebinding Host on status", method: "GET", path: "/admin/upstreams", host: "evil.example:" + port, header: http.Header{"Authorization": {token}}, want: 403, wantBody: "Host not allowed"},
		{name: "rebinding Host on metrics", method: "GET", path: "/metrics", host: "evil.example:" + port, header: http.Header{"Authorization": {token}}, want: 403},
		{name: "foreign Origin", method: "GET", path: "/admin/policy", header: http.Header{"Authorization": {token}, "Origin": {"http://evil.example"}}, want: 403, wantBody: "Origin not allowed"},
		{name: "null Origin", method: "GET", path: "/admin/pins", header: http.Header{"Authorization": {token}, "Origin": {"null"}}, want: 403},
		{name: "same Origin", method: "GET", path: "/admin/policy", header: http.Header{"Authorization": {token}, "Origin": {g.Admin}}, want: 200},
		{name: "localhost", method: "GET", path: "/admin/policy", host: "localhost:" + port, header: http.Header{"Authorization": {token}}, want: 200},
		{name: "Prometheus by pod IP", method: "GET", path: "/metrics", host: "10.1.2.3:9090", header: http.Header{"Authorization": {token}}, want: 200},
		{name: "IPv6 literal", method: "GET", path: "/metrics", host: "[fd00::7]:9090", header: http.Header{"Authorization": {token}}, want: 200},
		{name: "kubelet probe healthz", method: "GET", path: "/healthz", host: "probe.internal:9090", want: 200},
		{name: "readyz under a foreign Host: status only", method: "GET", path: "/readyz", host: "evil.example:" + port, header: http.Header{"Authorization": {token}}, want: 200, wantBody: `"ready"`, notBody: "upstreams"},
		{name: "readyz under a foreign Origin: status only", method: "GET", path: "/readyz", header: http.Header{"Authorization": {token}, "Origin": {"http://evil.example"}}, want: 200, notBody: "upstreams"},
		{name: "readyz to the operator: detail", method: "GET", path: "/readyz", header: http.Header{"Authorization": {token}}, want: 200, wantBody: "upstreams"},
		{name: "text/plain POST", method: "POST", path: "/admin/pins/approve?upstream=up&tool=echo", header: http.Header{"Authorization": {token}, "Content-Type": {"text/plain"}}, want: 403, wantBody: "X-Ctxgate-Admin: 1"},
		{name: "DELETE without the header", method: "DELETE", path: "/admin/cache", header: http.Header{"Authorization": {token}}, want: 403},
		{name: "wrong header value", method: "POST", path: "/admin/cache", header: http.Header{"Authorization": {token}, "X-Ctxgate-Admin": {"yes"}}, want: 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := g.adminRequest(t, tt.method, tt.path, tt.host, tt.header)
			if status != tt.want || !strings.Contains(body, tt.wantBody) || (tt.notBody != "" && strings.Contains(body, tt.notBody)) {
				t.Errorf("%s %s (Host %q): %d %s; want %d with %q, without %q", tt.method, tt.path, tt.host, status, body, tt.want, tt.wantBody, tt.notBody)
			}
		})
	}
}

// TestAdminApproveNeedsIntent: a cross-site POST cannot approve a
// quarantined tool; the operator's call with X-Ctxgate-Admin: 1 can.
func TestAdminApproveNeedsIntent(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pins.json")
	if err := os.WriteFile(file, []byte(`{"tools":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	up := &obsUpstream{}
	v1 := echoV1
	up.tools.Store(&v1)
	g := startObsGatewayWith(t, obsOptions{upstreamConfig: fmt.Sprintf(", pin_tools: {mode: file, file: %q}", file)}, up)
	c := &obsClient{g: g}
	c.initialize(t)
	listedTools(t, c) // the gateway sees echo: new, quarantined
	const approve = "/admin/pins/approve?upstream=up&tool=echo"
	token := "Bearer " + obsAdminToken
	if status, body := g.adminRequest(t, "POST", approve, "", http.Header{"Authorization": {token}, "Content-Type": {"text/plain"}}); status != http.StatusForbidden {
		t.Errorf("text/plain POST approve: %d %s, want 403", status, body)
	}
	if _, body := g.adminGet(t, "/admin/pins", true); !strings.Contains(body, `"status":"new"`) {
		t.Fatalf("after a refused approval: %s; want echo still new", body)
	}
	if status, body := g.adminRequest(t, "POST", approve, "", http.Header{"Authorization": {token}, "X-Ctxgate-Admin": {"1"}}); status != http.StatusOK {
		t.Fatalf("approve with X-Ctxgate-Admin: 1: %d %s", status, body)
	}
	if got := listedTools(t, c); strings.Join(got, ",") != "echo" {
		t.Errorf("after approval: tools %v; want echo", got)
	}
}
