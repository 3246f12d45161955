package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Route is a federated route: one gateway URL in front of several
// upstreams (its members), whose lists are merged and whose calls are
// routed to the member that owns the name. Every upstream also keeps its
// own route at /mcp/<name>.
type Route struct {
	// Path is where the route is served, e.g. /mcp. It must not be an
	// upstream's own /mcp/<name> path.
	Path string `yaml:"path"`
	// Name is what the policy sees as input.route; empty means Path.
	Name string `yaml:"name"`
	// Upstreams are the members, by upstream name, in the order their
	// items are listed.
	Upstreams []string `yaml:"upstreams"`
	// Prefix says when tool and prompt names (and resource URIs) get their
	// member's name in front: always (the default), collision (only names
	// two members share) or never (a shared name is a start-up error).
	Prefix string `yaml:"prefix"`
	// Separator goes between the member name and the item name; the
	// default is "__" (git__search).
	Separator string `yaml:"separator"`
	// MemberTimeout bounds each member's part of a merged list or of the
	// federated initialize; a member slower than this is left out of the
	// answer (partial) rather than holding up the others.
	MemberTimeout time.Duration `yaml:"member_timeout"`
	// MemberStaleFor bounds the age of a member's last good list page that
	// stands in for a member that fails: within it the page is listed and
	// marked stale; past it the member's items are not listed and the
	// answer names it missing. Short by default, so tools of a member that
	// has been down for long are not offered while every call fails.
	MemberStaleFor time.Duration `yaml:"member_stale_for"`
}

// Prefix modes of a federated route.
const (
	PrefixAlways    = "always"
	PrefixCollision = "collision"
	PrefixNever     = "never"
)

// Route defaults.
const (
	DefaultRouteSeparator      = "__"
	DefaultRouteMemberTimeout  = 5 * time.Second
	DefaultRouteMemberStaleFor = time.Minute
)

var routeSeparator = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,8}$`)

func (c *Config) applyRouteDefaults() {
	for i := range c.Routes {
		r := &c.Routes[i]
		setDefault(&r.Name, r.Path)
		setDefault(&r.Prefix, PrefixAlways)
		setDefault(&r.Separator, DefaultRouteSeparator)
		setDefault(&r.MemberTimeout, DefaultRouteMemberTimeout)
		setDefault(&r.MemberStaleFor, DefaultRouteMemberStaleFor)
	}
}

func (v *validator) routes(routes []Route, ups []Upstream) {
	known := map[string]bool{}
	for _, up := range ups {
		known[up.Name] = true
	}
	paths := map[string]bool{}
	for i, r := range routes {
		path := fmt.Sprintf("routes[%d]", i)
		switch {
		case !strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, "?#{}* ") || strings.HasSuffix(r.Path, "/") && r.Path != "/":
			v.add(path+".path", "must be an absolute path without a trailing slash, e.g. /mcp")
		case strings.HasPrefix(r.Path, "/.well-known/"):
			v.add(path+".path", "must not be under /.well-known/")
		case strings.HasPrefix(r.Path, "/mcp/") && known[strings.TrimPrefix(r.Path, "/mcp/")]:
			v.add(path+".path", "%s is upstream %q's own route; choose another path", r.Path, strings.TrimPrefix(r.Path, "/mcp/"))
		case paths[r.Path]:
			v.add(path+".path", "duplicate route path %q", r.Path)
		}
		paths[r.Path] = true
		if len(r.Upstreams) < 2 {
			v.add(path+".upstreams", "a federated route needs at least two upstreams; a single upstream is already served at /mcp/<name>")
		}
		members := map[string]bool{}
		for j, name := range r.Upstreams {
			switch {
			case !known[name]:
				v.add(fmt.Sprintf("%s.upstreams[%d]", path, j), "unknown upstream %q; it must be one of upstreams[].name", name)
			case members[name]:
				v.add(fmt.Sprintf("%s.upstreams[%d]", path, j), "upstream %q is listed twice", name)
			}
			members[name] = true
		}
		switch r.Prefix {
		case PrefixAlways, PrefixCollision, PrefixNever:
		default:
			v.add(path+".prefix", "must be one of always, collision, never")
		}
		if !routeSeparator.MatchString(r.Separator) {
			v.add(path+".separator", "must be 1-8 characters of A-Z, a-z, 0-9, _, . and - (characters MCP allows in tool names)")
		}
		if r.MemberTimeout <= 0 {
			v.add(path+".member_timeout", "must be positive, e.g. 5s")
		}
		if r.MemberStaleFor <= 0 {
			v.add(path+".member_stale_for", "must be positive, e.g. 1m")
		}
	}
}
