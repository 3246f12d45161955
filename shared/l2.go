package shared

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The response cache's second level: sealed entries (cache.Sealer) under
// <prefix>cache:e:<generation>:<cache key>, where generation is the
// fan-out's counter (fanout.go). Every invalidation any replica publishes
// moves the counter, so it makes every entry stored before it unreachable
// at once, whatever it named (they expire by their TTL): coarse, and
// correct without a round trip per tag.

// cacheGet reads the generation and, under it, the first of the keys
// present, in one round trip: {generation, index (1-based, 0: none),
// value}.
var cacheGet = redis.NewScript(generationLua + `
local g = generation(KEYS[1], ARGV[#ARGV])
for i = 1, #ARGV - 2 do
  local v = redis.call('GET', ARGV[1] .. g .. ':' .. ARGV[i + 1])
  if v then return {g, i, v} end
end
return {g, 0, false}
`)

// CacheGet looks keys up in the second level, in order, bounded by
// redis.timeout. It returns the generation entries are stored under now
// (for CacheSet after a miss), and the first key found with its sealed
// value, or "" and nil.
func (c *Client) CacheGet(ctx context.Context, keys ...string) (gen int64, key string, value []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	args := make([]any, 0, 2+len(keys))
	args = append(args, c.prefix+"cache:e:")
	for _, k := range keys {
		args = append(args, k)
	}
	args = append(args, generationSeed())
	start := time.Now()
	res, err := cacheGet.Run(ctx, c.rdb, []string{c.prefix + FanoutGeneration}, args...).Slice()
	if err = c.observe(OpCacheGet, start, err); err != nil {
		return 0, "", nil, fmt.Errorf("redis cache get: %w", err)
	}
	if len(res) != 3 {
		return 0, "", nil, fmt.Errorf("redis cache get: unexpected reply %v", res)
	}
	g, _ := res[0].(string)
	if gen, err = strconv.ParseInt(g, 10, 64); err != nil {
		return 0, "", nil, fmt.Errorf("redis cache get: generation %q: %w", g, err)
	}
	i, _ := res[1].(int64)
	v, _ := res[2].(string)
	if i < 1 || int(i) > len(keys) {
		return gen, "", nil, nil
	}
	return gen, keys[i-1], []byte(v), nil
}

// CacheSet stores a sealed value under key for ttl, in generation gen:
// the one CacheGet returned before the answer was fetched, so an
// invalidation during the fetch leaves the answer unreachable.
func (c *Client) CacheSet(ctx context.Context, gen int64, key string, value []byte, ttl time.Duration) error {
	if ttl < time.Millisecond {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	err := c.rdb.Set(ctx, c.prefix+"cache:e:"+strconv.FormatInt(gen, 10)+":"+key, value, ttl).Err()
	if err = c.observe(OpCacheSet, start, err); err != nil {
		return fmt.Errorf("redis cache set: %w", err)
	}
	return nil
}
