package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
)

func listBase(method string) *Input {
	return &Input{
		Principal: Principal{ID: "api_key:ci", Kind: "api_key", Groups: []string{"eng"}},
		Route:     "docs", Upstream: "docs", Method: method, Phase: PhaseRequest,
		Protocol: Protocol{Version: "2025-06-18", Era: "legacy"},
	}
}

func TestFilterList(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		in          string
		want        string
		wantRemoved int
	}{
		{
			name:   "tools: order, unknown fields, nextCursor and _meta kept",
			method: "tools/list",
			in: `{"tools":[{"name":"echo","x":1},{"name":"hidden_admin"},{"name":"a","annotations":{"internal":true}},` +
				`{"name":"b","description":"INTERNAL use"},{"name":"search","inputSchema":{"type":"object"},"unknown":[1,2.50,"\u00e9"]}],` +
				`"nextCursor":"c2","_meta":{"k":"v"},"extra":true}`,
			want: `{"tools":[{"name":"echo","x":1},{"name":"search","inputSchema":{"type":"object"},"unknown":[1,2.50,"\u00e9"]}],` +
				`"nextCursor":"c2","_meta":{"k":"v"},"extra":true}`,
			wantRemoved: 3,
		},
		{
			name:        "tools: whitespace outside the array kept, array not first",
			method:      "tools/list",
			in:          "{ \"nextCursor\" : null ,\n \"tools\" : [ {\"name\":\"hidden\"} , {\"name\":\"echo\"} ,{\"name\":\"hidden2\"} ] \n}\n",
			want:        "{ \"nextCursor\" : null ,\n \"tools\" : [{\"name\":\"echo\"}] \n}\n",
			wantRemoved: 2,
		},
		{
			name:        "tools: all removed",
			method:      "tools/list",
			in:          `{"tools":[{"name":"hidden"},{"name":"hidden2"}]}`,
			want:        `{"tools":[]}`,
			wantRemoved: 2,
		},
		{
			name:        "tools: an item that is not an object is removed",
			method:      "tools/list",
			in:          `{"tools":[1,{"name":"echo"},"hidden",null]}`,
			want:        `{"tools":[{"name":"echo"}]}`,
			wantRemoved: 3,
		},
		{
			name:        "tools: an escaped member name is the same member",
			method:      "tools/list",
			in:          `{"\u0074ools":[{"name":"hidden"},{"name":"echo"}]}`,
			want:        `{"\u0074ools":[{"name":"echo"}]}`,
			wantRemoved: 1,
		},
		{
			name:        "resources",
			method:      "resources/list",
			in:          `{"resources":[{"uri":"file:///secret.txt","name":"s"},{"uri":"file:///a.txt","name":"a","size":3},{"uri":"file:///b","mimeType":"application/x-secret"}],"nextCursor":"n"}`,
			want:        `{"resources":[{"uri":"file:///a.txt","name":"a","size":3}],"nextCursor":"n"}`,
			wantRemoved: 2,
		},
		{
			name:        "resource templates",
			method:      "resources/templates/list",
			in:          `{"resourceTemplates":[{"uriTemplate":"file:///{path}","name":"f"},{"uriTemplate":"db://secret/{id}","name":"d"}]}`,
			want:        `{"resourceTemplates":[{"uriTemplate":"file:///{path}","name":"f"}]}`,
			wantRemoved: 1,
		},
		{
			name:        "prompts",
			method:      "prompts/list",
			in:          `{"prompts":[{"name":"hidden_p"},{"name":"review","arguments":[{"name":"code","required":true}]}],"_meta":{}}`,
			want:        `{"prompts":[{"name":"review","arguments":[{"name":"code","required":true}]}],"_meta":{}}`,
			wantRemoved: 1,
		},
		{name: "nothing removed", method: "tools/list", in: `{"tools":[{"name":"echo"}], "nextCursor":"x"}`, want: `{"tools":[{"name":"echo"}], "nextCursor":"x"}`},
		{name: "empty array", method: "tools/list", in: `{"tools":[]}`, want: `{"tools":[]}`},
		{name: "unknown method", method: "tools/call", in: `{"tools":[{"name":"hidden"}]}`, want: `{"tools":[{"name":"hidden"}]}`},
		{name: "no such array", method: "tools/list", in: `{"prompts":[{"name":"hidden"}]}`, want: `{"prompts":[{"name":"hidden"}]}`},
		{name: "not an array", method: "tools/list", in: `{"tools":null}`, want: `{"tools":null}`},
		{name: "not an object", method: "tools/list", in: `[{"name":"hidden"}]`, want: `[{"name":"hidden"}]`},
		{name: "resources array in a tools list", method: "tools/list", in: `{"resources":[{"uri":"x"}],"tools":[]}`, want: `{"resources":[{"uri":"x"}],"tools":[]}`},
	}
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, pass := range []string{"cold", "warm"} {
				got, removed, err := e.FilterList(context.Background(), listBase(tt.method), []byte(tt.in))
				if err != nil {
					t.Fatalf("%s: FilterList: %v", pass, err)
				}
				if string(got) != tt.want || removed != tt.wantRemoved {
					t.Errorf("%s: FilterList = %s, %d\n                     want %s, %d", pass, got, removed, tt.want, tt.wantRemoved)
				}
			}
		})
	}
}

func TestFilterListErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{name: "invalid JSON", in: `{"tools":[{"name":"echo"}`},
		{name: "duplicate array", in: `{"tools":[{"name":"echo"}],"tools":[{"name":"hidden"}]}`},
		{name: "duplicate escaped array", in: `{"tools":[],"\u0074ools":[{"name":"hidden"}]}`},
		{name: "trailing data", in: `{"tools":[]} {"tools":[{"name":"hidden"}]}`},
		{name: "invalid UTF-8", in: "{\"tools\":[{\"name\":\"\xff\"}]}"},
		{name: "empty", in: ``},
	}
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _, err := e.FilterList(context.Background(), listBase("tools/list"), []byte(tt.in)); err == nil {
				t.Errorf("FilterList = %s, want an error", got)
			}
		})
	}
	if _, _, err := e.FilterList(context.Background(), nil, []byte(`{"tools":[]}`)); err == nil {
		t.Error("FilterList with a nil base: no error")
	}
}

// TestFilterListCacheKey: answers are cached per principal content, not
// per principal id, and never across policy revisions.
func TestFilterListCacheKey(t *testing.T) {
	dir := writeDir(t, map[string]string{"authz.rego": `package ctxgate.authz

default allow := false

visible if "admin" in input.principal.groups
`})
	e := mustNew(t, Options{Dir: dir})
	ctx := context.Background()
	list := []byte(`{"tools":[{"name":"a"},{"name":"b"}]}`)
	base := listBase("tools/list")
	filter := func() int {
		t.Helper()
		_, removed, err := e.FilterList(ctx, base, list)
		if err != nil {
			t.Fatal(err)
		}
		return removed
	}
	if got := filter(); got != 2 {
		t.Fatalf("removed %d, want 2 for a non-admin", got)
	}
	base.Principal.Groups = []string{"admin"} // same principal id, new groups
	if got := filter(); got != 0 {
		t.Fatalf("removed %d, want 0 after the principal became admin", got)
	}
	writeFiles(t, dir, map[string]string{"authz.rego": "package ctxgate.authz\n\ndefault allow := false\n\nvisible := false\n"})
	if changed, err := e.Reload(ctx); !changed || err != nil {
		t.Fatalf("Reload = %t, %v", changed, err)
	}
	if got := filter(); got != 2 {
		t.Fatalf("removed %d, want 2 with the new revision", got)
	}
}

func TestFilterListFailures(t *testing.T) {
	dir := writeDir(t, map[string]string{"authz.rego": `package ctxgate.authz

default allow := false

visible if input.tool.name != "conflict"

visible := false if input.tool.name == "conflict"

visible if input.tool.name == "conflict"
`})
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: dir, DecisionLog: &log})
	list := []byte(`{"tools":[{"name":"conflict"},{"name":"ok"}]}`)
	// Issue 15: an item the policy could not decide makes the whole list
	// an error (the gateway withholds it), never a shorter list.
	for range 2 {
		got, removed, err := e.FilterList(context.Background(), listBase("tools/list"), list)
		if !errors.Is(err, errListItemUndecided) || got != nil || removed != 0 {
			t.Fatalf("FilterList = %s, %d, %v; want no list and an undecided item", got, removed, err)
		}
	}
	recs := logLines(t, log.String())
	if len(recs) != 2 {
		t.Fatalf("%d records for two lists, want 2", len(recs))
	}
	for _, rec := range recs {
		// Failures are never cached: both lists evaluate the item again.
		if res := rec["result"].(map[string]any); res["failures"] != 1.0 || len(res["removed"].([]any)) != 0 {
			t.Errorf("record result %v, want failures 1 and nothing removed", res)
		}
		if msg, _ := rec["error"].(string); !strings.Contains(msg, "conflict") {
			t.Errorf("record error %q, want the item's failure", msg)
		}
	}
}

