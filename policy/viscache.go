package policy

import (
	"crypto/sha256"
	"sync"
	"time"
)

// Visibility cache limits. An answer of a deterministic policy set (no
// non-deterministic built-in, memo.go) is kept for as long as the set
// decides: the revision is part of the key, and a new set starts with an
// empty cache. An answer of a set whose visible rule may depend on the
// time or on an external lookup (http.send) is reused for at most
// visibilityTTL, so lists are at most that stale; calls are always
// decided by Decide.
const (
	visibilityTTL        = time.Minute
	visibilityMaxEntries = 1 << 16
)

// visibilityKey is SHA-256 over baseDigest and the item's raw JSON: a
// cryptographic hash, because item bytes come from upstreams and a
// collision would show a hidden item.
type visibilityKey [sha256.Size]byte

func itemKey(base [32]byte, raw []byte) visibilityKey {
	h := sha256.New()
	h.Write(base[:])
	h.Write(raw)
	var k visibilityKey
	h.Sum(k[:0])
	return k
}

// visibilityEntry is a cached answer, with the item's name for the
// decision log (so that a warm list decodes no item).
type visibilityEntry struct {
	visible bool
	name    string
	expires time.Time // zero: while the set decides
}

// visibilityCache is a bounded map of visibility answers for one policy
// set. Never cached: failures (errors, timeouts), which are evaluated
// again on the next list.
type visibilityCache struct {
	// ttl bounds an answer's reuse; zero keeps it while the set decides.
	ttl time.Duration
	mu  sync.Mutex
	m   map[visibilityKey]visibilityEntry
}

// newVisibilityCache returns the cache of a set that calls the
// non-deterministic built-ins named (none: answers do not expire).
func newVisibilityCache(nondeterministic []string) *visibilityCache {
	c := &visibilityCache{m: make(map[visibilityKey]visibilityEntry)}
	if len(nondeterministic) > 0 {
		c.ttl = visibilityTTL
	}
	return c
}

// getAll looks every key up under one lock; hit[i] says whether
// entries[i] came from the cache.
func (c *visibilityCache) getAll(keys []visibilityKey, now time.Time) (entries []visibilityEntry, hit []bool) {
	entries, hit = make([]visibilityEntry, len(keys)), make([]bool, len(keys))
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, k := range keys {
		if e, ok := c.m[k]; ok && (e.expires.IsZero() || now.Before(e.expires)) {
			entries[i], hit[i] = e, true
		}
	}
	return entries, hit
}

// putAll stores entries[i] for every i in idx under one lock, evicting
// arbitrary entries (Go randomises map iteration) beyond the bound.
func (c *visibilityCache) putAll(keys []visibilityKey, entries []visibilityEntry, idx []int, now time.Time) {
	if len(idx) == 0 {
		return
	}
	var exp time.Time // zero: never
	if c.ttl > 0 {
		exp = now.Add(c.ttl)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range idx {
		e := entries[i]
		e.expires = exp
		c.m[keys[i]] = e
	}
	for k := range c.m {
		if len(c.m) <= visibilityMaxEntries {
			break
		}
		delete(c.m, k)
	}
}
