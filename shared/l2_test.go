package shared_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ctxgate/ctxgate/shared"
)

// The second level answers the first key present, under the current
// generation only: an invalidation published after a store makes the
// entry unreachable, and so does one published during the fetch.
func TestCacheGetSet(t *testing.T) {
	_, c, _ := start(t, "t:")
	bg := context.Background()
	gen, key, v, err := c.CacheGet(bg, "shared", "private")
	if err != nil || key != "" || v != nil {
		t.Fatalf("empty: %d %q %q %v", gen, key, v, err)
	}
	if err := c.CacheSet(bg, gen, "private", []byte("p"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, key, v, _ := c.CacheGet(bg, "shared", "private"); key != "private" || string(v) != "p" {
		t.Errorf("after set: %q %q, want the private entry", key, v)
	}
	if err := c.CacheSet(bg, gen, "shared", []byte("s"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, key, _, _ := c.CacheGet(bg, "shared", "private"); key != "shared" {
		t.Errorf("found %q first, want shared", key)
	}
	if err := c.NewFanout("a", []byte("everything"), nil).Publish(bg, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	newGen, key, _, _ := c.CacheGet(bg, "shared", "private")
	if key != "" || newGen != gen+1 {
		t.Errorf("after an invalidation: %q in generation %d, want nothing in %d", key, newGen, gen+1)
	}
	// Stored under the generation read before the fetch, which moved.
	if err := c.CacheSet(bg, gen, "private", []byte("late"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, key, _, _ := c.CacheGet(bg, "private"); key != "" {
		t.Errorf("an answer fetched before the invalidation is found: %q", key)
	}
}

// With Redis down, both fail within redis.timeout.
func TestCacheRedisDown(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := shared.New(context.Background(), redisConfig("redis://"+m.Addr()+"/0", "t:"), shared.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m.Close()
	if _, _, _, err := c.CacheGet(context.Background(), "k"); err == nil {
		t.Error("CacheGet with Redis down: no error")
	}
	if err := c.CacheSet(context.Background(), 0, "k", []byte("v"), time.Minute); err == nil {
		t.Error("CacheSet with Redis down: no error")
	}
}
