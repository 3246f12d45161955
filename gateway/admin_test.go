package gateway_test

import (
	"encoding/json"
	"net/http"
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
		{path: "/status", without: http.StatusUnauthorized, withToken: http.StatusOK},
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
			// Degraded: the upstream "down" is unreachable (still 200).
			"status": "degraded", "policy_revision": policyStatus["revision"], "upstreams": []any{"up", "down"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := g.adminGet(t, "/readyz", tt.withToken)
			var got map[string]any
			if err := json.Unmarshal([]byte(body), &got); err != nil || status != http.StatusOK {
				t.Fatalf("/readyz: %d %s (%v)", status, body, err)
			}
			if tt.withToken {
				// Probe details (times, addresses) vary: check the verdicts.
				health, _ := got["upstream_health"].(map[string]any)
				down, _ := health["down"].(map[string]any)
				if len(health) != 2 || down["status"] != "degraded" {
					t.Errorf("/readyz upstream_health = %v, want both upstreams, down degraded", got["upstream_health"])
				}
				delete(got, "upstream_health")
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
