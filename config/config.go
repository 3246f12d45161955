// Package config defines ctxgate's YAML configuration: the types, a strict
// loader (unknown keys are errors, ${ENV} references are expanded in values),
// the defaults (applied once, by Load) and a pure Validate that reports every
// problem with its field path and the fix.
//
// Config imports nothing else of ctxgate; every other package reads it.
package config

import (
	"net"
	"strings"
	"time"
)

// Config is the whole gateway configuration. The zero value is not usable:
// obtain one from Load or Parse, which apply the defaults.
type Config struct {
	Server    Server     `yaml:"server"`
	Admin     Admin      `yaml:"admin"`
	Sessions  Sessions   `yaml:"sessions"`
	Auth      Auth       `yaml:"auth"`
	Policy    Policy     `yaml:"policy"`
	Log       Log        `yaml:"log"`
	Tracing   Tracing    `yaml:"tracing"`
	Cache     Cache      `yaml:"cache"`
	Upstreams []Upstream `yaml:"upstreams"`
	// Routes are the federated routes (routes.go); every upstream also has
	// its own route at /mcp/<name>.
	Routes []Route `yaml:"routes"`
	// Grants is the store of users' connected accounts (user_oauth).
	Grants *Grants `yaml:"grants" json:",omitempty"`
	// Redis is the state replicas share (redis.go); nil keeps it in memory.
	Redis *Redis `yaml:"redis" json:",omitempty"`
}

// Server is the public MCP listener.
type Server struct {
	// Listen is the host:port the MCP routes are served on.
	Listen string `yaml:"listen"`
	// PublicURL is the gateway's canonical URL as clients reach it. Its host
	// is always an accepted Host header and its origin an accepted Origin.
	PublicURL string `yaml:"public_url"`
	// AllowedOrigins lists further browser origins (scheme://host[:port])
	// that may call the gateway. A request with any other Origin is 403.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// AllowedHosts lists further Host header values (host or host:port) that
	// are accepted, for gateways reached under several names.
	AllowedHosts []string `yaml:"allowed_hosts"`
	// MaxBodyBytes bounds a POST body; larger bodies are answered 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxJSONValues bounds the JSON values of one request body: every
	// scalar, object, array and member name counts one. It is the decode
	// budget: each value costs the gateway (policy input, decision log) a
	// hundred-odd bytes however few bytes it takes on the wire ("1,"), so a
	// body over it is refused (413) before anything is decoded beyond the
	// check.
	MaxJSONValues int `yaml:"max_json_values"`
	// MaxJSONStringBytes bounds one string, number or member name of a
	// request body, as sent (with its quotes and escapes); longer ones are
	// refused (413).
	MaxJSONStringBytes int `yaml:"max_json_string_bytes"`
	// MaxInflight is the admission limit: how many requests the gateway
	// itself may be working on at once (reading, authenticating, deciding,
	// filtering an answer); a request while the upstream has it is not
	// counted (that is upstreams[].max_concurrent), nor an open stream
	// (MaxStreams). One more is refused at once, before its body is read,
	// with 503, Retry-After and -31018, so an overloaded gateway sheds load
	// instead of queueing it until the policy's budget runs out.
	MaxInflight int `yaml:"max_inflight"`
	// MaxStreams bounds the long-lived streams relayed at once (GET
	// streams and subscriptions/listen); one more is refused with 503,
	// Retry-After and -31018 before anything is sent upstream.
	MaxStreams int `yaml:"max_streams"`
	// ReadHeaderTimeout bounds how long a client may take to send headers.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// ReadBodyTimeout bounds how long a client may take to send a request
	// body once its headers are in (slow-body attacks); the clock stops when
	// the body has been read, so responses (event streams) are not bound.
	ReadBodyTimeout time.Duration `yaml:"read_body_timeout"`
	// IdleTimeout closes keep-alive connections idle for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// ShutdownTimeout is the drain deadline: on SIGTERM in-flight requests
	// get this long to finish before the process exits regardless.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// TLS, when set, serves the MCP routes over TLS (and enables mTLS).
	TLS *TLS `yaml:"tls"`
}

