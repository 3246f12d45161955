package shared

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tool pins shared by the replicas: one hash per upstream,
// <prefix>pins:{<upstream>}, a field per tool holding its pin (the
// gateway's JSON: digest and definition). The first replica to record a
// tool's pin wins (HSETNX), so two replicas that first see a tool in two
// different versions agree on which one is pinned, and the other is
// quarantined on both; an approval overwrites the field.

// pinRecord stores each pin (ARGV: tool, pin, tool, pin, ...) unless the
// tool has one, and returns the pins in force, in order.
var pinRecord = redis.NewScript(`
local out = {}
for i = 1, #ARGV, 2 do
  redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
end
return out
`)

func (c *Client) pinsKey(upstream string) string {
	return c.prefix + "pins:{" + url.QueryEscape(upstream) + "}"
}

// Pins returns every pin of upstream, by tool.
func (c *Client) Pins(ctx context.Context, upstream string) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	m, err := c.rdb.HGetAll(ctx, c.pinsKey(upstream)).Result()
	if err = c.observe(OpPins, start, err); err != nil {
		return nil, fmt.Errorf("redis pins: %w", err)
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out, nil
}

// RecordPins stores each tool's pin unless the tool is pinned already, in
// one round trip, and returns the pins in force. While Redis is known to
// be down (a round trip failed in the last second) it fails at once.
func (c *Client) RecordPins(ctx context.Context, upstream string, pins map[string][]byte) (map[string][]byte, error) {
	if c.recentlyDown() {
		return nil, errRecentlyDown
	}
	tools := slices.Sorted(maps.Keys(pins))
	args := make([]any, 0, 2*len(tools))
	for _, t := range tools {
		args = append(args, t, pins[t])
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	res, err := pinRecord.Run(ctx, c.rdb, []string{c.pinsKey(upstream)}, args...).Slice()
	if err = c.observe(OpPins, start, err); err != nil {
		return nil, fmt.Errorf("redis pin record: %w", err)
	}
	if len(res) != len(tools) {
		return nil, errors.New("redis pin record: unexpected reply")
	}
	out := make(map[string][]byte, len(tools))
	for i, t := range tools {
		v, _ := res[i].(string)
		out[t] = []byte(v)
	}
	return out, nil
}

// SetPin stores pin for tool, replacing any: an operator's approval.
func (c *Client) SetPin(ctx context.Context, upstream, tool string, pin []byte) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	err := c.rdb.HSet(ctx, c.pinsKey(upstream), tool, pin).Err()
	if err = c.observe(OpPins, start, err); err != nil {
		return fmt.Errorf("redis pin approve: %w", err)
	}
	return nil
}
