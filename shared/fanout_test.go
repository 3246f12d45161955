package shared_test

import (
	"context"
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
	r := &replica{fanout: c.NewFanout(name, nil), applied: make(chan string, 16)}
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
	if n := a.resyncs.Load() + b.resyncs.Load(); n != 0 {
		t.Errorf("%d resyncs at the first subscription; an empty cache has nothing to drop", n)
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
	m.Publish("t:"+shared.FanoutChannel, "12 c after-a-gap")
	for _, r := range []*replica{a, b} {
		if got := r.next(t); got != "after-a-gap" {
			t.Errorf("applied %q, want the message after the gap", got)
		}
	}
	until(t, "the gap to drop both caches", func() bool { return a.resyncs.Load() == 1 && b.resyncs.Load() == 1 })

	// Redis goes away: both are out of step (their caches unused), and
	// when it is back each drops its cache before trusting it again.
	m.Close()
	until(t, "both replicas out of step", func() bool { return !a.fanout.Synced() && !b.fanout.Synced() })
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	until(t, "both replicas back in step", func() bool { return a.fanout.Synced() && b.fanout.Synced() })
	if a.resyncs.Load() != 2 || b.resyncs.Load() != 2 {
		t.Errorf("resyncs a=%d b=%d, want 2 each (one for the gap, one for the reconnection)", a.resyncs.Load(), b.resyncs.Load())
	}
	// The generation restarted with Redis (no persistence): messages are
	// followed again from it.
	if err := a.fanout.Publish(context.Background(), []byte("after restart")); err != nil {
		t.Fatal(err)
	}
	if got := b.next(t); got != "after restart" {
		t.Errorf("b applied %q after the restart", got)
	}
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
	if err := c.NewFanout("a", nil).Publish(context.Background(), []byte("x")); err == nil {
		t.Fatal("Publish with Redis down: no error")
	}
}
