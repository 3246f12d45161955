package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/redis/go-redis/v9"
)

// redisProc is a real redis-server on a unix socket (no TCP port at all:
// --port 0), with nothing persisted.
type redisProc struct {
	*proc
	URL  string // unix:///.../redis.sock
	args []string
}

// requireRedisServer finds redis-server: skipped locally with the install
// command, a failure in CI (test.sh installs it).
func requireRedisServer(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed; run: apt-get install -y redis-server"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

func startRedis(t *testing.T) *redisProc {
	t.Helper()
	// A short directory: a unix socket path is limited to ~100 bytes, and
	// t.TempDir() names can be longer.
	dir, err := os.MkdirTemp("", "redis")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return startRedisIn(t, dir)
}

// startRedisIn runs redis-server on the socket dir/redis.sock: a Redis
// started again in the same dir is at the same URL (and empty).
func startRedisIn(t *testing.T, dir string) *redisProc {
	t.Helper()
	bin := requireRedisServer(t)
	sock := filepath.Join(dir, "redis.sock")
	r := &redisProc{URL: "unix://" + sock, args: []string{bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
		"--save", "", "--appendonly", "no", "--dir", dir}}
	r.start(t)
	return r
}

// start runs redis-server (again, after stop: on the same socket, empty)
// and waits until it answers.
func (r *redisProc) start(t *testing.T) {
	t.Helper()
	p := startProc(t, "redis-server", r.args[0], r.args[1:]...)
	r.proc = p
	client := redis.NewClient(&redis.Options{Network: "unix", Addr: strings.TrimPrefix(r.URL, "unix://"), MaxRetries: -1, DisableIdentity: true})
	defer client.Close()
	waitFor(t, "redis-server to answer PING", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("redis-server exited: %v\n%s", p.waitErr, p.stdout.String())
		}
		return client.Ping(context.Background()).Err() == nil
	})
}

// stop kills redis-server and waits until it is gone.
func (r *redisProc) stop() {
	r.signal(syscall.SIGKILL)
	<-r.done
}