// Admin is the operator listener: health, readiness, metrics, status.
type Admin struct {
	// Listen is the admin host:port. Beyond loopback it requires
	// TokenSHA256: metrics and status describe the whole deployment.
	Listen string `yaml:"listen"`
	// TokenSHA256 is the hex SHA-256 of the bearer token the admin
	// endpoints require (all but /healthz, and /readyz's detail). Empty
	// means no token, which Validate allows on loopback only.
	TokenSHA256 string `yaml:"token_sha256"`
	// PProf serves Go's profiler at /debug/pprof/ on the admin listener.
	PProf bool `yaml:"pprof"`
	// AllowedHosts lists further Host header values (host or host:port)
	// the admin endpoints answer, e.g. the service name Prometheus scrapes
	// (ctxgate-admin.monitoring.svc). Always accepted: IP literals, the
	// admin.listen host, and localhost when listening on loopback. Any
	// other name is refused (403) as a DNS-rebinding attempt, except on
	// /healthz and /readyz, which answer every probe.
	AllowedHosts []string `yaml:"allowed_hosts"`
}

// Sessions configures the sealed, stateless session ids the gateway mints.
type Sessions struct {
	// Keys are secrets from which session keys are derived. The first seals
	// new sessions; every key opens. Empty entries are ignored, so an
	// optional old key can be written as "${CTXGATE_SESSION_KEY_OLD:-}".
	// With no key at all the gateway uses a random key and warns: sessions
	// then do not survive a restart and are not shared between replicas.
	Keys []string `yaml:"keys"`
	// TTL is how long a session id stays valid after initialize.
	TTL time.Duration `yaml:"ttl"`
}

// Auth configures how tools authenticate to the gateway.
type Auth struct {
	// Anonymous lets requests without any credential in as the anonymous
	// principal. For local development and conformance runs only. A request
	// that presents a credential is still checked, never downgraded.
	Anonymous bool `yaml:"anonymous"`
	// APIKeyHeader is where API keys are read from: "authorization"
	// (Authorization: Bearer <key>) or "x-api-key".
	APIKeyHeader string `yaml:"api_key_header"`
	// APIKeys are the accepted keys, stored as SHA-256 hashes.
	APIKeys []APIKey `yaml:"api_keys"`
	// OIDC lists the token issuers whose JWT access tokens are accepted.
	OIDC []OIDCIssuer `yaml:"oidc"`
	// MTLS maps verified client certificates to principals; it needs
	// server.tls with a client_ca_file.
	MTLS *MTLS `yaml:"mtls"`
}

// APIKey is one named API key. The name becomes the principal id.
type APIKey struct {
	Name string `yaml:"name"`
	// SHA256 is the hex SHA-256 of the key, as `ctxgate hash-key` prints it.
	SHA256 string `yaml:"sha256"`
	// Groups are the key's groups (input.principal.groups), as a token's
	// groups claim would give them: a machine or a test user can be put
	// in a policy's group without an IdP. Nil: none.
	Groups []string `yaml:"groups"`
	// Attributes are further facts about the key's holder for the policy
	// (input.principal.attributes), e.g. {team: payments}. Nil: none.
	Attributes map[string]string `yaml:"attributes"`
}

// Log configures the structured (JSON) logs on stderr.
type Log struct {
	// Level is one of debug, info, warn, error.
	Level string `yaml:"level"`
}

