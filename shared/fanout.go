package shared

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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
//   - from the moment its subscription is confirmed, it has read the
//     generation and published what it could not publish before (it drops
//     its whole cache then: it cannot know what it missed while it was not
//     listening);
//   - until the subscription fails, a message arrives out of sequence (a
//     gap: a message was lost), the generation in Redis is found ahead
//     of the last one received on two health checks in a row (a silently
//     dead connection) or behind it (Redis lost it), or one of its own
//     invalidations cannot be published (it is kept, and published when
//     Redis answers again).
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

// generationLua reads the generation, first setting a missing one to a
// random start (the seed the caller passes; below 2^52, so it is exact): a counter lost with Redis's
// data (a restart without persistence, a flush, an eviction) starts again
// far from where it was, so neither a message nor a second-level entry of
// before the loss can pass for one of after it.
const generationLua = `
local function generation(key, seed)
  local g = redis.call('GET', key)
  if not g then
    redis.call('SET', key, seed, 'NX')
    g = redis.call('GET', key)
  end
  return g
end
`

// generationSeed is a random start for a generation counter, between
// 2^40 and 2^46: exact in Lua's numbers (doubles), and short enough that
// Redis's Lua 5.1 never prints it in exponent notation.
func generationSeed() int64 { return 1<<40 + rand.Int64N(1<<46-1<<40) }

// publish increments the generation and publishes "<generation> <origin>
// <payload>" in one step, so no two messages share a generation and none
// is published without one.
var publish = redis.NewScript(generationLua + `
generation(KEYS[1], ARGV[4])
local g = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], string.format('%d', g) .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return g
`)

