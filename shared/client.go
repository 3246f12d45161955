// Package shared is the state several gateway replicas share, on Redis:
// the one client of a process, its health (ctxgate_redis_up), and the
// features built on it: the rate limits (limit.go: one atomic GCRA script
// per request), the idempotency ledger (idempotency.go: a key reserved
// with SET NX PX, then its answer), the cache invalidation fan-out
// (fanout.go), the event stream (events.go), the cache's second level
// (l2.go), the tool pins (pins.go) and resource subscriptions (subs.go).
//
// Redis is never a single point of failure the operator did not choose:
// every operation is bounded by redis.timeout, and what a request gets
// when Redis cannot answer is the caller's decision (for rate limits and
// pins redis.on_error, reported through Fallback; a call with an
// idempotency key is always refused, since no replica alone can keep its
// promise).
package shared

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/ctxgate/ctxgate/config"
)

// Options are the client's injectable dependencies; nil fields mean the
// default.
type Options struct {
	// Logger receives the fallback warnings; nil discards them.
	Logger *slog.Logger
	// Registerer receives ctxgate_redis_up and
	// ctxgate_redis_fallback_total; nil registers them nowhere.
	Registerer prometheus.Registerer
	// Now is the clock of the fallback log's rate limit; nil is time.Now.
	Now func() time.Time
}

// Features are the labels of ctxgate_redis_fallback_total, each created
// at zero so dashboards and alerts see the series before the first
// fallback.
var Features = []string{FeatureRateLimit, FeaturePins}

// FeatureRateLimit names the rate limits in Fallback, FeaturePins the
// tool pins.
const (
	FeatureRateLimit = "rate_limit"
	FeaturePins      = "pins"
)

// fallbackLogEvery bounds the fallback warnings: while Redis is down
// every request falls back, and one line per request would drown the log.
const fallbackLogEvery = time.Minute

// Client is a process's connection pool to Redis. Its methods are safe for
// concurrent use.
type Client struct {
	rdb     *redis.Client
	prefix  string
	timeout time.Duration
	deny    bool
	log     *slog.Logger
	now     func() time.Time

	up         prometheus.Gauge
	fallback   *prometheus.CounterVec
	roundTrips *prometheus.CounterVec
	roundTrip  *prometheus.HistogramVec

	mu         sync.Mutex
	lastLog    time.Time
	suppressed int
	// downAt is when a round trip last failed for want of Redis (unix
	// nanoseconds; 0 after a success): recentlyDown.
	downAt atomic.Int64
}

// errRecentlyDown: Redis failed a round trip within downFor, so an
// operation that would block a hot path is not tried.
var errRecentlyDown = errors.New("redis did not answer a moment ago; not asked again yet")

// downFor is how long after a failed round trip recentlyDown holds.
const downFor = time.Second

// recentlyDown reports whether a round trip failed for want of Redis in
// the last downFor: a caller that would otherwise wait redis.timeout per
// item (pins of a tools/list) fails at once.
func (c *Client) recentlyDown() bool {
	at := c.downAt.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < downFor
}

