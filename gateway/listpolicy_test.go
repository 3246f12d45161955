package gateway_test

import (
	"testing"

	"github.com/ctxgate/ctxgate/gateway"
)

// Issue 15: a list item the policy could not decide (here a conflict
// between two values of visible) withholds the whole list with the
// "policy could not filter" error, never a list without that item: a
// hidden item must mean the policy said it is not visible.
func TestListItemUndecidedWithholdsList(t *testing.T) {
	_, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	g.writePolicy(t, allowAllRego+`
visible := false if input.tool.name == "secret_tool"

visible if input.tool.name == "secret_tool"
`)
	if _, err := g.policy.Reload(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := alice.call(t, "tools/list", `{}`)
	if code, _ := a.error["code"].(float64); code != gateway.CodePolicyUndecided || a.result != nil {
		t.Errorf("tools/list with an undecidable item = result %v, error %v; want error %d and no list", a.result, a.error, gateway.CodePolicyUndecided)
	}
}