// TestFilterListBudget: the items are decided under one budget for the
// whole list; a list whose budget is spent is an error, not the part of
// the list decided in time.
func TestFilterListBudget(t *testing.T) {
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the budget is spent before the first item
	got, _, err := e.FilterList(ctx, listBase("tools/list"), []byte(`{"tools":[{"name":"echo"},{"name":"hidden"}]}`))
	if !errors.Is(err, errListItemUndecided) || got != nil {
		t.Fatalf("FilterList = %s, %v; want an undecided list", got, err)
	}
	// A list of many items (evaluated in parallel) fails whole too.
	var b strings.Builder
	b.WriteString(`{"tools":[`)
	for i := range 3 * parallelMin * 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"echo_%d"}`, i)
	}
	b.WriteString(`]}`)
	if got, _, err := e.FilterList(ctx, listBase("tools/list"), []byte(b.String())); !errors.Is(err, errListItemUndecided) || got != nil {
		t.Fatalf("FilterList of %d items = %d bytes, %v; want an undecided list", 6*parallelMin, len(got), err)
	}
	if n := len(e.set.Load().vis.m); n != 0 {
		t.Errorf("%d answers cached from failed lists, want none", n)
	}
	// One Timeout, and one more per listItemsPerTimeout items.
	if got := e.listBudget(1000); got != 11*time.Minute {
		t.Errorf("listBudget(1000) = %v, want 11 times the timeout (1m)", got)
	}
}

func TestFilterListDecisionLog(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log})
	ctx := WithRequestID(context.Background(), "req-9")
	list := []byte(`{"tools":[{"name":"hidden_a"},{"name":"echo"},{"name":"hidden_b"}]}`)
	for range 2 { // cold, then warm: the same record
		if _, _, err := e.FilterList(ctx, listBase("tools/list"), list); err != nil {
			t.Fatal(err)
		}
	}
	recs := logLines(t, log.String())
	if len(recs) != 2 {
		t.Fatalf("%d records for two lists, want 2", len(recs))
	}
	for _, rec := range recs {
		want := map[string]any{"total": 3.0, "removed": []any{"hidden_a", "hidden_b"}}
		if diff := cmp.Diff(want, rec["result"]); diff != "" || rec["path"] != "ctxgate/authz/visible" || rec["request_id"] != "req-9" {
			t.Errorf("record %v; result (-want +got):\n%s", rec, diff)
		}
		if phase := rec["input"].(map[string]any)["phase"]; phase != PhaseListItem {
			t.Errorf("input phase %v, want %s", phase, PhaseListItem)
		}
	}
}

func TestVisibilityCacheTTL(t *testing.T) {
	// A policy that calls a non-deterministic built-in: answers expire.
	c := newVisibilityCache([]string{"time.now_ns"})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	keys := []visibilityKey{{1}, {2}}
	c.putAll(keys, []visibilityEntry{{visible: true, name: "a"}, {visible: true, name: "b"}}, []int{0}, now)
	tests := []struct {
		name string
		at   time.Time
		want []bool
	}{
		{name: "fresh", at: now.Add(visibilityTTL - time.Second), want: []bool{true, false}},
		{name: "expired", at: now.Add(visibilityTTL), want: []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, hit := c.getAll(keys, tt.at)
			if diff := cmp.Diff(tt.want, hit); diff != "" {
				t.Errorf("hits (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVisibilityCacheBound(t *testing.T) {
	c := newVisibilityCache(nil)
	now := time.Now()
	n := visibilityMaxEntries + 100
	keys := make([]visibilityKey, n)
	idx := make([]int, n)
	for i := range keys {
		keys[i] = itemKey([32]byte{}, []byte{byte(i), byte(i >> 8), byte(i >> 16)})
		idx[i] = i
	}
	c.putAll(keys, make([]visibilityEntry, n), idx, now)
	if len(c.m) != visibilityMaxEntries {
		t.Errorf("cache holds %d entries, want the bound %d", len(c.m), visibilityMaxEntries)
	}
}

func FuzzFilterList(f *testing.F) {
	for _, s := range []string{
		`{"tools":[{"name":"echo"},{"name":"hidden"}],"nextCursor":"x"}`,
		`{"tools":[1,"a",null,{"name":"hidden","annotations":{"internal":true}}]}`,
		`{"\u0074ools":[{"name":"hidden"}]}`,
		`{"tools":[],"tools":[]}`,
		`[]`,
		// Issue 14, finding 3: case-variant members inside items.
		`{"tools":[{"name":"echo","Name":"hidden"},{"Name":"hidden","annotations":{"readOnlyHint":true}}]}`,
		`{"tools":[{"name":"hidden","annotations":{"internal":true},"Annotations":{"internal":false}}]}`,
		`{"resources":[{"uri":"file:///a","URI":"secret://x"}]}`,
	} {
		f.Add(s)
	}
	dir := f.TempDir()
	for name, content := range testFiles() {
		writeFile(f, dir, name, content)
	}
	e, err := New(Options{Dir: dir})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(e.Close)
	f.Fuzz(func(t *testing.T, in string) {
		out, removed, err := e.FilterList(context.Background(), listBase("tools/list"), []byte(in))
		if err != nil {
			return
		}
		if !jsontext.Value(out).IsValid() {
			t.Fatalf("FilterList(%q) = %q: not valid JSON", in, out)
		}
		if removed == 0 && string(out) != in {
			t.Fatalf("FilterList(%q) changed the result without removing anything: %q", in, out)
		}
		if strings.Contains(string(out), `"hidden`) && !strings.Contains(in, `"hidden`) {
			t.Fatalf("FilterList(%q) = %q", in, out)
		}
	})
}

func TestFilterListCaseVariants(t *testing.T) {
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	tests := []struct {
		name    string
		in      string
		want    string
		wantErr bool
	}{
		{name: "a case variant is the list", in: `{"Tools":[{"name":"hidden"},{"name":"echo"}]}`, want: `{"Tools":[{"name":"echo"}]}`},
		{name: "two case variants are an error", in: `{"tools":[{"name":"echo"}],"TOOLS":[{"name":"hidden"}]}`, wantErr: true},
		{name: "a case variant after a null is an error", in: `{"tools":null,"Tools":[{"name":"hidden"}]}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := e.FilterList(context.Background(), listBase("tools/list"), []byte(tt.in))
			if (err != nil) != tt.wantErr || (!tt.wantErr && string(got) != tt.want) {
				t.Errorf("FilterList = %s, %v; want %s (error %t)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestFilterListViewReused: with a deterministic policy, the same list for
// the same base input is answered from the list cache (the same filtered
// bytes, a decision log record marked memo_hit); another list, another
// base input or a non-deterministic policy is filtered afresh.
func TestFilterListViewReused(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log})
	ctx := context.Background()
	list := []byte(`{"tools":[{"name":"hidden_a"},{"name":"echo"},{"name":"hidden_b"}],"nextCursor":"c"}`)
	other := []byte(`{"tools":[{"name":"hidden_a"},{"name":"echo"}],"nextCursor":"c"}`)
	admin := listBase("tools/list")
	admin.Principal.Groups = []string{"admin"}
	steps := []struct {
		base *Input
		list []byte
		hit  bool
	}{
		{listBase("tools/list"), list, false},
		{listBase("tools/list"), list, true},
		{listBase("tools/list"), other, false},
		{admin, list, false},
		{listBase("tools/list"), list, true},
	}
	var first []byte
	for i, s := range steps {
		log.Reset()
		got, removed, err := e.FilterList(ctx, s.base, s.list)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if i == 0 {
			first = got
		}
		if s.hit && (!bytes.Equal(got, first) || removed != 2) {
			t.Errorf("step %d: reused view gave %s (removed %d), want %s", i, got, removed, first)
		}
		recs := logLines(t, log.String())
		if len(recs) != 1 {
			t.Fatalf("step %d: %d records, want 1", i, len(recs))
		}
		if hit, _ := recs[0]["memo_hit"].(bool); hit != s.hit {
			t.Errorf("step %d: memo_hit %t, want %t", i, hit, s.hit)
		}
		if s.hit {
			want := map[string]any{"total": 3.0, "removed": []any{"hidden_a", "hidden_b"}}
			if diff := cmp.Diff(want, recs[0]["result"]); diff != "" {
				t.Errorf("step %d: result (-want +got):\n%s", i, diff)
			}
		}
	}
	if string(first) != `{"tools":[{"name":"echo"}],"nextCursor":"c"}` {
		t.Errorf("filtered %s", first)
	}
	if got := e.set.Load().lists.c.Len(); got != 3 {
		t.Errorf("%d views cached, want 3", got)
	}

	nondet := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": `package ctxgate.authz

default allow := false

visible if time.now_ns() > 0
`})})
	if nondet.set.Load().lists != nil {
		t.Fatal("a non-deterministic policy has a list cache")
	}
	for range 2 {
		if _, removed, err := nondet.FilterList(ctx, listBase("tools/list"), list); err != nil || removed != 0 {
			t.Fatalf("FilterList = %d removed, %v", removed, err)
		}
	}
}
