package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// policyFixture is an upstream with one read-only and one destructive tool,
// a public and a restricted resource, and a ledger of tool executions.
type policyFixture struct {
	executed atomic.Int64
	URL      string
}

func startPolicyFixture(t *testing.T, jsonResponses bool) *policyFixture {
	t.Helper()
	f := &policyFixture{}
	server := f.server()
	srv := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server },
		&mcp.StreamableHTTPOptions{JSONResponse: jsonResponses}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL + "/"
	return f
}

// server is the fixture's MCP server, whatever transport serves it.
func (f *policyFixture) server() *mcp.Server {
	server := mcp.NewServer(&mcp.Implementation{Name: "policy-fixture", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "search", Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(context.Context, *mcp.CallToolRequest, any) (*mcp.CallToolResult, any, error) {
			f.executed.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "found: key AKIAABCDEFGHIJKLMNOP in config"}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "delete_file", Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true)}},
		func(context.Context, *mcp.CallToolRequest, any) (*mcp.CallToolResult, any, error) {
			f.executed.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted"}}}, nil, nil
		})
	read := func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: r.Params.URI, Text: "contents"}}}, nil
	}
	server.AddResource(&mcp.Resource{Name: "readme", URI: "file:///readme"}, read)
	server.AddResource(&mcp.Resource{Name: "vault", URI: "secret://vault"}, read)
	return server
}

func ptr[T any](v T) *T { return &v }

func connect(t *testing.T, endpoint string) *mcp.ClientSession {
	t.Helper()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// copyShippedPolicy copies policies/authz.rego into a directory the test
// may change (hot reload).
func copyShippedPolicy(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "policies", "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "authz.rego"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestShippedPolicy: the default policy, enforced by the real binary, on
// SSE and JSON upstreams alike.
func TestShippedPolicy(t *testing.T) {
	sse, plain := startPolicyFixture(t, false), startPolicyFixture(t, true)
	dir := copyShippedPolicy(t)
	decisionLog := filepath.Join(t.TempDir(), "decisions.log")
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q, decision_log: %q, reload_interval: 100ms}
upstreams:
  - {name: sse, url: %q}
  - {name: json, url: %q}
`, dir, decisionLog, sse.URL, plain.URL))

	calls := 0
	for _, tc := range []struct {
		name    string
		fixture *policyFixture
	}{{"sse", sse}, {"json", plain}} {
		t.Run(tc.name, func(t *testing.T) {
			cs := connect(t, gw.URL+"/mcp/"+tc.name)
			tools, err := cs.ListTools(ctx(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tool := range tools.Tools {
				names = append(names, tool.Name)
			}
			if !slices.Equal(names, []string{"search"}) {
				t.Errorf("anonymous sees tools %v, want only the read-only [search]", names)
			}
			resources, err := cs.ListResources(ctx(t), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(resources.Resources) != 1 || resources.Resources[0].URI != "file:///readme" {
				t.Errorf("anonymous sees resources %+v, want only file:///readme", resources.Resources)
			}

			before := tc.fixture.executed.Load()
			for _, name := range []string{"delete_file", "DELETE_FILE", "Delete_File", "no_such_tool"} {
				calls++
				_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: name})
				var rpcErr *jsonrpc.Error
				if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams || rpcErr.Message != "tool not found or not permitted" {
					t.Errorf("call %s: %v; want the unknown-tool answer (-32602 tool not found or not permitted)", name, err)
				}
			}
			if n := tc.fixture.executed.Load() - before; n != 0 {
				t.Errorf("the upstream executed %d denied call(s)", n)
			}

			calls++
			res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "search"})
			if err != nil || res.IsError {
				t.Fatalf("search: %v %+v", err, res)
			}
			if text := res.Content[0].(*mcp.TextContent).Text; text != "found: key [REDACTED] in config" {
				t.Errorf("search result %q: the AWS key must be redacted", text)
			}
			if _, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "secret://vault"}); err == nil {
				t.Error("anonymous read a restricted resource")
			}
		})
	}

	t.Run("one decision record per tools/call", func(t *testing.T) {
		data, err := os.ReadFile(decisionLog)
		if err != nil {
			t.Fatal(err)
		}
		records := 0
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var rec struct {
				Input struct {
					Method string `json:"method"`
					Phase  string `json:"phase"`
				} `json:"input"`
				DecisionID string `json:"decision_id"`
				RequestID  string `json:"request_id"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("decision log line is not JSON: %v: %q", err, line)
			}
			if rec.Input.Method == "tools/call" {
				records++
				if rec.DecisionID == "" || rec.RequestID == "" {
					t.Errorf("decision record without decision_id or request_id: %s", line)
				}
			}
		}
		if records != calls {
			t.Errorf("%d tools/call decision records for %d calls, want exactly one each", records, calls)
		}
	})

	t.Run("hot reload keeps the last good policy", func(t *testing.T) {
		status := func() (revision, reloadErr string) {
			resp, err := http.Get(gw.Admin + "/readyz")
			if err != nil {
				return "", ""
			}
			defer resp.Body.Close()
			var d struct {
				Revision string `json:"policy_revision"`
				Error    string `json:"policy_reload_error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&d)
			return d.Revision, d.Error
		}
		good, _ := status()
		if err := os.WriteFile(filepath.Join(dir, "broken.rego"), []byte("package ctxgate.authz\n\nallow if {\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the broken reload to be reported", readyDeadline, func() bool { _, e := status(); return e != "" })
		if rev, _ := status(); rev != good {
			t.Errorf("revision changed to %s after a broken reload", rev)
		}
		cs := connect(t, gw.URL+"/mcp/sse")
		if _, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "search"}); err != nil {
			t.Errorf("with a broken change on disk, the last good policy must still decide: %v", err)
		}
		// A valid change that denies everything is applied.
		if err := os.WriteFile(filepath.Join(dir, "broken.rego"), []byte("package ctxgate.authz\n\ndeny_all := true\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "authz.rego"), []byte("package ctxgate.authz\n\ndefault allow := false\n\nreason := \"closed for maintenance\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the new policy to load", readyDeadline, func() bool { rev, e := status(); return rev != good && e == "" })
		_, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "search"})
		var rpcErr *jsonrpc.Error
		if !errors.As(err, &rpcErr) || rpcErr.Message != "tool not found or not permitted" && rpcErr.Message != "closed for maintenance" {
			t.Errorf("after reloading a deny-all policy, search = %v", err)
		}
	})
}

// TestNoPolicyNoGateway: a gateway whose policy directory has no policy
// refuses to start, rather than run without one.
func TestNoPolicyNoGateway(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctxgate.yaml")
	cfg := fmt.Sprintf("server: {listen: \"127.0.0.1:0\"}\nadmin: {listen: \"127.0.0.1:0\"}\nauth: {anonymous: true}\npolicy: {dir: %q}\nupstreams: [{name: a, url: \"http://127.0.0.1:1/\"}]\n", t.TempDir())
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "ctxgate", bins.ctxgate, "serve", "--config", path)
	<-p.done
	if p.waitErr == nil || !strings.Contains(p.stderr.String(), "policy") {
		t.Errorf("with an empty policy directory: exit %v, stderr %q; want a start-up failure naming the policy", p.waitErr, p.stderr.String())
	}
}
