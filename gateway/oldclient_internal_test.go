package gateway

import "testing"

// TestOldClientsBound: the registry of HTTP+SSE sessions holds at most
// maxOldSessions; one more is refused (openOld answers 503 -31090) until
// one ends.
func TestOldClientsBound(t *testing.T) {
	c := newOldClients()
	for i := range maxOldSessions {
		if !c.add(&oldSession{key: string(rune(i + 1))}) {
			t.Fatalf("session %d of %d refused", i+1, maxOldSessions)
		}
	}
	if c.add(&oldSession{key: "one more"}) {
		t.Fatalf("session %d accepted, want the bound of %d", maxOldSessions+1, maxOldSessions)
	}
	c.remove(string(rune(1)))
	if !c.add(&oldSession{key: "one more"}) {
		t.Error("a session refused after one ended")
	}
}
