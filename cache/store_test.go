package cache

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ctxgate/ctxgate/config"
)

// clock is an injected clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newStore(t *testing.T, maxMB int) (*Store, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 7, 28, 12, 0, 0, 0, time.UTC)}
	s, err := New(&config.Config{Cache: config.Cache{MaxMB: maxMB}}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

func put(t *testing.T, s *Store, key string, value string, fresh, stale time.Duration, tags ...string) {
	t.Helper()
	now := s.Now()
	if err := s.Set(key, &Entry{Value: []byte(value), StoredAt: now, FreshUntil: now.Add(fresh), StaleUntil: now.Add(fresh + stale), Tags: tags}, s.Begin()); err != nil {
		t.Fatal(err)
	}
}

func TestLifetime(t *testing.T) {
	s, c := newStore(t, 1)
	put(t, s, "k", `{"tools":[]}`, time.Minute, time.Hour)
	steps := []struct {
		name    string
		advance time.Duration
		want    State
	}{
		{name: "fresh", advance: 0, want: Fresh},
		{name: "just before the TTL", advance: time.Minute - time.Nanosecond, want: Fresh},
		{name: "at the TTL: stale", advance: time.Nanosecond, want: Stale},
		{name: "inside the window", advance: 59 * time.Minute, want: Stale},
		{name: "past the window", advance: time.Minute, want: Miss},
		{name: "gone for good", advance: -time.Hour, want: Miss},
	}
	for _, st := range steps {
		c.Add(st.advance)
		e, got, _ := s.Lookup("k")
		if got != st.want {
			t.Fatalf("%s: state %d, want %d", st.name, got, st.want)
		}
		if got != Miss && string(e.Value) != `{"tools":[]}` {
			t.Fatalf("%s: value %q", st.name, e.Value)
		}
	}
	if st := s.Stats(); st.Hits != 2 || st.Misses != 4 {
		t.Errorf("stats %+v, want 2 hits and 4 misses", st)
	}
}

func TestLookupOrder(t *testing.T) {
	s, _ := newStore(t, 1)
	put(t, s, "private", "p", time.Minute, 0)
	e, st, key := s.Lookup("shared", "private")
	if st != Fresh || key != "private" || string(e.Value) != "p" {
		t.Errorf("Lookup(shared, private) = %v %q; want the private entry", st, key)
	}
	put(t, s, "shared", "s", time.Minute, 0)
	if _, _, key := s.Lookup("shared", "private"); key != "shared" {
		t.Errorf("found %q first, want shared", key)
	}
}

func TestInvalidate(t *testing.T) {
	tests := []struct {
		name    string
		tags    []string
		prefix  []string // upstream, URI prefix: InvalidatePrefix
		dropped []string
	}{
		{name: "method", tags: []string{MethodTag("docs", "tools/list")}, dropped: []string{"tools"}},
		{name: "tool", tags: []string{ToolTag("docs", "search")}, dropped: []string{"callSearch"}},
		{name: "prefix", prefix: []string{"docs", "file:///a"}, dropped: []string{"readA", "readA2"}},
		{name: "prefix of another upstream", prefix: []string{"git", "file:///"}},
		{name: "prefix matching none", prefix: []string{"docs", "file:///c"}},
		{name: "upstream", tags: []string{UpstreamTag("docs")}, dropped: []string{"tools", "prompts", "readA", "readA2", "readB", "callSearch", "callFetch"}},
		{name: "resource", tags: []string{ResourceTag("docs", "file:///a")}, dropped: []string{"readA"}},
		{name: "other upstream", tags: []string{UpstreamTag("git")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t, 1)
			entries := map[string][]string{
				"tools":      TagsFor("docs", "tools/list", ""),
				"prompts":    TagsFor("docs", "prompts/list", ""),
				"readA":      TagsFor("docs", "resources/read", "file:///a"),
				"readA2":     TagsFor("docs", "resources/read", "file:///a/2"),
				"readB":      TagsFor("docs", "resources/read", "file:///b"),
				"callSearch": TagsFor("docs", "tools/call", "search"),
				"callFetch":  TagsFor("docs", "tools/call", "fetch"),
			}
			for k, tags := range entries {
				put(t, s, k, "v", time.Minute, time.Hour, tags...)
			}
			if tt.tags != nil {
				s.Invalidate(tt.tags...)
			}
			if tt.prefix != nil {
				s.InvalidatePrefix(tt.prefix[0], tt.prefix[1])
			}
			for k := range entries {
				_, st, _ := s.Lookup(k)
				dropped := st == Miss
				want := strings.Contains(" "+strings.Join(tt.dropped, " ")+" ", " "+k+" ")
				if dropped != want {
					t.Errorf("%s: dropped=%v, want %v", k, dropped, want)
				}
			}
		})
	}
}

