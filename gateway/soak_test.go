package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/gateway"
)

// soakCall is one tools/call of the soak and what its client got.
type soakCall struct {
	id           int
	tool, nonce  string
	key          string // idempotency key; two calls share each
	a            *resAnswer
	err          error
	gotNonce     string // the nonce in the result, if any
	principalKey string
}

// TestSoak mixes normal traffic with scheduled faults (resets after
// receipt, 503 bursts that open the breaker, hangs past the timeout, a
// small bulkhead) for a bounded time, then reconciles what every client got
// with what the upstream executed and what the policy allowed.
func TestSoak(t *testing.T) {
	soak(t, 1, nil)
}

// TestSoakSharedIdempotency is the soak over three replicas whose
// idempotency ledger is on one real redis-server, killed and started
// again halfway (its data kept in its append-only file, as the README asks
// of a Redis holding idempotency keys): the second call of each pair of
// duplicates goes to another replica, every call gets exactly one answer
// (keyed calls while Redis is away are refused, -31061), and still
// nothing runs twice.
func TestSoakSharedIdempotency(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test")
	}
	r := startRedisServer(t, true)
	restart := func() {
		t.Log("Redis killed; started again at once")
		r.restart()
	}
	soak(t, 3, restart, withRedisServer(t, r, "local"))
}

// soak runs the soak against replicas gateways on one upstream; midway,
// if set, runs halfway through (a Redis restart).
func soak(t *testing.T, replicas int, midway func(), opts ...func(*gateway.Options)) {
	if testing.Short() {
		t.Skip("soak test")
	}
	const duration = 4 * time.Second
	up := newFaultUpstream(t)
	var gws []*resGateway
	var clients [][]*resClient // per worker principal, one client per replica
	for range replicas {
		gws = append(gws, startResGateway(t, up.srv.URL, `timeout: 150ms
max_concurrent: 6
circuit_breaker: {failure_threshold: 5, failure_window: 1s, delay: 150ms, success_threshold: 1}`, opts...))
	}
	for _, key := range []string{aliceKey, bobKey} {
		var cs []*resClient
		for _, g := range gws {
			cs = append(cs, g.open(t, key))
		}
		clients = append(clients, cs)
	}
	g := gws[0]
	baseline := runtime.NumGoroutine()

	ctx, cancel := context.WithTimeout(t.Context(), duration)
	defer cancel()
	var scheduler sync.WaitGroup
	scheduler.Go(func() { scheduleFaults(ctx, up) })
	if midway != nil {
		scheduler.Go(func() {
			select {
			case <-time.After(duration / 2):
				midway()
			case <-ctx.Done():
			}
		})
	}

	var (
		mu    sync.Mutex
		calls []*soakCall
		next  atomic.Int64
	)
	var workers sync.WaitGroup
	for w := range 8 {
		cs := clients[w%2]
		workers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for ctx.Err() == nil {
				batch := soakBatch(rng, int(next.Add(2)), cs[0].key)
				var wg sync.WaitGroup
				for i, call := range batch {
					// A pair's duplicate goes to the next replica.
					wg.Go(func() { runSoakCall(cs[i%len(cs)], call) })
				}
				wg.Wait()
				mu.Lock()
				calls = append(calls, batch...)
				mu.Unlock()
			}
		})
	}
	workers.Wait()
	scheduler.Wait()

	var decisions strings.Builder
	for _, g := range gws {
		decisions.WriteString(readFile(t, g.decisions))
	}
	figures := reconcile(t, calls, up.ledgerCopy(), allowedNonces(t, decisions.String()))
	s := g.series(t)
	figures["upstream retries"] = int(s[`ctxgate_upstream_retries_total{upstream="up"}`])
	figures["bulkhead rejections"] = int(s[`ctxgate_bulkhead_rejections_total{upstream="up"}`])
	keys := make([]string, 0, len(figures))
	for k := range figures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "\n  %-40s %d", k, figures[k])
	}
	t.Logf("soak reconciliation (%s):%s", duration, b.String())

	// Idle keep-alive connections are not leaks: close them, then count.
	http.DefaultClient.CloseIdleConnections()
	for _, g := range gws {
		g.pool.CloseIdleConnections()
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline+4 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, baseline %d:\n%s", runtime.NumGoroutine(), baseline, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// scheduleFaults changes the upstream's behaviour every 50ms until ctx ends.
func scheduleFaults(ctx context.Context, up *faultUpstream) {
	modes := []string{"ok", "ok", "reset", "ok", "503", "ok", "hang", "ok"}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		up.setMode(modes[i%len(modes)])
		select {
		case <-ctx.Done():
			up.setMode("ok")
			return
		case <-tick.C:
		}
	}
}

