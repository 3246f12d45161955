package e2e

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestCallBeforeList: a fresh gateway with the shipped policy answers a
// tools/call made before any tools/list (a client with a cached tool list,
// after a reconnect) exactly as it answers the same call after a list; a
// destructive tool stays refused either way.
func TestCallBeforeList(t *testing.T) {
	fixture := startPolicyFixture(t, false)
	fresh := func() string {
		gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: %q, decision_log: off}
upstreams: [{name: fixture, url: %q}]
`, copyShippedPolicy(t), fixture.URL))
		return gw.URL + "/mcp/fixture"
	}
	answer := func(cs *mcp.ClientSession, tool string) string {
		res, err := cs.CallTool(ctx(t), &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
		if err != nil {
			return "error: " + err.Error()
		}
		b, _ := json.Marshal(res)
		return string(b)
	}

	first := connect(t, fresh())
	beforeList := answer(first, "search")
	destructiveBefore := answer(first, "delete_file")

	second := connect(t, fresh())
	if _, err := second.ListTools(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	afterList := answer(second, "search")
	destructiveAfter := answer(second, "delete_file")

	if beforeList != afterList {
		t.Errorf("search before any list:\n  %s\nafter a list:\n  %s", beforeList, afterList)
	}
	if beforeList == "" || beforeList[:6] == "error:" {
		t.Errorf("search (read-only) before any list was refused: %s", beforeList)
	}
	if destructiveBefore != destructiveAfter || destructiveBefore[:6] != "error:" {
		t.Errorf("delete_file before a list %q, after %q: want the same refusal", destructiveBefore, destructiveAfter)
	}
}
