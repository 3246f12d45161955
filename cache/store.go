// Package cache is ctxgate's response cache: raw upstream results in a
// size-bounded bigcache, keyed by a hash of the request (key.go, where the
// "never cache" rules are), each entry carrying when it was stored, until
// when it is fresh, until when it may still be served stale, and the tags
// it is invalidated by. Concurrent misses for one key share one fetch.
//
// The cache stores what the upstream said, before any policy: the gateway
// filters and redacts every answer it serves from here with the policy in
// force at that moment.
//
// It knows nothing of HTTP, the gateway or the policy.
package cache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"
	"golang.org/x/sync/singleflight"

	"github.com/ctxgate/ctxgate/config"
)

// maxTagGenerations bounds the invalidation bookkeeping: past it the whole
// cache is dropped rather than the bookkeeping grown (an upstream
// announcing updates to ever new resource URIs cannot exhaust memory).
const maxTagGenerations = 100_000

// Options are the store's injectable dependencies; nil means the default.
type Options struct {
	// Now is the clock entries are dated and judged by; nil is time.Now.
	Now func() time.Time
}

// Entry is one cached upstream result.
type Entry struct {
	// Value is the raw upstream result (the JSON-RPC "result" member).
	Value []byte
	// StoredAt is when the answer arrived.
	StoredAt time.Time
	// FreshUntil is when it stops being served as a hit.
	FreshUntil time.Time
	// StaleUntil is when it stops being served even when the upstream
	// fails; equal to FreshUntil when stale serving is off.
	StaleUntil time.Time
	// Tags name what invalidates the entry (see UpstreamTag, MethodTag,
	// ResourceTag).
	Tags []string
	// seq is the invalidation sequence number when its fetch began.
	seq uint64
}

// State is what a lookup found.
type State int

// Lookup states.
const (
	// Miss: nothing usable.
	Miss State = iota
	// Fresh: serve it.
	Fresh
	// Stale: past its TTL but within its stale-if-error window: serve it
	// only if the upstream fails.
	Stale
)

// Store is the response cache. Its methods are safe for concurrent use.
type Store struct {
	bc     *bigcache.BigCache
	now    func() time.Time
	flight singleflight.Group
	maxMB  int
	// shardBytes is one bigcache shard's bound: no entry larger is stored.
	shardBytes int

	mu sync.Mutex
	// seq counts invalidations; gen holds, per tag, the seq of its last
	// invalidation; floor is the seq of the last full purge. An entry
	// whose fetch began before any of these is invalid.
	seq   uint64
	gen   map[string]uint64
	floor uint64
	// prefixes are the resource-URI prefix invalidations (InvalidatePrefix),
	// each with the seq it happened at; bounded by maxPrefixInvalidations.
	prefixes []prefixInvalidation

	hits, misses, stale, bypass, tooLarge atomic.Uint64
}

// ErrTooLarge is Set's answer for an entry whose Value is over
// MaxEntryBytes: it is not stored (the caller serves it uncached).
var ErrTooLarge = errors.New("answer larger than the cache's max entry")

// minShardMB is the smallest shard, in MiB, when max_mb allows: bigcache
// never stores an entry larger than one shard (max_mb / shards), so 256
// shards of a 256 MB cache would refuse every 1 MiB answer.
const minShardMB = 16

// shardStartFraction: each shard's queue starts at 1/8 of its bound and
// doubles up to it. bigcache refuses an entry when the queue's capacity
// plus the entry reaches the bound before the queue has grown to it
// (BytesQueue.Push), so an entry is storable in every state of the queue
// only if it is no larger than the starting capacity, and the capacity
// always a power-of-two fraction of the bound: MaxEntryBytes is that
// start, less entryOverhead. The start is allocated up front.
const shardStartFraction = 8

// entryOverhead bounds what a stored entry takes beyond its Value: the
// store's header (three times, a sequence number, the tags) and bigcache's
// (timestamp, hash, key, length), with room for long tags.
const entryOverhead = 4 << 10

