package gateway

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ctxgate/ctxgate/config"
)

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