// An invalidation that arrives while an answer is being fetched also
// invalidates that answer.
func TestInvalidateDuringFetch(t *testing.T) {
	s, _ := newStore(t, 1)
	token := s.Begin()
	s.Invalidate(MethodTag("docs", "tools/list"))
	now := s.Now()
	if err := s.Set("k", &Entry{Value: []byte("old"), FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Minute), Tags: TagsFor("docs", "tools/list", "")}, token); err != nil {
		t.Fatal(err)
	}
	if _, st, _ := s.Lookup("k"); st != Miss {
		t.Errorf("an answer fetched across an invalidation was served (state %d)", st)
	}
	put(t, s, "k", "new", time.Minute, 0, TagsFor("docs", "tools/list", "")...)
	if _, st, _ := s.Lookup("k"); st != Fresh {
		t.Errorf("an answer fetched after the invalidation is not served (state %d)", st)
	}
}

func TestPurge(t *testing.T) {
	s, _ := newStore(t, 1)
	put(t, s, "a", "1", time.Minute, 0)
	put(t, s, "b", "2", time.Minute, 0)
	token := s.Begin()
	s.Delete("a")
	if _, st, _ := s.Lookup("a"); st != Miss {
		t.Error("deleted key still served")
	}
	s.Purge()
	if _, st, _ := s.Lookup("b"); st != Miss {
		t.Error("purged key still served")
	}
	now := s.Now()
	_ = s.Set("c", &Entry{Value: []byte("3"), FreshUntil: now.Add(time.Minute)}, token)
	if _, st, _ := s.Lookup("c"); st != Miss {
		t.Error("an answer fetched before a purge was served after it")
	}
}

// Filling the store far past its bound evicts the oldest entries; the
// memory it holds never grows past max_mb.
func TestBoundedMemory(t *testing.T) {
	s, _ := newStore(t, 1)
	value := strings.Repeat("x", 2<<10)
	const n = 4000 // ~8 MiB into a 1 MiB store
	for i := range n {
		put(t, s, fmt.Sprint("k", i), value, time.Hour, 0)
		if st := s.Stats(); st.Bytes > st.MaxBytes {
			t.Fatalf("after %d entries the store holds %d bytes, over its bound %d", i+1, st.Bytes, st.MaxBytes)
		}
	}
	st := s.Stats()
	if st.Entries >= n/2 || st.Entries == 0 {
		t.Errorf("%d entries kept of %d written into 1 MiB; want eviction", st.Entries, n)
	}
	if _, got, _ := s.Lookup("k0"); got != Miss {
		t.Error("the oldest entry survived")
	}
	if _, got, _ := s.Lookup(fmt.Sprint("k", n-1)); got != Fresh {
		t.Error("the newest entry was evicted")
	}
	// An entry larger than a shard is refused, not stored.
	if err := s.Set("huge", &Entry{Value: make([]byte, 2<<20)}, s.Begin()); err == nil {
		t.Error("a 2 MiB entry was accepted into a 1 MiB store")
	}
}

// 200 concurrent misses for one key make one fetch; every caller gets its
// result. synctest.Wait holds the fetch until all 200 are waiting on it.
func TestSingleFlight(t *testing.T) {
	s, _ := newStore(t, 1)
	synctest.Test(t, func(t *testing.T) {
		var fetches atomic.Int64
		release := make(chan struct{})
		var wg sync.WaitGroup
		results := make([]any, 200)
		for i := range results {
			wg.Go(func() {
				results[i], _, _ = s.Do(t.Context(), "k", func() (any, error) {
					fetches.Add(1)
					<-release
					return "answer", nil
				})
			})
		}
		synctest.Wait()
		close(release)
		wg.Wait()
		if n := fetches.Load(); n != 1 {
			t.Errorf("%d fetches for 200 concurrent misses, want 1", n)
		}
		for i, r := range results {
			if r != "answer" {
				t.Fatalf("caller %d got %v", i, r)
			}
		}
	})
}

func TestEntryEncoding(t *testing.T) {
	now := time.Unix(1700000000, 123)
	e := &Entry{Value: []byte(`{"a":1}`), StoredAt: now, FreshUntil: now.Add(time.Second), StaleUntil: now.Add(time.Hour), Tags: []string{"a", "", "b\x00c"}, seq: 42}
	got, err := decode(encode(e))
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != string(e.Value) || !got.StoredAt.Equal(e.StoredAt) || !got.StaleUntil.Equal(e.StaleUntil) || got.seq != 42 || len(got.Tags) != 3 || got.Tags[2] != "b\x00c" {
		t.Errorf("round trip: %+v", got)
	}
	for _, b := range [][]byte{nil, {2}, {entryFormat}, encode(e)[:5]} {
		if _, err := decode(b); err == nil {
			t.Errorf("decode(%v) accepted a corrupt entry", b)
		}
	}
}

