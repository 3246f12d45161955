package config

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Resilience defaults, per upstream. Exported so documentation and tests can
// refer to them.
const (
	DefaultUpstreamTimeout    = 30 * time.Second
	DefaultUpstreamDeadline   = 60 * time.Second
	DefaultRetryMaxAttempts   = 3
	DefaultRetryBackoff       = 100 * time.Millisecond
	DefaultRetryMaxBackoff    = 2 * time.Second
	DefaultRetryBudgetPercent = 20 // Envoy's retry budget: 20% of active requests
	DefaultRetryBudgetMin     = 3  // ... but always at least 3 concurrent retries
	DefaultBreakerThreshold   = 5
	DefaultBreakerWindow      = 30 * time.Second
	DefaultBreakerDelay       = 30 * time.Second
	DefaultBreakerSuccesses   = 2
	DefaultMaxConcurrent      = 100
	// DefaultPrincipalShareDivisor: by default one principal may hold a
	// quarter of max_concurrent (rounded up), so it takes at least four
	// principals to fill the bulkhead.
	DefaultPrincipalShareDivisor = 4
	DefaultIdempotencyWindow     = 10 * time.Minute
	DefaultIdempotencyMaxKeys    = 10000
	DefaultStreamIdleTimeout     = 5 * time.Minute
	DefaultStreamMaxDuration     = time.Hour
	DefaultStreamKeepalive       = 25 * time.Second
	maxRetryAttempts             = 10
	maxIdempotencyKeysPerRoute   = 1_000_000
)

// Retry configures how failed upstream attempts are repeated. Only requests
// that are safe to repeat are retried (lists, reads, gets, discover, ping,
// GET streams, tools the operator marks idempotent); any other request only
// when it provably never reached the upstream.
type Retry struct {
	// MaxAttempts is the total number of attempts, the first included; 1
	// turns retries off. Zero means DefaultRetryMaxAttempts.
	MaxAttempts int `yaml:"max_attempts"`
	// Backoff is the first delay before a retry; it doubles per retry
	// (with jitter) up to MaxBackoff.
	Backoff time.Duration `yaml:"backoff"`
	// MaxBackoff caps the delay between attempts.
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// BudgetPercent caps concurrent retries at this share of the requests
	// in flight to the upstream, so retries cannot multiply an overload.
	BudgetPercent int `yaml:"budget_percent"`
	// BudgetMin is the number of concurrent retries always allowed,
	// whatever the share.
	BudgetMin int `yaml:"budget_min"`
}

// CircuitBreaker configures the breaker that stops sending to a failing
// upstream. It counts transport errors, timeouts and 5xx answers (and 429
// with Count429), never JSON-RPC errors, client errors, policy denials or a
// client that went away.
type CircuitBreaker struct {
	// FailureThreshold failures within FailureWindow open the breaker
	// (and at least as many attempts in the window), or, with
	// FailureExecutions, among the last FailureExecutions attempts.
	FailureThreshold int `yaml:"failure_threshold"`
	// FailureWindow is the period failures are counted over. It defaults
	// only when FailureExecutions is not set.
	FailureWindow time.Duration `yaml:"failure_window"`
	// FailureExecutions, instead of a time window, counts failures among
	// this many most recent attempts.
	FailureExecutions int `yaml:"failure_executions"`
	// Delay is how long the breaker stays open before it lets probes
	// through (half-open).
	Delay time.Duration `yaml:"delay"`
	// SuccessThreshold successful probes close a half-open breaker; one
	// failed probe opens it again.
	SuccessThreshold int `yaml:"success_threshold"`
	// Count429 counts the upstream's 429 Too Many Requests as a failure.
	Count429 bool `yaml:"count_429"`
}

// RateLimit configures token buckets for one upstream, keyed by the
// verified principal id (never the session, which a client can renew).
type RateLimit struct {
	// PerPrincipal bounds every request of one principal to this
	// upstream; nil means no bound.
	PerPrincipal *Rate `yaml:"per_principal"`
	// PerTool bounds tools/call of the named tool, per principal.
	PerTool map[string]Rate `yaml:"per_tool"`
}