// soakBatch is one worker's next calls: usually one, sometimes a pair of
// duplicates sharing an idempotency key.
func soakBatch(rng *rand.Rand, id int, principalKey string) []*soakCall {
	nonce := fmt.Sprintf("%s-%d", principalKey[:3], id)
	tool := []string{"echo", "echo", "echo", "flaky", "flaky", "forbidden"}[rng.IntN(6)]
	first := &soakCall{id: id, tool: tool, nonce: nonce, principalKey: principalKey}
	if rng.IntN(5) > 0 || tool == "forbidden" {
		return []*soakCall{first}
	}
	first.key = "key-" + nonce
	second := *first
	second.id = id + 1
	return []*soakCall{first, &second}
}

func runSoakCall(c *resClient, call *soakCall) {
	var h http.Header
	if call.key != "" {
		h = http.Header{"Idempotency-Key": {call.key}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call.a, call.err = c.post(ctx, callBody(call.id, call.tool, call.nonce), h)
	if call.err == nil && call.a.msg.Result != nil {
		var r struct {
			Content []struct{ Text string } `json:"content"`
		}
		if json.Unmarshal(call.a.msg.Result, &r) == nil && len(r.Content) == 1 {
			call.gotNonce = r.Content[0].Text
		}
	}
}

// allowedNonces reads the decision log: the nonces of tools/call the policy
// allowed.
func allowedNonces(t *testing.T, log string) map[string]bool {
	t.Helper()
	allowed := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Input struct {
				Method string `json:"method"`
				Tool   struct {
					Arguments struct {
						Nonce string `json:"nonce"`
					} `json:"arguments"`
				} `json:"tool"`
			} `json:"input"`
			Result struct {
				Allow bool `json:"allow"`
			} `json:"result"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Input.Method == "tools/call" && rec.Result.Allow {
			allowed[rec.Input.Tool.Arguments.Nonce] = true
		}
	}
	return allowed
}

// nothingSent are the answers that promise the call never reached the
// upstream: policy denial (-32602 for a tool), breaker open, bulkhead full,
// rate limited.
var nothingSent = map[int64]bool{-32602: true, -31013: true, -31014: true, -31015: true}

// reconcile checks every call against the ledger and returns the figures.
func reconcile(t *testing.T, calls []*soakCall, ledger map[string]int, allowed map[string]bool) map[string]int {
	t.Helper()
	figures := map[string]int{"calls": len(calls), "upstream executions": 0}
	sentNonces := map[string]bool{}
	for _, c := range calls {
		sentNonces[c.nonce] = true
		switch {
		case c.err != nil:
			t.Errorf("call %d (%s): no terminal answer: %v", c.id, c.tool, c.err)
			figures["no answer"]++
			continue
		case c.a.status == http.StatusOK && c.a.msg.Error == nil:
			figures["outcome: result"]++
		case c.a.msg.Error != nil:
			figures[fmt.Sprintf("outcome: HTTP %d code %d", c.a.status, c.a.code())]++
		default:
			figures[fmt.Sprintf("outcome: HTTP %d relayed", c.a.status)]++
		}
		if c.a.msg.Error != nil || c.a.msg.Result != nil {
			if fmt.Sprint(c.a.msg.ID) != fmt.Sprint(c.id) {
				t.Errorf("call %d got an answer with id %v", c.id, c.a.msg.ID)
			}
		}
		if c.gotNonce != "" && c.gotNonce != c.nonce {
			t.Errorf("call %d (%s) got the result of %s: delivered to the wrong client", c.id, c.nonce, c.gotNonce)
		}
		n := ledger[c.nonce]
		switch {
		case c.a.msg.Result != nil && c.a.msg.Error == nil && n != 1:
			t.Errorf("call %d (%s) succeeded but executed %d times", c.id, c.nonce, n)
		case nothingSent[c.a.code()] && c.key == "" && n != 0:
			t.Errorf("call %d (%s) answered %d (nothing sent) but executed %d times", c.id, c.nonce, c.a.code(), n)
		}
		if c.key != "" {
			figures["calls with an idempotency key"]++
			if c.a.header.Get("Idempotent-Replayed") == "true" {
				figures["idempotent replays"]++
			}
		}
	}
	for nonce, n := range ledger {
		figures["upstream executions"] += n
		if n > 1 {
			t.Errorf("%s executed %d times", nonce, n)
		}
		if !sentNonces[nonce] {
			t.Errorf("%s executed but never sent by a client", nonce)
		}
		if !allowed[nonce] {
			t.Errorf("%s executed without an allow decision", nonce)
		}
	}
	return figures
}
