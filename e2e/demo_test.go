package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

var (
	demoEndpoint = regexp.MustCompile(`MCP endpoint \(gateway\):\s+(http://\S+)`)
	demoCommand  = regexp.MustCompile(`npx -y (@modelcontextprotocol/inspector@\S+) (--cli .*)`)
)

// startDemo runs `ctxgate demo` on a free port over dir and returns its
// process and printed stdout once it is ready.
func startDemo(t *testing.T, dir string) (*proc, string) {
	t.Helper()
	p := startProc(t, "ctxgate demo", bins.ctxgate, "demo", "--listen", "127.0.0.1:0", "--dir", dir)
	waitFor(t, "the demo banner", readyDeadline, func() bool {
		if p.exited() {
			t.Fatalf("demo exited: %v\n%s", p.waitErr, p.stderr.String())
		}
		return demoCommand.MatchString(p.stdout.String())
	})
	return p, p.stdout.String()
}

// TestDemo: the demo serves its sample project through the gateway to a
// real client, and cannot be made to read outside its directory.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from the project\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, banner := startDemo(t, dir)
	endpoint := demoEndpoint.FindStringSubmatch(banner)[1]
	// The banner says where everything is.
	for _, want := range []string{"alice  demo-alice-key", "bob    demo-bob-key", "decision log:", "/status", "/metrics", "/readyz", "/demo/upstream/stop", "go run . demo tour"} {
		if !strings.Contains(banner, want) {
			t.Errorf("demo banner lacks %q:\n%s", want, banner)
		}
	}

	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: endpoint}, nil)
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	for _, want := range []string{"list_files", "read_file"} {
		if !slices.Contains(names, want) {
			t.Errorf("demo tools %v lack %s", names, want)
		}
	}
	// The demo policy makes search admin-only: hidden from anonymous.
	if slices.Contains(names, "search") {
		t.Errorf("demo tools %v include search for an anonymous client", names)
	}
	res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "hello.txt"}})
	if err != nil || res.IsError || res.Content[0].(*mcp.TextContent).Text != "hello from the project\n" {
		t.Errorf("read_file hello.txt = %+v, %v", res, err)
	}
	res, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "read_file", Arguments: map[string]any{"path": "../../../etc/passwd"}})
	if err == nil && !res.IsError {
		t.Errorf("read_file outside the project root succeeded: %+v", res.Content)
	}
	rr, err := cs.ReadResource(ctx(t), &mcp.ReadResourceParams{URI: "project://files/hello.txt"})
	if err != nil || rr.Contents[0].Text != "hello from the project\n" {
		t.Errorf("resources/read project://files/hello.txt = %+v, %v", rr, err)
	}
}

// TestDemoPrintedCommand runs the exact Inspector command the demo prints,
// with the Inspector version pinned in e2e/node, so the newcomer's
// copy-paste is known to work.
func TestDemoPrintedCommand(t *testing.T) {
	requireNodeTool(t, inspectorCLIJS)
	_, banner := startDemo(t, t.TempDir())
	m := demoCommand.FindStringSubmatch(banner)
	pkgJSON, err := os.ReadFile(filepath.Join("node", "node_modules", "@modelcontextprotocol", "inspector", "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct{ Version string }
	if err := json.Unmarshal(pkgJSON, &pkg); err != nil {
		t.Fatal(err)
	}
	if want := "@modelcontextprotocol/inspector@" + pkg.Version; m[1] != want {
		t.Errorf("demo prints %s, but e2e/node pins %s: keep them in step", m[1], want)
	}
	cmd := exec.CommandContext(ctx(t), nodeBin, append([]string{inspectorCLIJS}, strings.Fields(m[2])...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", m[0], err, out, stderr.String())
	}
	var listed struct {
		Tools []struct{ Name string } `json:"tools"`
	}
	if err := json.Unmarshal(out, &listed); err != nil || len(listed.Tools) == 0 {
		t.Fatalf("inspector output is not a tools list (%v):\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	if listed.Tools[0].Name == "" {
		t.Errorf("inspector listed a tool without a name: %s", out)
	}
}
