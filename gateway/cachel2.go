package gateway

import (
	"context"

	"github.com/ctxgate/ctxgate/cache"
)

// The cache's second level: with redis and cache.encryption_keys, each
// entry the gateway stores is also sealed (cache.Sealer: AES-256-GCM,
// bound to its key) and written to Redis under the fan-out's generation
// (shared/l2.go), and a first-level miss asks Redis before the upstream.
// Keys are the first level's (per principal where they are per principal,
// era, capability digest); a hit is filtered by the current policy like
// any other (writeCached). A second level that cannot be reached is a
// miss: the request goes to the upstream, never fails for it.

// lookupSecond asks the second level for keys after a first-level miss.
// A fresh entry is copied into the first level and returned; a stale one
// is returned for the upstream-failure fallback. It sets lk.generation,
// the generation to store the fetched answer under (-1: do not store it,
// Redis did not answer).
func (s *Server) lookupSecond(ctx context.Context, lk *cacheLookup, keys []string) (*cache.Entry, cache.State, string) {
	lk.generation = -1
	if s.sealer == nil {
		return nil, cache.Miss, ""
	}
	token := s.cache.Begin()
	gen, key, box, err := s.redis.CacheGet(ctx, keys...)
	if err != nil {
		s.metrics.secondLevel.WithLabelValues("error").Inc()
		loggerOf(ctx, s.log).Debug("cache second level unavailable", "error", err)
		return nil, cache.Miss, ""
	}
	lk.generation = gen
	if key == "" {
		s.metrics.secondLevel.WithLabelValues("miss").Inc()
		return nil, cache.Miss, ""
	}
	e, err := s.sealer.Open(key, box)
	if err != nil {
		// Sealed under a key no longer configured, or not by ctxgate.
		s.metrics.secondLevel.WithLabelValues("unsealable").Inc()
		return nil, cache.Miss, ""
	}
	now := s.cache.Now()
	switch {
	case now.Before(e.FreshUntil):
		s.metrics.secondLevel.WithLabelValues("hit").Inc()
		_ = s.cache.Set(key, e, token)
		return e, cache.Fresh, key
	case now.Before(e.StaleUntil):
		return e, cache.Stale, key
	}
	s.metrics.secondLevel.WithLabelValues("miss").Inc()
	return nil, cache.Miss, ""
}

// storeSecond writes an entry the first level took to the second, under
// the generation read before it was fetched.
func (s *Server) storeSecond(ctx context.Context, lk *cacheLookup, key string, e *cache.Entry) {
	if s.sealer == nil || lk.generation < 0 {
		return
	}
	if err := s.redis.CacheSet(ctx, lk.generation, key, s.sealer.Seal(key, e), e.StaleUntil.Sub(s.cache.Now())); err != nil {
		s.metrics.secondLevel.WithLabelValues("error").Inc()
		loggerOf(ctx, s.log).Debug("answer not stored in the cache's second level", "error", err)
		return
	}
	s.metrics.secondLevel.WithLabelValues("stored").Inc()
}
