package config

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Problem is one invalid setting: where it is and how to fix it.
type Problem struct {
	Path    string
	Message string
}

func (p Problem) Error() string { return p.Path + ": " + p.Message }

// MinSessionKeyBytes is the shortest accepted session secret.
const MinSessionKeyBytes = 32

var upstreamName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Validate checks the whole configuration and returns every problem found,
// in file order. It is pure: it opens no file and resolves no name.
func (c *Config) Validate() []Problem {
	v := &validator{}
	v.server(&c.Server)
	v.admin(&c.Admin, c.Server.Listen)
	v.sessions(&c.Sessions)
	v.auth(&c.Auth)
	v.tls(c.Server.TLS, c.Auth.MTLS)
	v.mtls(c.Auth.MTLS)
	v.oidc(c.Auth.OIDC)
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "must be one of debug, info, warn, error")
	}
	v.policy(&c.Policy)
	v.tracing(&c.Tracing)
	v.upstreams(c.Upstreams, len(c.Auth.OIDC) > 0)
	v.cache(c)
	v.routes(c.Routes, c.Upstreams)
	v.grants(c)
	v.redis(c.Redis, slices.ContainsFunc(c.Upstreams, func(u Upstream) bool { return u.Cache != nil }))
	return v.problems
}

type validator struct{ problems []Problem }

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (v *validator) server(s *Server) {
	v.listen("server.listen", s.Listen)
	if s.PublicURL == "" {
		v.add("server.public_url", "required when server.listen is not a loopback address: set the URL clients use, e.g. https://mcp.example.com")
	} else if u, err := url.Parse(s.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add("server.public_url", "must be an absolute http or https URL such as https://mcp.example.com")
	} else if u.RawQuery != "" || u.Fragment != "" {
		v.add("server.public_url", "must not have a query or fragment")
	}
	for i, o := range s.AllowedOrigins {
		if !isOrigin(o) {
			v.add(fmt.Sprintf("server.allowed_origins[%d]", i), "must be an origin scheme://host[:port] with no path, e.g. https://app.example.com")
		}
	}
	for i, h := range s.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/ @") {
			v.add(fmt.Sprintf("server.allowed_hosts[%d]", i), "must be a host or host:port, e.g. mcp.example.com")
		}
	}
	positive := []struct {
		path string
		ok   bool
	}{
		{"server.max_body_bytes", s.MaxBodyBytes > 0},
		{"server.max_header_bytes", s.MaxHeaderBytes > 0},
		{"server.max_json_values", s.MaxJSONValues > 0},
		{"server.max_json_string_bytes", s.MaxJSONStringBytes > 0},
		{"server.max_inflight", s.MaxInflight > 0},
		{"server.max_streams", s.MaxStreams > 0},
		{"server.read_header_timeout", s.ReadHeaderTimeout > 0},
		{"server.read_body_timeout", s.ReadBodyTimeout > 0},
		{"server.idle_timeout", s.IdleTimeout > 0},
		{"server.shutdown_timeout", s.ShutdownTimeout > 0},
	}
	for _, p := range positive {
		if !p.ok {
			v.add(p.path, "must be positive")
		}
	}
}

func (v *validator) listen(path, addr string) {
	if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
		v.add(path, "must be host:port, e.g. 127.0.0.1:8080 (port 0 picks a free port)")
	}
}

func isOrigin(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil
}

func (v *validator) sessions(s *Sessions) {
	for i, k := range s.Keys {
		if len(k) < MinSessionKeyBytes {
			v.add(fmt.Sprintf("sessions.keys[%d]", i), "must be at least %d bytes; generate one with: openssl rand -base64 32", MinSessionKeyBytes)
		}
	}
	if s.TTL <= 0 {
		v.add("sessions.ttl", "must be positive, e.g. 24h")
	}
}

func (v *validator) auth(a *Auth) {
	if !a.Anonymous && len(a.APIKeys) == 0 && len(a.OIDC) == 0 && a.MTLS == nil {
		v.add("auth", "no authentication method is configured; add auth.oidc, auth.mtls or auth.api_keys, or set auth.anonymous: true for local development only")
	}
	switch a.APIKeyHeader {
	case "authorization", "x-api-key":
	default:
		v.add("auth.api_key_header", "must be authorization or x-api-key")
	}
	names := map[string]bool{}
	hashes := map[string]bool{}
	for i, k := range a.APIKeys {
		path := fmt.Sprintf("auth.api_keys[%d]", i)
		if k.Name == "" {
			v.add(path+".name", "must be set: it becomes the principal id")
		} else if names[k.Name] {
			v.add(path+".name", "duplicate name %q; key names must be unique", k.Name)
		}
		names[k.Name] = true
		if b, err := hex.DecodeString(k.SHA256); err != nil || len(b) != 32 {
			v.add(path+".sha256", "must be 64 hex digits; compute it with: ctxgate hash-key")
		} else if hashes[strings.ToLower(k.SHA256)] {
			v.add(path+".sha256", "the same key is configured twice")
		}
		hashes[strings.ToLower(k.SHA256)] = true
		for j, g := range k.Groups {
			if strings.TrimSpace(g) == "" {
				v.add(fmt.Sprintf("%s.groups[%d]", path, j), "must not be empty")
			}
		}
		for name := range k.Attributes {
			if strings.TrimSpace(name) == "" {
				v.add(path+".attributes", "attribute names must not be empty")
			}
		}
	}
}

func (v *validator) upstreams(ups []Upstream, hasOIDC bool) {
	if len(ups) == 0 {
		v.add("upstreams", "at least one upstream is required, e.g. {name: docs, url: http://127.0.0.1:3001/mcp}")
	}
	seen := map[string]bool{}
	for i, up := range ups {
		path := fmt.Sprintf("upstreams[%d]", i)
		if !upstreamName.MatchString(up.Name) {
			v.add(path+".name", "must be 1-63 characters of a-z, 0-9, _ and -, starting with a letter or digit (it is part of the route /mcp/<name>)")
		} else if seen[up.Name] {
			v.add(path+".name", "duplicate upstream name %q", up.Name)
		}
		seen[up.Name] = true
		u, err := url.Parse(up.URL)
		switch {
		case up.Transport == TransportStdio:
			// A stdio upstream is a command, not a URL (stdio.go checks it).
		case err != nil || u.Host == "":
			v.add(path+".url", "must be an absolute URL such as http://127.0.0.1:3001/mcp")
		case u.Scheme != "http" && u.Scheme != "https":
			v.add(path+".url", "scheme must be http or https")
		case u.User != nil:
			v.add(path+".url", "must not carry credentials; configure upstream credentials separately")
		case u.Fragment != "":
			v.add(path+".url", "must not have a fragment")
		}
		if up.MaxIdleConns < 0 {
			v.add(path+".max_idle_conns", "must be positive")
		}
		v.upstreamTransport(path, up)
		v.routeAuth(path, up, hasOIDC)
		v.resilience(path, &up)
		v.pinTools(path, up.PinTools)
		v.upstreamTLS(path, up)
	}
}
