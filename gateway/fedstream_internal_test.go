package gateway

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestObserveMemberDropsLastGood(t *testing.T) {
	f := &federation{}
	keys := []string{
		"a\x00tools/list\x00\x00caps\x00",
		"a\x00tools/list\x00cursor\x00caps\x00",
		"a\x00prompts/list\x00\x00caps\x00",
		"b\x00tools/list\x00\x00caps\x00",
	}
	for _, k := range keys {
		f.lastGood.Store(k, lastGood{})
	}
	f.observeMember("a", []byte(`{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`))
	var left []string
	f.lastGood.Range(func(k, _ any) bool {
		left = append(left, k.(string))
		return true
	})
	slices.Sort(left)
	want := []string{"a\x00prompts/list\x00\x00caps\x00", "b\x00tools/list\x00\x00caps\x00"}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("last good pages after a's tools/list_changed (-want +got):\n%s", diff)
	}
}
