package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// countingServer is an MCP upstream outside the system that counts the
// tools/call it executes, by the nonce in their arguments. Its tool "slow"
// answers once its nonce's gate is opened; any other tool at once.
type countingServer struct {
	mu    sync.Mutex
	runs  map[string]int
	gates map[string]chan struct{}
}

func newCountingServer() *countingServer {
	return &countingServer{runs: map[string]int{}, gates: map[string]chan struct{}{}}
}

func (c *countingServer) gate(nonce string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	g, ok := c.gates[nonce]
	if !ok {
		g = make(chan struct{})
		c.gates[nonce] = g
	}
	return g
}

// open lets the slow calls with nonce answer.
func (c *countingServer) open(nonce string) { close(c.gate(nonce)) }

func (c *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name      string            `json:"name"`
			Arguments map[string]string `json:"arguments"`
		} `json:"params"`
	}
	_ = json.Unmarshal(body, &req)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case req.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "counting-session")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{}},"serverInfo":{"name":"counting","version":"1"}}}`, req.ID)
		return
	case req.ID == nil:
		w.WriteHeader(http.StatusAccepted)
		return
	case req.Method != "tools/call":
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"tools":[]}}`, req.ID)
		return
	}
	nonce := req.Params.Arguments["nonce"]
	c.mu.Lock()
	c.runs[nonce]++
	c.mu.Unlock()
	if req.Params.Name == "slow" {
		select {
		case <-c.gate(nonce):
		case <-r.Context().Done():
			return
		}
	}
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":%q}]}}`, req.ID, nonce)
}

func (c *countingServer) executions(nonce string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.runs[nonce]
}

// idemReplicaConfig is one replica whose idempotency ledger is on Redis:
// anonymous callers, no rate limits (Redis serves the ledger alone).
func idemReplicaConfig(upstreamURL, redisURL string) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
redis: {url: %q, key_prefix: "e2e:"}
upstreams:
  - name: counting
    url: %q
