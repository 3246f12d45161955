package config

import (
	"net/url"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the state several replicas share. Nil (the default) keeps all
// of it in memory, per process. Shared: rate limits, idempotency keys,
// cache invalidation and events, the cache's second level and tool pins.
type Redis struct {
	// URL is where Redis is, as go-redis parses it: redis://host:6379/0,
	// rediss://host:6380/0 (TLS) or unix:///path/redis.sock. A password may
	// be written into it from the environment
	// (redis://:${REDIS_PASSWORD}@host:6379/0), or read from PasswordFile.
	URL string `yaml:"url"`
	// KeyPrefix starts every key the gateway writes, so several
	// deployments can share one Redis: replicas share state exactly when
	// they use the same Redis and the same prefix. Default: "ctxgate:".
	KeyPrefix string `yaml:"key_prefix"`
	// TLS is how a rediss:// server is verified and the client certificate
	// presented to it; nil with rediss://: system roots, no certificate.
	TLS *UpstreamTLS `yaml:"tls" json:",omitempty"`
	// Username is the Redis ACL user (AUTH username password). Empty: the
	// URL's, or the default user.
	Username string `yaml:"username"`
	// PasswordFile holds the password (a mounted Secret); trailing
	// newlines are ignored. Empty: the URL's password, if any.
	PasswordFile string `yaml:"password_file"`
	// PoolSize bounds the connections kept to Redis. Default: 20.
	PoolSize int `yaml:"pool_size"`
	// Timeout bounds every Redis operation (connecting included): a slow
	// or unreachable Redis costs a request at most this long before
	// OnError applies. Default: 200ms.
	Timeout time.Duration `yaml:"timeout"`
	// OnError is what a rate-limited request (or a pin) gets when Redis
	// cannot answer: "local" (the default) falls back to the replica's own
	// in-memory state (logged and counted in ctxgate_redis_fallback_total),
	// "deny" refuses it (503 -31019). It does not apply to idempotency
	// keys: a call with one is refused (503 -31061) either way, since no
	// replica alone can keep the at-most-once promise.
	OnError string `yaml:"on_error"`
	// Events is the Redis Stream context sources push "this changed"
	// events to; nil: none is read.
	Events *RedisEvents `yaml:"events" json:",omitempty"`
}

// RedisEvents is where invalidation events are read from: the replicas of
// one deployment share a consumer group, so each event is applied once
// and fanned out to all.
type RedisEvents struct {
	// Stream is the stream's key, exactly as the sources XADD to it (the
	// key prefix is not added).
	Stream string `yaml:"stream"`
	// Group is the consumer group; one per gateway deployment. Default:
	// "ctxgate".
	Group string `yaml:"group"`
}

// EventsConfig is r.Events, nil-safe: nil without a redis block.
func (r *Redis) EventsConfig() *RedisEvents {
	if r == nil {
		return nil
	}
	return r.Events
}

// DefaultRedisEventsGroup is redis.events.group's default.
const DefaultRedisEventsGroup = "ctxgate"

// Redis defaults.
const (
	DefaultRedisKeyPrefix = "ctxgate:"
	DefaultRedisPoolSize  = 20
	DefaultRedisTimeout   = 200 * time.Millisecond
	DefaultRedisOnError   = "local"
	// maxRedisTimeout keeps a Redis outage from holding requests for long:
	// the timeout is paid by every request while Redis is down.
	maxRedisTimeout = 10 * time.Second
)

func (r *Redis) applyDefaults() {
	if r == nil {
		return
	}
	setDefault(&r.KeyPrefix, DefaultRedisKeyPrefix)
	setDefault(&r.PoolSize, DefaultRedisPoolSize)
	setDefault(&r.Timeout, DefaultRedisTimeout)
	setDefault(&r.OnError, DefaultRedisOnError)
	if r.Events != nil {
		setDefault(&r.Events.Group, DefaultRedisEventsGroup)
	}
}

func (v *validator) redis(r *Redis, hasCache bool) {
	if r == nil {
		return
	}
	if e := r.Events; e != nil {
		switch {
		case strings.TrimSpace(e.Stream) == "":
			v.add("redis.events.stream", "is required: the stream key the context sources XADD events to, e.g. ctxgate:events")
		case !hasCache:
			v.add("redis.events", "events invalidate the response cache, and no upstream has a cache block: add one, or remove redis.events")
		}
		if strings.ContainsAny(e.Group, " \t\n") {
			v.add("redis.events.group", "must be one word, e.g. ctxgate-prod")
		}
	}
	v.redisURL(r)
	if strings.ContainsAny(r.KeyPrefix, "{} ") {
		// A brace would make the prefix the hash tag of every key, putting
		// all of them in one Cluster slot.
		v.add("redis.key_prefix", "must not contain braces or spaces, e.g. ctxgate:prod:")
	}
	if r.PoolSize < 1 || r.PoolSize > 10000 {
		v.add("redis.pool_size", "must be between 1 and 10000, e.g. 20")
	}
	if r.Timeout <= 0 || r.Timeout > maxRedisTimeout {
		v.add("redis.timeout", "must be a positive duration of at most %s, e.g. 200ms: every request waits this long while Redis is down", maxRedisTimeout)
	}
	switch r.OnError {
	case "local", "deny":
	default:
		v.add("redis.on_error", "must be local (fall back to this replica's own limits) or deny (refuse with 503)")
	}
}

// IsSentinelURL reports whether a redis.url names Sentinels (it has a
// master_name parameter) rather than the primary itself.
func IsSentinelURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Query().Get("master_name") != ""
}