// redisReplicaConfig is one replica: anonymous callers, everything behind
// it, the principal's limit of burst requests (refilled at 1/h, so no
// token comes back during the test) shared on Redis; bridged, so a
// 2026-07-28 client is served too.
func redisReplicaConfig(upstreamURL, redisURL, onError string, burst int) string {
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
redis: {url: %q, key_prefix: "e2e:", on_error: %s}
upstreams:
  - name: everything
    url: %q
    bridge: true
    rate_limit:
      per_principal: {rps: 0.0002778, burst: %d}
`, redisURL, onError, upstreamURL, burst)
}

// TestSharedRateLimitAcrossReplicas: three ctxgate processes on one
// redis-server let a principal through exactly its limit in total, however
// the requests are spread. With Redis killed, on_error local applies each
// replica's own limit (counted in ctxgate_redis_fallback_total) and
// on_error deny answers 503 -31019; neither hangs.
func TestSharedRateLimitAcrossReplicas(t *testing.T) {
	rds := startRedis(t)
	upstream := startEverything(t)
	const burst = 20
	var replicas []*gatewayProc
	var clients []*rpc
	for range 3 {
		gw := startGateway(t, redisReplicaConfig(upstream, rds.URL, "local", burst))
		c := &rpc{url: gw.URL + "/mcp/everything"}
		c.initialize(t) // initialize and notifications/initialized: 2 tokens
		replicas, clients = append(replicas, gw), append(clients, c)
	}
	used := 2 * len(replicas)
	statuses := map[int]int{}
	for i := range 3 * burst {
		resp := clients[i%3].post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, i+10))
		statuses[resp.StatusCode]++
		if resp.StatusCode == http.StatusTooManyRequests {
			if e := decodeError(t, resp); e.Error.Code != -31015 || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 with code %d, Retry-After %q; want -31015 and a Retry-After", e.Error.Code, resp.Header.Get("Retry-After"))
			}
		}
	}
	want := map[int]int{http.StatusOK: burst - used, http.StatusTooManyRequests: 3*burst - (burst - used)}
	if fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Fatalf("three replicas on one Redis answered %v, want %v: the limit of %d is not shared", statuses, want, burst)
	}
	for _, gw := range replicas {
		if got := gw.metric(t, `ctxgate_redis_up`); got != 1 {
			t.Errorf("ctxgate_redis_up = %v with Redis running", got)
		}
		if code, ready := readyz(t, gw); code != http.StatusOK || ready.Status != "ready" || ready.Redis.Status != "reachable" {
			t.Errorf("/readyz with Redis running: %d %+v, want 200 ready, redis reachable", code, ready)
		}
	}
	// The modern era gets the draft rate-limited shape over the same limit.
	modern := &rpc{url: replicas[0].URL + "/mcp/everything", header: http.Header{
		"Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/list"}}}
	resp := modern.post(t, `{"jsonrpc":"2.0","id":99,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("modern request over the shared limit: %s (Retry-After %q) %s, want 429 with a Retry-After", resp.Status, resp.Header.Get("Retry-After"), body)
	}
	var limited struct {
		Error struct {
			Code int64 `json:"code"`
			Data struct {
				RetryAfterMs int64 `json:"retryAfterMs"`
			} `json:"data"`
		} `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&limited); err != nil || limited.Error.Code != -32023 || limited.Error.Data.RetryAfterMs <= 0 {
		t.Errorf("modern 429: %+v (%v), want -32023 with data.retryAfterMs > 0", limited, err)
	}
	resp.Body.Close()

	rds.stop()
	// Each replica's own buckets were never used: with Redis gone they
	// let the principal through again, one limit per replica.
	for i, c := range clients {
		resp := c.post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, 1000+i))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("replica %d with Redis gone (on_error local): %s, want 200 from its own limit", i, resp.Status)
		}
	}
	for i, gw := range replicas {
		if got := gw.metric(t, `ctxgate_redis_fallback_total{feature="rate_limit"}`); got != 1 {
			t.Errorf("replica %d: ctxgate_redis_fallback_total = %v, want 1", i, got)
		}
		if got := gw.metric(t, `ctxgate_redis_up`); got != 0 {
			t.Errorf("replica %d: ctxgate_redis_up = %v with Redis gone, want 0", i, got)
		}
		// The log reaches the test through a pipe: it may trail the answer.
		waitFor(t, fmt.Sprintf("replica %d to log the fallback", i), readyDeadline, func() bool {
			return strings.Contains(gw.stderr.String(), "redis could not answer")
		})
		// on_error local: degraded, still taking traffic.
		if code, ready := readyz(t, gw); code != http.StatusOK || ready.Status != "degraded" || ready.Redis.Status != "degraded" {
			t.Errorf("replica %d /readyz with Redis gone (on_error local): %d %+v, want 200 degraded", i, code, ready)
		}
	}

	// A replica started while Redis is down starts (Redis unreachable is
	// not a start-up error) and, with on_error deny, refuses.
	deny := startGatewayListening(t, redisReplicaConfig(upstream, rds.URL, "deny", burst))
	if code, ready := readyz(t, deny); code != http.StatusServiceUnavailable || ready.Status != "redis_unavailable" {
		t.Errorf("/readyz with Redis gone (on_error deny): %d %+v, want 503 redis_unavailable", code, ready)
	}
	c := &rpc{url: deny.URL + "/mcp/everything"}
	resp = c.post(t, initializeBody)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("on_error deny with Redis gone: %s (Retry-After %q), want 503 with a Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if e := decodeError(t, resp); e.Error.Code != -31019 {
		t.Errorf("on_error deny: code %d, want -31019", e.Error.Code)
	}
	if got := deny.metric(t, `ctxgate_redis_fallback_total{feature="rate_limit"}`); got != 1 {
		t.Errorf("deny replica: ctxgate_redis_fallback_total = %v, want 1", got)
	}
}

// readyzAnswer is the part of /readyz these tests read.
type readyzAnswer struct {
	Status string `json:"status"`
	Redis  struct {
		Status string `json:"status"`
	} `json:"redis"`
}

func readyz(t *testing.T, gw *gatewayProc) (int, readyzAnswer) {
	t.Helper()
	resp, err := http.Get(gw.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a readyzAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	return resp.StatusCode, a
}
