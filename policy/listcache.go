package policy

import (
	"crypto/sha256"

	lru "github.com/hashicorp/golang-lru/v2"
)

// listCacheSize bounds the filtered views one policy set keeps: a view is
// the item spans and answers of one list for one base input (a few dozen
// bytes per item, never the list's bytes), so the least recently used
// principal's view goes first.
const listCacheSize = 1024

// listKey is SHA-256 over baseDigest and the whole list result: a
// cryptographic hash, because the bytes come from upstreams and a
// collision would show a hidden item.
type listKey [sha256.Size]byte

func wholeListKey(base [32]byte, result []byte) listKey {
	h := sha256.New()
	h.Write(base[:])
	h.Write(result)
	var k listKey
	h.Sum(k[:0])
	return k
}

// listView is a filtered list: where its array and items are in the
// result, and each item's answer. The result it was made from is the
// caller's, byte for byte (the key says so), so splicing that result with
// the view gives the filtered list again without scanning it.
type listView struct {
	open, close int64
	items       []span
	entries     []visibilityEntry
}

// listCache reuses the filtered view of a list for a base input (a
// principal, with its claims, on a route...) while the policy set and the
// list are unchanged: a warm list then costs one hash of its bytes instead
// of a scan and a hash per item. Only for a deterministic set (memo.go):
// an answer that may depend on the time is never reused this way. Never
// stored: a list any of whose items failed to decide. Safe for concurrent
// use; nil caches nothing.
type listCache struct {
	c *lru.Cache[listKey, *listView]
}

// newListCache returns the list cache of a set; nil when the set calls a
// non-deterministic built-in.
func newListCache(nondeterministic []string) *listCache {
	if len(nondeterministic) > 0 {
		return nil
	}
	c, err := lru.New[listKey, *listView](listCacheSize)
	if err != nil {
		// lru.New fails only for a size <= 0.
		panic(err)
	}
	return &listCache{c: c}
}

func (c *listCache) get(k listKey) (*listView, bool) {
	if c == nil {
		return nil, false
	}
	return c.c.Get(k)
}

// put stores a view; the caller never changes it afterwards.
func (c *listCache) put(k listKey, v *listView) {
	if c != nil {
		c.c.Add(k, v)
	}
}
