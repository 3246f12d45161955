package config_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ctxgate/ctxgate/config"
)

// defaults is the configuration an empty file yields, spelled out from the
// documented defaults rather than computed by the code under test.
func defaults() config.Config {
	return config.Config{
		Server: config.Server{
			Listen:             config.DefaultListen,
			PublicURL:          "http://" + config.DefaultListen,
			MaxBodyBytes:       config.DefaultMaxBodyBytes,
			MaxHeaderBytes:     config.DefaultMaxHeaderBytes,
			MaxJSONValues:      config.DefaultMaxJSONValues,
			MaxJSONStringBytes: config.DefaultMaxJSONString,
			MaxInflight:        config.DefaultMaxInflight,
			MaxStreams:         config.DefaultMaxStreams,
			ReadHeaderTimeout:  config.DefaultReadHeaderTimeout,
			ReadBodyTimeout:    config.DefaultReadBodyTimeout,
			IdleTimeout:        config.DefaultIdleTimeout,
			ShutdownTimeout:    config.DefaultShutdownTimeout,
		},
		Admin:    config.Admin{Listen: config.DefaultAdminListen},
		Sessions: config.Sessions{TTL: config.DefaultSessionTTL},
		Auth:     config.Auth{APIKeyHeader: config.DefaultAPIKeyHeader},
		Policy: config.Policy{
			Package:        config.DefaultPolicyPackage,
			DecisionLog:    config.DefaultDecisionLog,
			Timeout:        config.DefaultPolicyTimeout,
			ReloadInterval: config.DefaultReloadInterval,
		},
		Log:     config.Log{Level: config.DefaultLogLevel},
		Tracing: config.Tracing{SampleRatio: ptr(config.DefaultSampleRatio)},
		Cache:   config.Cache{MaxMB: config.DefaultCacheMaxMB},
	}
}

func ptr[T any](v T) *T { return &v }

// upstream is an upstream as Parse leaves it: the given fields plus the
// documented resilience defaults, spelled out.
func upstream(name, url string, maxIdleConns int) config.Upstream {
	return config.Upstream{
		Name: name, URL: url, Transport: config.TransportStreamableHTTP, MaxIdleConns: maxIdleConns,
		Timeout:  config.DefaultUpstreamTimeout,
		Deadline: config.DefaultUpstreamDeadline,
		Retry: config.Retry{
			MaxAttempts: config.DefaultRetryMaxAttempts, Backoff: config.DefaultRetryBackoff, MaxBackoff: config.DefaultRetryMaxBackoff,
			BudgetPercent: config.DefaultRetryBudgetPercent, BudgetMin: config.DefaultRetryBudgetMin,
		},
		CircuitBreaker: config.CircuitBreaker{
			FailureThreshold: config.DefaultBreakerThreshold, FailureWindow: config.DefaultBreakerWindow,
			Delay: config.DefaultBreakerDelay, SuccessThreshold: config.DefaultBreakerSuccesses,
		},
		MaxConcurrent: config.DefaultMaxConcurrent, MaxConcurrentPerPrincipal: config.DefaultMaxConcurrent / config.DefaultPrincipalShareDivisor,
		Idempotency: config.Idempotency{Window: config.DefaultIdempotencyWindow, MaxKeys: config.DefaultIdempotencyMaxKeys},
		Streams: config.Streams{
			IdleTimeout: config.DefaultStreamIdleTimeout, MaxDuration: config.DefaultStreamMaxDuration, Keepalive: config.DefaultStreamKeepalive,
		},
	}
}

