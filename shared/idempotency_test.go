package shared_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/shared"
)

// look is what a Claim says, comparable.
type look struct {
	Reserved   bool
	Digest     [32]byte
	Answer     string
	OwnerAlive bool
}

func lookOf(cl shared.Claim) look {
	return look{Reserved: cl.Lease != nil, Digest: cl.Digest, Answer: string(cl.Answer), OwnerAlive: cl.OwnerAlive}
}

func claimKey(t *testing.T, c *shared.Client, principal, key string, digest [32]byte) shared.Claim {
	t.Helper()
	cl, err := c.ClaimIdempotency(context.Background(), shared.OpIdempotencyClaim, "docs", principal, key, digest, time.Minute)
	if err != nil {
		t.Fatalf("ClaimIdempotency: %v", err)
	}
	return cl
}

// TestIdempotencyLedger: the first claim reserves, a second sees the call
// running (its owner alive), then its answer; a released key is free
// again; keys are per principal, under the prefix and one hash tag.
func TestIdempotencyLedger(t *testing.T) {
	m, c, _ := start(t, "ctxgate:")
	ctx := context.Background()
	d1, d2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))

	first := claimKey(t, c, "alice", "k1", d1)
	if first.Lease == nil {
		t.Fatal("the first claim did not reserve the key")
	}
	steps := []struct {
		name   string
		claim  func() shared.Claim
		want   look
		before func()
	}{
		{name: "duplicate while running", claim: func() shared.Claim { return claimKey(t, c, "alice", "k1", d1) },
			want: look{Digest: d1, OwnerAlive: true}},
		{name: "other call, same key: the holder's digest", claim: func() shared.Claim { return claimKey(t, c, "alice", "k1", d2) },
			want: look{Digest: d1, OwnerAlive: true}},
		{name: "another principal's key is another key", claim: func() shared.Claim { return claimKey(t, c, "bob", "k1", d1) },
			want: look{Reserved: true, Digest: d1}},
		{name: "after finish: the answer", before: func() {
			if err := first.Lease.Finish(ctx, []byte(`{"status":200}`)); err != nil {
				t.Fatal(err)
			}
		}, claim: func() shared.Claim { return claimKey(t, c, "alice", "k1", d1) },
			want: look{Digest: d1, Answer: `{"status":200}`}},
	}
	for _, s := range steps {
		if s.before != nil {
			s.before()
		}
		if diff := cmp.Diff(s.want, lookOf(s.claim())); diff != "" {
			t.Errorf("%s (-want +got):\n%s", s.name, diff)
		}
	}
	if err := first.Lease.Finish(ctx, []byte("again")); !errors.Is(err, shared.ErrLeaseLost) {
		t.Errorf("a second Finish = %v, want ErrLeaseLost", err)
	}
	record, lease := c.IdempotencyKeys("docs", "alice", "k1")
	if record != "ctxgate:idem:{docs:alice:k1}" || lease != record+":lease" {
		t.Errorf("keys %q %q, want under the prefix with one hash tag", record, lease)
	}
	if m.Exists(lease) {
		t.Error("the lease outlived the call")
	}
	if ttl := m.TTL(record); ttl != time.Minute {
		t.Errorf("the answer is kept %s, want the window (1m)", ttl)
	}
	m.FastForward(time.Minute)
	if cl := claimKey(t, c, "alice", "k1", d2); cl.Lease == nil {
		t.Error("the key is still held after the window")
	}

	// A call that never ran releases its key: the next claim reserves it.
	r := claimKey(t, c, "carol", "k2", d1)
	if err := r.Lease.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if cl := claimKey(t, c, "carol", "k2", d1); cl.Lease == nil {
		t.Error("a released key was not free again")
	}
}

// TestIdempotencyOwnerGone: a lease that is not renewed lapses; the
// record stays (running, owner gone) for the window, so a duplicate
// learns the outcome is unknown instead of running the call again.
// Renewing keeps the owner alive past the lease.
func TestIdempotencyOwnerGone(t *testing.T) {
	m, c, _ := start(t, "ctxgate:")
	d := sha256.Sum256([]byte("call"))
	live := claimKey(t, c, "alice", "renewed", d)
	dead := claimKey(t, c, "alice", "dead", d)
	for range 3 {
		m.FastForward(shared.IdempotencyLease / 2)
		if err := live.Lease.Renew(context.Background()); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	}
	if got := lookOf(claimKey(t, c, "alice", "renewed", d)); !got.OwnerAlive || got.Reserved {
		t.Errorf("renewed reservation: %+v, want running with its owner alive", got)
	}
	if got := lookOf(claimKey(t, c, "alice", "dead", d)); got.OwnerAlive || got.Reserved || got.Answer != "" {
		t.Errorf("lapsed reservation: %+v, want running with its owner gone", got)
	}
	if err := dead.Lease.Finish(context.Background(), []byte("late")); err != nil {
		t.Errorf("Finish after the lease lapsed, the record still its own: %v, want the answer kept", err)
	}
}

// TestIdempotencyRedisDown: every operation fails with Redis gone, counted
// under its op.
func TestIdempotencyRedisDown(t *testing.T) {
	m, c, reg := start(t, "ctxgate:")
	d := sha256.Sum256([]byte("call"))
	cl := claimKey(t, c, "alice", "k", d)
	m.Close()
	ctx := context.Background()
	if _, err := c.ClaimIdempotency(ctx, shared.OpIdempotencyWait, "docs", "alice", "k", d, time.Minute); err == nil {
		t.Error("ClaimIdempotency with Redis gone returned no error")
	}
	if err := cl.Lease.Renew(ctx); err == nil || errors.Is(err, shared.ErrLeaseLost) {
		t.Errorf("Renew with Redis gone = %v, want a Redis error", err)
	}
	if err := cl.Lease.Finish(ctx, []byte("x")); err == nil || errors.Is(err, shared.ErrLeaseLost) {
		t.Errorf("Finish with Redis gone = %v, want a Redis error", err)
	}
	got := map[string]float64{}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "ctxgate_redis_round_trips_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			var op, result string
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			got[op+" "+result] = s.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		"ping ok": 1, "idempotency_claim ok": 1,
		"idempotency_wait error": 1, "idempotency_renew error": 1, "idempotency_finish error": 1,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ctxgate_redis_round_trips_total (-want +got):\n%s", diff)
	}
}
