package gateway

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

func TestMergePages(t *testing.T) {
	git := json.RawMessage(`{"tools":[{"name":"search","description":"g"},{"name":"log"}],"nextCursor":"g2"}`)
	docs := json.RawMessage(`{"tools":[{"name":"search"},{"name":"read"}]}`)
	tests := []struct {
		name        string
		mode        string
		pages       []memberPage
		wantNames   []string
		wantPending []memberCursor
		wantPartial partialNote
		wantDropped []string
	}{
		{
			name:        "always, route order, member cursors kept",
			mode:        config.PrefixAlways,
			pages:       []memberPage{{member: "git", result: git}, {member: "docs", result: docs}},
			wantNames:   []string{"git__search", "git__log", "docs__search", "docs__read"},
			wantPending: []memberCursor{{Member: "git", Cursor: "g2"}},
		},
		{
			name:        "collision prefixes only the shared name",
			mode:        config.PrefixCollision,
			pages:       []memberPage{{member: "git", result: git}, {member: "docs", result: docs}},
			wantNames:   []string{"git__search", "log", "docs__search", "read"},
			wantPending: []memberCursor{{Member: "git", Cursor: "g2"}},
		},
		{
			name:        "never serves a shared name from the first member",
			mode:        config.PrefixNever,
			pages:       []memberPage{{member: "git", result: git}, {member: "docs", result: docs}},
			wantNames:   []string{"search", "log", "read"},
			wantPending: []memberCursor{{Member: "git", Cursor: "g2"}},
			wantDropped: []string{"docs: search"},
		},
		{
			name:        "a missing and a stale member are marked",
			mode:        config.PrefixAlways,
			pages:       []memberPage{{member: "git"}, {member: "docs", result: docs, stale: true, ageMs: 1500}},
			wantNames:   []string{"docs__search", "docs__read"},
			wantPartial: partialNote{Missing: []string{"git"}, Stale: map[string]int64{"docs": 1500}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNamer(tt.mode, "__", []string{"git", "docs"})
			page, dropped, err := mergePages(n, listShapes["tools/list"], tt.pages)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, it := range page.items {
				var tool struct{ Name string }
				_ = json.Unmarshal(it, &tool)
				names = append(names, tool.Name)
			}
			if diff := cmp.Diff(tt.wantNames, names); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPending, page.pending); diff != "" {
				t.Errorf("pending (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantPartial, page.partial); diff != "" {
				t.Errorf("partial (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantDropped, dropped); diff != "" {
				t.Errorf("dropped (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMergedResult(t *testing.T) {
	shape := listShapes["resources/list"]
	tests := []struct {
		name string
		page mergedPage
		next string
		want string
	}{
		{"empty", mergedPage{}, "", `{"resources":[]}`},
		{"cursor", mergedPage{items: []json.RawMessage{json.RawMessage(`{"uri":"git+file:///a"}`)}}, "CUR", `{"nextCursor":"CUR","resources":[{"uri":"git+file:///a"}]}`},
		{"partial", mergedPage{partial: partialNote{Missing: []string{"docs"}}}, "", `{"_meta":{"io.ctxgate/partial":{"missing":["docs"]}},"resources":[]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mergedResult(shape, tt.page, tt.next)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("result (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWithModernAttributes: a modern merged list says resultType complete,
// cacheScope private (it was filtered for one principal) and the shortest
// ttlMs of the members' fresh parts; a stale, missing or unmarked part
// makes it 0.
func TestWithModernAttributes(t *testing.T) {
	fresh := func(ttl string) memberPage {
		return memberPage{member: "m", result: json.RawMessage(`{"tools":[],"ttlMs":` + ttl + `}`)}
	}
	tests := []struct {
		name  string
		pages []memberPage
		want  string
	}{
		{"shortest of the fresh parts", []memberPage{fresh("60000"), fresh("5000")}, `5000`},
		{"a stale part", []memberPage{fresh("60000"), {member: "s", result: json.RawMessage(`{"ttlMs":60000}`), stale: true}}, `0`},
		{"a missing part", []memberPage{fresh("60000"), {member: "x"}}, `0`},
		{"a part without ttlMs", []memberPage{fresh("60000"), {member: "l", result: json.RawMessage(`{"tools":[]}`)}}, `0`},
		{"a negative ttlMs", []memberPage{fresh("-1")}, `0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got map[string]json.RawMessage
			if err := json.Unmarshal(withModernAttributes(json.RawMessage(`{"tools":[{"name":"a"}]}`), tt.pages), &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"tools": `[{"name":"a"}]`, "resultType": `"complete"`, "cacheScope": `"private"`, "ttlMs": tt.want}
			gotS := map[string]string{}
			for k, v := range got {
				gotS[k] = string(v)
			}
			if diff := cmp.Diff(want, gotS); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