`, redisURL, upstreamURL)
}

// idemAnswer is what one keyed call got.
type idemAnswer struct {
	status   int
	code     int64
	id       string
	text     string
	replayed bool
	retry    string
	err      error
}

// keyedCall sends a tools/call with an Idempotency-Key (none if key is
// ""), bounded by 30s; safe in goroutines (it reports, never fails).
func keyedCall(ctx context.Context, c *rpc, id int, tool, nonce, key string) idemAnswer {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"nonce":%q}}}`, id, tool, nonce)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, strings.NewReader(body))
	if err != nil {
		return idemAnswer{err: err}
	}
	req.Header = http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"},
		"Mcp-Session-Id": {c.session}, "Mcp-Protocol-Version": {"2025-11-25"}}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return idemAnswer{err: err}
	}
	defer resp.Body.Close()
	var msg struct {
		ID     any `json:"id"`
		Result struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
		Error struct {
			Code int64 `json:"code"`
		} `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &msg); err != nil {
		return idemAnswer{status: resp.StatusCode, err: fmt.Errorf("%w: %s", err, b)}
	}
	a := idemAnswer{status: resp.StatusCode, code: msg.Error.Code, id: fmt.Sprint(msg.ID),
		replayed: resp.Header.Get("Idempotent-Replayed") == "true", retry: resp.Header.Get("Retry-After")}
	if len(msg.Result.Content) == 1 {
		a.text = msg.Result.Content[0].Text
	}
	return a
}

// metricOrZero reads one sample of /metrics, 0 when it is not there yet.
func metricOrZero(t *testing.T, gw *gatewayProc, series string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(get(t, gw.Admin+"/metrics"))
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestSharedIdempotencyAcrossReplicas: three ctxgate processes on one
// redis-server share the idempotency ledger. The same key sent to two
// replicas one after the other, and to three at once while the first
// call runs, executes once; every duplicate gets the answer under its own
// id. Redis killed while a call runs and its duplicate waits: the
// duplicate is refused (503 -31061), the call still answers; then a call
// with a key is refused within redis.timeout, nothing runs, and a call
// without a key is still served. Redis back: the ledger works again. A
// replica killed mid-call: its lease lapses and the duplicates get 502
// -31016; the call never runs again.
func TestSharedIdempotencyAcrossReplicas(t *testing.T) {
	rds := startRedis(t)
	up := newCountingServer()
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	var replicas []*gatewayProc
	var clients []*rpc
	for range 3 {
		gw := startGateway(t, idemReplicaConfig(srv.URL+"/", rds.URL))
		c := &rpc{url: gw.URL + "/mcp/counting"}
		c.initialize(t)
		replicas, clients = append(replicas, gw), append(clients, c)
	}
	ctx := t.Context()

	t.Run("sequential", func(t *testing.T) {
		first := keyedCall(ctx, clients[0], 2, "echo", "n-seq", "seq")
		second := keyedCall(ctx, clients[1], 3, "echo", "n-seq", "seq")
		if first.err != nil || first.status != http.StatusOK || first.replayed || first.text != "n-seq" {
			t.Errorf("first, replica 0: %+v; want 200, executed", first)
		}
		if second.err != nil || second.status != http.StatusOK || !second.replayed || second.id != "3" || second.text != "n-seq" {
			t.Errorf("duplicate, replica 1: %+v; want 200, replayed under id 3", second)
		}
		other := keyedCall(ctx, clients[2], 4, "echo", "n-other", "seq")
		if other.status != http.StatusUnprocessableEntity || other.code != -31017 {
			t.Errorf("the key for other arguments, replica 2: %+v; want 422 -31017", other)
		}
		if n, m := up.executions("n-seq"), up.executions("n-other"); n != 1 || m != 0 {
			t.Errorf("executions: n-seq %d, n-other %d; want 1 and 0", n, m)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		answers := make([]idemAnswer, 3)
		var wg sync.WaitGroup
		wg.Go(func() { answers[0] = keyedCall(ctx, clients[0], 10, "slow", "n-conc", "conc") })
		waitFor(t, "the first call to run", readyDeadline, func() bool { return up.executions("n-conc") == 1 })
		for i := 1; i < 3; i++ {
			wg.Go(func() { answers[i] = keyedCall(ctx, clients[i], 10+i, "slow", "n-conc", "conc") })
		}
		waitFor(t, "both duplicates to wait on Redis", readyDeadline, func() bool {
			for _, gw := range replicas[1:] {
				if metricOrZero(t, gw, waitSeries) == 0 {
					return false
				}
			}
			return true
		})
		up.open("n-conc")
		wg.Wait()
		for i, a := range answers {
			if a.err != nil || a.status != http.StatusOK || a.text != "n-conc" || a.id != strconv.Itoa(10+i) || a.replayed != (i > 0) {
				t.Errorf("replica %d: %+v; want 200 under id %d, replayed %v", i, a, 10+i, i > 0)
			}
		}
		if got := up.executions("n-conc"); got != 1 {
			t.Errorf("three concurrent calls with one key on three replicas executed %d times, want once", got)
		}
	})

	t.Run("redis killed", func(t *testing.T) {
		// A call runs on 0 and its duplicate waits on 1 when Redis dies:
		// the duplicate is told at its next look, the call still answers.
		owner, dup := make(chan idemAnswer, 1), make(chan idemAnswer, 1)
		go func() { owner <- keyedCall(ctx, clients[0], 15, "slow", "n-mid", "mid") }()
		waitFor(t, "the call to run", readyDeadline, func() bool { return up.executions("n-mid") == 1 })
		waits := metricOrZero(t, replicas[1], waitSeries)
		go func() { dup <- keyedCall(ctx, clients[1], 16, "slow", "n-mid", "mid") }()
		waitFor(t, "the duplicate to wait on Redis", readyDeadline, func() bool { return metricOrZero(t, replicas[1], waitSeries) > waits })
		rds.stop()
		if a := <-dup; a.err != nil || a.status != http.StatusServiceUnavailable || a.code != -31061 || a.retry == "" {
			t.Errorf("a duplicate waiting when Redis died: %+v; want 503 -31061 with a Retry-After", a)
		}
		up.open("n-mid")
		if a := <-owner; a.err != nil || a.status != http.StatusOK || a.text != "n-mid" {
			t.Errorf("the call running when Redis died: %+v; want its answer", a)
		}
		if got := up.executions("n-mid"); got != 1 {
			t.Errorf("the call running when Redis died executed %d times, want once", got)
		}
		for i, c := range clients {
			a := keyedCall(ctx, c, 20+i, "echo", "n-down", "down")
			if a.err != nil || a.status != http.StatusServiceUnavailable || a.code != -31061 || a.retry == "" {
				t.Errorf("replica %d, a key with Redis gone: %+v; want 503 -31061 with a Retry-After", i, a)
			}
			if a := keyedCall(ctx, c, 30+i, "echo", fmt.Sprintf("n-nokey-%d", i), ""); a.err != nil || a.status != http.StatusOK {
				t.Errorf("replica %d, no key with Redis gone: %+v; want 200", i, a)
			}
		}
		if got := up.executions("n-down"); got != 0 {
			t.Errorf("calls whose key could not be reserved ran %d times", got)
		}
	})

	// Started by the test, not a subtest: the process lives until the
	// test ends.
	rds.start(t)
	t.Run("redis back", func(t *testing.T) {
		for i, gw := range replicas {
			waitFor(t, fmt.Sprintf("replica %d to reach Redis again", i), readyDeadline, func() bool {
				_, ready := readyz(t, gw)
				return ready.Redis.Status == "reachable"
			})
		}
		first := keyedCall(ctx, clients[2], 40, "echo", "n-back", "back")
		second := keyedCall(ctx, clients[0], 41, "echo", "n-back", "back")
		if first.status != http.StatusOK || first.replayed || second.status != http.StatusOK || !second.replayed {
			t.Errorf("with Redis back: first %+v, duplicate %+v; want executed, then replayed", first, second)
		}
		if got := up.executions("n-back"); got != 1 {
			t.Errorf("with Redis back: executed %d times, want once", got)
		}
	})
	t.Run("owner dies", func(t *testing.T) {
		// Replica 0 is killed while it runs the call: its lease lapses,
		// and the duplicates learn the outcome is unknown; nothing runs
		// the call again.
		owner := make(chan idemAnswer, 1)
		go func() { owner <- keyedCall(ctx, clients[0], 50, "slow", "n-orphan", "orphan") }()
		waitFor(t, "the call to run", readyDeadline, func() bool {
			select {
			case a := <-owner:
				t.Fatalf("the call answered before it ran: %+v", a)
			default:
			}
			return up.executions("n-orphan") == 1
		})
		waits := metricOrZero(t, replicas[1], waitSeries)
		dup := make(chan idemAnswer, 1)
		go func() { dup <- keyedCall(ctx, clients[1], 51, "slow", "n-orphan", "orphan") }()
		waitFor(t, "the duplicate to wait on Redis", readyDeadline, func() bool { return metricOrZero(t, replicas[1], waitSeries) > waits })
		replicas[0].signal(syscall.SIGKILL)
		<-replicas[0].done
		if a := <-dup; a.err != nil || a.status != http.StatusBadGateway || a.code != -31016 {
			t.Errorf("the duplicate of a call whose replica died: %+v; want 502 -31016", a)
		}
		if a := keyedCall(ctx, clients[2], 52, "slow", "n-orphan", "orphan"); a.err != nil || a.status != http.StatusBadGateway || a.code != -31016 {
			t.Errorf("a later duplicate: %+v; want 502 -31016", a)
		}
		if got := up.executions("n-orphan"); got != 1 {
			t.Errorf("a call whose replica died executed %d times, want once", got)
		}
	})
}

const waitSeries = `ctxgate_redis_round_trips_total{op="idempotency_wait",result="ok"}`
