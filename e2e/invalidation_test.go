package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// cachingReplicaConfig is one replica caching tools/list for an hour,
// sharing its invalidations on Redis and reading the event stream.
func cachingReplicaConfig(upstreamURL, redisURL string) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
sessions: {keys: ["e2e-replicas-share-this-session-key"]}
redis:
  url: %q
  key_prefix: "e2e:"
  events: {stream: "e2e-events", group: e2e}
upstreams:
  - name: everything
    url: %q
    cache:
      ttl: {tools/list: 1h}
`, redisURL, upstreamURL)
}

// metricOrZero reads a series of /metrics; a counter never incremented is
// not exported yet, which reads as 0.
func (g *gatewayProc) metricOrZero(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := http.Get(g.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestInvalidationAcrossReplicas: three ctxgate processes on one
// redis-server, each with tools/list cached. A purge on one replica, a
// POST /admin/invalidate on another, an event a context source XADDs to
// the stream and an upstream's tools/list_changed each make every
// replica's next tools/list a miss. Redis
// killed: every replica stops trusting its cache (answers are still
// served, from the upstream) and an invalidation says it reached this
// replica only; Redis back: each drops its cache and caches again.
func TestInvalidationAcrossReplicas(t *testing.T) {
	rds := startRedis(t)
	upstream := startEverything(t)
	var replicas []*gatewayProc
	var clients []*rpc
	for range 3 {
		gw := startGateway(t, cachingReplicaConfig(upstream, rds.URL))
		c := &rpc{url: gw.URL + "/mcp/everything"}
		c.initialize(t)
		replicas, clients = append(replicas, gw), append(clients, c)
	}
	inStep := func(want float64) func() bool {
		return func() bool {
			for _, gw := range replicas {
				if gw.metricOrZero(t, "ctxgate_cache_fanout_in_step") != want {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "every replica in step with Redis", readyDeadline, inStep(1))
	id := 100
	toolsList := func(c *rpc) string {
		t.Helper()
		id++
		resp := c.post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, id))
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tools"`) {
			t.Fatalf("tools/list: %s %s", resp.Status, body)
		}
		return resp.Header.Get("Ctxgate-Cache")
	}
	// fill caches tools/list on every replica and checks it is a hit.
	fill := func() {
		t.Helper()
		for i, c := range clients {
			toolsList(c)
			if got := toolsList(c); got != "hit" {
				t.Fatalf("replica %d: a repeated tools/list is %q, want hit", i, got)
			}
		}
	}
	received := func() []float64 {
		var n []float64
		for _, gw := range replicas {
			n = append(n, gw.metricOrZero(t, "ctxgate_cache_fanout_received_total"))
		}
		return n
	}
	// expectEverywhere waits until each replica but origin received one
	// more invalidation than before, then checks every replica misses.
	expectEverywhere := func(what string, before []float64, origin int) {
		t.Helper()
		waitFor(t, what+" to reach the other replicas", readyDeadline, func() bool {
			now := received()
			for i := range replicas {
				if i != origin && now[i] < before[i]+1 {
					return false
				}
			}
			return true
		})
		for i, c := range clients {
			if got := toolsList(c); got != "miss" {
				t.Errorf("after %s on replica %d: replica %d's tools/list is %q, want miss", what, origin, i, got)
			}
		}
	}
	admin := func(gw *gatewayProc, method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, gw.Admin+path, strings.NewReader(body))
		req.Header.Set("X-Ctxgate-Admin", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	fill()
	before := received()
	if code, body := admin(replicas[0], http.MethodDelete, "/admin/cache", ""); code != http.StatusOK || !strings.Contains(body, `"replicas":"all"`) {
		t.Fatalf("purge: %d %s", code, body)
	}
	expectEverywhere("a purge", before, 0)

	fill()
	before = received()
	if code, body := admin(replicas[1], http.MethodPost, "/admin/invalidate", `{"upstream":"everything","method":"tools/list"}`); code != http.StatusOK {
		t.Fatalf("POST /admin/invalidate: %d %s", code, body)
	}
	expectEverywhere("POST /admin/invalidate", before, 1)

	// A context source's event on the stream: one replica of the group
	// applies it and fans it out.
	fill()
	before = received()
	sock := strings.TrimPrefix(rds.URL, "unix://")
	source := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1, DisableIdentity: true})
	defer source.Close()
	for _, ev := range []string{`{"upstream":"everything"}`, `not json: a poison event`} {
		if err := source.XAdd(context.Background(), &redis.XAddArgs{Stream: "e2e-events", Values: map[string]any{"event": ev}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var applier int
	waitFor(t, "one replica to apply the event", readyDeadline, func() bool {
		n := 0
		for i, gw := range replicas {
			if gw.metricOrZero(t, `ctxgate_invalidation_events_total{result="applied",source="redis_stream"}`) == 1 {
				applier, n = i, n+1
			}
		}
		return n == 1
	})
	expectEverywhere("a stream event", before, applier)
	waitFor(t, "the poison event skipped", readyDeadline, func() bool {
		sum := 0.0
		for _, gw := range replicas {
			sum += gw.metricOrZero(t, `ctxgate_invalidation_events_total{result="poison",source="redis_stream"}`)
		}
		return sum == 1
	})
	// The event is counted before it is acknowledged.
	waitFor(t, "no event pending: applied and poison events are both acknowledged", readyDeadline, func() bool {
		p, err := source.XPending(context.Background(), "e2e-events", "e2e").Result()
		return err == nil && p.Count == 0
	})

	// An upstream's list_changed: the replica relaying it fans it out.
	fill()
	before = received()
	resp := clients[0].post(t, `{"jsonrpc":"2.0","id":90,"method":"tools/call","params":{"name":"test_trigger_tool_change","arguments":{}}}`)
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK || strings.Contains(string(body), `"error"`) {
		t.Fatalf("test_trigger_tool_change: %s %s", resp.Status, body)
	}
	expectEverywhere("an upstream's tools/list_changed", before, 0)

	// Redis killed: nothing is trusted, everything is still answered.
	fill()
	rds.stop()
	waitFor(t, "every replica out of step", readyDeadline, inStep(0))
	for i, c := range clients {
		if got := toolsList(c); got != "bypass" {
			t.Errorf("replica %d with Redis gone: tools/list %q, want bypass (answered by the upstream)", i, got)
		}
	}
	code, body := admin(replicas[2], http.MethodPost, "/admin/invalidate", `{"upstream":"everything"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "this replica only") {
		t.Errorf("POST /admin/invalidate with Redis gone: %d %s, want 503 saying it reached this replica only", code, body)
	}

	// Redis back, empty, at the same address: in step again, each cache
	// dropped (what was missed is unknown) and then used again.
	startRedisIn(t, filepath.Dir(sock))
	waitFor(t, "every replica back in step", readyDeadline, inStep(1))
	for i, c := range clients {
		if got := toolsList(c); got != "miss" {
			t.Errorf("replica %d after Redis came back: tools/list %q, want miss (its cache dropped)", i, got)
		}
		if got := toolsList(c); got != "hit" {
			t.Errorf("replica %d after Redis came back: repeated tools/list %q, want hit", i, got)
		}
	}
}

// TestSecondLevelCache: with cache.encryption_keys, what one replica
// fetched another serves from Redis (Ctxgate-Cache: hit; l2) without
// asking the upstream; the value in Redis is sealed (no tool name in the
// clear); the serving replica's own policy filters the hit; and an
// invalidation makes the shared entry unreachable for every replica.
func TestSecondLevelCache(t *testing.T) {
	rds := startRedis(t)
	rec := startRecorder(t, startEverything(t))
	const key = "e2e-cache-key-e2e-cache-key-e2e-cache-key"
	config := func(policyDir string) string {
		return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: off}
auth: {anonymous: true}
sessions: {keys: [%q]}
cache: {encryption_keys: [%q]}
redis: {url: %q, key_prefix: "e2e:"}
upstreams:
  - name: everything
    url: %q
    cache:
      ttl: {tools/list: 1h}
`, policyDir, key, key, rds.URL, rec.URL)
	}
	a := startGateway(t, config(allowAllPolicy))
	b := startGateway(t, config(copyShippedPolicy(t)))
	waitFor(t, "both replicas in step with Redis", readyDeadline, func() bool {
		return a.metricOrZero(t, "ctxgate_cache_fanout_in_step") == 1 && b.metricOrZero(t, "ctxgate_cache_fanout_in_step") == 1
	})
	upstreamLists := func() int {
		n := 0
		for _, r := range rec.requests() {
			if strings.Contains(string(r.body), `"method":"tools/list"`) {
				n++
			}
		}
		return n
	}
	list := func(gw *gatewayProc) (string, []string) {
		t.Helper()
		c := &rpc{url: gw.URL + "/mcp/everything"}
		c.initialize(t)
		resp := c.post(t, `{"jsonrpc":"2.0","id":7,"method":"tools/list"}`)
		var doc struct {
			Result struct {
				Tools []struct {
					Name string `json:"name"`
				} `json:"tools"`
			} `json:"result"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("tools/list: %s %v", resp.Status, err)
		}
		var names []string
		for _, tool := range doc.Result.Tools {
			names = append(names, tool.Name)
		}
		return resp.Header.Get("Ctxgate-Cache"), names
	}

	how, all := list(a)
	if how != "miss" || len(all) < 2 {
		t.Fatalf("replica a: %q with tools %v, want a miss listing the everything-server's tools", how, all)
	}
	fetched := upstreamLists()
	how, filtered := list(b)
	if how != "hit; l2" {
		t.Fatalf("replica b: %q, want a second-level hit", how)
	}
	if n := upstreamLists(); n != fetched {
		t.Errorf("the upstream was asked tools/list %d times after b's hit, want %d", n, fetched)
	}
	if len(filtered) >= len(all) {
		t.Errorf("b's hit lists %v of %v: want its own policy (the shipped one, which shows anonymous callers only read-only tools: none of these) to filter the shared entry", filtered, all)
	}

	sock := strings.TrimPrefix(rds.URL, "unix://")
	inspect := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1, DisableIdentity: true})
	defer inspect.Close()
	keys, err := inspect.Keys(context.Background(), "e2e:cache:e:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("second-level keys %v (%v), want one entry", keys, err)
	}
	value, _ := inspect.Get(context.Background(), keys[0]).Bytes()
	for _, name := range all {
		if strings.Contains(string(value), name) {
			t.Fatalf("the entry in Redis holds the tool name %q in the clear", name)
		}
	}

	// An invalidation on a: the shared entry is unreachable for b too.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodDelete, a.Admin+"/admin/cache", nil)
	req.Header.Set("X-Ctxgate-Admin", "1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("purge: %v %v", resp, err)
	}
	resp.Body.Close()
	waitFor(t, "the purge to reach b", readyDeadline, func() bool {
		return b.metricOrZero(t, "ctxgate_cache_fanout_received_total") >= 1
	})
	if how, _ := list(b); how != "miss" {
		t.Errorf("replica b after a purge on a: %q, want miss (neither level may answer)", how)
	}
}

// TestStreamEventNotifiesSubscribers: a session initialized through one
// replica subscribes to a resource through it and holds its GET stream on
// another; an event for that resource XADDed to the stream reaches the
// session as notifications/resources/updated on that other replica, and
// an event for a resource it did not subscribe to does not.
func TestStreamEventNotifiesSubscribers(t *testing.T) {
	rds := startRedis(t)
	upstream := startEverything(t)
	a := startGateway(t, cachingReplicaConfig(upstream, rds.URL))
	b := startGateway(t, cachingReplicaConfig(upstream, rds.URL))
	for _, gw := range []*gatewayProc{a, b} {
		waitFor(t, "the replica in step with Redis", readyDeadline, func() bool {
			return gw.metricOrZero(t, "ctxgate_cache_fanout_in_step") == 1
		})
	}
	c := &rpc{url: a.URL + "/mcp/everything"}
	c.initialize(t)

	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, b.URL+"/mcp/everything", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", c.session)
	req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
	stream, err := http.DefaultClient.Do(req)
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("GET stream on replica b: %v %v", stream, err)
	}
	defer stream.Body.Close()
	updates := make(chan string, 16)
	go func() {
		events := mcpwire.NewReader(stream.Body)
		for {
			ev, err := events.Next()
			if err != nil {
				close(updates)
				return
			}
			var n struct {
				Method string `json:"method"`
				Params struct {
					URI string `json:"uri"`
				} `json:"params"`
			}
			if json.Unmarshal(ev.Data, &n) == nil && n.Method == "notifications/resources/updated" {
				updates <- n.Params.URI
			}
		}
	}()

	if resp := c.post(t, `{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"test://static-text"}}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("resources/subscribe through replica a: %s", resp.Status)
	}
	source := redis.NewClient(&redis.Options{Network: "unix", Addr: strings.TrimPrefix(rds.URL, "unix://"), MaxRetries: -1, DisableIdentity: true})
	defer source.Close()
	for _, uri := range []string{"test://static-binary", "test://static-text"} {
		ev := fmt.Sprintf(`{"upstream":"everything","uri":%q}`, uri)
		if err := source.XAdd(context.Background(), &redis.XAddArgs{Stream: "e2e-events", Values: map[string]any{"event": ev}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case uri, ok := <-updates:
		if !ok || uri != "test://static-text" {
			t.Errorf("first resources/updated on replica b: %q (stream open: %v), want test://static-text (static-binary was never subscribed to)", uri, ok)
		}
	case <-time.After(readyDeadline):
		t.Fatal("no resources/updated reached the subscribed session's stream on replica b")
	}
}