// New connects to the configured Redis and pings it once, bounded by
// redis.timeout. A configuration Redis refuses (a wrong password or user,
// a missing permission) or files that do not load are start-up errors:
// they will not fix themselves. A Redis that is merely unreachable is not:
// the gateway starts, reports ctxgate_redis_up 0, and every request
// follows on_error until Redis answers (a replica that refused to start
// while Redis restarts would turn a Redis blip into an outage of the
// gateway).
func New(ctx context.Context, c *config.Redis, opts Options) (*Client, error) {
	rdb, err := newRedis(c)
	if err != nil {
		return nil, err
	}
	cl := &Client{
		rdb: rdb, prefix: c.KeyPrefix, timeout: c.Timeout, deny: c.OnError == "deny",
		log: opts.Logger, now: opts.Now,
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ctxgate_redis_up",
			Help: "1 when the last round trip to Redis (redis.url) succeeded, 0 when it failed."}),
		fallback: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctxgate_redis_fallback_total",
			Help: "Requests for which Redis could not answer, by feature; on_error decided what they got (local: this replica's own state; deny: 503)."},
			[]string{"feature"}),
		roundTrips: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ctxgate_redis_round_trips_total",
			Help: "Round trips to Redis by operation and result (ok: Redis answered; error: unreachable, slower than redis.timeout, or an error reply)."},
			[]string{"op", "result"}),
		roundTrip: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ctxgate_redis_round_trip_seconds",
			Help:    "Duration of round trips to Redis by operation, answered or not.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}},
			[]string{"op"}),
	}
	if cl.log == nil {
		cl.log = slog.New(slog.DiscardHandler)
	}
	if cl.now == nil {
		cl.now = time.Now
	}
	for _, f := range Features {
		cl.fallback.WithLabelValues(f)
	}
	if opts.Registerer != nil {
		for _, m := range []prometheus.Collector{cl.up, cl.fallback, cl.roundTrips, cl.roundTrip} {
			if err := opts.Registerer.Register(m); err != nil {
				cl.rdb.Close()
				return nil, fmt.Errorf("register redis metrics: %w", err)
			}
		}
	}
	if err := cl.Ping(ctx); err != nil {
		if refused(err) {
			cl.rdb.Close()
			return nil, fmt.Errorf("redis.url: Redis refused the gateway: %w", err)
		}
		cl.log.Warn("redis unreachable at start-up; requests follow redis.on_error until it answers",
			"on_error", c.OnError, "error", err.Error())
	}
	return cl, nil
}

// newRedis builds the go-redis client: of one primary (redis://,
// rediss://, unix://), or of the primary Sentinel names (a URL with
// master_name=: its host, and any addr=, are Sentinels), which go-redis
// follows across failovers.
func newRedis(c *config.Redis) (*redis.Client, error) {
	if !config.IsSentinelURL(c.URL) {
		ro, err := clientOptions(c)
		if err != nil {
			return nil, err
		}
		return redis.NewClient(ro), nil
	}
	fo, err := redis.ParseFailoverURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	// The URL's credentials are the Sentinels'; the primary's are
	// username and password_file.
	ro := &redis.Options{TLSConfig: fo.TLSConfig}
	if err := applySettings(c, ro); err != nil {
		return nil, err
	}
	fo.Username, fo.Password, fo.TLSConfig = ro.Username, ro.Password, ro.TLSConfig
	fo.PoolSize, fo.DialTimeout, fo.ReadTimeout, fo.WriteTimeout, fo.PoolTimeout = ro.PoolSize, ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout, ro.PoolTimeout
	fo.ContextTimeoutEnabled, fo.MaxRetries, fo.DisableIdentity = ro.ContextTimeoutEnabled, ro.MaxRetries, ro.DisableIdentity
	return redis.NewFailoverClient(fo), nil
}

// clientOptions turns the redis block into go-redis options. Validate has
// already parsed the URL; files are read here, once.
func clientOptions(c *config.Redis) (*redis.Options, error) {
	ro, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	return ro, applySettings(c, ro)
}

// applySettings applies the redis block's settings beyond the URL.
func applySettings(c *config.Redis, ro *redis.Options) error {
	var err error
	if c.Username != "" {
		ro.Username = c.Username
	}
	if c.PasswordFile != "" {
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return fmt.Errorf("redis.password_file: %w", err)
		}
		ro.Password = strings.TrimRight(string(b), "\r\n")
	}
	if c.TLS != nil && ro.TLSConfig != nil {
		if ro.TLSConfig, err = tlsConfig(c.TLS, ro.TLSConfig.ServerName); err != nil {
			return fmt.Errorf("redis.tls: %w", err)
		}
	}
	ro.PoolSize = c.PoolSize
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout, ro.PoolTimeout = c.Timeout, c.Timeout, c.Timeout, c.Timeout
	// The request's deadline applies to the socket too, and a failed
	// round trip is not repeated: the timeout is the whole budget.
	ro.ContextTimeoutEnabled = true
	ro.MaxRetries = -1
	// No CLIENT SETINFO or maintenance-notification handshakes: older
	// servers answer them with errors that would only be noise.
	ro.DisableIdentity = true
	ro.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return nil
}

