package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"go.yaml.in/yaml/v3"
)

// TestConformanceModern runs the suite's 2026-07-28 requirements against
// the stateless everything-server directly and through ctxgate: every
// check that passes directly must pass through the gateway, and every
// scenario that fails directly must be in the baseline, with its reason.
func TestConformanceModern(t *testing.T) {
	requireNodeTool(t, conformanceJS)
	upstream := startEverythingMode(t, true)
	gw := startGateway(t, anonymousConfig(upstream))
	direct, via := compareConformance(t, "2026-07-28", upstream, gw.URL+"/mcp/everything")

	data, err := os.ReadFile(filepath.Join("testdata", "conformance-baseline-2026-07-28.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var baseline map[string]string
	if err := yaml.Unmarshal(data, &baseline); err != nil {
		t.Fatal(err)
	}
	failingDirect := map[string]bool{}
	for id, status := range direct {
		if status == "FAILURE" {
			failingDirect[strings.SplitN(id, "/", 2)[0]] = true
		}
	}
	var unlisted, stale []string
	for scenario := range failingDirect {
		if baseline[scenario] == "" {
			unlisted = append(unlisted, scenario)
		}
	}
	for scenario := range baseline {
		if !failingDirect[scenario] {
			stale = append(stale, scenario)
		}
	}
	sort.Strings(unlisted)
	sort.Strings(stale)
	if len(unlisted) > 0 {
		t.Errorf("scenarios fail directly but are not in the baseline (add them with the reason): %v", unlisted)
	}
	if len(stale) > 0 {
		t.Errorf("baseline scenarios now pass directly (remove them): %v", stale)
	}
	// The scenarios issue 5 names must have run and passed through the gateway.
	for _, scenario := range []string{"server-stateless", "http-header-validation", "http-custom-header-server-validation", "caching", "dns-rebinding-protection", "input-required-result-basic-elicitation", "input-required-result-request-state", "input-required-result-multi-round"} {
		passed := 0
		for id, status := range via {
			if strings.HasPrefix(id, scenario+"/") && status == "SUCCESS" {
				passed++
			}
		}
		if passed == 0 {
			t.Errorf("scenario %s: no check passed through the gateway", scenario)
		}
	}
	t.Logf("conformance --requirements 2026-07-28: %d checks pass directly, %d through ctxgate", countPassed(direct), countPassed(via))
}

// modernScript is what a Go SDK client asking for 2026-07-28 sees.
type modernScript struct {
	Version    string
	Tools      *mcp.ListToolsResult
	SimpleText *mcp.CallToolResult
}

func runModernClient(t *testing.T, endpoint string) modernScript {
	t.Helper()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e-modern", Version: "1"}, nil)
	cs, err := client.Connect(ctx(t), &mcp.StreamableClientTransport{Endpoint: endpoint}, &mcp.ClientSessionOptions{ProtocolVersion: "2026-07-28"})
	if err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	defer cs.Close()
	var out modernScript
	out.Version = cs.InitializeResult().ProtocolVersion
	if out.Tools, err = cs.ListTools(ctx(t), nil); err != nil {
		t.Fatalf("tools/list via %s: %v", endpoint, err)
	}
	if out.SimpleText, err = cs.CallTool(ctx(t), &mcp.CallToolParams{Name: "test_simple_text"}); err != nil {
		t.Fatalf("tools/call via %s: %v", endpoint, err)
	}
	return out
}

// TestGoSDKModernClient: a Go SDK client speaking 2026-07-28 gets through
// the gateway what it gets directly from a modern upstream, statelessly;
// in front of a legacy-only upstream it is told so (no bridging yet) and
// falls back to a legacy session through the gateway.
func TestGoSDKModernClient(t *testing.T) {
	t.Run("modern upstream", func(t *testing.T) {
		upstream := startEverythingMode(t, true)
		rec := startRecorder(t, upstream)
		compareModernClient(t, upstream, anonymousConfig(rec.URL), "2026-07-28")
		var calls int
		for _, r := range rec.requests() {
			if r.method == http.MethodPost && r.header.Get("Mcp-Method") == "tools/call" {
				calls++
				if r.header.Get("Mcp-Name") != "test_simple_text" {
					t.Errorf("upstream got Mcp-Name %q", r.header.Get("Mcp-Name"))
				}
			}
			if r.header.Get("Mcp-Session-Id") != "" {
				t.Errorf("upstream got Mcp-Session-Id on a modern %s", r.header.Get("Mcp-Method"))
			}
		}
		if calls != 1 {
			t.Errorf("upstream got %d tools/call requests, want 1", calls)
		}
	})
	t.Run("legacy-only upstream", func(t *testing.T) {
		upstream := startEverything(t)
		compareModernClient(t, upstream, anonymousConfig(upstream), "2025-11-25")
	})
	t.Run("legacy-only upstream, bridged", func(t *testing.T) {
		upstream := startEverything(t)
		rec := startRecorder(t, upstream)
		cfg := strings.TrimSuffix(anonymousConfig(rec.URL), "}\n") + ", bridge: true}\n" // the upstream's line is last
		compareModernClient(t, upstream, cfg, "2026-07-28")
		var initializes int
		for _, r := range rec.requests() {
			if strings.Contains(string(r.body), `"method":"initialize"`) {
				initializes++
			}
			if v := r.header.Get("Mcp-Protocol-Version"); r.method == http.MethodPost && v != "" && v != "2025-11-25" && r.header.Get("Mcp-Method") != "server/discover" {
				t.Errorf("bridged request to the legacy upstream with MCP-Protocol-Version %q", v)
			}
		}
		if initializes != 1 {
			t.Errorf("upstream saw %d initialize requests, want 1 (one legacy session for the principal)", initializes)
		}
	})
}

// compareModernClient runs the modern client directly against upstream and
// through a gateway started with cfg, and wants the same results and the
// given version through the gateway.
func compareModernClient(t *testing.T, upstream, cfg, wantVersion string) {
	t.Helper()
	gw := startGateway(t, cfg)
	direct := runModernClient(t, upstream)
	via := runModernClient(t, gw.URL+"/mcp/everything")
	if via.Version != wantVersion {
		t.Errorf("negotiated %q through the gateway, want %s", via.Version, wantVersion)
	}
	bridged := direct.Version != via.Version // a bridged client speaks another era than the upstream does directly
	direct.Version = via.Version
	got := asJSON(t, via)
	if bridged {
		// Every 2026-07-28 result carries a resultType, which the gateway
		// gives a bridged one; the legacy upstream's own has none.
		for _, k := range []string{"Tools", "SimpleText"} {
			result, _ := got.(map[string]any)[k].(map[string]any)
			if result["resultType"] != "complete" {
				t.Errorf("bridged %s result: resultType %v, want complete", k, result["resultType"])
			}
			delete(result, "resultType")
		}
	}
	if diff := cmp.Diff(asJSON(t, direct), got); diff != "" {
		t.Errorf("results through the gateway differ from direct (-direct +gateway):\n%s", diff)
	}
}
