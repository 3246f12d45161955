package gateway_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/shared"
)

const waitSeries = `ctxgate_redis_round_trips_total{op="idempotency_wait",result="ok"}`

// TestSharedIdempotency: two gateways on one Redis share the ledger: a
// key used on one is replayed on the other (an answer and a gateway
// error alike), a duplicate sent to the other while the first call runs
// waits for it, and neither runs the call twice; a key is per principal.
func TestSharedIdempotency(t *testing.T) {
	m := miniredis.RunT(t)
	up := newFaultUpstream(t)
	g1 := startResGateway(t, up.srv.URL, "", withRedis(t, m, "local"))
	g2 := startResGateway(t, up.srv.URL, "", withRedis(t, m, "local"))
	a1, a2 := g1.open(t, aliceKey), g2.open(t, aliceKey)
	ctx := t.Context()
	key := func(k string) http.Header { return http.Header{"Idempotency-Key": {k}} }

	steps := []struct {
		name             string
		c                *resClient
		id               int
		tool, nonce, key string
		status           int
		code             int64
		replayed         bool
		executions       int // of the nonce, after the step
	}{
		{"first on 1", a1, 2, "echo", "n-seq", "seq", http.StatusOK, 0, false, 1},
		{"duplicate on 2", a2, 3, "echo", "n-seq", "seq", http.StatusOK, 0, true, 1},
		{"other arguments on 2", a2, 4, "echo", "n-other", "seq", http.StatusUnprocessableEntity, gateway.CodeIdempotencyMismatch, false, 0},
		{"outcome unknown on 1", a1, 5, "reset", "n-reset", "reset", http.StatusBadGateway, gateway.CodeOutcomeUnknown, false, 1},
		{"its duplicate on 2: the same error, not run", a2, 6, "reset", "n-reset", "reset", http.StatusBadGateway, gateway.CodeOutcomeUnknown, false, 1},
	}
	for _, s := range steps {
		a, err := s.c.post(ctx, callBody(s.id, s.tool, s.nonce), key(s.key))
		if err != nil || a.status != s.status || a.code() != s.code || (a.header.Get("Idempotent-Replayed") == "true") != s.replayed {
			t.Fatalf("%s: %v %+v; want %d, code %d, replayed %v", s.name, err, a, s.status, s.code, s.replayed)
		}
		if fmt.Sprint(a.msg.ID) != fmt.Sprint(s.id) {
			t.Errorf("%s: answer %s is not under the request's own id %d", s.name, a.body, s.id)
		}
		if got := up.executions(s.nonce); got != s.executions {
			t.Errorf("%s: %s executed %d times, want %d", s.name, s.nonce, got, s.executions)
		}
	}
	bob := g2.open(t, bobKey)
	if a, err := bob.post(ctx, callBody(7, "echo", "n-seq"), key("seq")); err != nil || a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("another principal's key: %v %+v; want its own execution", err, a)
	}

	// Concurrent: the duplicate arrives on 2 while 1 runs the call.
	type result struct {
		a   *resAnswer
		err error
	}
	first, dup := make(chan result, 1), make(chan result, 1)
	go func() {
		a, err := a1.post(ctx, callBody(10, "slow", "n-conc"), key("conc"))
		first <- result{a, err}
	}()
	waitUntil(t, "the first call to run", func() bool { return up.executions("n-conc") == 1 })
	go func() {
		a, err := a2.post(ctx, callBody(11, "slow", "n-conc"), key("conc"))
		dup <- result{a, err}
	}()
	waitUntil(t, "the duplicate to wait on Redis", func() bool { return g2.series(t)[waitSeries] > 0 })
	close(up.gate)
	for name, ch := range map[string]chan result{"first": first, "duplicate": dup} {
		r := <-ch
		if r.err != nil || r.a.status != http.StatusOK || !strings.Contains(string(r.a.msg.Result), "n-conc") {
			t.Errorf("%s: %v %+v; want the result", name, r.err, r.a)
		}
		if replayed := r.a.header.Get("Idempotent-Replayed") == "true"; replayed != (name == "duplicate") {
			t.Errorf("%s: Idempotent-Replayed %v", name, replayed)
		}
	}
	if got := up.executions("n-conc"); got != 1 {
		t.Errorf("a duplicate on another replica during the call: executed %d times, want once", got)
	}
	for _, k := range m.Keys() {
		if !strings.HasPrefix(k, "t:idem:{up:api_key%3Aalice:") && !strings.HasPrefix(k, "t:idem:{up:api_key%3Abob:") {
			t.Errorf("key %q is not under the prefix and a principal's hash tag", k)
		}
	}
}

