package shared

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// IdempotencyLease is how long a reservation outlives the last sign of
// life of the replica running its call: the owner renews it every third
// of that while the call runs, so a live owner never loses it, and a dead
// one (crashed, killed, cut off from Redis) is noticed by the duplicates
// at most this long after it stopped.
const IdempotencyLease = 6 * time.Second

// The ledger's records. A key holds one of:
//
//	running:<owner>:<digest>  reserved; the call runs on the replica
//	                          holding <owner> (and the lease key)
//	done:<digest>:<answer>    the call ended; <answer> is opaque here
//
// <digest> is the call's hex SHA-256, <owner> a random token per
// reservation, so the owner's own running value is unique and every
// change it makes is conditional on the key still holding exactly it.
const (
	recordRunning = "running:"
	recordDone    = "done:"
)

// claim reserves KEYS[1] (SET NX PX) and its lease KEYS[2] in one step,
// or reports what holds it: the record and whether its lease is alive.
//
// KEYS: record, lease. ARGV: running value, record ms, owner, lease ms.
// Reply: {1} reserved, or {0, record, lease exists}.
var claim = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return {1}
end
return {0, redis.call('GET', KEYS[1]), redis.call('EXISTS', KEYS[2])}
`)

// renew extends a reservation still held by this owner.
//
// KEYS: record, lease. ARGV: running value, record ms, owner, lease ms.
// Reply: 1 renewed, 0 the reservation is no longer this owner's.
var renew = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
`)

