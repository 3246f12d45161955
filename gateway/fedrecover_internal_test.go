package gateway

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestLateSessionsBackoff: a missing member's retries are due after 1s,
// then 2s, 4s, ... up to 1m after each failure, one at a time; a joined
// member is added to the session's claims and no longer retried.
func TestLateSessionsBackoff(t *testing.T) {
	var ls lateSessions
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ls.add("s", &lateSession{members: map[string]*lateMember{"b": {}}}, t0, 24*time.Hour)
	due := func(at time.Duration) []string {
		_, names := ls.due("s", "", t0.Add(at))
		return names
	}
	now := time.Duration(0)
	if got := due(now); got != nil {
		t.Fatalf("due at once: %v", got)
	}
	var waits []time.Duration
	for range 8 {
		wait, ok := ls.pending("s", "b", t0.Add(now))
		if !ok {
			t.Fatal("b not pending")
		}
		waits = append(waits, wait)
		now += wait
		if got := due(now); !cmp.Equal(got, []string{"b"}) {
			t.Fatalf("at %s: due %v, want b", now, got)
		}
		if got := due(now); got != nil {
			t.Fatalf("at %s: due twice while trying: %v", now, got)
		}
		ls.done("s", "b", "", false, t0.Add(now))
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	if diff := cmp.Diff(want, waits); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
	now += time.Minute
	due(now)
	ls.done("s", "b", "up-b", true, t0.Add(now))
	claims := ls.joined("s", sessionClaims{Members: map[string]string{"a": "up-a"}})
	if diff := cmp.Diff(map[string]string{"a": "up-a", "b": "up-b"}, claims.Members); diff != "" {
		t.Errorf("claims after b joined (-want +got):\n%s", diff)
	}
	if got := due(now + time.Hour); got != nil {
		t.Errorf("a joined member is retried: %v", got)
	}
	ls.remove("s")
	if ls.done("s", "b", "x", true, t0) {
		t.Error("done on an ended session reports it kept")
	}
}

// TestLateSessionsExpire: a session past its TTL is dropped at the next
// add or due, however few sessions are held (one nobody ends is not kept
// for a day); a request of another principal never starts its retries.
func TestLateSessionsExpire(t *testing.T) {
	var ls lateSessions
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	member := func() map[string]*lateMember { return map[string]*lateMember{"b": {}} }
	ls.add("old", &lateSession{principal: "p", members: member()}, t0, time.Hour)
	ls.add("new", &lateSession{principal: "p", members: member()}, t0.Add(2*time.Hour), time.Hour)
	if _, names := ls.due("old", "p", t0.Add(2*time.Hour)); names != nil || ls.byID["old"] != nil {
		t.Errorf("a session past its TTL is kept after add: due %v", names)
	}
	if _, names := ls.due("new", "q", t0.Add(2*time.Hour+time.Second)); names != nil {
		t.Errorf("another principal's request starts the retries: %v", names)
	}
	if _, names := ls.due("new", "p", t0.Add(2*time.Hour+time.Second)); !cmp.Equal(names, []string{"b"}) {
		t.Errorf("due within the TTL: %v, want b", names)
	}
	ls.due("other", "p", t0.Add(4*time.Hour))
	if len(ls.byID) != 0 {
		t.Errorf("sessions past their TTL kept after due: %d", len(ls.byID))
	}
}
