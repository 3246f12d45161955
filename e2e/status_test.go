package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// chromium returns the headless browser's path: the Debian chromium
// package (test.sh installs it in CI). Outside CI a missing browser skips.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required in CI (apt-get install chromium)")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// headless runs chromium headless on url with one more flag (--dump-dom or
// --screenshot=FILE) and returns its stdout.
func headless(t *testing.T, browser, url, flag string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
		"--disable-dev-shm-usage", "--user-data-dir="+t.TempDir(), "--window-size=1400,1200", flag, url)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s %s: %v\n%s", flag, url, err, stderr.String())
	}
	return out
}

// TestStatusPage loads the admin status page in headless Chromium after
// some traffic and checks what a person would read there: each upstream
// with its reachability and breaker, the policy revision, and the last
// decisions; a screenshot goes to the test's temp dir.
func TestStatusPage(t *testing.T) {
	browser := chromium(t)
	up := startEverything(t)
	g := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
%supstreams: [{name: everything, url: %q}]
`, policyConfig(), up))
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: g.URL + "/mcp/everything"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.ListTools(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "test_simple_text", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	dom := string(headless(t, browser, g.Admin+"/status", "--dump-dom"))
	for _, want := range []string{
		"<title>ctxgate status</title>",
		"<code>/mcp/everything</code>",
		`<span class="ok">reachable</span>`,
		"Streamable HTTP over http",
		`<span class="ok">closed</span>`,
		"All upstreams reachable",
		`<table id="policy">`,
		"<code>tools/call</code>",
		"<code>test_simple_text</code>",
		`<span class="ok">allow</span>`,
		"<code>anonymous</code>",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("status page lacks %q", want)
		}
	}
	if strings.Contains(dom, "<script") {
		t.Error("the status page has a script; it must work without JavaScript")
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
	shot := filepath.Join(t.TempDir(), "status.png")
	headless(t, browser, g.Admin+"/status", "--screenshot="+shot)
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10000 {
		t.Errorf("screenshot %s: %d bytes, %v; want a PNG of the page", shot, len(png), err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}
