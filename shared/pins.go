package shared

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// Tool pins shared by the replicas: one hash per upstream,
// <prefix>pins:{<upstream>}, a field per tool holding its pin (the
// gateway's JSON: digest and definition). The first replica to record a
// tool's pin wins (HSETNX), so two replicas that first see a tool in two
// different versions agree on which one is pinned, and the other is
// quarantined on both; an approval overwrites the field.

// pinRecord stores a pin unless the tool has one, and returns the pin in
// force: {1, value} when this one was stored, {0, existing} otherwise.
var pinRecord = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return {1, ARGV[2]} end
return {0, redis.call('HGET', KEYS[1], ARGV[1])}
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

// RecordPin stores pin for tool unless the tool is pinned already; it
// returns the pin in force and whether it is this one.
func (c *Client) RecordPin(ctx context.Context, upstream, tool string, pin []byte) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	res, err := pinRecord.Run(ctx, c.rdb, []string{c.pinsKey(upstream)}, tool, pin).Slice()
	if err = c.observe(OpPins, start, err); err != nil {
		return nil, false, fmt.Errorf("redis pin record: %w", err)
	}
	if len(res) != 2 {
		return nil, false, errors.New("redis pin record: unexpected reply")
	}
	stored, _ := res[0].(int64)
	v, _ := res[1].(string)
	return []byte(v), stored == 1, nil
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
