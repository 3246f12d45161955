package gateway_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/shared"
)

// redisServer is a real redis-server on a unix socket; with persist, its
// data is kept in an append-only file written on every command, so a
// restart keeps it (as the README asks of a Redis holding idempotency
// keys).
type redisServer struct {
	tb      testing.TB
	persist bool
	bin     string
	dir     string
	URL     string
	cmd     *exec.Cmd
	done    chan struct{}
}

// startRedisServer runs redis-server, or skips without one (a failure
// with CI=true: test.sh installs it).
func startRedisServer(tb testing.TB, persist bool) *redisServer {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not installed; run: apt-get install -y redis-server"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	// A short directory: a unix socket path is limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "redis")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	r := &redisServer{tb: tb, persist: persist, bin: bin, dir: dir, URL: "unix://" + filepath.Join(dir, "redis.sock")}
	r.start()
	tb.Cleanup(r.stop)
	return r
}

func (r *redisServer) start() {
	r.tb.Helper()
	sock := filepath.Join(r.dir, "redis.sock")
	args := []string{"--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--save", "", "--dir", r.dir, "--appendonly", "no"}
	if r.persist {
		args = append(args[:len(args)-1], "yes", "--appendfsync", "always")
	}
	r.cmd = exec.Command(r.bin, args...)
	if err := r.cmd.Start(); err != nil {
		r.tb.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	client := redis.NewClient(&redis.Options{Network: "unix", Addr: sock, MaxRetries: -1, DisableIdentity: true})
	defer client.Close()
	deadline := time.Now().Add(20 * time.Second)
	for client.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			r.tb.Fatal("redis-server did not answer")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
}

// stop kills redis-server and waits for it.
func (r *redisServer) stop() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// restart kills redis-server and starts it again on the same socket, with
// the data it had.
func (r *redisServer) restart() {
	r.stop()
	r.start()
}

// withRedisServer gives the gateway a Redis client for r.
func withRedisServer(tb testing.TB, r *redisServer, onError string) func(*gateway.Options) {
	return func(o *gateway.Options) {
		cfg := &config.Redis{URL: r.URL, KeyPrefix: "t:", PoolSize: 4, Timeout: 2 * time.Second, OnError: onError}
		c, err := shared.New(context.Background(), cfg, shared.Options{Registerer: o.Metrics.Registry()})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { c.Close() })
		o.Redis = c
	}
}
