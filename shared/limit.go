package shared

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// Bucket is one rate a request takes a token from: RPS tokens a second, up
// to Burst at once. Tool "" is the principal's own bucket; any other is the
// principal's bucket for that tool.
type Bucket struct {
	Tool  string
	RPS   float64
	Burst int
}

// gcra is the Generic Cell Rate Algorithm over every bucket of one request
// at once, so the buckets are checked and consumed atomically: either
// every bucket has a token and each is taken, or none is taken and the
// reply is the wait until all would have one. Each key holds its
// theoretical arrival time (TAT) in microseconds of the Redis clock (TIME:
// one clock for every replica, whatever theirs say), and expires when the
// bucket is full again, so idle principals cost no memory.
//
// KEYS: the bucket keys. ARGV: per key, the emission interval (µs per
// token) and the burst. Reply: {1, 0} allowed, {0, wait µs} refused.
// Stored numbers are written with %.0f: Lua's default conversion keeps 14
// digits, fewer than a time in microseconds has (integer replies are
// exact).
var gcra = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local tats = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local allow_at = next_tat - burst * interval
  if allow_at > now and allow_at - now > wait then wait = allow_at - now end
  tats[i] = next_tat
end
if wait > 0 then return {0, math.ceil(wait)} end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.0f', tats[i]), 'PX', string.format('%.0f', math.ceil((tats[i] - now) / 1000)))
end
return {1, 0}
`)

// RateKeys are the keys of one request's buckets on route for principal,
// in the order of buckets. Every key carries the same hash tag
// {route:principal}, so one request's buckets share a Cluster slot and one
// script can touch them all. Route, principal and tool are query-escaped:
// none can contain a brace or a colon, so no principal's keys can be
// another's.
func (c *Client) RateKeys(route, principal string, buckets []Bucket) []string {
	tag := c.prefix + "rl:{" + url.QueryEscape(route) + ":" + url.QueryEscape(principal) + "}"
	keys := make([]string, len(buckets))
	for i, b := range buckets {
		keys[i] = tag
		if b.Tool != "" {
			keys[i] = tag + ":tool:" + url.QueryEscape(b.Tool)
		}
	}
	return keys
}

// Allow takes one token from each of the buckets, all or none, in one
// round trip bounded by redis.timeout. Refused, it returns the wait until
// every bucket has a token again. An error means Redis did not decide
// (unreachable, slow, or an error reply): the caller applies on_error.
func (c *Client) Allow(ctx context.Context, route, principal string, buckets []Bucket) (bool, time.Duration, error) {
	if len(buckets) == 0 {
		return true, 0, nil
	}
	args := make([]any, 0, 2*len(buckets))
	for _, b := range buckets {
		// The emission interval: the time one token takes to come back.
		interval := math.Max(1, math.Round(1e6/b.RPS))
		args = append(args, int64(interval), b.Burst)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	res, err := gcra.Run(ctx, c.rdb, c.RateKeys(route, principal, buckets), args...).Int64Slice()
	if err = c.observe(OpRateLimit, start, err); err != nil {
		return false, 0, fmt.Errorf("redis rate limit: %w", err)
	}
	if len(res) != 2 {
		return false, 0, fmt.Errorf("redis rate limit: unexpected reply %v", res)
	}
	if res[0] == 1 {
		return true, 0, nil
	}
	return false, time.Duration(res[1]) * time.Microsecond, nil
}