// Upstream is one MCP server behind the gateway, served at /mcp/<name>.
type Upstream struct {
	// Name identifies the upstream in routes, logs and sessions.
	Name string `yaml:"name"`
	// URL is the upstream's Streamable HTTP endpoint (transport
	// streamable-http) or its SSE endpoint (transport sse).
	URL string `yaml:"url"`
	// Transport is how the gateway reaches the upstream: streamable-http
	// (the default), sse or stdio (transport.go).
	Transport string `yaml:"transport"`
	// The process a stdio upstream runs (stdio.go), one per client
	// session; these keys are refused on every other transport.
	// Command is the program and its arguments, run without a shell;
	// Command[0] is an absolute path or a name found on PATH.
	Command []string `yaml:"command" json:",omitempty"`
	// Env is the whole environment of the process: the gateway's own
	// (its secrets) is never passed on. Nil: an empty environment.
	Env map[string]string `yaml:"env" json:",omitempty"`
	// Dir is the process's working directory; "" is the gateway's.
	Dir string `yaml:"dir" json:",omitempty"`
	// Limits are the process's resource limits (setrlimit), with safe
	// defaults.
	Limits *StdioLimits `yaml:"limits" json:",omitempty"`
	// MaxProcesses bounds the processes running at once (one per client
	// session); one session more is refused with 503.
	MaxProcesses int `yaml:"max_processes" json:",omitempty"`
	// IdleTimeout ends a process no request has used for this long.
	IdleTimeout time.Duration `yaml:"idle_timeout" json:",omitempty"`
	// StopGrace is how long a process has after SIGTERM (DELETE, idle,
	// shutdown) before its group is killed.
	StopGrace time.Duration `yaml:"stop_grace" json:",omitempty"`
	// User and Group are the account the process runs as (names or
	// numeric ids), its supplementary groups cleared; "" is the
	// gateway's. A user without a group runs with its primary group.
	User  string `yaml:"user" json:",omitempty"`
	Group string `yaml:"group" json:",omitempty"`
	// MaxIdleConns bounds the idle keep-alive connections kept to this
	// upstream (Go's default of 2 per host starves a proxy).
	MaxIdleConns int `yaml:"max_idle_conns"`
	// RequiredScopes must all be granted to a bearer token for its holder to
	// use this route; a token lacking one gets 403 insufficient_scope.
	RequiredScopes []string `yaml:"required_scopes"`
	// Credentials is how the gateway authenticates itself to the upstream.
	// The client's own credentials are never forwarded.
	Credentials *Credentials `yaml:"credentials"`
	// TLS is how an https upstream is verified and the client certificate
	// the gateway presents to it; nil: system roots, no client certificate.
	TLS *UpstreamTLS `yaml:"tls" json:",omitempty"`
	// IdentityHeaders, when true, tells the upstream who the verified
	// principal is (X-Ctxgate-Principal, X-Ctxgate-Principal-Kind); any
	// such header a client sends is always dropped.
	IdentityHeaders bool `yaml:"identity_headers"`
	// Cache says which of this upstream's results the gateway caches and
	// for how long; nil caches nothing.
	Cache *UpstreamCache `yaml:"cache"`

	// Timeout bounds one attempt, from sending to the answer's headers (a
	// JSON answer is complete then; an SSE answer is bounded by Streams).
	Timeout time.Duration `yaml:"timeout"`
	// Deadline bounds all attempts of one request together, retries and
	// backoff included.
	Deadline time.Duration `yaml:"deadline"`
	// Retry is when and how failed attempts are repeated.
	Retry Retry `yaml:"retry"`
	// CircuitBreaker stops sending to an upstream that keeps failing.
	CircuitBreaker CircuitBreaker `yaml:"circuit_breaker"`
	// MaxConcurrent bounds the requests in flight to this upstream; one
	// more is answered 503 at once (no queue).
	MaxConcurrent int `yaml:"max_concurrent"`
	// MaxConcurrentPerPrincipal bounds the requests one principal has in
	// flight to this upstream, so one caller inside its rate limit cannot
	// fill the whole bulkhead; one more is answered like a full bulkhead.
	// Zero means a quarter of MaxConcurrent (at least 1); MaxConcurrent
	// turns the share off.
	MaxConcurrentPerPrincipal int `yaml:"max_concurrent_per_principal"`
	// IdempotentTools are tools whose calls may be retried like reads.
	IdempotentTools []string `yaml:"idempotent_tools"`
	// RateLimit bounds requests per principal and per tool.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Idempotency is the replay window of tools/call idempotency keys.
	Idempotency Idempotency `yaml:"idempotency"`
	// Streams bounds relayed SSE streams.
	Streams Streams `yaml:"streams"`
	// Bridge, when true, serves modern-era (2026-07-28) clients over a
	// legacy session the gateway keeps per principal, when the upstream
	// speaks only the legacy era. False: such clients are told the route
	// is legacy only (-32022) and fall back to initialize.
	Bridge bool `yaml:"bridge"`
	// PinTools, when set, pins this upstream's tool definitions and
	// quarantines changed ones. Nil: no pinning.
	PinTools *PinTools `yaml:"pin_tools"`
	// ValidateArguments, when true, checks tools/call arguments against the
	// tool's inputSchema (from the upstream's tools/list) before forwarding;
	// invalid ones are answered -32602 and never sent.
	ValidateArguments bool `yaml:"validate_arguments"`
}

// Defaults. Exported so documentation and tests can refer to them.
const (
	DefaultListen         = "127.0.0.1:8080"
	DefaultAdminListen    = "127.0.0.1:9090"
	DefaultMaxBodyBytes   = 4 << 20
	DefaultMaxHeaderBytes = 64 << 10
	DefaultMaxJSONValues  = 100_000
	DefaultMaxJSONString  = DefaultMaxBodyBytes // a string costs a few times its size, not a hundred
	// DefaultMaxInflight keeps the gateway's CPU queue short: at a
	// millisecond of CPU per request on 2 cores, 256 waiting requests
	// are about 128 ms of work, near the policy's 100 ms budget.
	DefaultMaxInflight = 256
	// DefaultMaxStreams: at the 64 KiB an open stream costs, 4,096 are
	// 256 MiB.
	DefaultMaxStreams        = 4096
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadBodyTimeout   = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultShutdownTimeout   = 15 * time.Second
	DefaultSessionTTL        = 24 * time.Hour
	DefaultAPIKeyHeader      = "authorization"
	DefaultLogLevel          = "info"
	DefaultMaxIdleConns      = 256
)

