package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/upstream"
)

// A single route's listen takes the gateway's own resource updates only
// between its acknowledgement and its result, and only for the resources
// the upstream agreed to: an update before would come ahead of the
// acknowledgement, which must be the listen's first message, and one after
// would follow the result.
func TestListenTakesUpdatesWhileAcknowledged(t *testing.T) {
	s, _ := startGatewayOn(t, "upstreams: [{name: a, url: \"http://127.0.0.1:1\"}]\n", nil, "")
	msg, err := decodeMessage([]byte(`{"jsonrpc":"2.0","id":7,"method":"subscriptions/listen","params":{"notifications":{"resourceSubscriptions":["res://a/doc","res://a/two"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	fwd := &forward{requestState: &requestState{msg: msg}, route: &route{upstream: &upstream.Upstream{Name: "a"}}, stream: true, listen: true, era: eraModern}
	pr, pw := io.Pipe()
	relay := newSSERelay(pr, context.Background(), streamLimits{})
	defer relay.Close()
	detach := s.attachLive(fwd, relay)
	defer detach()

	registered := func() int {
		s.subscriptions.mu.Lock()
		defer s.subscriptions.mu.Unlock()
		return len(s.subscriptions.streams["a"])
	}
	send := func(data string) {
		t.Helper()
		go func() { fmt.Fprintf(pw, "event: message\ndata: %s\n\n", data) }()
	}
	read := func() string {
		t.Helper()
		buf := make([]byte, 4096)
		n, err := relay.Read(buf)
		if err != nil {
			t.Fatalf("relay read: %v", err)
		}
		return string(buf[:n])
	}
	event := func(uri string) { s.notifySubscribers(context.Background(), resourceUpdate{Upstream: "a", URI: uri}) }

	if n := registered(); n != 0 {
		t.Fatalf("%d streams registered before the acknowledgement, want 0", n)
	}
	// The upstream agrees to one of the two resources.
	send(`{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"resourceSubscriptions":["res://a/doc"]}}}`)
	if got := read(); !strings.Contains(got, "acknowledged") {
		t.Fatalf("first event %q, want the acknowledgement", got)
	}
	if n := registered(); n != 1 {
		t.Fatalf("%d streams registered after the acknowledgement, want 1", n)
	}
	event("res://a/two") // not agreed to: nothing
	event("res://a/doc")
	got := read()
	var m struct {
		Method string `json:"method"`
		Params struct {
			URI  string         `json:"uri"`
			Meta map[string]any `json:"_meta"`
		} `json:"params"`
	}
	data, _ := strings.CutPrefix(strings.TrimSpace(got), "event: message\ndata: ")
	if err := json.Unmarshal([]byte(data), &m); err != nil || m.Method != "notifications/resources/updated" || m.Params.URI != "res://a/doc" || m.Params.Meta[metaSubscriptionID] != float64(7) {
		t.Fatalf("after the events %q, want resources/updated res://a/doc with subscriptionId 7 (%v)", got, err)
	}
	send(`{"jsonrpc":"2.0","id":7,"result":{"resultType":"complete"}}`)
	if got := read(); !strings.Contains(got, `"result"`) {
		t.Fatalf("event %q, want the listen's result", got)
	}
	if n := registered(); n != 0 {
		t.Errorf("%d streams registered after the listen's result, want 0", n)
	}
}
