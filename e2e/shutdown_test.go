package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// blockingUpstream is a Go SDK server whose "wait" tool runs until the test
// releases it.
func blockingUpstream(t *testing.T) (url string, started <-chan struct{}, release chan<- struct{}) {
	t.Helper()
	startedc, releasec := make(chan struct{}, 1), make(chan struct{})
	server := mcp.NewServer(&mcp.Implementation{Name: "blocking", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "wait"}, func(ctx context.Context, _ *mcp.CallToolRequest, _ any) (*mcp.CallToolResult, any, error) {
		startedc <- struct{}{}
		select {
		case <-releasec:
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "finished after release"}}}, nil, nil
	})
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil))
	t.Cleanup(srv.Close)
	return srv.URL + "/", startedc, releasec
}

// TestGracefulShutdown: on SIGTERM readiness fails at once, a long-lived GET
// stream ends cleanly, an in-flight call still completes, and the process
// exits 0 before its drain deadline.
func TestGracefulShutdown(t *testing.T) {
	upstream, started, release := blockingUpstream(t)
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0", shutdown_timeout: 60s}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - {name: blocking, url: %q}
`, upstream))
	c := &rpc{url: gw.URL + "/mcp/blocking"}
	c.initialize(t)

	// The long-lived server stream.
	get, _ := http.NewRequestWithContext(ctx(t), http.MethodGet, c.url, nil)
	get.Header.Set("Accept", "text/event-stream")
	get.Header.Set("Mcp-Session-Id", c.session)
	stream, err := http.DefaultClient.Do(get)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	if stream.StatusCode != http.StatusOK || stream.Header.Get("X-Accel-Buffering") != "no" {
		t.Fatalf("GET stream: %s, X-Accel-Buffering %q", stream.Status, stream.Header.Get("X-Accel-Buffering"))
	}

	// An in-flight call, blocked in the upstream.
	type answer struct {
		status int
		body   string
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, c.url, strings.NewReader(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"wait","arguments":{}}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Session-Id", c.session)
		req.Header.Set("Mcp-Protocol-Version", "2025-11-25")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, string(body), err}
	}()
	<-started

	gw.signal(syscall.SIGTERM)
	waitFor(t, "/readyz to fail after SIGTERM", readyDeadline, func() bool {
		resp, err := http.Get(gw.Admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// The GET stream ends with a clean end of body, not a cut connection.
	if _, err := io.Copy(io.Discard, stream.Body); err != nil {
		t.Errorf("GET stream at shutdown ended with %v, want a clean end", err)
	}
	if gw.exited() {
		t.Fatal("gateway exited while a call was still in flight")
	}

	close(release)
	a := <-answered
	if a.err != nil || a.status != http.StatusOK || !strings.Contains(a.body, "finished after release") || !strings.Contains(a.body, `"id":42`) {
		t.Errorf("in-flight call during shutdown: status %d, err %v, body %q", a.status, a.err, a.body)
	}
	<-gw.done
	if gw.waitErr != nil {
		t.Errorf("gateway exit: %v, want status 0", gw.waitErr)
	}
	if _, ok := findLog(gw.stderr.String(), "shutdown complete"); !ok {
		t.Error("no \"shutdown complete\" log record")
	}
}