// applyDefaults fills every unset field. Load calls it exactly once.
func (c *Config) applyDefaults() {
	s := &c.Server
	setDefault(&s.Listen, DefaultListen)
	// Only a loopback listener has an obvious public URL; elsewhere the
	// operator must say how clients reach the gateway (Validate asks).
	if host, _, err := net.SplitHostPort(s.Listen); err == nil && isLoopback(host) {
		setDefault(&s.PublicURL, DefaultPublicURL(s.Listen, s.TLS != nil))
	}
	setDefault(&s.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&s.MaxHeaderBytes, DefaultMaxHeaderBytes)
	setDefault(&s.MaxJSONValues, DefaultMaxJSONValues)
	setDefault(&s.MaxJSONStringBytes, DefaultMaxJSONString)
	setDefault(&s.MaxInflight, DefaultMaxInflight)
	setDefault(&s.MaxStreams, DefaultMaxStreams)
	setDefault(&s.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&s.ReadBodyTimeout, DefaultReadBodyTimeout)
	setDefault(&s.IdleTimeout, DefaultIdleTimeout)
	setDefault(&s.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&c.Admin.Listen, DefaultAdminListen)
	setDefault(&c.Sessions.TTL, DefaultSessionTTL)
	setDefault(&c.Auth.APIKeyHeader, DefaultAPIKeyHeader)
	c.Auth.applyDefaults(s.PublicURL)
	if s.TLS != nil {
		setDefault(&s.TLS.ClientAuth, "none")
		if s.TLS.CRLFile != "" {
			setDefault(&s.TLS.CRLGrace, DefaultCRLGrace)
		}
	}
	setDefault(&c.Log.Level, DefaultLogLevel)
	c.Policy.applyDefaults()
	c.Tracing.applyDefaults()
	c.applyCacheDefaults()
	c.applyRouteDefaults()
	c.Redis.applyDefaults()
	for i := range c.Upstreams {
		setDefault(&c.Upstreams[i].Transport, TransportStreamableHTTP)
		c.Upstreams[i].applyStdioDefaults()
		setDefault(&c.Upstreams[i].MaxIdleConns, DefaultMaxIdleConns)
		c.Upstreams[i].applyResilienceDefaults()
		c.Upstreams[i].Credentials.applyDefaults(s.PublicURL)
	}
	keys := c.Sessions.Keys[:0]
	for _, k := range c.Sessions.Keys {
		if k != "" {
			keys = append(keys, k)
		}
	}
	c.Sessions.Keys = keys
	if c.Grants != nil {
		keys := c.Grants.Keys[:0]
		for _, k := range c.Grants.Keys {
			if k != "" {
				keys = append(keys, k)
			}
		}
		c.Grants.Keys = keys
	}
}

func setDefault[T comparable](field *T, value T) {
	var zero T
	if *field == zero {
		*field = value
	}
}

// isLoopback reports whether a listen host is a loopback name or address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultPublicURL is the public URL a loopback listener gets when none is
// configured. With port 0 the real port is only known once the listener is
// bound; whoever binds it re-derives the URL from the bound address.
func DefaultPublicURL(listen string, tls bool) string {
	if tls {
		return "https://" + listen
	}
	return "http://" + listen
}

// Bound records the address the public listener was bound to. When the
// public URL was defaulted for port 0, it, and every OIDC audience that was
// defaulted from it, now name the port actually bound. Call it once,
// before the configuration is used.
func (c *Config) Bound(addr string) {
	tls := c.Server.TLS != nil
	_, port, err := net.SplitHostPort(c.Server.Listen)
	if err != nil || port != "0" || c.Server.PublicURL != DefaultPublicURL(c.Server.Listen, tls) {
		return
	}
	old := c.Server.PublicURL
	c.Server.PublicURL = DefaultPublicURL(addr, tls)
	for _, up := range c.Upstreams {
		if uo := up.Credentials; uo != nil && uo.UserOAuth != nil && uo.UserOAuth.RedirectURL == old+"/oauth/callback" {
			uo.UserOAuth.RedirectURL = c.Server.PublicURL + "/oauth/callback"
		}
	}
	for i := range c.Auth.OIDC {
		for j, a := range c.Auth.OIDC[i].Audiences {
			if a == old {
				c.Auth.OIDC[i].Audiences[j] = c.Server.PublicURL
			}
		}
	}
}
