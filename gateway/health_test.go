package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/upstream"
)

// lockedBuffer (hostile_test.go) is a log sink safe for the probes'
// goroutines.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// servedGateway runs gateway.Serve (which starts the health probes) on
// port 0 and returns the admin URL.
func servedGateway(t *testing.T, yaml string, opts gateway.Options) string {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.New(cfg, pool, opts)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adm, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = gw.Serve(ctx, pub, adm); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + adm.Addr().String()
}

func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there: connection refused
	return "http://" + addr + "/mcp"
}

type readyDetail struct {
	Status         string `json:"status"`
	UpstreamHealth map[string]struct {
		Status, Detail string
	} `json:"upstream_health"`
}

// pollReady reads /readyz until every upstream has been probed once.
func pollReady(t *testing.T, admin string, until func(readyDetail) bool) (int, readyDetail) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(admin + "/readyz")
		if err == nil {
			var d readyDetail
			_ = json.NewDecoder(resp.Body).Decode(&d)
			resp.Body.Close()
			if until(d) {
				return resp.StatusCode, d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never reached the expected state")
		}
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
}

// TestUpstreamHealth: a dead upstream at start-up is logged as a warning
// and shown degraded in /readyz's detail, which stays 200 (one dead
// upstream must not take every replica out of the load balancer).
func TestUpstreamHealth(t *testing.T) {
	live, _, requests := countingProjectAll(t)
	dead := deadURL(t)
	logs := &lockedBuffer{}
	admin := servedGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused}
upstreams: [{name: live, url: %q}, {name: dead, url: %q}]
`, live, dead), gateway.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	probed := func(d readyDetail) bool {
		return d.UpstreamHealth["live"].Status != "unknown" && d.UpstreamHealth["dead"].Status != "unknown" && len(d.UpstreamHealth) == 2
	}
	code, d := pollReady(t, admin, probed)
	if code != http.StatusOK || d.Status != "degraded" {
		t.Errorf("/readyz = %d %q, want 200 degraded", code, d.Status)
	}
	if d.UpstreamHealth["live"].Status != "reachable" || !strings.Contains(d.UpstreamHealth["live"].Detail, "TCP connection in") {
		t.Errorf("live upstream: %+v", d.UpstreamHealth["live"])
	}
	if d.UpstreamHealth["dead"].Status != "degraded" || !strings.Contains(d.UpstreamHealth["dead"].Detail, "connection refused") {
		t.Errorf("dead upstream: %+v", d.UpstreamHealth["dead"])
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"upstream unreachable`) || !strings.Contains(logs.String(), `"upstream":"dead"`) {
		t.Errorf("no warning for the dead upstream:\n%s", logs.String())
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("the health probes sent the upstream %d requests, want none (a TCP connection only)", n)
	}
}