// Rate is a token bucket: RPS tokens per second, at most Burst at once.
type Rate struct {
	RPS   float64 `yaml:"rps"`
	Burst int     `yaml:"burst"`
}

// Idempotency configures the replay of tools/call that carry an
// idempotency key. The store is in memory, per replica, unless redis is
// configured: then it is on Redis, shared, and MaxKeys does not apply.
type Idempotency struct {
	// Window is how long a key is remembered after its call finished.
	Window time.Duration `yaml:"window"`
	// MaxKeys bounds the keys remembered for this upstream; the oldest
	// finished key is forgotten first.
	MaxKeys int `yaml:"max_keys"`
}

// Streams bounds the SSE streams relayed from this upstream. There is no
// write timeout: a long stream is bounded by these instead.
type Streams struct {
	// IdleTimeout ends a stream when the upstream sends nothing for this
	// long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxDuration ends any stream after this long; clients resume with
	// Last-Event-ID.
	MaxDuration time.Duration `yaml:"max_duration"`
	// Keepalive is the interval of SSE comments sent on an idle GET
	// stream, so proxies in between do not close it.
	Keepalive time.Duration `yaml:"keepalive"`
}

func (u *Upstream) applyResilienceDefaults() {
	setDefault(&u.Timeout, DefaultUpstreamTimeout)
	setDefault(&u.Deadline, max(DefaultUpstreamDeadline, u.Timeout))
	setDefault(&u.Retry.MaxAttempts, DefaultRetryMaxAttempts)
	setDefault(&u.Retry.Backoff, DefaultRetryBackoff)
	setDefault(&u.Retry.MaxBackoff, max(DefaultRetryMaxBackoff, u.Retry.Backoff))
	setDefault(&u.Retry.BudgetPercent, DefaultRetryBudgetPercent)
	setDefault(&u.Retry.BudgetMin, DefaultRetryBudgetMin)
	cb := &u.CircuitBreaker
	setDefault(&cb.FailureThreshold, DefaultBreakerThreshold)
	if cb.FailureExecutions == 0 {
		setDefault(&cb.FailureWindow, DefaultBreakerWindow)
	}
	setDefault(&cb.Delay, DefaultBreakerDelay)
	setDefault(&cb.SuccessThreshold, DefaultBreakerSuccesses)
	setDefault(&u.MaxConcurrent, DefaultMaxConcurrent)
	setDefault(&u.MaxConcurrentPerPrincipal, max(1, (u.MaxConcurrent+DefaultPrincipalShareDivisor-1)/DefaultPrincipalShareDivisor))
	setDefault(&u.Idempotency.Window, DefaultIdempotencyWindow)
	setDefault(&u.Idempotency.MaxKeys, DefaultIdempotencyMaxKeys)
	setDefault(&u.Streams.IdleTimeout, DefaultStreamIdleTimeout)
	setDefault(&u.Streams.MaxDuration, DefaultStreamMaxDuration)
	setDefault(&u.Streams.Keepalive, DefaultStreamKeepalive)
}

// positive is one setting that must be above zero, with an example value.
type positive struct {
	path    string
	ok      bool
	example string
}

