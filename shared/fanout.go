package shared

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Invalidation fan-out: what one replica drops from its response cache,
// every replica on the same Redis and key prefix drops. Each invalidation
// increments a generation counter and is published with it on a channel,
// in one atomic script, so the messages carry consecutive generations.
// A replica applies each message it receives, and it trusts its own cache
// only while it is provably in step:
//
//   - from the moment its subscription is confirmed and it has read the
//     generation (it drops its whole cache then, unless this is the first
//     subscription of a cache that is still empty: it cannot know what it
//     missed while it was not listening);
//   - until the subscription fails, a message arrives out of sequence (a
//     gap: a message was lost), or the generation in Redis is found ahead
//     of the last one received on two health checks in a row (a silently
//     dead connection).
//
// Out of step, Synced is false and the gateway serves nothing from its
// cache (every request goes upstream) until the next confirmed
// subscription drops the cache and puts it back in step. A replica can
// thus never serve an entry older than the last invalidation any replica
// published, except for the instant a message is in flight.

// FanoutChannel is the channel (after the key prefix) invalidations are
// published on, and FanoutGeneration the counter.
const (
	FanoutChannel    = "cache:invalidate"
	FanoutGeneration = "cache:generation"
)

// fanoutCheckEvery is how often a quiet subscription is checked: a PING on
// it (a dead connection fails) and a read of the generation.
const fanoutCheckEvery = time.Second

// publish increments the generation and publishes "<generation> <origin>
// <payload>" in one step, so no two messages share a generation and none
// is published without one.
var publish = redis.NewScript(`
local g = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], g .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return g
`)

// Fanout is one process's side of the invalidation fan-out. Its methods
// are safe for concurrent use.
type Fanout struct {
	c      *Client
	origin string // this process, so it skips its own messages
	log    *slog.Logger

	synced  atomic.Bool
	mu      sync.Mutex
	applied int64 // the generation of the last message applied or read
}

// NewFanout returns the fan-out of c; origin names this process uniquely
// among the replicas (its own messages are not applied twice).
func (c *Client) NewFanout(origin string, log *slog.Logger) *Fanout {
	if log == nil {
		log = c.log
	}
	return &Fanout{c: c, origin: strings.ReplaceAll(origin, " ", "_"), log: log}
}

// Synced reports whether this replica is in step with every invalidation
// published: only then may it serve from its cache.
func (f *Fanout) Synced() bool { return f.synced.Load() }

// Publish sends payload (what to invalidate, in the caller's encoding; no
// newline needed) to every other replica, in one round trip bounded by
// redis.timeout. The caller has applied it locally already. An error means
// the other replicas may not have been told.
func (f *Fanout) Publish(ctx context.Context, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, f.c.timeout)
	defer cancel()
	start := time.Now()
	err := publish.Run(ctx, f.c.rdb, []string{f.c.prefix + FanoutGeneration}, f.c.prefix+FanoutChannel, f.origin, payload).Err()
	if err = f.c.observe(OpInvalidatePublish, start, err); err != nil {
		return fmt.Errorf("redis invalidation fan-out: %w", err)
	}
	return nil
}

// Run follows the channel until ctx ends: apply is called with each other
// replica's payload, in order; resync when this replica may have missed
// invalidations and must drop its whole cache. Both run on Run's
// goroutine.
func (f *Fanout) Run(ctx context.Context, apply func([]byte), resync func()) {
	ps := f.c.rdb.Subscribe(ctx, f.c.prefix+FanoutChannel)
	defer ps.Close()
	wait := fanoutRetryMin
	behind := 0 // health checks in a row that found the generation ahead
	first := true
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, fanoutCheckEvery)
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if err := f.resync(ctx, first, resync); err != nil {
				f.fail("could not read the invalidation generation", err)
				continue
			}
			first, wait, behind = false, fanoutRetryMin, 0
		case *redis.Message:
			if f.receive(m.Payload, apply) {
				f.fail("an invalidation message was missed", nil)
				// Back in step: drop everything and count on from this
				// message's generation.
				resync()
				f.synced.Store(true)
			}
		case *redis.Pong:
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			// Quiet: check the connection, then that no message was lost.
			if err := ps.Ping(ctx); err != nil {
				f.fail("the invalidation subscription failed", err)
				continue // the next receive reconnects
			}
			switch {
			case !f.synced.Load():
				// Subscribed, but the generation could not be read then.
				if f.resync(ctx, first, resync) == nil {
					first, wait = false, fanoutRetryMin
				}
				behind = 0
			case f.ahead(ctx):
				behind++
			default:
				behind = 0
			}
			if behind >= 2 {
				// Twice in a row, not a message in flight: one was lost.
				f.fail("the invalidation generation is ahead of the messages received", nil)
				if f.resync(ctx, first, resync) == nil {
					behind = 0
				}
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		f.fail("the invalidation subscription failed", err)
		// go-redis reconnects and resubscribes on the next receive; wait a
		// little first, so a Redis that is down costs no busy loop.
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, fanoutRetryMax)
	}
}

// The wait between attempts to subscribe again.
const (
	fanoutRetryMin = 100 * time.Millisecond
	fanoutRetryMax = 5 * time.Second
)

// resync reads the generation after a (re)subscription: messages from now
// on are received, so what came before is what may have been missed.
func (f *Fanout) resync(ctx context.Context, first bool, resync func()) error {
	gen, err := f.generation(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.applied = gen
	f.mu.Unlock()
	if !first {
		resync()
	}
	f.synced.Store(true)
	f.log.Info("cache invalidation fan-out in step", "generation", gen)
	return nil
}

// receive applies one message; it reports whether messages were missed
// before it (its generation is not the next one).
func (f *Fanout) receive(payload string, apply func([]byte)) (gap bool) {
	genText, rest, ok1 := strings.Cut(payload, " ")
	origin, body, ok2 := strings.Cut(rest, " ")
	gen, err := strconv.ParseInt(genText, 10, 64)
	if !ok1 || !ok2 || err != nil {
		f.log.Warn("cache invalidation fan-out: malformed message ignored", "message", truncate(payload, 200))
		return false
	}
	f.mu.Lock()
	switch {
	case gen <= f.applied:
		// Published before the generation was read at subscription: the
		// resync that followed covered it.
		f.mu.Unlock()
		return false
	case gen > f.applied+1:
		gap = true
	}
	f.applied = gen
	f.mu.Unlock()
	if origin != f.origin {
		apply([]byte(body))
	}
	return gap
}

// ahead reports whether Redis's generation is past the last message
// received.
func (f *Fanout) ahead(ctx context.Context) bool {
	gen, err := f.generation(ctx)
	if err != nil {
		return false // the PING just answered; a failure here shows next time
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return gen > f.applied
}

func (f *Fanout) generation(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, f.c.timeout)
	defer cancel()
	start := time.Now()
	gen, err := f.c.rdb.Get(ctx, f.c.prefix+FanoutGeneration).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, f.c.observe(OpInvalidateGeneration, start, nil)
	}
	return gen, f.c.observe(OpInvalidateGeneration, start, err)
}

// fail puts the replica out of step (its cache unused) and says why, once
// per loss of step.
func (f *Fanout) fail(why string, err error) {
	if !f.synced.Swap(false) {
		return
	}
	attrs := []any{}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	f.log.Warn("cache invalidation fan-out out of step: "+why+"; the cache is bypassed until Redis is followed again", attrs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
