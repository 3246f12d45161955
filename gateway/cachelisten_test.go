package gateway_test

import (
	"context"
	"testing"
	"time"
)

// The gateway's own listening session drops entries on the upstream's
// notifications with no client stream open, and subscribes to cached
// resources.
func TestCacheChangeListener(t *testing.T) {
	up, g := startCaching(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	public, admin := listen(t), listen(t)
	go func() { served <- g.gw.Serve(ctx, public, admin) }()
	t.Cleanup(func() { cancel(); <-served })
	var stream chan string
	select {
	case stream = <-up.streams:
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway's listener opened no stream")
	}
	alice := g.connect(t, "alice-key", `{}`)
	alice.call(t, "tools/list", `{}`)
	alice.call(t, "resources/read", `{"uri":"file:///a"}`)
	tests := []struct {
		name, notification, method, params string
	}{
		{name: "list changed", notification: `{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}`, method: "tools/list", params: `{}`},
		{name: "resource updated", notification: `{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}`, method: "resources/read", params: `{"uri":"file:///a"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if a := alice.call(t, tt.method, tt.params); a.cache != "hit" {
				t.Fatalf("before the notification: %q", a.cache)
			}
			stream <- tt.notification
			// The notification is handled asynchronously.
			waitUntil(t, tt.notification+" to drop the cached "+tt.method, func() bool {
				return alice.call(t, tt.method, tt.params).cache != "hit"
			})
		})
	}
	// Subscribing is asynchronous too; once done, it is done once.
	waitUntil(t, "the subscription", func() bool { return up.count("resources/subscribe") > 0 })
	if n := up.count("resources/subscribe"); n != 1 {
		t.Errorf("%d resources/subscribe requests, want 1 for the one cached resource", n)
	}
}
