package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// bridgeRecorder is a bridgeSessions whose opens name their sessions in
// order and whose ended sessions are reported on a channel.
type bridgeRecorder struct {
	b      *bridgeSessions
	opened int
	ended  chan string
	gone   map[string]bool
}

func newBridgeRecorder(ttl time.Duration) *bridgeRecorder {
	r := &bridgeRecorder{b: newBridgeSessions(ttl), ended: make(chan string, 16), gone: map[string]bool{}}
	r.b.end = func(s *bridgeSession) { r.ended <- s.id }
	r.b.gone = func(id string) bool { return r.gone[id] }
	return r
}

func (r *bridgeRecorder) get(t *testing.T, principal string) *bridgeSession {
	t.Helper()
	s, err := r.b.get(principal, func() (*bridgeSession, error) {
		r.opened++
		return &bridgeSession{id: fmt.Sprintf("s%d", r.opened), opened: time.Now()}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// endedNow is every session ended since the last call.
func (r *bridgeRecorder) endedNow() []string {
	var got []string
	for {
		select {
		case id := <-r.ended:
			got = append(got, id)
		default:
			return got
		}
	}
}

// TestBridgeSessionLifecycle: one session per principal, shared by its
// requests; one replaced (sessions.ttl) is ended upstream once the last
// request using it is done, and never while one is; one the transport
// knows has ended, or the upstream reported lost, is replaced and not
// ended again.
func TestBridgeSessionLifecycle(t *testing.T) {
	t.Run("shared by a principal, not by another", func(t *testing.T) {
		r := newBridgeRecorder(time.Hour)
		a1, a2, b := r.get(t, "alice"), r.get(t, "alice"), r.get(t, "bob")
		if a1 != a2 || a1 == b || r.opened != 2 {
			t.Errorf("alice %s %s, bob %s, opened %d: want one session each", a1.id, a2.id, b.id, r.opened)
		}
		r.b.release(a1)
		r.b.release(a2)
		r.b.release(b)
		if got := r.endedNow(); len(got) != 0 {
			t.Errorf("ended %v, sessions still current", got)
		}
	})
	t.Run("replaced after the ttl, ended after its last use", func(t *testing.T) {
		r := newBridgeRecorder(0) // every get finds the session too old
		old := r.get(t, "alice")
		idle := r.get(t, "alice")
		if old == idle {
			t.Fatal("a session older than the ttl was handed out again")
		}
		if got := r.endedNow(); len(got) != 0 {
			t.Errorf("ended %v while its request is in flight", got)
		}
		r.b.release(old)
		if diff := cmp.Diff([]string{"s1"}, r.endedNow()); diff != "" {
			t.Errorf("ended (-want +got):\n%s", diff)
		}
		r.b.release(idle)
		r.get(t, "alice") // idle is not in use: ended at once
		if diff := cmp.Diff([]string{"s2"}, r.endedNow()); diff != "" {
			t.Errorf("ended (-want +got):\n%s", diff)
		}
	})
	t.Run("gone or lost: replaced, not ended again", func(t *testing.T) {
		r := newBridgeRecorder(time.Hour)
		s1 := r.get(t, "alice")
		r.b.release(s1)
		r.gone["s1"] = true // its process was reaped
		s2 := r.get(t, "alice")
		if s2 == s1 {
			t.Fatal("a session its transport knows ended was handed out")
		}
		r.b.drop("alice", s2) // the upstream answered 404
		r.b.release(s2)
		if s3 := r.get(t, "alice"); s3 == s2 {
			t.Fatal("a lost session was handed out")
		}
		if got := r.endedNow(); len(got) != 0 {
			t.Errorf("ended %v, which had ended already", got)
		}
	})
	t.Run("evicted: ended", func(t *testing.T) {
		r := newBridgeRecorder(time.Hour)
		for i := range maxBridgeSessions {
			r.b.release(r.get(t, fmt.Sprint("p", i)))
		}
		r.b.release(r.get(t, "one more"))
		if got := r.endedNow(); len(got) != 1 || got[0] == "s10001" {
			t.Errorf("ended %v, want the evicted session", got)
		}
	})
}

// TestBridgedResult: a bridged result gets resultType "complete", and a
// cacheable one ttlMs 0 and cacheScope "private", unless it has them;
// every other byte, and every other message, is the upstream's.
func TestBridgedResult(t *testing.T) {
	for _, tc := range []struct{ method, in, want string }{
		{"tools/call", `{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}`, `{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false,"resultType":"complete"}}`},
		{"ping", `{"jsonrpc":"2.0","id":1,"result":{}}`, `{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}}`},
		{"tools/list", `{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"x"}],"_meta":{"k":1}}}`, `{"jsonrpc":"2.0","id":"a","result":{"tools":[{"name":"x"}],"_meta":{"k":1},"resultType":"complete","ttlMs":0,"cacheScope":"private"}}`},
		{"resources/read", `{"jsonrpc":"2.0","id":1,"result":{"contents":[],"ttlMs":5000,"cacheScope":"public"}}`, `{"jsonrpc":"2.0","id":1,"result":{"contents":[],"ttlMs":5000,"cacheScope":"public","resultType":"complete"}}`},
		{"tools/call", `{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required"}}`, `{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required"}}`},
		{"tools/call", `{"jsonrpc":"2.0","id":1,"result":{"ResultType":"x"}}`, `{"jsonrpc":"2.0","id":1,"result":{"ResultType":"x"}}`},
		{"tools/list", `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`, `{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`},
		{"tools/call", `{"jsonrpc":"2.0","id":1,"result":[]}`, `{"jsonrpc":"2.0","id":1,"result":[]}`},
		{"tools/call", `not json`, `not json`},
	} {
		if diff := cmp.Diff(tc.want, string(bridgedResult([]byte(tc.in), tc.method))); diff != "" {
			t.Errorf("bridgedResult(%s, %s) (-want +got):\n%s", tc.in, tc.method, diff)
		}
	}
}

// TestMissingCapability: only a -32021 error is a missing client
// capability.
func TestMissingCapability(t *testing.T) {
	got := map[string]bool{}
	for _, body := range []string{
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32021,"message":"sampling capability required"}}`,
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`,
		`{"jsonrpc":"2.0","id":1,"result":{"code":-32021}}`,
		`[{"jsonrpc":"2.0","id":1,"error":{"code":-32021}}]`,
	} {
		got[body] = missingCapability([]byte(body))
	}
	want := map[string]bool{
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32021,"message":"sampling capability required"}}`: true,
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}`:                           false,
		`{"jsonrpc":"2.0","id":1,"result":{"code":-32021}}`:                                         false,
		`[{"jsonrpc":"2.0","id":1,"error":{"code":-32021}}]`:                                        false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("missingCapability (-want +got):\n%s", diff)
	}
}
