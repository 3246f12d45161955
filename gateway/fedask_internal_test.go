package gateway

import (
	"fmt"
	"testing"
)

// TestMemberAsksBounded: a relayed request is answered once, only on its
// session; a session holds its maxAsksPerSession newest and the gateway
// its maxAsks newest; an ended session holds none.
func TestMemberAsksBounded(t *testing.T) {
	var a memberAsks
	s1, s2 := &sessionAsks{asks: &a, session: "s1"}, &sessionAsks{asks: &a, session: "s2"}
	s1.issued("x")
	if a.answered("s2", "x") || !a.answered("s1", "x") || a.answered("s1", "x") {
		t.Error("x: answerable on another session, or not exactly once on its own")
	}
	for i := range maxAsksPerSession + 1 {
		s1.issued(fmt.Sprint(i))
	}
	if a.answered("s1", "0") || !a.answered("s1", "1") || !a.answered("s1", fmt.Sprint(maxAsksPerSession)) {
		t.Errorf("s1 past %d: the oldest kept, or a newer one lost", maxAsksPerSession)
	}
	a.end("s1")
	if a.answered("s1", "2") || a.all.Len() != 0 || len(a.bySession) != 0 {
		t.Errorf("s1 ended: %d requests held in %d sessions", a.all.Len(), len(a.bySession))
	}
	for i := range maxAsks + 1 {
		(&sessionAsks{asks: &a, session: fmt.Sprint("c", i)}).issued("x")
	}
	s2.issued("y")
	if a.all.Len() != maxAsks || a.answered("c0", "x") || a.answered("c1", "x") || !a.answered("c2", "x") || !a.answered("s2", "y") {
		t.Errorf("past %d in all: %d held, or the oldest kept", maxAsks, a.all.Len())
	}
}
