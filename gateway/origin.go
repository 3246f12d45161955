package gateway

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/ctxgate/ctxgate/config"
)

// originGuard defends against DNS rebinding and cross-site calls, as the
// MCP transport spec requires of servers. The gateway checks Host and Origin
// itself: a proxy in front that rewrites Host would hide a rebinding attack
// from the upstream, so the upstream's own check cannot be relied on.
type originGuard struct {
	loopback bool            // the listener is on loopback: loopback Hosts are accepted
	ipHosts  bool            // any IP-literal Host is accepted (the admin listener)
	hosts    map[string]bool // accepted Host names (lower case, without port)
	origins  map[string]bool // accepted Origin values (scheme://host[:port])
}

func newOriginGuard(cfg config.Server) *originGuard {
	g := &originGuard{hosts: map[string]bool{}, origins: map[string]bool{}}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		g.loopback = isLoopbackName(host)
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil && u.Host != "" {
		g.hosts[strings.ToLower(u.Hostname())] = true
		g.origins[strings.ToLower(u.Scheme+"://"+u.Host)] = true
	}
	for _, h := range cfg.AllowedHosts {
		g.hosts[strings.ToLower(hostname(h))] = true
	}
	for _, o := range cfg.AllowedOrigins {
		g.origins[strings.ToLower(o)] = true
	}
	return g
}

// newAdminGuard is the admin listener's guard: Host and Origin checked as
// on the MCP listener, so a web page in an operator's browser cannot reach
// the admin plane by DNS rebinding or a cross-site request. An IP-literal
// Host is accepted: a rebinding page always sends its own DNS name, while
// Kubernetes probes and Prometheus scrapes send the pod's IP. No Origin
// is configured: the admin plane serves no browser application, so only
// same-origin is accepted.
func newAdminGuard(cfg config.Admin) *originGuard {
	g := &originGuard{ipHosts: true, hosts: map[string]bool{}, origins: map[string]bool{}}
	if host, _, err := net.SplitHostPort(cfg.Listen); err == nil {
		g.loopback = isLoopbackName(host)
		if host != "" {
			g.hosts[strings.ToLower(host)] = true
		}
	}
	for _, h := range cfg.AllowedHosts {
		g.hosts[strings.ToLower(hostname(h))] = true
	}
	return g
}

func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostname strips the port from a Host value, keeping IPv6 brackets off.
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

func (g *originGuard) check(r *http.Request) error {
	host := strings.ToLower(hostname(r.Host))
	if !g.hosts[host] && !(g.loopback && isLoopbackName(host)) && !(g.ipHosts && net.ParseIP(host) != nil) {
		return newError(http.StatusForbidden, CodeForbidden, "Host not allowed", nil)
	}
	origins := r.Header.Values("Origin")
	if len(origins) == 0 {
		return nil // not a browser request
	}
	origin := strings.ToLower(origins[0])
	// Same-origin is allowed: the Host was just verified, and a page served
	// from this very origin is not a cross-site caller.
	if len(origins) == 1 && (g.origins[origin] || origin == "http://"+strings.ToLower(r.Host) && r.TLS == nil || origin == "https://"+strings.ToLower(r.Host) && r.TLS != nil) {
		return nil
	}
	return newError(http.StatusForbidden, CodeForbidden, "Origin not allowed", nil)
}

// checkHostOrigin is the middleware form of originGuard.check.
func (s *Server) checkHostOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.origins.check(r); err != nil {
			writeError(w, r, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}
