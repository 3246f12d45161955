package gateway

import (
	"context"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/shared"
)

// limiter takes a request's rate-limit tokens: one for the principal and,
// for a tools/call, one for the principal and tool; all or none. Refused,
// it returns the wait until a token is due. An error is a request that
// could not be decided (an *Error for the client).
type limiter interface {
	take(ctx context.Context, principal, tool string) (ok bool, wait time.Duration, err error)
}

// newLimiter returns the route's limiter: in memory (one replica's own
// buckets), or on Redis when redis is configured, shared by every replica
// on the same Redis and key prefix. Nil when the route has no limits.
func newLimiter(route string, c config.RateLimit, redis *shared.Client, now func() time.Time) limiter {
	local := newRateLimiter(c, now)
	switch {
	case local == nil:
		return nil // a nil *rateLimiter in the interface would not be nil
	case redis == nil:
		return local
	}
	return &sharedLimiter{route: route, limits: c, redis: redis, local: local}
}

// sharedLimiter keeps a route's buckets on Redis. When Redis cannot answer
// (down, slower than redis.timeout, an error reply) on_error decides:
// local takes the tokens from this replica's own buckets (so a principal
// gets up to one limit per replica, never unlimited), deny refuses.
type sharedLimiter struct {
	route  string
	limits config.RateLimit
	redis  *shared.Client
	local  *rateLimiter
}

func (l *sharedLimiter) take(ctx context.Context, principal, tool string) (bool, time.Duration, error) {
	buckets := make([]shared.Bucket, 0, 2)
	if r := l.limits.PerPrincipal; r != nil {
		buckets = append(buckets, shared.Bucket{RPS: r.RPS, Burst: r.Burst})
	}
	if r, ok := l.limits.PerTool[tool]; ok && tool != "" {
		buckets = append(buckets, shared.Bucket{Tool: tool, RPS: r.RPS, Burst: r.Burst})
	}
	ok, wait, err := l.redis.Allow(ctx, l.route, principal, buckets)
	if err == nil {
		return ok, wait, nil
	}
	l.redis.Fallback(shared.FeatureRateLimit, err)
	if l.redis.Deny() {
		e := newError(http.StatusServiceUnavailable, CodeRateLimitUnavailable, "rate limit cannot be checked: the shared store is unavailable; retry later", err)
		setRetryAfter(e, time.Second)
		return false, 0, e
	}
	return l.local.take(ctx, principal, tool)
}

// maxLimiters bounds the token buckets one route keeps (principals and
// principal-tool pairs), so a flood of principals cannot grow memory.
const maxLimiters = 10000

// rateLimiter holds one route's token buckets, keyed by the verified
// principal id (never the session: a client can always get a new session).
// A bucket that has been idle long enough to refill completely is the same
// as a new one, so it is dropped first when the table is full; only if none
// is, the least recently used goes (that principal then starts with a full
// burst).
type rateLimiter struct {
	perPrincipal *config.Rate
	perTool      map[string]config.Rate
	now          func() time.Time

	mu      sync.Mutex
	buckets map[limiterKey]*bucket
}

type limiterKey struct{ principal, tool string }

type bucket struct {
	lim    *rate.Limiter
	refill time.Duration // time to refill the whole burst
	seen   time.Time
}

// newRateLimiter returns nil when the route has no limits.
func newRateLimiter(c config.RateLimit, now func() time.Time) *rateLimiter {
	if c.PerPrincipal == nil && len(c.PerTool) == 0 {
		return nil
	}
	return &rateLimiter{perPrincipal: c.PerPrincipal, perTool: c.PerTool, now: now, buckets: map[limiterKey]*bucket{}}
}

func (l *rateLimiter) take(_ context.Context, principal, tool string) (bool, time.Duration, error) {
	ok, wait := l.allow(principal, tool)
	return ok, wait, nil
}

// allow takes one token for the principal and, for a tools/call, one for
// the principal and tool. When either is empty neither is taken, and the
// wait until a token is due is returned.
func (l *rateLimiter) allow(principal, tool string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	var reserved []*rate.Reservation
	var wait time.Duration
	take := func(k limiterKey, r config.Rate) {
		res := l.bucket(k, r, now).lim.ReserveN(now, 1)
		reserved = append(reserved, res)
		wait = max(wait, res.DelayFrom(now))
	}
	if l.perPrincipal != nil {
		take(limiterKey{principal: principal}, *l.perPrincipal)
	}
	if r, ok := l.perTool[tool]; ok && tool != "" {
		take(limiterKey{principal, tool}, r)
	}
	if wait == 0 {
		return true, 0
	}
	for _, res := range reserved {
		res.CancelAt(now)
	}
	return false, wait
}

func (l *rateLimiter) bucket(k limiterKey, r config.Rate, now time.Time) *bucket {
	b, ok := l.buckets[k]
	if !ok {
		if len(l.buckets) >= maxLimiters {
			l.evict(now)
		}
		refill := time.Duration(float64(r.Burst) / r.RPS * float64(time.Second))
		b = &bucket{lim: rate.NewLimiter(rate.Limit(r.RPS), r.Burst), refill: refill}
		l.buckets[k] = b
	}
	b.seen = now
	return b
}

// evict drops every refilled bucket, or else the least recently used one.
func (l *rateLimiter) evict(now time.Time) {
	var oldest limiterKey
	var oldestSeen time.Time
	for k, b := range l.buckets {
		if now.Sub(b.seen) >= b.refill {
			delete(l.buckets, k)
			continue
		}
		if oldestSeen.IsZero() || b.seen.Before(oldestSeen) {
			oldest, oldestSeen = k, b.seen
		}
	}
	if len(l.buckets) >= maxLimiters {
		delete(l.buckets, oldest)
	}
}

// size is the number of buckets held (tests).
func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
