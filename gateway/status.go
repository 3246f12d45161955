package gateway

import (
	_ "embed"
	"fmt"
	"html/template"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/ctxgate/ctxgate/policy"
)

// The status page: GET /status on the admin listener, behind the admin
// token like every admin endpoint. One server-rendered HTML page
// (html/template escapes every value), no external assets and no
// JavaScript, so it works in any browser, in a terminal browser and
// through a port-forward: each upstream, the policy, the cache, rate
// limiting and the last decisions.

//go:embed status.html
var statusHTML string

var statusTemplate = template.Must(template.New("status").Funcs(template.FuncMap{
	"since": func(now, t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	},
}).Parse(statusHTML))

// recentDecisions is how many decisions the status page shows.
const recentDecisions = 20

// decisionRing keeps the last decisions for the status page: who, what
// and the verdict, never arguments or results (nothing a decision log's
// mask would have to hide).
type decisionRing struct {
	mu   sync.Mutex
	next int
	buf  [recentDecisions]*decisionView
}

type decisionView struct {
	At                                 time.Time
	Principal, Method, Target, Phase   string
	Allow                              bool
	Reason, Failure, ID, PolicyVersion string
}

func (d *decisionRing) add(at time.Time, in *policy.Input, dec policy.Decision) {
	if in.Phase == policy.PhaseListItem {
		return // one per list item would push the requests out of view
	}
	v := &decisionView{At: at, Principal: in.Principal.ID, Method: in.Method, Phase: in.Phase,
		Allow: dec.Allow, Reason: clip(dec.Reason, 200), Failure: dec.Failure, ID: dec.ID, PolicyVersion: dec.Revision}
	switch {
	case in.Tool != nil:
		v.Target = in.Tool.Name
	case in.Resource != nil:
		v.Target = in.Resource.URI
	case in.Prompt != nil:
		v.Target = in.Prompt.Name
	}
	v.Target = clip(v.Target, 120)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.buf[d.next] = v
	d.next = (d.next + 1) % len(d.buf)
}

// list returns the decisions, newest first.
func (d *decisionRing) list() []*decisionView {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*decisionView
	for i := range len(d.buf) {
		if v := d.buf[(d.next-1-i+2*len(d.buf))%len(d.buf)]; v != nil {
			out = append(out, v)
		}
	}
	return out
}

type statusPage struct {
	Now                      time.Time
	Upstreams                []statusUpstream
	Policy                   *policy.Status
	Cache                    *statusCache
	Decisions                []*decisionView
	Degraded, RateLimitedAny bool
}

type statusUpstream struct {
	Name, URL, Transport, Era string
	Reachability, Health      string // reachable | degraded | unknown; the probe's detail
	CheckedAt                 time.Time
	Breaker                   string
	OpenStreams               int
	Requests, Errors          int64
	LastError                 string
	RateLimit                 string
	RateLimited               int
}

type statusCache struct {
	Hits, Misses, Stale, Bypass uint64
	Entries                     int
	MiB, MaxMiB                 float64
}

// status serves the status page.
func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	page := statusPage{Now: s.now(), Decisions: s.decisions.list()}
	gauges := s.metricValues("ctxgate_open_streams", "ctxgate_rate_limited_total")
	for _, rt := range s.statusRoutes {
		page.Upstreams = append(page.Upstreams, s.statusOf(rt, gauges))
	}
	for _, u := range page.Upstreams {
		page.Degraded = page.Degraded || u.Reachability == "degraded"
		page.RateLimitedAny = page.RateLimitedAny || u.RateLimit != ""
	}
	if s.policy != nil {
		st := s.policy.Status()
		page.Policy = &st
	}
	if s.cache != nil {
		c := s.cache.Stats()
		page.Cache = &statusCache{Hits: c.Hits, Misses: c.Misses, Stale: c.StaleServed, Bypass: c.Bypass, Entries: c.Entries,
			MiB: float64(c.Bytes) / (1 << 20), MaxMiB: float64(c.MaxBytes) / (1 << 20)}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// The page needs nothing from anywhere: forbid everything else, so a
	// value that slipped past escaping could still not run or load.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
	if err := statusTemplate.Execute(w, page); err != nil {
		s.log.Error("status page", "error", err)
	}
}

func (s *Server) statusOf(rt *route, gauges map[string]float64) statusUpstream {
	up := rt.upstream
	u := statusUpstream{Name: up.Name, URL: redactedURL(up.URL), Transport: "Streamable HTTP over " + up.URL.Scheme,
		Reachability: "unknown", Breaker: up.Resilience.Stats().Breaker}
	if p, ok := s.health.get(up.Name); ok {
		u.Reachability, u.Health, u.CheckedAt = "degraded", p.Detail, p.At
		if p.Reachable {
			u.Reachability = "reachable"
		}
	}
	u.Era = "not learned yet (learned at the first request)"
	if rt.era != nil {
		rt.era.mu.Lock()
		if v := rt.era.versions; v != nil {
			eras := []string{}
			if slices.Contains(v, modernVersions[0]) {
				eras = append(eras, "modern ("+modernVersions[0]+")")
			}
			if slices.ContainsFunc(v, isSupportedVersion) {
				eras = append(eras, "legacy (sessions)")
			}
			u.Era = strings.Join(eras, ", ")
		}
		rt.era.mu.Unlock()
	}
	if rt.bridge != nil {
		u.Era += "; modern clients bridged"
	}
	u.OpenStreams = int(gauges["ctxgate_open_streams{kind=get,route="+up.Name+"}"] + gauges["ctxgate_open_streams{kind=post,route="+up.Name+"}"])
	u.RateLimited = int(gauges["ctxgate_rate_limited_total{route="+up.Name+"}"])
	if st := s.upstreamStats[up.Name]; st != nil {
		u.Requests, u.Errors = st.requests.Load(), st.errors.Load()
		st.mu.Lock()
		u.LastError = st.lastError
		st.mu.Unlock()
	}
	for _, c := range s.cfg.Upstreams {
		if c.Name != up.Name {
			continue
		}
		var parts []string
		if r := c.RateLimit.PerPrincipal; r != nil {
			parts = append(parts, "per principal "+formatRate(r.RPS, r.Burst))
		}
		for _, tool := range slices.Sorted(maps.Keys(c.RateLimit.PerTool)) {
			r := c.RateLimit.PerTool[tool]
			parts = append(parts, tool+" "+formatRate(r.RPS, r.Burst))
		}
		u.RateLimit = strings.Join(parts, "; ")
	}
	return u
}

// metricValues reads the named series from the gateway's registry, keyed
// name{label=value,...} with the labels in name order (as the registry
// sorts them), so the page shows what /metrics shows.
func (s *Server) metricValues(names ...string) map[string]float64 {
	out := map[string]float64{}
	families, err := s.metrics.registry.Gather()
	if err != nil {
		return out
	}
	for _, f := range families {
		if !slices.Contains(names, f.GetName()) {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = metricValue(m)
		}
	}
	return out
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	return 0
}

func formatRate(rps float64, burst int) string {
	return fmt.Sprintf("%g/s, burst %d", rps, burst)
}
