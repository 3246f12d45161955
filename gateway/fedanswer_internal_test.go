package gateway

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

func TestMemberOfAnswer(t *testing.T) {
	str, _ := jsonrpc.MakeID("x/y")
	num, _ := jsonrpc.MakeID(float64(42))
	tests := []struct {
		name   string
		id     any // the client's id
		member string
		own    string
		ok     bool
	}{
		{name: "a member's string id", id: memberIDPrefix + "git/" + idKey(str), member: "git", own: `"x/y"`, ok: true},
		{name: "a member's number id", id: memberIDPrefix + "git/" + idKey(num), member: "git", own: `42`, ok: true},
		{name: "the client's own id", id: "7", ok: false},
		{name: "a number", id: float64(7), ok: false},
		{name: "no member", id: memberIDPrefix + "n:1", ok: false},
		{name: "an unknown key form", id: memberIDPrefix + "git/x:1", ok: false},
		{name: "a number that is not one", id: memberIDPrefix + "git/n:1e3", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := jsonrpc.MakeID(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			member, own, ok := memberOfAnswer(id)
			got := struct {
				Member, Own string
				OK          bool
			}{member, string(own), ok}
			want := struct {
				Member, Own string
				OK          bool
			}{tt.member, tt.own, tt.ok}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("memberOfAnswer(%v) (-want +got):\n%s", tt.id, diff)
			}
		})
	}
}

// FuzzMemberOfAnswer: whatever id a client answers with, reading it never
// panics, and a member's id read from it is a JSON string or integer (the
// member gets a well-formed id).
func FuzzMemberOfAnswer(f *testing.F) {
	for _, seed := range []string{memberIDPrefix + "git/n:1", memberIDPrefix + "git/s:a/b", memberIDPrefix + "/s:", memberIDPrefix + "git/n:-9223372036854775808", "x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := jsonrpc.MakeID(s)
		if err != nil {
			return
		}
		_, own, ok := memberOfAnswer(id)
		if !ok {
			return
		}
		var v any
		if err := json.Unmarshal(own, &v); err != nil {
			t.Fatalf("member's id %q is not JSON: %v", own, err)
		}
		switch v.(type) {
		case string, float64:
		default:
			t.Fatalf("member's id %s is neither a string nor a number", own)
		}
	})
}