func TestParseDefaults(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want func(c *config.Config) // changes from defaults()
	}{
		{
			name: "empty file gets every default",
			yaml: "",
			want: func(c *config.Config) {},
		},
		{
			name: "comment-only file gets every default",
			yaml: "# nothing here\n",
			want: func(c *config.Config) {},
		},
		{
			name: "explicit values are kept",
			yaml: `
server:
  listen: "0.0.0.0:8443"
  public_url: "https://mcp.example.com"
  max_body_bytes: 1024
  max_header_bytes: 2048
  read_header_timeout: 1s
  read_body_timeout: 4s
  idle_timeout: 2s
  shutdown_timeout: 3s
  max_json_values: 500
  max_json_string_bytes: 64
  max_inflight: 9
  max_streams: 11
admin: {listen: "127.0.0.1:9191"}
sessions: {ttl: 1h}
auth: {api_key_header: x-api-key}
log: {level: error}
upstreams: [{name: docs, url: "http://127.0.0.1:3001/mcp", max_idle_conns: 7}]
`,
			want: func(c *config.Config) {
				c.Server = config.Server{
					Listen:             "0.0.0.0:8443",
					PublicURL:          "https://mcp.example.com",
					MaxBodyBytes:       1024,
					MaxHeaderBytes:     2048,
					MaxJSONValues:      500,
					MaxJSONStringBytes: 64,
					MaxInflight:        9,
					MaxStreams:         11,
					ReadHeaderTimeout:  time.Second,
					ReadBodyTimeout:    4 * time.Second,
					IdleTimeout:        2 * time.Second,
					ShutdownTimeout:    3 * time.Second,
				}
				c.Admin.Listen = "127.0.0.1:9191"
				c.Sessions.TTL = time.Hour
				c.Auth.APIKeyHeader = "x-api-key"
				c.Log.Level = "error"
				c.Upstreams = []config.Upstream{upstream("docs", "http://127.0.0.1:3001/mcp", 7)}
			},
		},
		{
			name: "explicit zero values get the default",
			yaml: `
server: {max_body_bytes: 0, max_header_bytes: 0, read_header_timeout: 0s, idle_timeout: 0s, shutdown_timeout: 0s}
sessions: {ttl: 0s}
auth: {api_key_header: ""}
log: {level: ""}
upstreams: [{name: docs, url: "http://127.0.0.1:3001/mcp", max_idle_conns: 0}]
`,
			want: func(c *config.Config) {
				c.Upstreams = []config.Upstream{upstream("docs", "http://127.0.0.1:3001/mcp", config.DefaultMaxIdleConns)}
			},
		},
		{
			name: "public_url defaults to the configured listen address, not the default one",
			yaml: `server: {listen: "127.0.0.1:0"}`,
			want: func(c *config.Config) {
				c.Server.Listen = "127.0.0.1:0"
				c.Server.PublicURL = "http://127.0.0.1:0"
			},
		},
		{
			name: "every upstream gets its own max_idle_conns default",
			yaml: `
upstreams:
  - {name: a, url: "http://127.0.0.1:1/mcp"}
  - {name: b, url: "http://127.0.0.1:2/mcp", max_idle_conns: 3}
  - {name: c, url: "http://127.0.0.1:3/mcp"}
`,
			want: func(c *config.Config) {
				c.Upstreams = []config.Upstream{
					upstream("a", "http://127.0.0.1:1/mcp", config.DefaultMaxIdleConns),
					upstream("b", "http://127.0.0.1:2/mcp", 3),
					upstream("c", "http://127.0.0.1:3/mcp", config.DefaultMaxIdleConns),
				}
			},
		},
		{
			name: "an upstream cache block gets max_ttl; no block caches nothing",
			yaml: `
upstreams:
  - {name: a, url: "http://127.0.0.1:1/mcp", cache: {ttl: {tools/list: 5m}}}
  - {name: b, url: "http://127.0.0.1:2/mcp"}
`,
			want: func(c *config.Config) {
				a := upstream("a", "http://127.0.0.1:1/mcp", config.DefaultMaxIdleConns)
				a.Cache = &config.UpstreamCache{TTL: map[string]time.Duration{"tools/list": 5 * time.Minute}, MaxTTL: config.DefaultCacheMaxTTL}
				c.Upstreams = []config.Upstream{a, upstream("b", "http://127.0.0.1:2/mcp", config.DefaultMaxIdleConns)}
			},
		},
		{
			name: "empty session keys are dropped, order kept",
			yaml: `
sessions:
  keys: ["", "first-key-0123456789abcdefghijklmnop", "", "second-key-0123456789abcdefghijklmno", ""]
`,
			want: func(c *config.Config) {
				c.Sessions.Keys = []string{"first-key-0123456789abcdefghijklmnop", "second-key-0123456789abcdefghijklmno"}
			},
		},
		{
			name: "an optional old key that is unset is dropped",
			yaml: `
sessions:
  keys:
    - "${CTXGATE_TEST_SESSION_KEY}"
    - "${CTXGATE_TEST_UNSET_OLD_KEY:-}"
`,
			want: func(c *config.Config) {
				c.Sessions.Keys = []string{testEnv["CTXGATE_TEST_SESSION_KEY"]}
			},
		},
		{
			name: "only empty session keys leave none",
			yaml: `sessions: {keys: ["", ""]}`,
			want: func(c *config.Config) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := config.Parse([]byte(tt.yaml), lookup(testEnv))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := defaults()
			tt.want(&want)
			// Nil and empty slices are the same configuration.
			if diff := cmp.Diff(&want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBound(t *testing.T) {
	tests := []struct {
		name, yaml, addr      string
		wantURL, wantAudience string
	}{
		{
			name:    "port 0 with defaulted URL takes the bound port",
			yaml:    "server: {listen: \"127.0.0.1:0\"}\nauth: {oidc: [{issuer: \"http://127.0.0.1:9000\"}]}\nupstreams: [{name: a, url: \"http://127.0.0.1:1/\"}]\n",
			addr:    "127.0.0.1:43210",
			wantURL: "http://127.0.0.1:43210", wantAudience: "http://127.0.0.1:43210",
		},
		{
			name:    "TLS makes it https",
			yaml:    "server: {listen: \"127.0.0.1:0\", tls: {cert_file: c, key_file: k}}\nauth: {anonymous: true}\nupstreams: [{name: a, url: \"http://127.0.0.1:1/\"}]\n",
			addr:    "127.0.0.1:443",
			wantURL: "https://127.0.0.1:443",
		},
		{
			name:    "an explicit public URL is kept",
			yaml:    "server: {listen: \"127.0.0.1:0\", public_url: \"https://mcp.example.com\"}\nauth: {oidc: [{issuer: \"http://127.0.0.1:9000\"}]}\nupstreams: [{name: a, url: \"http://127.0.0.1:1/\"}]\n",
			addr:    "127.0.0.1:43210",
			wantURL: "https://mcp.example.com", wantAudience: "https://mcp.example.com",
		},
		{
			name:    "a fixed port is kept",
			yaml:    "server: {listen: \"127.0.0.1:8080\"}\nauth: {anonymous: true}\nupstreams: [{name: a, url: \"http://127.0.0.1:1/\"}]\n",
			addr:    "127.0.0.1:8080",
			wantURL: "http://127.0.0.1:8080",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.yaml), func(string) (string, bool) { return "", false })
			if err != nil {
				t.Fatal(err)
			}
			cfg.Bound(tt.addr)
			if cfg.Server.PublicURL != tt.wantURL {
				t.Errorf("public_url = %q, want %q", cfg.Server.PublicURL, tt.wantURL)
			}
			if tt.wantAudience != "" && cfg.Auth.OIDC[0].Audiences[0] != tt.wantAudience {
				t.Errorf("audiences = %q, want [%q]", cfg.Auth.OIDC[0].Audiences, tt.wantAudience)
			}
		})
	}
}

// TestBoundRedirectURL: a defaulted user_oauth redirect_url follows the
// bound port; an explicit one is kept.
func TestBoundRedirectURL(t *testing.T) {
	cfg, err := config.Parse([]byte(`server: {listen: "127.0.0.1:0"}
auth: {oidc: [{issuer: "http://127.0.0.1:9000"}]}
upstreams:
  - {name: a, url: "https://a.example/mcp", credentials: {user_oauth: {authorization_endpoint: "https://p/auth", token_endpoint: "https://p/token", client_id: c, client_secret: s}}}
  - {name: b, url: "https://b.example/mcp", credentials: {user_oauth: {authorization_endpoint: "https://p/auth", token_endpoint: "https://p/token", client_id: c, client_secret: s, redirect_url: "https://mcp.example.com/oauth/callback"}}}
`), lookup(nil))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Bound("127.0.0.1:43210")
	got := []string{cfg.Upstreams[0].Credentials.UserOAuth.RedirectURL, cfg.Upstreams[1].Credentials.UserOAuth.RedirectURL}
	want := []string{"http://127.0.0.1:43210/oauth/callback", "https://mcp.example.com/oauth/callback"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("redirect URLs (-want +got):\n%s", diff)
	}
}
