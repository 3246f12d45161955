package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream/upstreamtest"
)

// countingProject is the sample project server, counting the tools/list
// requests it receives.
func countingProject(t *testing.T) (string, *atomic.Int64) {
	url, lists, _ := countingProjectAll(t)
	return url, lists
}

// countingProjectAll is countingProject, also counting every request.
func countingProjectAll(t *testing.T) (string, *atomic.Int64, *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	project, err := upstreamtest.NewProject(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { project.Close() })
	h := project.Handler()
	var lists, all atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		all.Add(1)
		body, _ := io.ReadAll(r.Body)
		var msg struct{ Method string }
		if json.Unmarshal(body, &msg) == nil && msg.Method == "tools/list" {
			lists.Add(1)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &lists, &all
}

// shippedPolicyGateway is a fresh gateway with the shipped policy
// (policies/authz.rego) in front of upstreamURL.
func shippedPolicyGateway(t *testing.T, upstreamURL string) string {
	t.Helper()
	engine, err := policy.New(policy.Options{Dir: filepath.Join("..", "policies"), Timeout: time.Minute}) // never the production 100 ms: tests do not depend on timing
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	return newGatewayOpts(t, upstreamURL, gateway.Options{Policy: engine}, "").URL + "/mcp/up"
}

func connect(t *testing.T, endpoint string) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// TestCallBeforeList: on a fresh gateway with the shipped policy, a
// tools/call of a read-only tool made before any tools/list is answered
// exactly as the same call after a list (before, it was refused: the
// policy did not yet know the tool was read-only).
func TestCallBeforeList(t *testing.T) {
	upstreamURL, _ := countingProject(t)
	call := &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "hello.txt"}}

	first := connect(t, shippedPolicyGateway(t, upstreamURL))
	before, err := first.CallTool(t.Context(), call)
	if err != nil {
		t.Fatalf("tools/call before any tools/list: %v", err)
	}

	second := connect(t, shippedPolicyGateway(t, upstreamURL))
	if _, err := second.ListTools(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	after, err := second.CallTool(t.Context(), call)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(after)
	b, _ := json.Marshal(before)
	if diff := cmp.Diff(string(a), string(b)); diff != "" {
		t.Errorf("call before a list differs from the call after one (-after +before):\n%s", diff)
	}
	if before.IsError || len(before.Content) != 1 || before.Content[0].(*mcp.TextContent).Text != "hello\n" {
		t.Errorf("call before a list = %+v", before)
	}

	// A tool that does not exist stays unknown, answered as before.
	if _, err := first.CallTool(t.Context(), &mcp.CallToolParams{Name: "no_such_tool", Arguments: map[string]any{}}); err == nil {
		t.Error("a call of a tool the upstream does not list succeeded")
	}
}

// TestCallBeforeListBridged: the same for a modern (2026-07-28) client of
// a legacy-only upstream with bridge: true. The call is decided before
// the bridged session is looked up, and the upstream answers no
// sessionless tools/list: the gateway reads the list on the principal's
// bridged session (before, the fetch went out sessionless, was refused,
// and the call was denied as an unknown tool).
func TestCallBeforeListBridged(t *testing.T) {
	upstreamURL, lists := countingProject(t)
	engine, err := policy.New(policy.Options{Dir: filepath.Join("..", "policies"), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	endpoint := newGatewayOpts(t, upstreamURL, gateway.Options{Policy: engine}, ", bridge: true").URL + "/mcp/up"
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(t.Context(),
		&mcp.StreamableClientTransport{Endpoint: endpoint}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	if v := cs.InitializeResult().ProtocolVersion; v != "2026-07-28" {
		t.Fatalf("negotiated %q, want 2026-07-28 (bridged)", v)
	}
	res, err := cs.CallTool(t.Context(), &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "hello.txt"}})
	if err != nil || res.IsError || len(res.Content) != 1 || res.Content[0].(*mcp.TextContent).Text != "hello\n" {
		t.Fatalf("bridged tools/call before any tools/list: %v %+v", err, res)
	}
	if n := lists.Load(); n != 1 {
		t.Errorf("upstream received %d tools/list, want the gateway's 1", n)
	}
}

// TestCallBeforeListSingleFlight: concurrent first calls on a fresh
// gateway fetch the upstream's list once, and a name still unknown after
// the fetch does not fetch again.
func TestCallBeforeListSingleFlight(t *testing.T) {
	upstreamURL, lists := countingProject(t)
	endpoint := shippedPolicyGateway(t, upstreamURL)
	const clients = 8
	sessions := make([]*mcp.ClientSession, clients)
	for i := range sessions {
		sessions[i] = connect(t, endpoint)
	}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for _, cs := range sessions {
		wg.Go(func() {
			res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_files", Arguments: map[string]any{}})
			if err == nil && res.IsError {
				err = fmt.Errorf("tool error: %+v", res.Content)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("first call: %v", err)
		}
	}
	// Single-flight: callers that arrive while a fetch runs share it; one
	// that arrives after it finds the tool known. Either way: one fetch.
	if n := lists.Load(); n != 1 {
		t.Errorf("upstream received %d tools/list, want 1", n)
	}
	_, _ = sessions[0].CallTool(t.Context(), &mcp.CallToolParams{Name: "no_such_tool", Arguments: map[string]any{}})
	_, _ = sessions[1].CallTool(t.Context(), &mcp.CallToolParams{Name: "no_such_tool", Arguments: map[string]any{}})
	if n := lists.Load(); n != 1 {
		t.Errorf("after calls of an unknown tool the upstream received %d tools/list, want still 1 (remembered for a while)", n)
	}
}
