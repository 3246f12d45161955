package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The npm stdio servers, absolute: the gateway starts them in a dir of
// the test's.
var (
	npmFilesystemJS, _ = filepath.Abs(filepath.Join("node", "node_modules", "@modelcontextprotocol", "server-filesystem", "dist", "index.js"))
	npmMemoryJS, _     = filepath.Abs(filepath.Join("node", "node_modules", "@modelcontextprotocol", "server-memory", "dist", "index.js"))
)

// stdioUpstreamConfig is a gateway fronting one stdio upstream, name, that
// runs node with args in dir, under the policy in policyDir.
func stdioUpstreamConfig(name, policyDir, dir string, env map[string]string, args ...string) string {
	argv, _ := json.Marshal(append([]string{nodeBin}, args...))
	envJSON, _ := json.Marshal(env)
	return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q, decision_log: off}
upstreams:
  - name: %s
    transport: stdio
    command: %s
    env: %s
    dir: %q
`, policyDir, name, argv, envJSON, dir)
}

func toolNames(t *testing.T, cs *mcp.ClientSession) []string {
	t.Helper()
	tools, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	slices.Sort(names)
	return names
}

func stdioCall(t *testing.T, cs *mcp.ClientSession, name string, args map[string]any) (string, error) {
	t.Helper()
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		return "", err
	}
	var text strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			text.WriteString(tc.Text)
		}
	}
	if res.IsError {
		return text.String(), fmt.Errorf("tool error: %s", text.String())
	}
	return text.String(), nil
}

// TestStdioFilesystemShippedPolicy: the real binary runs the npm
// server-filesystem over stdio; the shipped policy shows an anonymous
// caller only its read-only tools, lets it read a file by a relative path,
// and refuses a path that climbs out of it (the gateway never forwards a
// denied call).
func TestStdioFilesystemShippedPolicy(t *testing.T) {
	requireNodeTool(t, npmFilesystemJS)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello from disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, stdioUpstreamConfig("fs", copyShippedPolicy(t), root, nil, npmFilesystemJS, root))
	cs := connect(t, gw.URL+"/mcp/fs")

	names := toolNames(t, cs)
	for _, want := range []string{"list_directory", "read_text_file"} {
		if !slices.Contains(names, want) {
			t.Errorf("anonymous does not see read-only %s; sees %v", want, names)
		}
	}
	for _, hidden := range []string{"edit_file", "move_file", "write_file"} {
		if slices.Contains(names, hidden) {
			t.Errorf("anonymous sees %s, which may change state; sees %v", hidden, names)
		}
	}
	if text, err := stdioCall(t, cs, "read_text_file", map[string]any{"path": "hello.txt"}); err != nil || !strings.Contains(text, "hello from disk") {
		t.Errorf("read_text_file hello.txt: %q, %v", text, err)
	}
	_, err := stdioCall(t, cs, "read_text_file", map[string]any{"path": "../../etc/passwd"})
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != jsonrpc.CodeInvalidParams || !strings.Contains(rpcErr.Message, `must not contain ".."`) {
		t.Errorf("a path out of the root: %v, want the policy's refusal (a denied call answers -32602 with its reason)", err)
	}
	_, err = stdioCall(t, cs, "write_file", map[string]any{"path": "new.txt", "content": "x"})
	if !errors.As(err, &rpcErr) {
		t.Errorf("write_file as anonymous: %v, want a JSON-RPC refusal", err)
	}
	if _, statErr := os.Stat(filepath.Join(root, "new.txt")); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("a refused write_file wrote the file: %v", statErr)
	}
	if got := gw.metric(t, `ctxgate_stdio_processes{upstream="fs"}`); got != 1 {
		t.Errorf("ctxgate_stdio_processes = %v with one session, want 1", got)
	}
}

// TestStdioMemoryServer: the npm server-memory over stdio keeps its state
// within a client session (one process per session); a second session gets
// a process of its own, and ending the sessions ends both processes.
func TestStdioMemoryServer(t *testing.T) {
	requireNodeTool(t, npmMemoryJS)
	dir := t.TempDir()
	env := map[string]string{"MEMORY_FILE_PATH": filepath.Join(dir, "memory.jsonl")}
	gw := startGateway(t, stdioUpstreamConfig("memory", allowAllPolicy, dir, env, npmMemoryJS))

	// A stdio upstream has no address: its health is that its command runs.
	var ready struct {
		Status string                       `json:"status"`
		Health map[string]map[string]string `json:"upstream_health"`
	}
	resp, err := http.Get(gw.Admin + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&ready); err != nil || ready.Status != "ready" || ready.Health["memory"]["status"] != "reachable" {
		t.Errorf("/readyz with a stdio upstream: %+v (%v), want ready with memory reachable", ready, err)
	}
	resp.Body.Close()

	cs := connect(t, gw.URL+"/mcp/memory")
	if names := toolNames(t, cs); !slices.Contains(names, "create_entities") || !slices.Contains(names, "read_graph") {
		t.Fatalf("server-memory tools through the gateway: %v", names)
	}
	entity := map[string]any{"entities": []map[string]any{{"name": "ctxgate", "entityType": "gateway", "observations": []string{"fronts stdio servers"}}}}
	if _, err := stdioCall(t, cs, "create_entities", entity); err != nil {
		t.Fatalf("create_entities: %v", err)
	}
	if text, err := stdioCall(t, cs, "read_graph", map[string]any{}); err != nil || !strings.Contains(text, "fronts stdio servers") {
		t.Errorf("read_graph in the same session: %q, %v", text, err)
	}

	other := connect(t, gw.URL+"/mcp/memory")
	if _, err := stdioCall(t, other, "read_graph", map[string]any{}); err != nil {
		t.Errorf("read_graph in a second session: %v", err)
	}
	if got := gw.metric(t, `ctxgate_stdio_processes{upstream="memory"}`); got != 2 {
		t.Errorf("ctxgate_stdio_processes = %v with two sessions, want 2 (one process each)", got)
	}
	if got := gw.metric(t, `ctxgate_stdio_processes_total{event="started",upstream="memory"}`); got != 2 {
		t.Errorf("processes started = %v, want 2", got)
	}
	var status struct {
		Upstreams []struct {
			Name      string         `json:"name"`
			Processes map[string]int `json:"processes"`
		} `json:"upstreams"`
	}
	resp, err = http.Get(gw.Admin + "/admin/upstreams")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil || len(status.Upstreams) != 1 ||
		fmt.Sprint(status.Upstreams[0].Processes) != fmt.Sprint(map[string]int{"running": 2, "started": 2, "crashed": 0, "reaped": 0}) {
		t.Errorf("/admin/upstreams: %+v (%v), want memory with 2 processes running and started", status, err)
	}
	resp.Body.Close()
	cs.Close()
	other.Close()
	waitFor(t, "both processes to end with their sessions", readyDeadline, func() bool {
		return gw.metric(t, `ctxgate_stdio_processes{upstream="memory"}`) == 0
	})
	if got := gw.metric(t, `ctxgate_stdio_processes_total{event="crashed",upstream="memory"}`); got != 0 {
		t.Errorf("processes counted as crashed after their sessions ended: %v", got)
	}
}