// TestMaxEntry: every Value up to MaxEntryBytes is stored, whatever state
// each shard's queue is in (growing from its start or full), a larger one
// is refused with ErrTooLarge and counted, and nothing is evicted for it.
// At the default max_mb a 1 MiB answer is cacheable.
func TestMaxEntry(t *testing.T) {
	for _, tt := range []struct {
		name  string
		maxMB int
		want  int // MaxEntryBytes
	}{
		{name: "1 MB", maxMB: 1, want: 128<<10 - entryOverhead},
		{name: "16 MB", maxMB: 16, want: 2<<20 - entryOverhead},
		{name: "default", maxMB: config.DefaultCacheMaxMB, want: 2<<20 - entryOverhead},
		{name: "100 MB", maxMB: 100, want: 25<<20/8 - entryOverhead},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t, tt.maxMB)
			if got := s.MaxEntryBytes(); got != tt.want {
				t.Fatalf("MaxEntryBytes = %d, want %d", got, tt.want)
			}
			if tt.maxMB == config.DefaultCacheMaxMB && s.MaxEntryBytes() < 1<<20+1<<10 {
				t.Fatalf("MaxEntryBytes = %d: a 1 MiB result cannot be cached at the default max_mb", s.MaxEntryBytes())
			}
			// Small entries first, so the queues are part grown, then
			// largest ones, more than the store holds: each is stored
			// (evicting older ones) and found.
			small := strings.Repeat("s", 1<<10)
			for i := range 64 {
				put(t, s, fmt.Sprint("small", i), small, time.Hour, 0)
			}
			largest := strings.Repeat("x", s.MaxEntryBytes())
			n := 2 * tt.maxMB << 20 / len(largest)
			for i := range n {
				key := fmt.Sprint("large", i)
				put(t, s, key, largest, time.Hour, 0, UpstreamTag("an-upstream-name"), MethodTag("an-upstream-name", "resources/read"))
				if e, st, _ := s.Lookup(key); st != Fresh || len(e.Value) != len(largest) {
					t.Fatalf("entry %d of %d bytes: %v, not stored", i, len(largest), st)
				}
			}
			put(t, s, "before", "kept", time.Hour, 0)
			err := s.Set("too-large", &Entry{Value: make([]byte, s.MaxEntryBytes()+1)}, s.Begin())
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Set of MaxEntryBytes+1: %v, want ErrTooLarge", err)
			}
			if _, st, _ := s.Lookup("before"); st != Fresh {
				t.Error("refusing a too large entry evicted another")
			}
			if got := s.Stats().TooLarge; got != 1 {
				t.Errorf("Stats.TooLarge = %d, want 1", got)
			}
		})
	}
}

// A prefix invalidation drops what was fetched before it, not what is
// fetched after; past maxPrefixInvalidations distinct prefixes the whole
// cache is dropped rather than every lookup made slower.
func TestInvalidatePrefix(t *testing.T) {
	s, _ := newStore(t, 1)
	put(t, s, "before", "v", time.Minute, 0, TagsFor("docs", "resources/read", "repo://docs/a")...)
	s.InvalidatePrefix("docs", "repo://docs/")
	put(t, s, "after", "v", time.Minute, 0, TagsFor("docs", "resources/read", "repo://docs/b")...)
	if _, st, _ := s.Lookup("before"); st != Miss {
		t.Errorf("entry fetched before the invalidation: %v, want a miss", st)
	}
	if _, st, _ := s.Lookup("after"); st != Fresh {
		t.Errorf("entry fetched after the invalidation: %v, want fresh", st)
	}
	for i := range maxPrefixInvalidations - 1 {
		s.InvalidatePrefix("docs", fmt.Sprintf("repo://other/%d/", i))
	}
	if _, st, _ := s.Lookup("after"); st != Fresh {
		t.Fatalf("after %d prefixes: %v, want still fresh", maxPrefixInvalidations, st)
	}
	s.InvalidatePrefix("docs", "repo://one-too-many/")
	if _, st, _ := s.Lookup("after"); st != Miss {
		t.Errorf("past the bound: %v, want everything dropped", st)
	}
}

// A key purged while its answer is being fetched does not come back when
// the answer arrives.
func TestDeleteDuringFetch(t *testing.T) {
	s, c := newStore(t, 1)
	now := c.Now()
	token := s.Begin()
	s.Delete("k")
	if err := s.Set("k", &Entry{Value: []byte("fetched before the purge"), FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Minute)}, token); err != nil {
		t.Fatal(err)
	}
	if _, st, _ := s.Lookup("k"); st != Miss {
		t.Errorf("after a purge during its fetch: %v, want a miss", st)
	}
	put(t, s, "k", "fetched after", time.Minute, 0)
	if _, st, _ := s.Lookup("k"); st != Fresh {
		t.Errorf("fetched after the purge: %v, want fresh", st)
	}
}
