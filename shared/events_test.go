package shared_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/ctxgate/ctxgate/shared"
)

// Events are applied in order and acknowledged; a poison event is
// acknowledged (skipped) without stopping the ones after it; one that
// fails to apply stays pending, to be applied again.
func TestFollowEvents(t *testing.T) {
	m := miniredis.RunT(t)
	c, err := shared.New(context.Background(), redisConfig("redis://"+m.Addr()+"/0", "t:"), shared.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	var seen []string
	apply := func(_ context.Context, ev []byte) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, string(ev))
		switch string(ev) {
		case "poison":
			return shared.ErrPoison
		case "fails":
			return errors.New("redis down while fanning out")
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.FollowEvents(ctx, "events", "gw", "replica-1", apply)
	}()
	defer func() { cancel(); <-done }()

	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	until(t, "the consumer group", func() bool {
		groups, err := rdb.XInfoGroups(context.Background(), "events").Result()
		return err == nil && len(groups) == 1
	})
	for _, v := range []map[string]any{{"event": "first"}, {"event": "poison"}, {"other": "no event field"}, {"event": "fails"}, {"event": "last"}} {
		if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: "events", Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	until(t, "every event handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == 4
	})
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	if want := []string{"first", "poison", "fails", "last"}; !slices.Equal(got, want) {
		t.Errorf("applied %v, want %v (the entry without an event field is never applied)", got, want)
	}
	until(t, "all but the failed event acknowledged", func() bool {
		p, err := rdb.XPending(context.Background(), "events", "gw").Result()
		return err == nil && p.Count == 1
	})
}
