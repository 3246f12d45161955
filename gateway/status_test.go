package gateway

import (
	"strings"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/policy"
)

// TestStatusPageEscapes: what clients name (tools, resources) and what the
// policy says (reasons) is escaped on the status page, never markup.
func TestStatusPageEscapes(t *testing.T) {
	var ring decisionRing
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range recentDecisions + 5 {
		ring.add(now, &policy.Input{Principal: policy.Principal{ID: "api_key:bob"}, Method: "tools/call", Phase: policy.PhaseRequest,
			Tool: &policy.Tool{Name: "<script>alert(1)</script>", Arguments: map[string]any{"password": "hunter2"}}},
			policy.Decision{Allow: i%2 == 0, Reason: `<img src=x onerror=alert(1)>`, ID: "d"})
	}
	ring.add(now, &policy.Input{Method: "tools/list", Phase: policy.PhaseListItem, Tool: &policy.Tool{Name: "item"}}, policy.Decision{})
	if n := len(ring.list()); n != recentDecisions {
		t.Errorf("ring holds %d decisions, want %d (list items not kept)", n, recentDecisions)
	}
	var b strings.Builder
	if err := statusTemplate.Execute(&b, statusPage{Now: now, Decisions: ring.list()}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, bad := range []string{"<script>", "<img", "hunter2", "password"} {
		if strings.Contains(out, bad) {
			t.Errorf("status page contains %q", bad)
		}
	}
	if !strings.Contains(out, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the tool name is not shown escaped")
	}
}