// tlsConfig verifies Redis against ca_file (else the system roots) and
// presents the client certificate, read once at start-up.
func tlsConfig(t *config.UpstreamTLS, host string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if t.MinVersion == "1.3" {
		cfg.MinVersion = tls.VersionTLS13
	}
	if t.ServerName != "" {
		cfg.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("load CA file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("load CA file %s: no PEM certificate in it", t.CAFile)
		}
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// refused reports whether Redis answered but will not serve the gateway as
// configured: an error an operator must fix, not an outage.
func refused(err error) bool {
	return redis.IsAuthError(err) || redis.IsPermissionError(err)
}

// Ping is one bounded round trip; it updates ctxgate_redis_up.
func (c *Client) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	return c.observe(OpPing, start, c.rdb.Ping(ctx).Err())
}

// The operations round trips are counted by.
const (
	OpPing      = "ping"
	OpRateLimit = "rate_limit"
	// The idempotency ledger (idempotency.go): a call's first look at its
	// key, a duplicate's later looks while it waits, the running call's
	// lease renewals, and the end of the call (its answer recorded, or the
	// key released).
	OpIdempotencyClaim   = "idempotency_claim"
	OpIdempotencyWait    = "idempotency_wait"
	OpIdempotencyRenew   = "idempotency_renew"
	OpIdempotencyFinish  = "idempotency_finish"
	OpIdempotencyRelease = "idempotency_release"
	// OpInvalidatePublish sends a cache invalidation to the other
	// replicas; OpInvalidateGeneration reads the fan-out's generation.
	OpInvalidatePublish    = "invalidate_publish"
	OpInvalidateGeneration = "invalidate_generation"
	// OpEvents reads, acknowledges or sets up the event stream.
	OpEvents = "events"
	// OpCacheGet and OpCacheSet read and write the cache's second level.
	OpCacheGet = "cache_get"
	OpCacheSet = "cache_set"
	// OpPins reads or writes the shared tool pins.
	OpPins = "pins"
	// OpSubscriptions records or reads the sessions' resource
	// subscriptions.
	OpSubscriptions = "subscriptions"
)

// observe records one round trip of op that began at start: its duration
// and result, and whether Redis answered (ctxgate_redis_up): an error reply
// (redis.Error) is an answer, a transport failure or a timeout is not.
func (c *Client) observe(op string, start time.Time, err error) error {
	c.roundTrip.WithLabelValues(op).Observe(time.Since(start).Seconds())
	result := "ok"
	if err != nil && !errors.Is(err, redis.Nil) {
		result = "error"
	}
	c.roundTrips.WithLabelValues(op, result).Inc()
	var reply redis.Error
	if err == nil || errors.As(err, &reply) && !refused(err) {
		c.up.Set(1)
		c.downAt.Store(0)
	} else {
		c.up.Set(0)
		c.downAt.Store(time.Now().UnixNano())
	}
	return err
}

// Deny reports whether redis.on_error is deny: a request Redis cannot
// decide is refused rather than decided by this replica alone.
func (c *Client) Deny() bool { return c.deny }

// Fallback records that Redis could not answer for feature: counted every
// time, logged at most once a minute (with the number of fallbacks not
// logged since).
func (c *Client) Fallback(feature string, err error) {
	c.fallback.WithLabelValues(feature).Inc()
	now := c.now()
	c.mu.Lock()
	if !c.lastLog.IsZero() && now.Sub(c.lastLog) < fallbackLogEvery {
		c.suppressed++
		c.mu.Unlock()
		return
	}
	n := c.suppressed
	c.lastLog, c.suppressed = now, 0
	c.mu.Unlock()
	action := "falling back to this replica's own state"
	if c.deny {
		action = "refusing the request (on_error: deny)"
	}
	c.log.Warn("redis could not answer; "+action, "feature", feature, "error", err.Error(), "unlogged_since_last", n)
}

// Close releases the connections.
func (c *Client) Close() error { return c.rdb.Close() }
