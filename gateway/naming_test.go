package gateway

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

func TestNamerOutwardInward(t *testing.T) {
	members := []string{"git", "tickets", "git__x"}
	// git and tickets both offer "search"; only git offers "log"; the
	// template is tickets'.
	learn := func(n *namer) {
		n.learn(kindTool, "git", []string{"search", "log"})
		n.learn(kindTool, "tickets", []string{"search"})
		n.learn(kindResource, "git", []string{"file:///a"})
		n.learn(kindTemplate, "tickets", []string{"ticket://{id}"})
	}
	tests := []struct {
		name   string
		mode   string
		kind   string
		member string
		own    string
		want   string // outward
	}{
		{name: "always prefixes", mode: config.PrefixAlways, kind: kindTool, member: "git", own: "log", want: "git__log"},
		{name: "always prefixes a URI with +", mode: config.PrefixAlways, kind: kindResource, member: "git", own: "file:///a", want: "git+file:///a"},
		{name: "collision keeps a unique name", mode: config.PrefixCollision, kind: kindTool, member: "git", own: "log", want: "log"},
		{name: "collision prefixes a shared name", mode: config.PrefixCollision, kind: kindTool, member: "tickets", own: "search", want: "tickets__search"},
		{name: "never keeps every name", mode: config.PrefixNever, kind: kindTool, member: "tickets", own: "search", want: "search"},
		{name: "longest member wins", mode: config.PrefixAlways, kind: kindTool, member: "git__x", own: "y", want: "git__x__y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNamer(tt.mode, "__", members)
			learn(n)
			got := n.outward(tt.kind, tt.member, tt.own)
			if got != tt.want {
				t.Fatalf("outward(%s, %s) = %q, want %q", tt.member, tt.own, got, tt.want)
			}
			member, own, ok := n.inward(tt.kind, got)
			if diff := cmp.Diff([]any{tt.member, tt.own, true}, []any{member, own, ok}); diff != "" && tt.mode != config.PrefixNever {
				t.Errorf("inward(%q) (-want +got):\n%s", got, diff)
			}
		})
	}
}

func TestNamerInward(t *testing.T) {
	tests := []struct {
		name, mode, kind, in string
		member, own          string
		ok                   bool
	}{
		{"always needs the prefix", config.PrefixAlways, kindTool, "log", "", "", false},
		{"always unknown member", config.PrefixAlways, kindTool, "wiki__log", "", "", false},
		{"always empty own name", config.PrefixAlways, kindTool, "git__", "", "", false},
		{"collision plain unique name", config.PrefixCollision, kindTool, "log", "git", "log", true},
		{"collision plain shared name is ambiguous", config.PrefixCollision, kindTool, "search", "", "", false},
		{"never shared name goes to the first member", config.PrefixNever, kindTool, "search", "git", "search", true},
		{"never does not read prefixes", config.PrefixNever, kindTool, "git__log", "", "", false},
		{"collision URI by template", config.PrefixCollision, kindResource, "ticket://42", "tickets", "ticket://42", true},
		{"always URI", config.PrefixAlways, kindResource, "tickets+ticket://42", "tickets", "ticket://42", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newNamer(tt.mode, "__", []string{"git", "tickets"})
			n.learn(kindTool, "tickets", []string{"search"})
			n.learn(kindTool, "git", []string{"search", "log"})
			n.learn(kindTemplate, "tickets", []string{"ticket://{id}"})
			member, own, ok := n.inward(tt.kind, tt.in)
			if diff := cmp.Diff([]any{tt.member, tt.own, tt.ok}, []any{member, own, ok}); diff != "" {
				t.Errorf("inward(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestNamerCollisions(t *testing.T) {
	n := newNamer(config.PrefixNever, "__", []string{"a", "b", "c"})
	n.learn(kindTool, "c", []string{"x", "y"})
	n.learn(kindTool, "a", []string{"x", "z"})
	n.learn(kindTool, "a", []string{"x"}) // learnt twice: still one owner
	got := n.collisions(kindTool)
	want := []collision{{name: "x", owners: []string{"a", "c"}}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(collision{})); diff != "" {
		t.Errorf("collisions (-want +got):\n%s", diff)
	}
}
