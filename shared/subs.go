package shared

import (
	"context"
	"fmt"
	"time"
)

// Resource subscriptions shared by the replicas: a set per session,
// <prefix>subs:{<session>}, of the URIs it subscribed to, expiring with
// the session, so the replica that holds a session's GET stream knows what
// that session subscribed to through any replica.

func (c *Client) subsKey(session string) string { return c.prefix + "subs:{" + session + "}" }

// Subscribe records that session subscribed to uri, for ttl.
func (c *Client) Subscribe(ctx context.Context, session, uri string, ttl time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	pipe := c.rdb.TxPipeline()
	pipe.SAdd(ctx, c.subsKey(session), uri)
	pipe.Expire(ctx, c.subsKey(session), ttl)
	_, err := pipe.Exec(ctx)
	if err = c.observe(OpSubscriptions, start, err); err != nil {
		return fmt.Errorf("redis subscribe: %w", err)
	}
	return nil
}

// Unsubscribe records that session unsubscribed from uri.
func (c *Client) Unsubscribe(ctx context.Context, session, uri string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	err := c.rdb.SRem(ctx, c.subsKey(session), uri).Err()
	if err = c.observe(OpSubscriptions, start, err); err != nil {
		return fmt.Errorf("redis unsubscribe: %w", err)
	}
	return nil
}

// Subscribed returns the URIs session is subscribed to.
func (c *Client) Subscribed(ctx context.Context, session string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	start := time.Now()
	uris, err := c.rdb.SMembers(ctx, c.subsKey(session)).Result()
	if err = c.observe(OpSubscriptions, start, err); err != nil {
		return nil, fmt.Errorf("redis subscriptions: %w", err)
	}
	return uris, nil
}
