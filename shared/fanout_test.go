package shared_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ctxgate/ctxgate/shared"
)

// replica is one process's fan-out, followed on its own goroutine.
type replica struct {
	fanout  *shared.Fanout
	applied chan string
	resyncs atomic.Int32
}

func follow(t *testing.T, m *miniredis.Miniredis, name string) *replica {
	t.Helper()
	c, err := shared.New(context.Background(), redisConfig("redis://"+m.Addr()+"/0", "t:"), shared.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{fanout: c.NewFanout(name, []byte("everything"), nil), applied: make(chan string, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.fanout.Run(ctx, func(b []byte) { r.applied <- string(b) }, func() { r.resyncs.Add(1) })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		c.Close()
	})
	return r
}

// until polls cond with a deadline generous for a loaded machine.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *replica) next(t *testing.T) string {
	t.Helper()
	select {
	case p := <-r.applied:
		return p
	case <-time.After(20 * time.Second):
		t.Fatal("no invalidation arrived")
		return ""
	}
}

// One replica's invalidation is applied by the others, not by itself; a
// message that skips generations (one was lost) and a lost connection
// each make a replica drop its whole cache before it trusts it again, and
// it trusts nothing while it is out of step.
func TestFanout(t *testing.T) {
	m := miniredis.RunT(t)
	a, b := follow(t, m, "a"), follow(t, m, "b")
	until(t, "both replicas in step", func() bool { return a.fanout.Synced() && b.fanout.Synced() })
	// Each replica resyncs at its first subscription too: its pins may
	// have changed since it read them at start-up.
	if a.resyncs.Load() != 1 || b.resyncs.Load() != 1 {
		t.Errorf("resyncs at the first subscription a=%d b=%d, want 1 each", a.resyncs.Load(), b.resyncs.Load())
	}

	if err := a.fanout.Publish(context.Background(), []byte(`{"all":true}`)); err != nil {
		t.Fatal(err)
	}
	if got := b.next(t); got != `{"all":true}` {
		t.Errorf("b applied %q, want a's invalidation", got)
	}
	if err := b.fanout.Publish(context.Background(), []byte("from b")); err != nil {
		t.Fatal(err)
	}
	if got := a.next(t); got != "from b" {
		t.Errorf("a applied %q first, want b's (its own is not applied twice)", got)
	}

	// A message ten generations ahead: nine were lost.
	current, err := m.Get("t:" + shared.FanoutGeneration)
	if err != nil {
		t.Fatal(err)
	}
	gen, _ := strconv.ParseInt(current, 10, 64)
	m.Publish("t:"+shared.FanoutChannel, strconv.FormatInt(gen+10, 10)+" c after-a-gap")
	for _, r := range []*replica{a, b} {
		if got := r.next(t); got != "after-a-gap" {
			t.Errorf("applied %q, want the message after the gap", got)
		}
	}
	until(t, "the gap to drop both caches", func() bool { return a.resyncs.Load() == 2 && b.resyncs.Load() == 2 })

	// Redis goes away: both are out of step (their caches unused), and
	// when it is back each drops its cache before trusting it again.
	m.Close()
	until(t, "both replicas out of step", func() bool { return !a.fanout.Synced() && !b.fanout.Synced() })
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	until(t, "both replicas back in step", func() bool { return a.fanout.Synced() && b.fanout.Synced() })
	if a.resyncs.Load() != 3 || b.resyncs.Load() != 3 {
		t.Errorf("resyncs a=%d b=%d, want 3 each (the first subscription, the gap, the reconnection)", a.resyncs.Load(), b.resyncs.Load())
	}
	// The generation restarted with Redis (no persistence), from a new
	// random start: messages are followed again from it.
	if err := a.fanout.Publish(context.Background(), []byte("after restart")); err != nil {
		t.Fatal(err)
	}
	if got := b.next(t); got != "after restart" {
		t.Errorf("b applied %q after the restart", got)
	}
}

// An invalidation Redis could not take puts its replica out of step and
// is published when Redis is back, before the replica trusts its cache
// again: the other replicas get it late, never not at all.
func TestFanoutUnsentPublishedLater(t *testing.T) {
	m := miniredis.RunT(t)
	a, b := follow(t, m, "a"), follow(t, m, "b")
	until(t, "both replicas in step", func() bool { return a.fanout.Synced() && b.fanout.Synced() })
	// Redis refuses every command, but b's subscription stays connected:
	// only the invalidation's late publication can reach it.
	m.SetError("LOADING the test says no")
	if err := a.fanout.Publish(context.Background(), []byte("while Redis refused")); err == nil {
		t.Fatal("Publish with Redis refusing: no error")
	}
	if a.fanout.Synced() {
		t.Error("a replica whose invalidation was not published is still in step")
	}
	m.SetError("")
	if got := b.next(t); got != "while Redis refused" {
		t.Errorf("b applied %q, want a's invalidation sent after Redis came back", got)
	}
	until(t, "a back in step", a.fanout.Synced)
}

// With Redis down, Publish fails within redis.timeout: the caller knows
// the other replicas were not told.
func TestFanoutPublishRedisDown(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := shared.New(context.Background(), redisConfig("redis://"+m.Addr()+"/0", "t:"), shared.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m.Close()
	if err := c.NewFanout("a", []byte("everything"), nil).Publish(context.Background(), []byte("x")); err == nil {
		t.Fatal("Publish with Redis down: no error")
	}
}

// A generation counter lost while the replicas stay connected (a flush,
// an eviction) starts again elsewhere: a replica that sees it go back
// drops its cache and follows the new counter, never ignoring what is
// published after.
func TestFanoutGenerationLost(t *testing.T) {
	m := miniredis.RunT(t)
	a, b := follow(t, m, "a"), follow(t, m, "b")
	until(t, "both replicas in step", func() bool { return a.fanout.Synced() && b.fanout.Synced() })
	m.Del("t:" + shared.FanoutGeneration)
	// Until the counter is initialised again from a random start, b may
	// see a message below what it applied: it must not ignore what
	// follows.
	until(t, "b to resync after the counter went back, and apply again", func() bool {
		if err := a.fanout.Publish(context.Background(), []byte("after the loss")); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-b.applied:
			return got == "after the loss"
		case <-time.After(100 * time.Millisecond):
			return false
		}
	})
}
