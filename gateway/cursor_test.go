package gateway

import (
	"encoding/base64"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/session"
)

func TestCursorSealing(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s, err := session.NewSealer([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, time.Hour, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	in := fedCursor{Route: "/mcp", Principal: "alice", Method: "tools/list", Pending: []memberCursor{{Member: "git", Cursor: "p2"}, {Member: "docs", Cursor: "abc"}}}
	id, err := sealCursor(s, in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := openCursor(s, id, "/mcp", "alice", "tools/list")
	if err != nil {
		t.Fatalf("openCursor: %v", err)
	}
	in.IssuedAt = now.Unix()
	if diff := cmp.Diff(in, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}

	raw, _ := base64.RawURLEncoding.DecodeString(id)
	raw[len(raw)-1] ^= 1
	tampered := base64.RawURLEncoding.EncodeToString(raw)
	sid, _ := s.Seal(sessionClaims{Route: "/mcp", Principal: "alice"})
	tests := []struct {
		name, id, route, principal, method string
	}{
		{"tampered", tampered, "/mcp", "alice", "tools/list"},
		{"another route", id, "/other", "alice", "tools/list"},
		{"another principal", id, "/mcp", "bob", "tools/list"},
		{"another list", id, "/mcp", "alice", "prompts/list"},
		{"a session id is not a cursor", sid, "/mcp", "alice", "tools/list"},
		{"garbage", "not a cursor!", "/mcp", "alice", "tools/list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := openCursor(s, tt.id, tt.route, tt.principal, tt.method); !errors.Is(err, errCursorInvalid) {
				t.Errorf("openCursor = %v, want errCursorInvalid", err)
			}
		})
	}
	t.Run("a cursor is not a session id", func(t *testing.T) {
		if _, err := s.Open(id); !errors.Is(err, session.ErrInvalid) {
			t.Errorf("open(cursor) = %v, want session.ErrInvalid", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		now = now.Add(2 * time.Hour)
		if _, err := openCursor(s, id, "/mcp", "alice", "tools/list"); !errors.Is(err, errCursorInvalid) {
			t.Errorf("openCursor after the TTL = %v, want errCursorInvalid", err)
		}
	})
}

// FuzzOpenCursor: a cursor is client input. Opening never panics, a
// failure always wraps errCursorInvalid, and whatever opens was minted by
// sealCursor for this route, principal and list (a session id never opens
// as a cursor).
func FuzzOpenCursor(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	s, err := session.NewSealer([][]byte{[]byte("0123456789abcdef0123456789abcdef")}, time.Hour, func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	minted := fedCursor{Route: "/mcp", Principal: "alice", Method: "tools/list", Pending: []memberCursor{{Member: "git", Cursor: "p2"}}}
	id, err := sealCursor(s, minted)
	if err != nil {
		f.Fatal(err)
	}
	sid, _ := s.Seal(sessionClaims{Route: "/mcp", Principal: "alice"})
	for _, seed := range []string{id, id[:len(id)-1], id + "A", "A" + id[1:], sid, "", "AQ"} {
		f.Add(seed)
	}
	minted.IssuedAt = now.Unix()
	f.Fuzz(func(t *testing.T, in string) {
		got, err := openCursor(s, in, "/mcp", "alice", "tools/list")
		if err != nil {
			if !errors.Is(err, errCursorInvalid) {
				t.Fatalf("openCursor(%q) = %v, want it to wrap errCursorInvalid", in, err)
			}
			return
		}
		if diff := cmp.Diff(minted, got); diff != "" {
			t.Fatalf("openCursor(%q) opened something not minted here (-minted +got):\n%s", in, diff)
		}
	})
}