// readGeneration reads the generation (initialising a missing one).
var readGeneration = redis.NewScript(generationLua + `
return generation(KEYS[1], ARGV[1])
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
	// unsent are this replica's invalidations Publish could not send, in
	// order, sent before it is back in step; past maxUnsent they are
	// replaced by everything (one payload that drops it all).
	unsent      [][]byte
	unsentEpoch int // counts the times unsent was replaced by everything
	everything  []byte
}

// maxUnsent bounds the invalidations kept while Redis cannot take them.
const maxUnsent = 1000

// NewFanout returns the fan-out of c; origin names this process uniquely
// among the replicas (its own messages are not applied twice); everything
// is the payload that drops everything (sent instead of more than
// maxUnsent invalidations that could not be published).
func (c *Client) NewFanout(origin string, everything []byte, log *slog.Logger) *Fanout {
	if log == nil {
		log = c.log
	}
	return &Fanout{c: c, origin: strings.ReplaceAll(origin, " ", "_"), everything: everything, log: log}
}

// Synced reports whether this replica is in step with every invalidation
// published: only then may it serve from its cache.
func (f *Fanout) Synced() bool { return f.synced.Load() }

// Publish sends payload (what to invalidate, in the caller's encoding; no
// newline needed) to every other replica, in one round trip bounded by
// redis.timeout. An error means the other replicas have not been told
// yet: the payload is kept and sent before this replica is back in step,
// and until then this replica is out of step (a second-level entry of
// before it must not be read again here).
func (f *Fanout) Publish(ctx context.Context, payload []byte) error {
	if err := f.send(ctx, payload); err != nil {
		f.mu.Lock()
		if len(f.unsent) >= maxUnsent {
			f.unsent = [][]byte{f.everything}
			f.unsentEpoch++
		} else {
			f.unsent = append(f.unsent, payload)
		}
		f.mu.Unlock()
		f.fail("an invalidation could not be published; it is sent when Redis answers", err)
		return err
	}
	return nil
}

func (f *Fanout) send(ctx context.Context, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, f.c.timeout)
	defer cancel()
	start := time.Now()
	err := publish.Run(ctx, f.c.rdb, []string{f.c.prefix + FanoutGeneration}, f.c.prefix+FanoutChannel, f.origin, payload, generationSeed()).Err()
	if err = f.c.observe(OpInvalidatePublish, start, err); err != nil {
		return fmt.Errorf("redis invalidation fan-out: %w", err)
	}
	return nil
}

// sendUnsent publishes the invalidations Publish could not, in order.
func (f *Fanout) sendUnsent(ctx context.Context) error {
	for {
		f.mu.Lock()
		if len(f.unsent) == 0 {
			f.mu.Unlock()
			return nil
		}
		next, epoch := f.unsent[0], f.unsentEpoch
		f.mu.Unlock()
		if err := f.send(ctx, next); err != nil {
			return err
		}
		f.mu.Lock()
		if f.unsentEpoch == epoch { // else everything replaced it: send that
			f.unsent = f.unsent[1:]
		}
		f.mu.Unlock()
	}
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
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, fanoutCheckEvery)
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if err := f.resync(ctx, resync); err != nil {
				f.fail("could not read the invalidation generation", err)
				continue
			}
			wait, behind = fanoutRetryMin, 0
		case *redis.Message:
			gap, old := f.receive(m.Payload, apply)
			switch {
			case gap:
				f.fail("an invalidation message was missed", nil)
				// Back in step: drop everything and count on from this
				// message's generation.
				resync()
				f.synced.Store(true)
			case old && f.compare(ctx) < 0:
				f.fail("the invalidation generation went back (Redis lost it)", nil)
				_ = f.resync(ctx, resync)
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
				if f.resync(ctx, resync) == nil {
					wait = fanoutRetryMin
				}
				behind = 0
			default:
				switch f.compare(ctx) {
				case 1:
					behind++
				case -1:
					// Redis lost the counter: what was missed is unknown.
					f.fail("the invalidation generation went back (Redis lost it)", nil)
					_ = f.resync(ctx, resync)
					behind = 0
				default:
					behind = 0
				}
			}
			if behind >= 2 {
				// Twice in a row, not a message in flight: one was lost.
				f.fail("the invalidation generation is ahead of the messages received", nil)
				if f.resync(ctx, resync) == nil {
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
func (f *Fanout) resync(ctx context.Context, resync func()) error {
	if err := f.sendUnsent(ctx); err != nil {
		return err
	}
	gen, err := f.generation(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.applied = gen
	f.mu.Unlock()
	resync()
	f.synced.Store(true)
	f.log.Info("cache invalidation fan-out in step", "generation", gen)
	return nil
}

// receive applies one message; it reports whether messages were missed
// before it (its generation is not the next one).
func (f *Fanout) receive(payload string, apply func([]byte)) (gap, old bool) {
	genText, rest, ok1 := strings.Cut(payload, " ")
	origin, body, ok2 := strings.Cut(rest, " ")
	gen, err := strconv.ParseInt(genText, 10, 64)
	if !ok1 || !ok2 || err != nil {
		f.log.Warn("cache invalidation fan-out: malformed message ignored", "message", truncate(payload, 200))
		return false, false
	}
	f.mu.Lock()
	switch {
	case gen <= f.applied:
		// Published before the generation was read at subscription (the
		// resync that followed covered it), or the counter was lost and
		// started again (the caller checks).
		f.mu.Unlock()
		return false, true
	case gen > f.applied+1:
		gap = true
	}
	f.applied = gen
	f.mu.Unlock()
	if origin != f.origin {
		apply([]byte(body))
	}
	return gap, false
}

// compare is Redis's generation against the last one received: 1 ahead
// (a message missed, or in flight), -1 behind (the counter was lost and
// started again), 0 the same or unknown.
func (f *Fanout) compare(ctx context.Context) int {
	gen, err := f.generation(ctx)
	if err != nil {
		return 0 // the PING just answered; a failure here shows next time
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case gen > f.applied:
		return 1
	case gen < f.applied:
		return -1
	}
	return 0
}

func (f *Fanout) generation(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, f.c.timeout)
	defer cancel()
	start := time.Now()
	gen, err := readGeneration.Run(ctx, f.c.rdb, []string{f.c.prefix + FanoutGeneration}, generationSeed()).Int64()
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