// redisSentinelURL checks a Sentinel URL: go-redis's failover form, whose
// credentials are the Sentinels' (the primary's are username and
// password_file).
func (v *validator) redisSentinelURL(r *Redis, u *url.URL) {
	if _, err := redis.ParseFailoverURL(r.URL); err != nil {
		v.add("redis.url", "must be a Sentinel URL such as redis://sentinel:26379/0?master_name=mymaster&addr=sentinel2:26379: %s", strings.TrimPrefix(err.Error(), "redis: "))
		return
	}
	if r.TLS != nil && u.Scheme != "rediss" {
		v.add("redis.tls", "needs a rediss:// url; tls settings have no effect on %s://", u.Scheme)
	}
}

func (v *validator) redisURL(r *Redis) {
	if r.URL == "" {
		v.add("redis.url", "is required: where Redis is, e.g. redis://redis:6379/0 (remove the redis block to keep all state in memory)")
		return
	}
	u, err := url.Parse(r.URL)
	if err == nil && IsSentinelURL(r.URL) {
		v.redisSentinelURL(r, u)
		return
	}
	if err == nil && u.Query().Has("addr") {
		v.add("redis.url", "names several Redis nodes (addr=): Redis Cluster is not supported (the gateway's scripts read keys of several hash slots); use one primary, or Sentinels with ?master_name=<name>")
		return
	}
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		v.add("redis.url", "must be a redis://, rediss:// or unix:// URL such as redis://redis:6379/0, or Sentinels: redis://sentinel:26379/0?master_name=mymaster: %s", strings.TrimPrefix(err.Error(), "redis: "))
		return
	}
	if r.PasswordFile != "" && opt.Password != "" {
		v.add("redis.password_file", "the url has a password too: set it in one place")
	}
	if r.Username != "" && u.User != nil && u.User.Username() != "" {
		v.add("redis.username", "the url names a user too: set it in one place")
	}
	t := r.TLS
	if t == nil {
		return
	}
	if u.Scheme != "rediss" {
		v.add("redis.tls", "needs a rediss:// url; tls settings have no effect on %s://", u.Scheme)
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add("redis.tls", "set both cert_file and key_file (the gateway's client certificate), or neither")
	}
	switch t.MinVersion {
	case "", "1.2", "1.3":
	default:
		v.add("redis.tls.min_version", "must be 1.2 or 1.3")
	}
	if t.ServerName != "" && strings.ContainsAny(t.ServerName, "/: ") {
		v.add("redis.tls.server_name", "must be a host name such as redis.internal")
	}
}
