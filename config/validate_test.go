package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

// valid returns a configuration Validate accepts, for cases to break.
func valid() *config.Config {
	c := defaults()
	c.Auth.Anonymous = true
	c.Policy.Dir = "policies"
	c.Upstreams = []config.Upstream{upstream("docs", "http://127.0.0.1:3001/mcp", 1)}
	return &c
}

// TestValidate covers the edges of each rule on configurations built in Go;
// testdata/invalid covers the messages for whole files.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *config.Config)
		want   []string // Problem.Error() of each problem, in order
	}{
		{name: "valid", change: func(c *config.Config) {}},
		{name: "an sse upstream", change: func(c *config.Config) {
			c.Upstreams[0].Transport, c.Upstreams[0].URL = config.TransportSSE, "http://127.0.0.1:3001/sse"
		}},
		{
			name: "an sse upstream's url is checked as any",
			change: func(c *config.Config) {
				c.Upstreams[0].Transport, c.Upstreams[0].URL = config.TransportSSE, "ftp://127.0.0.1:3001/sse"
			},
			want: []string{"upstreams[0].url: scheme must be http or https"},
		},
		{
			name:   "zero value reports every required setting",
			change: func(c *config.Config) { *c = config.Config{} },
			want: []string{
				"server.listen: must be host:port, e.g. 127.0.0.1:8080 (port 0 picks a free port)",
				"server.public_url: required when server.listen is not a loopback address: set the URL clients use, e.g. https://mcp.example.com",
				"server.max_body_bytes: must be positive",
				"server.max_header_bytes: must be positive",
				"server.max_json_values: must be positive",
				"server.max_json_string_bytes: must be positive",
				"server.max_inflight: must be positive",
				"server.max_streams: must be positive",
				"server.read_header_timeout: must be positive",
				"server.read_body_timeout: must be positive",
				"server.idle_timeout: must be positive",
				"server.shutdown_timeout: must be positive",
				"admin.listen: must be host:port, e.g. 127.0.0.1:8080 (port 0 picks a free port)",
				"admin.listen: must differ from server.listen; pick another port", // both are ""
				"sessions.ttl: must be positive, e.g. 24h",
				"auth: no authentication method is configured; add auth.oidc, auth.mtls or auth.api_keys, or set auth.anonymous: true for local development only",
				"auth.api_key_header: must be authorization or x-api-key",
				"log.level: must be one of debug, info, warn, error",
				"policy.dir: is required: the directory of .rego files every request is decided by (see policies/ for the shipped default)",
				"policy.package: must be a Rego package name such as ctxgate.authz",
				"policy.decision_log: must be stdout, stderr, off or a file path",
				"policy.timeout: must be between 1ms and 10s",
				"policy.reload_interval: must be at least 100ms",
				"upstreams: at least one upstream is required, e.g. {name: docs, url: http://127.0.0.1:3001/mcp}",
				"cache.max_mb: must be between 1 and 65536 (megabytes), e.g. 256",
			},
		},
		{
			name:   "a 32-byte session key is long enough",
			change: func(c *config.Config) { c.Sessions.Keys = []string{strings.Repeat("k", config.MinSessionKeyBytes)} },
		},
		{
			name:   "a session key is measured in bytes",
			change: func(c *config.Config) { c.Sessions.Keys = []string{strings.Repeat("é", config.MinSessionKeyBytes/2)} },
		},
		{
			name:   "a 31-byte session key is too short",
			change: func(c *config.Config) { c.Sessions.Keys = []string{strings.Repeat("k", config.MinSessionKeyBytes-1)} },
			want:   []string{"sessions.keys[0]: must be at least 32 bytes; generate one with: openssl rand -base64 32"},
		},
		{
			name:   "a 63-character upstream name is accepted",
			change: func(c *config.Config) { c.Upstreams[0].Name = strings.Repeat("a", 63) },
		},
		{
			name:   "upstream names may use digits, _ and -",
			change: func(c *config.Config) { c.Upstreams[0].Name = "0docs_v2-eu" },
		},
		{
			name:   "an https upstream with query is accepted",
			change: func(c *config.Config) { c.Upstreams[0].URL = "https://docs.example.com/mcp?tenant=acme" },
		},
		{
			name: "api keys alone authenticate",
			change: func(c *config.Config) {
				c.Auth.Anonymous = false
				c.Auth.APIKeys = []config.APIKey{{Name: "ci", SHA256: strings.Repeat("ab", 32)}}
			},
		},
		{
			name:   "x-api-key is an accepted header",
			change: func(c *config.Config) { c.Auth.APIKeyHeader = "x-api-key" },
		},
		{
			name:   "api_key_header is case sensitive",
			change: func(c *config.Config) { c.Auth.APIKeyHeader = "Authorization" },
			want:   []string{"auth.api_key_header: must be authorization or x-api-key"},
		},
		{
			name: "admin and server may both use port 0",
			change: func(c *config.Config) {
				c.Server.Listen, c.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0"
			},
		},
		{
			name: "admin and server may not share a fixed port",
			change: func(c *config.Config) {
				c.Server.Listen, c.Admin.Listen = "127.0.0.1:8080", "127.0.0.1:8080"
			},
			want: []string{"admin.listen: must differ from server.listen; pick another port"},
		},
		{
			name:   "IPv6 listen address",
			change: func(c *config.Config) { c.Server.Listen = "[::1]:8080" },
		},
		{
			name:   "every log level is accepted",
			change: func(c *config.Config) { c.Log.Level = "warn" },
		},
		{
			name:   "public_url with a fragment",
			change: func(c *config.Config) { c.Server.PublicURL = "https://mcp.example.com/#top" },
			want:   []string{"server.public_url: must not have a query or fragment"},
		},
		{
			name: "origins with a port and IPv6 host are accepted",
			change: func(c *config.Config) {
				c.Server.AllowedOrigins = []string{"http://localhost:5173", "https://[::1]:8443"}
				c.Server.AllowedHosts = []string{"[::1]:8443", "mcp.internal"}
			},
		},
		{
			name:   "admin on a loopback name needs no token",
			change: func(c *config.Config) { c.Admin.Listen = "localhost:9090" },
		},
		{
			name:   "admin on IPv6 loopback needs no token",
			change: func(c *config.Config) { c.Admin.Listen = "[::1]:9090" },
		},
		{
			name:   "admin on every interface (empty host) needs a token",
			change: func(c *config.Config) { c.Admin.Listen = ":9090" },
			want:   []string{`admin.token_sha256: required when admin.listen is not a loopback address: set the hex SHA-256 of an admin bearer token (printf %s "$TOKEN" | ctxgate hash-key), or listen on 127.0.0.1`},
		},
		{
			name: "admin beyond loopback with a token",
			change: func(c *config.Config) {
				c.Admin.Listen, c.Admin.TokenSHA256 = "0.0.0.0:9090", strings.Repeat("AB", 32)
			},
		},
		{
			name:   "a token on loopback is checked too",
			change: func(c *config.Config) { c.Admin.TokenSHA256 = strings.Repeat("ab", 31) },
			want:   []string{`admin.token_sha256: must be 64 hex digits; compute it with: printf %s "$TOKEN" | ctxgate hash-key`},
		},
		{
			name:   "a per-principal share above max_concurrent",
			change: func(c *config.Config) { c.Upstreams[0].MaxConcurrent, c.Upstreams[0].MaxConcurrentPerPrincipal = 8, 9 },
			want:   []string{"upstreams[0].max_concurrent_per_principal: must be 1 to max_concurrent (8), e.g. 2; max_concurrent turns the per-principal share off"},
		},
		{
			name:   "a per-principal share of max_concurrent turns it off",
			change: func(c *config.Config) { c.Upstreams[0].MaxConcurrent, c.Upstreams[0].MaxConcurrentPerPrincipal = 8, 8 },
		},
		{
			name: "crl_grace without a crl_file",
			change: func(c *config.Config) {
				c.Server.TLS = &config.TLS{CertFile: "c", KeyFile: "k", ClientAuth: "none", CRLGrace: time.Hour}
			},
			want: []string{"server.tls.crl_grace: needs server.tls.crl_file; remove crl_grace or set the CRL file"},
		},
		{
			name:   "admin.allowed_hosts: names, with or without a port",
			change: func(c *config.Config) { c.Admin.AllowedHosts = []string{"ctxgate-admin.monitoring.svc", "[::1]:9090"} },
		},
		{
			name:   "admin.allowed_hosts: not a URL",
			change: func(c *config.Config) { c.Admin.AllowedHosts = []string{"ok.internal", "http://x/"} },
			want:   []string{"admin.allowed_hosts[1]: must be a host or host:port, e.g. ctxgate-admin.monitoring.svc"},
		},
		{
			name:   "tracing off needs no endpoint",
			change: func(c *config.Config) { c.Tracing.Enabled = false },
		},
		{
			name: "sample ratios 0 and 1 are the bounds",
			change: func(c *config.Config) {
				c.Tracing = config.Tracing{Enabled: true, Endpoint: "https://otel:4318/v1/traces", SampleRatio: ptr(0.0)}
			},
		},
		{
			name: "an http collector is accepted with insecure",
			change: func(c *config.Config) {
				c.Tracing = config.Tracing{Enabled: true, Endpoint: "http://127.0.0.1:4318/v1/traces", Insecure: true, SampleRatio: ptr(1.0)}
			},
		},
		{
			name: "a collector URL with credentials",
			change: func(c *config.Config) {
				c.Tracing = config.Tracing{Enabled: true, Endpoint: "https://user:pw@otel:4318/v1/traces"}
			},
			want: []string{"tracing.endpoint: must not carry credentials"},
		},
		{
			name:   "a collector that is not a URL",
			change: func(c *config.Config) { c.Tracing = config.Tracing{Endpoint: "otel:4318"} },
			want:   []string{"tracing.endpoint: must be an absolute http or https URL, e.g. https://otel-collector:4318/v1/traces"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(c)
			var got []string
			for _, p := range c.Validate() {
				got = append(got, p.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestValidateIsPure checks that Validate changes nothing it is given, so it
// can be called on a configuration that is in use.
func TestValidateIsPure(t *testing.T) {
	c := valid()
	c.Server.Listen = "nonsense"
	c.Sessions.Keys = []string{"", "short"}
	before := *c
	before.Sessions.Keys = append([]string(nil), c.Sessions.Keys...)
	before.Upstreams = append([]config.Upstream(nil), c.Upstreams...)
	if len(c.Validate()) == 0 {
		t.Fatal("Validate found no problem in an invalid config")
	}
	if diff := cmp.Diff(&before, c); diff != "" {
		t.Errorf("Validate changed the config (-before +after):\n%s", diff)
	}
}

func TestWarnings(t *testing.T) {
	tests := []struct {
		name string
		url  string
		want []string
	}{
		{name: "loopback address", url: "http://127.0.0.1:3001/mcp"},
		{name: "localhost", url: "http://localhost:3001/mcp"},
		{name: "ipv6 loopback", url: "http://[::1]:3001/mcp"},
		{name: "https", url: "https://docs.internal/mcp"},
		{name: "plain http elsewhere", url: "http://docs.internal:3001/mcp", want: []string{"upstreams[0].url"}},
		{name: "plain http to a private address", url: "http://10.0.0.7/mcp", want: []string{"upstreams[0].url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &config.Config{Upstreams: []config.Upstream{{Name: "docs", URL: tt.url}}}
			var got []string
			for _, w := range cfg.Warnings() {
				got = append(got, w.Path)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
		})
	}
}