// TestSharedIdempotencyInProgress: a duplicate that waits its route's
// deadline while the first call still runs gets 409 -31060 with a
// Retry-After, runs nothing, and gets the answer once the call ended.
func TestSharedIdempotencyInProgress(t *testing.T) {
	m := miniredis.RunT(t)
	up := newFaultUpstream(t)
	g1 := startResGateway(t, up.srv.URL, "", withRedis(t, m, "local"))
	g2 := startResGateway(t, up.srv.URL, "timeout: 1s\ndeadline: 1s", withRedis(t, m, "local"))
	a1, a2 := g1.open(t, aliceKey), g2.open(t, aliceKey)
	h := http.Header{"Idempotency-Key": {"busy"}}
	done := make(chan *resAnswer, 1)
	go func() {
		a, _ := a1.post(t.Context(), callBody(2, "slow", "n-busy"), h)
		done <- a
	}()
	waitUntil(t, "the first call to run", func() bool { return up.executions("n-busy") == 1 })
	a, err := a2.post(t.Context(), callBody(3, "slow", "n-busy"), h)
	if err != nil || a.status != http.StatusConflict || a.code() != gateway.CodeIdempotencyInProgress || a.header.Get("Retry-After") == "" {
		t.Fatalf("duplicate while the call runs past its wait: %v %+v; want 409 -31060 with a Retry-After", err, a)
	}
	close(up.gate)
	if a := <-done; a == nil || a.status != http.StatusOK {
		t.Fatalf("first call: %+v", a)
	}
	if a, err := a2.post(t.Context(), callBody(4, "slow", "n-busy"), h); err != nil || a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry after the call ended: %v %+v; want the replay", err, a)
	}
	if got := up.executions("n-busy"); got != 1 {
		t.Errorf("executed %d times, want once", got)
	}
}

// TestSharedIdempotencyOwnerGone: a reservation whose replica stopped
// renewing it (crashed mid-call) is not run again: the duplicate learns
// the outcome is unknown (502 -31016).
func TestSharedIdempotencyOwnerGone(t *testing.T) {
	m := miniredis.RunT(t)
	up := newFaultUpstream(t)
	g := startResGateway(t, up.srv.URL, "", withRedis(t, m, "local"))
	alice := g.open(t, aliceKey)
	// The replica that died: it reserved the key for the same call.
	dead, err := shared.New(context.Background(), &config.Redis{URL: "redis://" + m.Addr() + "/0", KeyPrefix: "t:", PoolSize: 1, Timeout: 2 * time.Second, OnError: "local"}, shared.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dead.Close() })
	digest := sha256.Sum256([]byte(`echo` + "\x00" + `{"nonce":"n-orphan"}`))
	if cl, err := dead.ClaimIdempotency(t.Context(), shared.OpIdempotencyClaim, "up", "api_key:alice", "orphan", digest, time.Minute); err != nil || cl.Lease == nil {
		t.Fatalf("reserve: %v %+v", err, cl)
	}
	m.FastForward(shared.IdempotencyLease)
	a, err := alice.post(t.Context(), callBody(2, "echo", "n-orphan"), http.Header{"Idempotency-Key": {"orphan"}})
	if err != nil || a.status != http.StatusBadGateway || a.code() != gateway.CodeOutcomeUnknown {
		t.Fatalf("duplicate of a call whose replica died: %v %+v; want 502 -31016", err, a)
	}
	if got := up.executions("n-orphan"); got != 0 {
		t.Errorf("the orphaned call ran again (%d)", got)
	}
}

// TestSharedIdempotencyRedisDown: with Redis gone a call with a key is
// refused, 503 -31061 with a Retry-After, whatever on_error; a call
// without one is served.
func TestSharedIdempotencyRedisDown(t *testing.T) {
	for _, onError := range []string{"local", "deny"} {
		t.Run(onError, func(t *testing.T) {
			m := miniredis.RunT(t)
			up := newFaultUpstream(t)
			g := startResGateway(t, up.srv.URL, "", withRedis(t, m, onError))
			alice := g.open(t, aliceKey)
			m.Close()
			a, err := alice.post(t.Context(), callBody(2, "echo", "n-down"), http.Header{"Idempotency-Key": {"down"}})
			if err != nil || a.status != http.StatusServiceUnavailable || a.code() != gateway.CodeIdempotencyUnavailable || a.header.Get("Retry-After") == "" {
				t.Fatalf("key with Redis gone: %v %+v; want 503 -31061 with a Retry-After", err, a)
			}
			if got := up.executions("n-down"); got != 0 {
				t.Errorf("a call whose key could not be reserved ran (%d)", got)
			}
			if a, err := alice.post(t.Context(), callBody(3, "echo", "n-nokey"), nil); err != nil || a.status != http.StatusOK {
				t.Errorf("no key with Redis gone: %v %+v; want 200", err, a)
			}
			if got := g.series(t)[fmt.Sprintf(`ctxgate_redis_round_trips_total{op=%q,result="error"}`, shared.OpIdempotencyClaim)]; got != 1 {
				t.Errorf("claim errors counted: %v, want 1", got)
			}
		})
	}
}
