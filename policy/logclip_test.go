package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDecisionLogClipsHugeInputs: a record holds at most logMaxString
// bytes of a string and logMaxItems elements of an array or members of an
// object, each cut marked with the original size; the policy still sees the
// whole input, and the caller's input is not modified.
func TestDecisionLogClipsHugeInputs(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log})
	items := make([]any, 500_000)
	for i := range items {
		items[i] = json.Number("1")
	}
	members := map[string]any{}
	for i := range 100 {
		members[fmt.Sprintf("k%03d", i)] = i
	}
	long := strings.Repeat("é", 300_000) // 600,000 bytes
	args := map[string]any{"items": items, "text": long, "members": members, "n": json.Number(strings.Repeat("9", 5000)), "short": "kept"}
	e.Decide(context.Background(), toolCall("rm", args))
	if log.Len() > 64<<10 {
		t.Errorf("decision record is %d bytes for a huge input, want at most 64 KiB", log.Len())
	}
	recs := logLines(t, log.String())
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	got := recs[0]["input"].(map[string]any)["tool"].(map[string]any)["arguments"].(map[string]any)
	gotItems := got["items"].([]any)
	if len(gotItems) != logMaxItems+1 || gotItems[logMaxItems] != "…[truncated: 500000 items]" {
		t.Errorf("items: %d elements, last %v; want %d and a marker with the original count", len(gotItems), gotItems[len(gotItems)-1], logMaxItems+1)
	}
	text := got["text"].(string)
	if !strings.HasSuffix(text, "…[truncated: 600000 bytes]") || len(text) > logMaxString+64 || !strings.HasPrefix(text, "éé") {
		t.Errorf("text: %d bytes ending %q; want at most %d bytes and the original size", len(text), text[len(text)-40:], logMaxString)
	}
	gotMembers := got["members"].(map[string]any)
	if len(gotMembers) != logMaxItems+1 || gotMembers[truncatedName] != "100 members" || gotMembers["k000"] == nil {
		t.Errorf("members: %d, marker %v; want the first %d by name and the count", len(gotMembers), gotMembers[truncatedName], logMaxItems)
	}
	if diff := cmp.Diff(map[string]any{"n": "…[truncated number: 5000 digits]", "short": "kept"}, map[string]any{"n": got["n"], "short": got["short"]}); diff != "" {
		t.Errorf("scalars (-want +got):\n%s", diff)
	}
	if len(items) != 500_000 || len(members) != 100 || args["text"] != long {
		t.Errorf("the caller's input was modified")
	}
}

// TestDecisionLogClipBudget: however the values are spread, one record
// keeps at most logMaxValues of them.
func TestDecisionLogClipBudget(t *testing.T) {
	// 64 arrays of 64 arrays of 64 numbers: 262,144 values, none over a
	// per-container limit.
	inner := make([]any, logMaxItems)
	for i := range inner {
		inner[i] = json.Number("1")
	}
	mid := make([]any, logMaxItems)
	for i := range mid {
		mid[i] = inner
	}
	outer := make([]any, logMaxItems)
	for i := range outer {
		outer[i] = mid
	}
	doc := clippedInput(&Input{Tool: &Tool{Name: "x", Arguments: map[string]any{"a": outer}}})
	b, _ := json.Marshal(doc)
	if n := strings.Count(string(b), "1"); n > logMaxValues {
		t.Errorf("%d numbers logged, want at most %d", n, logMaxValues)
	}
	if !strings.Contains(string(b), "…[truncated: document too large]") {
		t.Errorf("no marker where the budget ran out")
	}
}
