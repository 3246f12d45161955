package cache

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// A sealed entry opens as it was, for its own cache key only, under the
// key that sealed it or after a rotation that kept it; its value is not
// readable in the box.
func TestSealer(t *testing.T) {
	const oldKey, newKey = "old-secret-old-secret-old-secret!", "new-secret-new-secret-new-secret!"
	now := time.Unix(1_800_000_000, 0)
	e := &Entry{Value: []byte(`{"tools":[{"name":"secret_tool"}]}`), StoredAt: now, FreshUntil: now.Add(time.Minute), StaleUntil: now.Add(time.Hour), Tags: TagsFor("docs", "tools/list", "")}
	old, err := NewSealer([]string{oldKey})
	if err != nil {
		t.Fatal(err)
	}
	box := old.Seal("k1", e)
	if bytes.Contains(box, []byte("secret_tool")) {
		t.Fatal("the value is readable in the box")
	}
	rotated, _ := NewSealer([]string{newKey, "", oldKey})
	other, _ := NewSealer([]string{newKey})
	tests := []struct {
		name   string
		sealer *Sealer
		key    string
		box    []byte
		ok     bool
	}{
		{name: "same key", sealer: old, key: "k1", box: box, ok: true},
		{name: "after rotation", sealer: rotated, key: "k1", box: box, ok: true},
		{name: "key removed", sealer: other, key: "k1", box: box},
		{name: "another cache key", sealer: old, key: "k2", box: box},
		{name: "tampered", sealer: old, key: "k1", box: append(append([]byte(nil), box[:len(box)-1]...), box[len(box)-1]^1)},
		{name: "truncated", sealer: old, key: "k1", box: box[:3]},
		{name: "empty", sealer: old, key: "k1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.sealer.Open(tt.key, tt.box)
			if !tt.ok {
				if !errors.Is(err, ErrUnsealable) {
					t.Fatalf("Open: %v, want ErrUnsealable", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(e, got, cmp.AllowUnexported(Entry{})); diff != "" {
				t.Errorf("opened entry (-sealed +opened):\n%s", diff)
			}
		})
	}
	if _, err := NewSealer([]string{""}); err == nil {
		t.Error("NewSealer with only an empty secret: no error")
	}
	if b := rotated.Seal("k1", e); !bytes.Equal(b[1:5], rotated.keys[0].id[:]) {
		t.Error("a rotated sealer does not seal with its first key")
	}
}
