package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Cache configures the gateway's response cache as a whole. What is cached
// and for how long is set per upstream (Upstream.Cache).
type Cache struct {
	// MaxMB bounds the memory the cache's entries may use, in megabytes;
	// when full, the oldest entries are evicted. It also sets the largest
	// cacheable answer (2 MiB - 4 KiB from 16 up; see
	// cache.Store.MaxEntryBytes): a larger one is served uncached, and
	// counted. Default: 256.
	MaxMB int `yaml:"max_mb"`
	// EncryptionKeys are secrets (at least 32 bytes each) from which the
	// keys sealing the entries shared on Redis (the second level) are
	// derived: AES-256-GCM, the first key seals, all of them open, which
	// is how they rotate (as sessions.keys). With redis configured they
	// turn the second level on; without them entries stay in each
	// replica's memory, never in Redis in the clear. Empty entries are
	// ignored, as in sessions.keys.
	EncryptionKeys []string `yaml:"encryption_keys"`
}

// UpstreamCache is what the gateway caches of one upstream. Nil (the
// default) caches nothing of it.
type UpstreamCache struct {
	// TTL is how long a result stays fresh, per method, when the upstream
	// gives no ttlMs of its own (ttlMs is protocol only in the 2026-07-28
	// era; legacy-era answers always use this). A method without a TTL
	// here is not cached in the legacy era. Keys are the methods in
	// CacheMethods.
	TTL map[string]time.Duration `yaml:"ttl"`
	// MaxTTL caps an upstream-supplied ttlMs and bounds every TTL.
	// Default: 1h.
	MaxTTL time.Duration `yaml:"max_ttl"`
	// StaleIfError is how long after it stops being fresh an entry may
	// still be served, marked stale, when the upstream fails (connection
	// refused, timeout, 5xx). Zero (the default) never serves stale.
	StaleIfError time.Duration `yaml:"stale_if_error"`
	// Tools lists the tools whose tools/call results may be cached (with
	// ttl["tools/call"]); no other call is ever cached.
	Tools []string `yaml:"tools"`
}

// CacheMethods are the MCP methods whose results the cache may hold: the
// only keys accepted under upstreams[].cache.ttl. The rest of the "never
// cache" rules are in package cache, beside the key function.
var CacheMethods = []string{
	"tools/list", "prompts/list", "resources/list", "resources/templates/list",
	"resources/read", "server/discover", "tools/call",
	"skills/list", "skills/get", // SEP-2640
}

// Cache defaults.
const (
	DefaultCacheMaxMB  = 256
	DefaultCacheMaxTTL = time.Hour
	// maxCacheMB keeps a typo (a byte count written as megabytes) from
	// asking for terabytes.
	maxCacheMB = 1 << 16
)

func (c *Config) applyCacheDefaults() {
	setDefault(&c.Cache.MaxMB, DefaultCacheMaxMB)
	for i := range c.Upstreams {
		if uc := c.Upstreams[i].Cache; uc != nil {
			setDefault(&uc.MaxTTL, DefaultCacheMaxTTL)
		}
	}
}

func (v *validator) cache(c *Config) {
	if c.Cache.MaxMB <= 0 || c.Cache.MaxMB > maxCacheMB {
		v.add("cache.max_mb", "must be between 1 and %d (megabytes), e.g. 256", maxCacheMB)
	}
	set := 0
	for i, k := range c.Cache.EncryptionKeys {
		if k == "" {
			continue
		}
		set++
		if len(k) < MinSessionKeyBytes {
			v.add(fmt.Sprintf("cache.encryption_keys[%d]", i), "must be at least %d bytes; generate one with: openssl rand -base64 32", MinSessionKeyBytes)
		}
	}
	if set > 0 && c.Redis == nil {
		v.add("cache.encryption_keys", "seal the cache entries shared on Redis, and there is no redis block: add one, or remove the keys")
	}
	for i, up := range c.Upstreams {
		if up.Cache != nil {
			v.upstreamCache(fmt.Sprintf("upstreams[%d].cache", i), up.Cache)
		}
	}
}

func (v *validator) upstreamCache(path string, uc *UpstreamCache) {
	methods := make([]string, 0, len(uc.TTL))
	for m := range uc.TTL {
		methods = append(methods, m)
	}
	slices.Sort(methods) // map order is random; problems are reported in a stable order
	for _, m := range methods {
		ttl := uc.TTL[m]
		switch {
		case !slices.Contains(CacheMethods, m):
			v.add(path+".ttl."+m, "unknown method; cacheable methods are %s", strings.Join(CacheMethods, ", "))
		case ttl <= 0:
			v.add(path+".ttl."+m, "must be a positive duration such as 5m; leave the method out to not cache it")
		case ttl > uc.MaxTTL:
			v.add(path+".ttl."+m, "%s is longer than max_ttl (%s); shorten it or raise max_ttl", ttl, uc.MaxTTL)
		}
	}
	if uc.MaxTTL <= 0 {
		v.add(path+".max_ttl", "must be positive, e.g. 1h")
	}
	if uc.StaleIfError < 0 {
		v.add(path+".stale_if_error", "must not be negative; 0 never serves stale answers")
	}
	for i, name := range uc.Tools {
		if name == "" {
			v.add(fmt.Sprintf("%s.tools[%d]", path, i), "must be a tool name")
		}
	}
	_, callTTL := uc.TTL["tools/call"]
	switch {
	case len(uc.Tools) > 0 && !callTTL:
		v.add(path+".tools", "listed tools are cached only with a TTL for them: add ttl: {tools/call: 1m}")
	case len(uc.Tools) == 0 && callTTL:
		v.add(path+".ttl.tools/call", "caches nothing without tools: list the tools whose calls may be cached under tools")
	}
}