// finish replaces this owner's reservation with the answer, or (no
// answer) removes it so that the key is free again.
//
// KEYS: record, lease. ARGV: running value, done value ("" to remove),
// record ms. Reply: 1 done, 0 the reservation is no longer this owner's.
var finish = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1], KEYS[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
end
return 1
`)

// ErrLeaseLost is Finish's answer when the reservation is no longer this
// owner's: it expired (the owner was cut off longer than the lease and
// the window) and another call may hold the key now.
var ErrLeaseLost = errors.New("idempotency reservation lost")

// Claim is what a key held when ClaimIdempotency looked: either this call
// reserved it (Lease), or another call's record (Digest with Answer, or
// Running).
type Claim struct {
	// Lease is set when this call reserved the key: it must run the call
	// and then Finish or Release the lease.
	Lease *Lease
	// Digest is the digest of the call that holds the key.
	Digest [32]byte
	// Answer is the recorded answer of a finished call; nil while it runs.
	Answer []byte
	// OwnerAlive reports, for a running call, that its replica renewed
	// the lease within IdempotencyLease; false means it is gone and the
	// call's outcome is unknown.
	OwnerAlive bool
}

// Lease is one reservation of a key, held by the replica running its call.
type Lease struct {
	c       *Client
	keys    []string
	owner   string
	running string
	ttl     time.Duration // of the running record: at least the lease
	window  time.Duration // of the answer
}

// IdempotencyKeys are the record and lease keys of an idempotency key of
// principal on route. Both carry the hash tag {route:principal:key}, so
// one script can touch both in a Redis Cluster. The names are
// query-escaped: none can contain a brace or a colon, so no principal's
// key can be another's.
func (c *Client) IdempotencyKeys(route, principal, key string) (record, lease string) {
	record = c.prefix + "idem:{" + url.QueryEscape(route) + ":" + url.QueryEscape(principal) + ":" + url.QueryEscape(key) + "}"
	return record, record + ":lease"
}

// ClaimIdempotency reserves key for the call with digest (SET NX PX), or
// reports the call holding it. A finished call's answer is kept window
// long (Finish); a running one's reservation as long as its owner renews
// it and window after. op labels the round trip (OpIdempotencyClaim for
// the first look, OpIdempotencyWait for a duplicate's later ones). An
// error means Redis did not answer: nothing can be promised.
func (c *Client) ClaimIdempotency(ctx context.Context, op, route, principal, key string, digest [32]byte, window time.Duration) (Claim, error) {
	owner, err := newOwner()
	if err != nil {
		return Claim{}, err
	}
	record, lease := c.IdempotencyKeys(route, principal, key)
	l := &Lease{c: c, keys: []string{record, lease}, owner: owner, ttl: max(window, IdempotencyLease), window: window,
		running: recordRunning + owner + ":" + hex.EncodeToString(digest[:])}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	res, err := claim.Run(ctx, c.rdb, l.keys, l.running, l.ttl.Milliseconds(), owner, IdempotencyLease.Milliseconds()).Slice()
	if err = c.observe(op, start, err); err != nil {
		return Claim{}, fmt.Errorf("redis idempotency claim: %w", err)
	}
	if len(res) == 1 {
		return Claim{Lease: l, Digest: digest}, nil
	}
	if len(res) != 3 {
		return Claim{}, fmt.Errorf("redis idempotency claim: unexpected reply %v", res)
	}
	value, _ := res[1].(string)
	alive, _ := res[2].(int64)
	cl, err := parseRecord(value)
	cl.OwnerAlive = alive == 1
	return cl, err
}

// parseRecord reads a record another call wrote.
func parseRecord(v string) (Claim, error) {
	var cl Claim
	var digest string
	switch {
	case strings.HasPrefix(v, recordRunning):
		// running:<owner>:<digest>
		_, digest, _ = strings.Cut(strings.TrimPrefix(v, recordRunning), ":")
	case strings.HasPrefix(v, recordDone):
		var answer string
		digest, answer, _ = strings.Cut(strings.TrimPrefix(v, recordDone), ":")
		cl.Answer = []byte(answer)
	default:
		return Claim{}, fmt.Errorf("redis idempotency claim: unknown record %.20q", v)
	}
	b, err := hex.DecodeString(digest)
	if err != nil || len(b) != len(cl.Digest) {
		return Claim{}, fmt.Errorf("redis idempotency claim: bad digest in record %.20q", v)
	}
	copy(cl.Digest[:], b)
	return cl, nil
}

func newOwner() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("idempotency owner token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Renew tells the duplicates the call still runs: the lease gets another
// IdempotencyLease, the record another window. ErrLeaseLost: the
// reservation is gone.
func (l *Lease) Renew(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, l.c.timeout)
	defer cancel()
	start := time.Now()
	n, err := renew.Run(ctx, l.c.rdb, l.keys, l.running, l.ttl.Milliseconds(), l.owner, IdempotencyLease.Milliseconds()).Int64()
	if err = l.c.observe(OpIdempotencyRenew, start, err); err != nil {
		return fmt.Errorf("redis idempotency renew: %w", err)
	}
	if n != 1 {
		return ErrLeaseLost
	}
	return nil
}

// Finish records the call's answer, kept window long from now; every
// duplicate gets it. ErrLeaseLost: the reservation is gone, the answer
// was not kept.
func (l *Lease) Finish(ctx context.Context, answer []byte) error {
	if len(answer) == 0 {
		return errors.New("redis idempotency finish: empty answer")
	}
	digest := l.running[strings.LastIndexByte(l.running, ':')+1:]
	return l.end(ctx, OpIdempotencyFinish, recordDone+digest+":"+string(answer))
}

// Release frees the key: the call provably never ran, so the next call
// with the key runs it.
func (l *Lease) Release(ctx context.Context) error {
	return l.end(ctx, OpIdempotencyRelease, "")
}

func (l *Lease) end(ctx context.Context, op, done string) error {
	ctx, cancel := context.WithTimeout(ctx, l.c.timeout)
	defer cancel()
	start := time.Now()
	n, err := finish.Run(ctx, l.c.rdb, l.keys, l.running, done, max(1, l.window.Milliseconds())).Int64()
	if err = l.c.observe(op, start, err); err != nil {
		return fmt.Errorf("redis idempotency %s: %w", strings.TrimPrefix(op, "idempotency_"), err)
	}
	if n != 1 {
		return ErrLeaseLost
	}
	return nil
}
