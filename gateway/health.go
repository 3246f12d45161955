package gateway

import (
	"context"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/ctxgate/ctxgate/upstream"
)

// Upstream health. At start-up and every health interval the gateway opens
// (and closes) a TCP connection to each upstream: reachability without a
// request, so an upstream's sessions, logs and request counts see nothing
// of it, and no breaker counts it. (`ctxgate check --probe` asks more:
// ProbeUpstream sends an initialize.) An upstream that cannot be reached
// is logged as a warning once, when it goes down, and once more when it is
// back; /readyz (with the admin token) and /status show it as degraded.
//
// Readiness stays 200 with a degraded upstream, deliberately: every
// replica shares the same upstreams, so a readiness failure would take all
// of them out of the load balancer at once, and the routes of the healthy
// upstreams with them. A dead upstream is the breaker's and the stale
// cache's business; /readyz answers "can this replica serve", not "is
// everything behind it up".

// Health defaults; Options.HealthInterval overrides the interval.
const (
	DefaultHealthInterval = 30 * time.Second
	healthTimeout         = 5 * time.Second
)

// healthState is the last probe of each upstream.
type healthState struct {
	mu     sync.Mutex
	probes map[string]Probe
}

func (h *healthState) get(name string) (Probe, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p, ok := h.probes[name]
	return p, ok
}

// set records a probe and reports whether reachability changed (or this is
// the first probe).
func (h *healthState) set(name string, p Probe) (changed, first bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.probes == nil {
		h.probes = map[string]Probe{}
	}
	old, ok := h.probes[name]
	h.probes[name] = p
	return !ok || old.Reachable != p.Reachable, !ok
}

// runHealth probes every upstream every interval until ctx ends (Serve
// probes once itself before it is ready). interval <= 0 disables it.
func (s *Server) runHealth(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		s.probeUpstreams(ctx)
	}
}

// probeUpstreams probes every upstream in parallel and logs the changes.
func (s *Server) probeUpstreams(ctx context.Context) {
	var wg sync.WaitGroup
	for _, up := range s.pool.All() {
		wg.Go(func() {
			p := dialUpstream(ctx, up, healthTimeout, s.now)
			if ctx.Err() != nil {
				return // shutting down: not the upstream's failure
			}
			changed, first := s.health.set(up.Name, p)
			switch {
			case !p.Reachable && changed:
				s.log.Warn("upstream unreachable: its route answers with errors (or stale cached answers) until it is back; /readyz and /status show it degraded",
					"upstream", up.Name, "url", redactedURL(up.URL), "detail", p.Detail)
			case p.Reachable && changed && !first:
				s.log.Info("upstream reachable again", "upstream", up.Name, "detail", p.Detail)
			}
		})
	}
	wg.Wait()
}

// healthDetail is the upstreams part of /readyz's detail: each upstream's
// last probe, and whether any is degraded.
func (s *Server) healthDetail() (map[string]any, bool) {
	out := map[string]any{}
	degraded := false
	for _, up := range s.pool.All() {
		p, ok := s.health.get(up.Name)
		switch {
		case !ok:
			out[up.Name] = map[string]any{"status": "unknown"}
		case p.Reachable:
			out[up.Name] = map[string]any{"status": "reachable", "detail": p.Detail, "checked_at": p.At}
		default:
			degraded = true
			out[up.Name] = map[string]any{"status": "degraded", "detail": p.Detail, "checked_at": p.At}
		}
	}
	return out, degraded
}

// redactedURL is an upstream's URL without its query (which may hold a
// tenant key) and user information.
func redactedURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.User = "", false, nil
	return c.String()
}

// dialUpstream is one reachability check: a TCP connection to the
// upstream's host and port, within timeout; for a stdio upstream, that its
// command can be run.
func dialUpstream(ctx context.Context, up *upstream.Upstream, timeout time.Duration, now func() time.Time) Probe {
	start := now()
	if up.Stdio != nil {
		p := Probe{At: now()}
		if err := up.Stdio.Runnable(); err != nil {
			p.Detail = "stdio command: " + err.Error()
			return p
		}
		p.Reachable, p.Detail = true, "stdio command is executable (a process is started per session)"
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	port := up.URL.Port()
	if port == "" {
		port = map[string]string{"https": "443"}[up.URL.Scheme]
		if port == "" {
			port = "80"
		}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(up.URL.Hostname(), port))
	p := Probe{At: now()}
	p.Took = p.At.Sub(start)
	if err != nil {
		p.Detail = err.Error()
		return p
	}
	conn.Close()
	p.Reachable, p.Detail = true, "TCP connection in "+p.Took.Round(time.Millisecond).String()
	return p
}

// pingRedis is one round trip to the shared state's Redis, bounded by
// redis.timeout; nil without Redis.
func (s *Server) pingRedis(ctx context.Context) error {
	if s.redis == nil {
		return nil
	}
	return s.redis.Ping(ctx)
}
