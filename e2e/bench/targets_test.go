package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/config"
)

// TestCtxgateConfig: the generated configurations are ones ctxgate
// accepts, with the policy, auth and upstream the harness means.
func TestCtxgateConfig(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("k", 44)
	tests := []struct {
		name string
		opts ctxgateOptions
		want func(*config.Config) bool
	}{
		{
			name: "pass-through",
			opts: ctxgateOptions{upstream: "http://127.0.0.1:1234/", policyDir: filepath.Join(root, "e2e", "testdata", "allow-all"), decisionLog: "off", sessionKey: key},
			want: func(c *config.Config) bool {
				return c.Auth.Anonymous && len(c.Auth.OIDC) == 0 && c.Upstreams[0].Cache == nil
			},
		},
		{
			name: "full pipeline",
			opts: ctxgateOptions{upstream: "http://127.0.0.1:1234/", policyDir: filepath.Join(root, "policies"), decisionLog: os.DevNull, issuer: "http://127.0.0.1:5678", sessionKey: key, timeout: 10 * time.Second},
			want: func(c *config.Config) bool {
				return c.Policy.Timeout == 10*time.Second && !c.Auth.Anonymous && len(c.Auth.OIDC) == 1 && c.Auth.OIDC[0].Issuer == "http://127.0.0.1:5678" &&
					c.Auth.OIDC[0].TokenType == "at+jwt" && c.Policy.DecisionLog == os.DevNull
			},
		},
		{
			name: "cached full pipeline",
			opts: ctxgateOptions{upstream: "http://127.0.0.1:1234/", policyDir: filepath.Join(root, "policies"), decisionLog: os.DevNull, issuer: "http://127.0.0.1:5678", sessionKey: key, cached: true},
			want: func(c *config.Config) bool {
				uc := c.Upstreams[0].Cache
				return !c.Auth.Anonymous && uc != nil && uc.TTL["tools/list"] == cacheTTL && uc.TTL["tools/call"] == cacheTTL &&
					uc.TTL["resources/read"] == cacheTTL && slices.Equal(uc.Tools, fixtureTools) && len(uc.TTL) == 3
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(ctxgateConfig(tt.opts)), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatalf("parse: %v\n%s", err, ctxgateConfig(tt.opts))
			}
			if problems := cfg.Validate(); len(problems) > 0 {
				t.Fatalf("invalid: %v", problems)
			}
			if len(cfg.Upstreams) != 1 || cfg.Upstreams[0].URL != tt.opts.upstream || cfg.Policy.Dir != tt.opts.policyDir {
				t.Errorf("upstreams %+v, policy %+v", cfg.Upstreams, cfg.Policy)
			}
			if !tt.want(cfg) {
				t.Errorf("config %+v, upstream %+v is not the %s target's", cfg.Auth, cfg.Upstreams[0], tt.name)
			}
		})
	}
}

// TestNginxConfig checks the SSE-safe settings are there and, when nginx is
// installed, that nginx accepts the file.
func TestNginxConfig(t *testing.T) {
	prefix := t.TempDir()
	conf := nginxConfig(prefix, "127.0.0.1:18080", "127.0.0.1:3001")
	for _, want := range []string{
		"worker_processes 1;", "master_process off;", "listen 127.0.0.1:18080;", "server 127.0.0.1:3001;",
		"keepalive 64;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "proxy_buffering off;",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q", want)
		}
	}
	if !optionalTool(t, "nginx") {
		return
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "-t", "-e", filepath.Join(prefix, "error.log"), "-p", prefix, "-c", path).CombinedOutput(); err != nil {
		t.Errorf("nginx -t: %v\n%s", err, out)
	}
}