func (v *validator) resilience(path string, up *Upstream) {
	checks := []positive{
		{".timeout", up.Timeout > 0, "30s"},
		{".deadline", up.Deadline > 0, "60s"},
		{".retry.backoff", up.Retry.Backoff > 0, "100ms"},
		{".retry.max_backoff", up.Retry.MaxBackoff > 0, "2s"},
		{".circuit_breaker.failure_threshold", up.CircuitBreaker.FailureThreshold > 0, "5"},
		{".circuit_breaker.delay", up.CircuitBreaker.Delay > 0, "30s"},
		{".circuit_breaker.success_threshold", up.CircuitBreaker.SuccessThreshold > 0, "2"},
		{".max_concurrent", up.MaxConcurrent > 0, "100"},
		{".idempotency.window", up.Idempotency.Window > 0, "10m"},
		{".idempotency.max_keys", up.Idempotency.MaxKeys > 0 && up.Idempotency.MaxKeys <= maxIdempotencyKeysPerRoute, "10000"},
		{".streams.idle_timeout", up.Streams.IdleTimeout > 0, "5m"},
		{".streams.max_duration", up.Streams.MaxDuration > 0, "1h"},
		{".streams.keepalive", up.Streams.Keepalive > 0, "25s"},
	}
	for _, c := range checks {
		if !c.ok {
			v.add(path+c.path, "must be positive, e.g. %s", c.example)
		}
	}
	if up.MaxConcurrentPerPrincipal < 1 || up.MaxConcurrent > 0 && up.MaxConcurrentPerPrincipal > up.MaxConcurrent {
		v.add(path+".max_concurrent_per_principal", "must be 1 to max_concurrent (%d), e.g. %d; max_concurrent turns the per-principal share off", up.MaxConcurrent, max(1, up.MaxConcurrent/DefaultPrincipalShareDivisor))
	}
	if up.Deadline > 0 && up.Deadline < up.Timeout {
		v.add(path+".deadline", "must be at least timeout (%s): the deadline bounds all attempts together", up.Timeout)
	}
	v.breakerWindow(path+".circuit_breaker", up.CircuitBreaker)
	r := up.Retry
	if r.MaxAttempts < 1 || r.MaxAttempts > maxRetryAttempts {
		v.add(path+".retry.max_attempts", "must be 1 (no retries) to %d", maxRetryAttempts)
	}
	if r.MaxBackoff > 0 && r.MaxBackoff < r.Backoff {
		v.add(path+".retry.max_backoff", "must be at least retry.backoff (%s)", r.Backoff)
	}
	if r.BudgetPercent < 1 || r.BudgetPercent > 100 {
		v.add(path+".retry.budget_percent", "must be 1 to 100 (percent of the requests in flight that may be retries)")
	}
	if r.BudgetMin < 0 {
		v.add(path+".retry.budget_min", "must not be negative")
	}
	if up.Streams.Keepalive > 0 && up.Streams.IdleTimeout > 0 && up.Streams.Keepalive >= up.Streams.IdleTimeout {
		v.add(path+".streams.keepalive", "must be shorter than streams.idle_timeout (%s)", up.Streams.IdleTimeout)
	}
	seen := map[string]bool{}
	for i, name := range up.IdempotentTools {
		if name == "" || seen[name] {
			v.add(fmt.Sprintf("%s.idempotent_tools[%d]", path, i), "must be a tool name, listed once")
		}
		seen[name] = true
	}
	if rl := up.RateLimit.PerPrincipal; rl != nil {
		v.rate(path+".rate_limit.per_principal", *rl)
	}
	// Sorted, so problems come out in the same order every time.
	for _, name := range slices.Sorted(maps.Keys(up.RateLimit.PerTool)) {
		if name == "" {
			v.add(path+".rate_limit.per_tool", "tool names must not be empty")
		}
		v.rate(path+".rate_limit.per_tool."+name, up.RateLimit.PerTool[name])
	}
}

// breakerWindow checks that failures are counted over exactly one window:
// a period or a number of attempts.
func (v *validator) breakerWindow(path string, cb CircuitBreaker) {
	switch {
	case cb.FailureExecutions < 0:
		v.add(path+".failure_executions", "must be positive, e.g. 20")
	case cb.FailureExecutions > 0 && cb.FailureWindow != 0:
		v.add(path, "set failure_window (a period) or failure_executions (a number of attempts), not both")
	case cb.FailureExecutions > 0 && cb.FailureExecutions < cb.FailureThreshold:
		v.add(path+".failure_executions", "must be at least failure_threshold (%d)", cb.FailureThreshold)
	case cb.FailureExecutions == 0 && cb.FailureWindow <= 0:
		v.add(path+".failure_window", "must be positive, e.g. 30s")
	}
}

func (v *validator) rate(path string, r Rate) {
	if r.RPS <= 0 {
		v.add(path+".rps", "must be positive (requests per second), e.g. 10")
	}
	if r.Burst < 1 {
		v.add(path+".burst", "must be at least 1, e.g. 20")
	}
}
