package gateway

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
)

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

// TestOldClientPendingBound: a client that stops reading its stream holds
// at most maxOldPendingBytes of answers in the gateway, whatever their
// number, JSON or events: an answer that does not fit is refused as it is
// written (its request then fails), and what the client reads is given
// back to the budget.
func TestOldClientPendingBound(t *testing.T) {
	const size = 1 << 20
	const answers = 64 // maxOldInflight: 64 MiB without the budget
	data := `{"jsonrpc":"2.0","id":1,"result":{"text":"` + strings.Repeat("x", size) + `"}}`
	for _, tt := range []struct {
		name, contentType, body string
	}{
		{name: "JSON", contentType: "application/json", body: data},
		{name: "events", contentType: "text/event-stream", body: "event: message\ndata: " + data + "\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			sess := &oldSession{outbox: make(chan []byte), ctx: ctx, end: cancel}
			sess.pending.max = maxOldPendingBytes
			var wg sync.WaitGroup
			waiting := 0
			for range answers {
				a := &oldAnswer{sess: sess, header: http.Header{"Content-Type": {tt.contentType}}}
				a.WriteHeader(http.StatusOK)
				if _, err := a.Write([]byte(tt.body)); err == nil {
					waiting++
				}
				// As relayOld: the handler is done, the answer waits for
				// the client's stream, which no one reads.
				wg.Go(a.finish)
			}
			if held := waiting * len(tt.body); held > maxOldPendingBytes || waiting == 0 {
				t.Fatalf("%d answers of %d bytes (%d) wait for a client that does not read, want between 1 and the budget of %d bytes", waiting, len(tt.body), held, maxOldPendingBytes)
			}
			// The client reads again: what it read is released.
			for range waiting {
				<-sess.outbox
			}
			wg.Wait()
			if n := sess.pending.used.Load(); n != 0 {
				t.Errorf("%d bytes still reserved after every answer was read", n)
			}
			a := &oldAnswer{sess: sess, header: http.Header{"Content-Type": {tt.contentType}}}
			if _, err := a.Write([]byte(tt.body)); err != nil {
				t.Errorf("an answer after the client read the others: %v", err)
			}
		})
	}
}