// New builds the store for a validated configuration: bounded by
// cache.max_mb, entries kept at most as long as the longest TTL plus
// stale_if_error any upstream allows.
func New(cfg *config.Config, opts Options) (*Store, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	mb := max(cfg.Cache.MaxMB, 1)
	shards := shardCount(mb)
	bc, err := bigcache.New(context.Background(), bigcache.Config{
		Shards:             shards,
		LifeWindow:         lifeWindow(cfg),
		CleanWindow:        time.Minute,
		MaxEntriesInWindow: shards * 16,
		// bigcache starts each shard at MaxEntriesInWindow/Shards *
		// MaxEntrySize bytes: 16 * this is the shard's bound / 8.
		MaxEntrySize:     mb << 20 / shards / shardStartFraction / 16,
		HardMaxCacheSize: mb,
		Logger:           bigcache.DefaultLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return &Store{bc: bc, now: now, maxMB: mb, shardBytes: mb << 20 / shards, gen: map[string]uint64{}}, nil
}

// shardCount keeps shards at least minShardMB each (one shard below that:
// an entry larger than a shard cannot be stored), a power of two (as
// bigcache requires), and at most 256 of them (from 2 GiB up shards grow).
func shardCount(mb int) int {
	n := 1 << (bits.Len(uint(max(mb/minShardMB, 1))) - 1) // largest power of two <= mb/minShardMB
	return min(n, 256)
}

// MaxEntryBytes is the largest Value Set stores: an eighth of a shard
// less entryOverhead. Shards are 16-32 MiB (one shard of all of
// cache.max_mb below 16, and max_mb/256 from 8 GiB up), so it is at least
// 2 MiB - 4 KiB from max_mb 16 up (exactly that at the default 256), and
// max_mb/8 MiB - 4 KiB below.
func (s *Store) MaxEntryBytes() int { return s.shardBytes/shardStartFraction - entryOverhead }

// lifeWindow is bigcache's own expiry, by wall time: a backstop past which
// no entry can be useful. Freshness is judged by the store's clock.
func lifeWindow(cfg *config.Config) time.Duration {
	longest := time.Minute
	for _, up := range cfg.Upstreams {
		if up.Cache == nil {
			continue
		}
		ttl := up.Cache.MaxTTL
		for _, t := range up.Cache.TTL {
			ttl = max(ttl, t)
		}
		longest = max(longest, ttl+up.Cache.StaleIfError)
	}
	return longest + time.Minute
}

// Close stops the store's background cleanup.
func (s *Store) Close() error { return s.bc.Close() }

// Now is the store's clock.
func (s *Store) Now() time.Time { return s.now() }

// Begin returns the token to Set an answer with: take it before asking the
// upstream, so an invalidation that arrives while the answer is on its way
// also invalidates that answer.
func (s *Store) Begin() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Set stores e under key. token is Begin's, taken before the fetch. An
// entry whose Value is over MaxEntryBytes is not stored: ErrTooLarge,
// counted in Stats.TooLarge.
func (s *Store) Set(key string, e *Entry, token uint64) error {
	e.seq = token
	if len(e.Value) > s.MaxEntryBytes() {
		s.tooLarge.Add(1)
		return fmt.Errorf("cache set: %d bytes, max %d: %w", len(e.Value), s.MaxEntryBytes(), ErrTooLarge)
	}
	if err := s.bc.Set(key, encode(e)); err != nil {
		return fmt.Errorf("cache set: %w", err)
	}
	return nil
}

// Lookup returns the first usable entry among keys, in order, and counts a
// hit (fresh) or a miss (stale or nothing). Expired and invalidated
// entries are deleted on the way.
func (s *Store) Lookup(keys ...string) (*Entry, State, string) {
	var found *Entry
	var foundKey string
	for _, key := range keys {
		e, st := s.get(key)
		if st == Fresh {
			s.hits.Add(1)
			return e, Fresh, key
		}
		if st == Stale && found == nil {
			found, foundKey = e, key
		}
	}
	s.misses.Add(1)
	if found != nil {
		return found, Stale, foundKey
	}
	return nil, Miss, ""
}

// Fresh returns the first fresh entry among keys without counting a hit
// or a miss: the second look a fetch takes after joining a single flight,
// for an answer stored since the first.
func (s *Store) Fresh(keys ...string) (*Entry, string) {
	for _, key := range keys {
		if e, st := s.get(key); st == Fresh {
			return e, key
		}
	}
	return nil, ""
}

func (s *Store) get(key string) (*Entry, State) {
	raw, err := s.bc.Get(key)
	if err != nil {
		return nil, Miss
	}
	e, err := decode(raw)
	if err != nil || !s.valid(key, e) {
		_ = s.bc.Delete(key)
		return nil, Miss
	}
	now := s.now()
	switch {
	case now.Before(e.FreshUntil):
		return e, Fresh
	case now.Before(e.StaleUntil):
		return e, Stale
	}
	_ = s.bc.Delete(key)
	return nil, Miss
}

// valid reports whether no invalidation happened since e's fetch began.
func (s *Store) valid(key string, e *Entry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.seq < s.floor || s.gen[keyTag(key)] > e.seq {
		return false
	}
	for _, t := range e.Tags {
		if s.gen[t] > e.seq {
			return false
		}
		for _, p := range s.prefixes {
			if p.seq > e.seq && strings.HasPrefix(t, p.tag) {
				return false
			}
		}
	}
	return true
}

// Do runs fetch once for all concurrent callers with the same key; the
// others wait and share its result. ran reports whether it was this
// caller's fetch that ran. A caller whose ctx ends stops waiting (with
// ctx's error); the fetch goes on for the others.
func (s *Store) Do(ctx context.Context, key string, fetch func() (any, error)) (v any, ran bool, err error) {
	var leader atomic.Bool
	ch := s.flight.DoChan(key, func() (any, error) {
		leader.Store(true)
		return fetch()
	})
	select {
	case res := <-ch:
		return res.Val, leader.Load(), res.Err
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
}

// Invalidate drops every entry carrying any of tags, at once: the next
// lookup of each is a miss.
func (s *Store) Invalidate(tags ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.gen)+len(tags) > maxTagGenerations {
		s.purgeLocked()
		return
	}
	s.seq++
	for _, t := range tags {
		s.gen[t] = s.seq
	}
}

// maxPrefixInvalidations bounds the prefix invalidations kept: each costs
// every lookup a comparison per tag, so past it the whole cache is
// dropped instead (as past maxTagGenerations).
const maxPrefixInvalidations = 256

// prefixInvalidation drops the reads of every resource whose URI starts
// with a prefix, as of seq.
type prefixInvalidation struct {
	tag string // ResourceTag(upstream, prefix)
	seq uint64
}

// InvalidatePrefix drops the cached reads of every resource of upstream
// whose URI starts with prefix (a webhook says "everything under
// repo://docs/ changed").
func (s *Store) InvalidatePrefix(upstream, prefix string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tag := ResourceTag(upstream, prefix)
	kept := s.prefixes[:0]
	for _, p := range s.prefixes {
		if p.tag != tag { // the new one supersedes an older, equal one
			kept = append(kept, p)
		}
	}
	s.prefixes = kept
	if len(s.prefixes) >= maxPrefixInvalidations {
		s.purgeLocked()
		return
	}
	s.seq++
	s.prefixes = append(s.prefixes, prefixInvalidation{tag: tag, seq: s.seq})
}

// Delete drops the entry under key, and any answer for it whose fetch
// began before (it is not stored when it arrives).
func (s *Store) Delete(key string) {
	s.Invalidate(keyTag(key))
	_ = s.bc.Delete(key)
}

// keyTag is the invalidation of one key (Delete).
func keyTag(key string) string { return "k\x00" + key }

// Purge drops every entry.
func (s *Store) Purge() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purgeLocked()
}

func (s *Store) purgeLocked() {
	s.seq++
	s.floor = s.seq
	clear(s.gen)
	s.prefixes = nil
	_ = s.bc.Reset()
}

// CountStale counts an answer served stale.
func (s *Store) CountStale() { s.stale.Add(1) }

// CountBypass counts a cacheable request whose answer could not be cached
// (an error, an interim result, a stream the gateway relayed as it came).
func (s *Store) CountBypass() { s.bypass.Add(1) }

// Stats are the store's counters since start-up.
type Stats struct {
	Hits        uint64 `json:"hits"`
	Misses      uint64 `json:"misses"`
	StaleServed uint64 `json:"stale_served"`
	Bypass      uint64 `json:"bypass"`
	// TooLarge counts answers not stored for being over MaxEntryBytes
	// (served, uncached).
	TooLarge uint64 `json:"too_large"`
	// Entries counts stored entries, including invalidated ones not yet
	// removed.
	Entries int `json:"entries"`
	// Bytes is the memory allocated to entries; it never exceeds MaxBytes.
	Bytes    int `json:"bytes"`
	MaxBytes int `json:"max_bytes"`
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{
		Hits: s.hits.Load(), Misses: s.misses.Load(), StaleServed: s.stale.Load(), Bypass: s.bypass.Load(), TooLarge: s.tooLarge.Load(),
		Entries: s.bc.Len(), Bytes: s.bc.Capacity(), MaxBytes: s.maxMB << 20,
	}
}

// Tags for invalidation. Every entry carries its upstream's tag and its
// method's; a resources/read entry also its URI's.

// UpstreamTag invalidates everything cached of an upstream.
func UpstreamTag(upstream string) string { return "u\x00" + upstream }

// MethodTag invalidates one method's entries of an upstream.
func MethodTag(upstream, method string) string { return "m\x00" + upstream + "\x00" + method }

// ResourceTag invalidates the cached reads of one resource.
func ResourceTag(upstream, uri string) string { return "r\x00" + upstream + "\x00" + uri }

// ToolTag invalidates the cached results of one tool's calls.
func ToolTag(upstream, tool string) string { return "t\x00" + upstream + "\x00" + tool }

// TagsFor lists the tags of an entry for a request; target is the URI of a
// resources/read and the tool of a tools/call.
func TagsFor(upstream, method, target string) []string {
	tags := []string{UpstreamTag(upstream), MethodTag(upstream, method)}
	switch method {
	case "resources/read":
		tags = append(tags, ResourceTag(upstream, target))
	case "tools/call":
		tags = append(tags, ToolTag(upstream, target))
	}
	return tags
}

// Entry encoding: format byte, three unix-nanosecond times, seq, tag count
// and tags (each uvarint length + bytes), then the value.
const entryFormat = 1

var errCorrupt = errors.New("cache entry corrupt")

func encode(e *Entry) []byte {
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(e.Value)+64)
	b = append(b, entryFormat)
	for _, t := range []time.Time{e.StoredAt, e.FreshUntil, e.StaleUntil} {
		b = binary.AppendVarint(b, t.UnixNano())
	}
	b = binary.AppendUvarint(b, e.seq)
	b = binary.AppendUvarint(b, uint64(len(e.Tags)))
	for _, t := range e.Tags {
		b = binary.AppendUvarint(b, uint64(len(t)))
		b = append(b, t...)
	}
	return append(b, e.Value...)
}

func decode(b []byte) (*Entry, error) {
	if len(b) == 0 || b[0] != entryFormat {
		return nil, errCorrupt
	}
	b = b[1:]
	e := &Entry{}
	for _, t := range []*time.Time{&e.StoredAt, &e.FreshUntil, &e.StaleUntil} {
		v, n := binary.Varint(b)
		if n <= 0 {
			return nil, errCorrupt
		}
		*t, b = time.Unix(0, v), b[n:]
	}
	var n int
	if e.seq, n = binary.Uvarint(b); n <= 0 {
		return nil, errCorrupt
	}
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return nil, errCorrupt
	}
	b = b[n:]
	for range count {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, errCorrupt
		}
		e.Tags = append(e.Tags, string(b[n:n+int(l)]))
		b = b[n+int(l):]
	}
	// bigcache returns a copy, so the value may alias it.
	e.Value = b
	return e, nil
}
