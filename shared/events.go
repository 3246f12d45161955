package shared

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Events: context sources (a git webhook relay, a ticket poller, a CI job)
// push "this changed" events to a Redis Stream (XADD <stream> * event
// '<json>'). The replicas of one deployment read it as one consumer group,
// so each event is applied by one replica (which fans it out to the
// others), and acknowledged only once applied: an event whose replica died
// before acknowledging it is claimed by another after eventsClaimAfter.

// ErrPoison is what an events handler returns for an event that can never
// be applied (malformed, or naming what does not exist): it is logged and
// acknowledged, so it does not block the events after it.
var ErrPoison = errors.New("event cannot be applied")

// EventField is the stream entry's field that holds the event.
const EventField = "event"

const (
	// eventsBatch is how many entries one read takes.
	eventsBatch = 16
	// eventsBlock is how long one read waits for an entry.
	eventsBlock = 2 * time.Second
	// eventsClaimAfter is how long an entry may stay delivered but not
	// acknowledged (its consumer died, or applying it failed) before
	// another consumer takes it over.
	eventsClaimAfter = 30 * time.Second
)

// FollowEvents reads stream as consumer of group until ctx ends, creating
// the group (at the stream's end: events from now on) if it does not
// exist. apply is given each entry's event; its error decides the entry's
// fate: nil acknowledges it, ErrPoison logs and acknowledges it, another
// error leaves it pending, to be applied again later (here or by another
// replica). Entries without an event field are poison.
func (c *Client) FollowEvents(ctx context.Context, stream, group, consumer string, apply func(context.Context, []byte) error) {
	wait := fanoutRetryMin
	ready := false
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		err := func() error {
			if !ready {
				if err := c.createGroup(ctx, stream, group); err != nil {
					return err
				}
				ready = true
			}
			if time.Since(lastClaim) >= eventsClaimAfter/2 {
				if err := c.claimStale(ctx, stream, group, consumer, apply); err != nil {
					return err
				}
				lastClaim = time.Now()
			}
			start := time.Now()
			res, err := c.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
				Group: group, Consumer: consumer, Streams: []string{stream, ">"}, Count: eventsBatch, Block: eventsBlock,
			}).Result()
			if errors.Is(err, redis.Nil) {
				c.observe(OpEvents, start, nil)
				return nil // nothing new
			}
			if err := c.observe(OpEvents, start, err); err != nil {
				if strings.HasPrefix(err.Error(), "NOGROUP") {
					ready = false // the stream or group was deleted: create it again
				}
				return fmt.Errorf("read events: %w", err)
			}
			for _, s := range res {
				c.handleEvents(ctx, stream, group, s.Messages, apply)
			}
			return nil
		}()
		if err == nil {
			wait = fanoutRetryMin
			continue
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("redis event stream: cannot read; retrying", "stream", stream, "group", group, "error", err.Error(), "retry_in", wait.String())
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, fanoutRetryMax)
	}
}

// createGroup makes the consumer group (and the stream, if there is none
// yet); a group that exists is left as it is.
func (c *Client) createGroup(ctx context.Context, stream, group string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	err := c.rdb.XGroupCreateMkStream(ctx, stream, group, "$").Err()
	if err != nil && strings.HasPrefix(err.Error(), "BUSYGROUP") {
		err = nil
	}
	if err = c.observe(OpEvents, start, err); err != nil {
		return fmt.Errorf("create consumer group %s on %s: %w", group, stream, err)
	}
	return nil
}

// claimStale takes over the entries other consumers (or this one, when
// applying failed) left unacknowledged for eventsClaimAfter, and applies
// them.
func (c *Client) claimStale(ctx context.Context, stream, group, consumer string, apply func(context.Context, []byte) error) error {
	next := "0-0"
	for range 100 { // bounded: at most 1,600 entries per pass
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		start := time.Now()
		msgs, cursor, err := c.rdb.XAutoClaim(cctx, &redis.XAutoClaimArgs{
			Stream: stream, Group: group, Consumer: consumer, MinIdle: eventsClaimAfter, Start: next, Count: eventsBatch,
		}).Result()
		cancel()
		if err := c.observe(OpEvents, start, err); err != nil {
			return fmt.Errorf("claim pending events: %w", err)
		}
		c.handleEvents(ctx, stream, group, msgs, apply)
		if cursor == "0-0" || cursor == "" {
			return nil
		}
		next = cursor
	}
	return nil
}

func (c *Client) handleEvents(ctx context.Context, stream, group string, msgs []redis.XMessage, apply func(context.Context, []byte) error) {
	for _, m := range msgs {
		ev, ok := m.Values[EventField].(string)
		err := ErrPoison
		if ok {
			err = apply(ctx, []byte(ev))
		}
		switch {
		case errors.Is(err, ErrPoison):
			c.log.Warn("redis event stream: event skipped", "stream", stream, "id", m.ID, "error", errorText(err, ok), "event", truncate(ev, 200))
		case err != nil:
			c.log.Warn("redis event stream: event not applied; it stays pending and is retried", "stream", stream, "id", m.ID, "error", err.Error())
			continue
		}
		actx, cancel := context.WithTimeout(ctx, c.timeout)
		start := time.Now()
		err = c.observe(OpEvents, start, c.rdb.XAck(actx, stream, group, m.ID).Err())
		cancel()
		if err != nil {
			// Applied but not acknowledged: applied again after
			// eventsClaimAfter, which an invalidation tolerates.
			c.log.Warn("redis event stream: cannot acknowledge an applied event", "stream", stream, "id", m.ID, "error", err.Error())
		}
	}
}

func errorText(err error, hadField bool) string {
	if !hadField {
		return "the entry has no " + EventField + " field"
	}
	return err.Error()
}
