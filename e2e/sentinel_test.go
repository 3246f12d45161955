package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestSharedStateThroughSentinel: replicas configured with Sentinel's URL
// (master_name=) find the primary through a real redis-sentinel and share
// their rate limit on it, as with the primary's own URL.
func TestSharedStateThroughSentinel(t *testing.T) {
	bin := requireRedisServer(t)
	dir := t.TempDir()
	primary := reservePort(t)
	_, primaryPort, _ := net.SplitHostPort(primary)
	p := startProc(t, "redis-server", bin, "--port", primaryPort, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
	sentinelAddr := reservePort(t)
	_, sentinelPort, _ := net.SplitHostPort(sentinelAddr)
	conf := filepath.Join(dir, "sentinel.conf")
	// Sentinel rewrites its configuration file: it must be writable.
	if err := os.WriteFile(conf, fmt.Appendf(nil, "port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor e2e 127.0.0.1 %s 1\n", sentinelPort, dir, primaryPort), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startProc(t, "redis-sentinel", bin, conf, "--sentinel")
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: sentinelAddr, MaxRetries: -1, DisableIdentity: true})
	defer sentinel.Close()
	waitFor(t, "redis-sentinel to name the primary", readyDeadline, func() bool {
		if p.exited() || s.exited() {
			t.Fatalf("redis exited: %s %s", p.stdout.String(), s.stdout.String())
		}
		addr, err := sentinel.GetMasterAddrByName(context.Background(), "e2e").Result()
		return err == nil && len(addr) == 2 && addr[1] == primaryPort
	})

	upstream := startEverything(t)
	url := "redis://" + sentinelAddr + "/0?master_name=e2e"
	const burst = 10
	var clients []*rpc
	for range 2 {
		gw := startGateway(t, redisReplicaConfig(upstream, url, "deny", burst))
		c := &rpc{url: gw.URL + "/mcp/everything"}
		c.initialize(t) // 2 tokens
		clients = append(clients, c)
	}
	statuses := map[int]int{}
	for i := range burst {
		resp := clients[i%2].post(t, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, i+10))
		statuses[resp.StatusCode]++
	}
	// on_error deny: a replica that could not reach the primary would
	// answer 503, not 200 or 429.
	want := map[int]int{http.StatusOK: burst - 4, http.StatusTooManyRequests: 4}
	if fmt.Sprint(statuses) != fmt.Sprint(want) {
		t.Errorf("two replicas through Sentinel answered %v, want %v: the limit is not shared on the primary Sentinel names", statuses, want)
	}
}
