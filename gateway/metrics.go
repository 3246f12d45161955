package gateway

import (
	"cmp"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/policy"
)

// Label values stand for what the gateway does not know or will not name.
// Every label value is bounded: configured names, a fixed set of MCP
// methods, tools the upstream itself listed. Raw client input never becomes
// a label, or one client could create series without end.
const (
	labelOther = "other" // an unknown method, or a tool the upstream never listed
	labelNone  = "none"  // a request that matched no route
)

// operationBuckets are the OpenTelemetry MCP semantic conventions' advice
// for mcp.{server,client}.operation.duration, in seconds.
var operationBuckets = []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120, 300}

// decisionBuckets suit a prepared Rego query: well under a millisecond
// usually, bounded by policy.timeout (default 100ms).
var decisionBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25}

// Metrics are the gateway's Prometheus series, on one registry that the
// admin listener serves at /metrics. Create them with NewMetrics; a
// gateway built without them makes its own.
//
// Other concerns add their series to Registry (a cache, circuit breakers),
// so one scrape sees everything.
type Metrics struct {
	registry *prometheus.Registry

	serverOps       *prometheus.HistogramVec
	clientOps       *prometheus.HistogramVec
	requests        *prometheus.CounterVec
	policyDecisions *prometheus.HistogramVec
	policyReloads   *prometheus.CounterVec
	policyRevision  *prometheus.GaugeVec
	// revisionMu orders revision changes; revision is the series shown.
	revisionMu       sync.Mutex
	revision         string
	authFailures     *prometheus.CounterVec
	upstreamAttempts *prometheus.CounterVec
	sessionsStarted  *prometheus.CounterVec
	sessionsEnded    *prometheus.CounterVec
	openStreams      *prometheus.GaugeVec
	cache            *cacheMetrics
	rateLimited      *prometheus.CounterVec
	redactions       *prometheus.CounterVec
	events           *prometheus.CounterVec
	fanoutReceived   prometheus.Counter
	secondLevel      *prometheus.CounterVec
}

// NewMetrics creates the gateway's series on a new registry, with the Go
// runtime and process collectors beside them.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := factory{reg}
	opLabels := func(peer string) []string {
		return []string{"mcp_method_name", "gen_ai_tool_name", peer, "error_type", "mcp_protocol_version"}
	}
	return &Metrics{
		registry: reg,
		serverOps: f.histogram("mcp_server_operation_duration_seconds",
			"MCP operations clients asked of the gateway (OpenTelemetry mcp.server.operation.duration), from request to the end of the answer.",
			operationBuckets, opLabels("route")...),
		clientOps: f.histogram("mcp_client_operation_duration_seconds",
			"MCP operations the gateway asked of upstreams (OpenTelemetry mcp.client.operation.duration), from sending to the end of the answer.",
			operationBuckets, opLabels("upstream")...),
		requests: f.counter("ctxgate_requests_total",
			"Requests by outcome: allowed (forwarded), denied (policy, Host/Origin, scope), unauthenticated, error.", "route", "outcome"),
		policyDecisions: f.histogram("ctxgate_policy_decision_duration_seconds",
			"Time the policy took to decide a request (phase request) or a server-to-client request (phase response).",
			decisionBuckets, "phase", "result"),
		policyReloads: f.counter("ctxgate_policy_reloads_total",
			"Policy reloads that changed the policy (ok) or were rejected, keeping the last good one (failed).", "result"),
		policyRevision: f.gauge("ctxgate_policy_revision_info",
			"The revision of the policy deciding now (value 1).", "revision"),
		authFailures: f.counter("ctxgate_authentication_failures_total",
			"Requests refused by authentication, by reason.", "route", "reason"),
		upstreamAttempts: f.counter("ctxgate_upstream_attempts_total",
			"HTTP requests sent to upstreams, by result.", "upstream", "result"),
		sessionsStarted: f.counter("ctxgate_sessions_started_total",
			"Sessions minted on a successful initialize.", "route"),
		sessionsEnded: f.counter("ctxgate_sessions_ended_total",
			"Sessions ended by the client (a DELETE the upstream accepted).", "route"),
		openStreams: f.gauge("ctxgate_open_streams",
			"Open SSE streams relayed to clients: kind get (server streams) or post (streamed answers).", "route", "kind"),
		cache: newCacheMetrics(f),
		rateLimited: f.counter("ctxgate_rate_limited_total",
			"Requests refused with 429 by a per-principal or per-tool rate limit.", "upstream"),
		redactions: f.counter("ctxgate_redactions_total",
			"Values the policy's redactions replaced in upstream messages before they reached a client, by channel: result, error, notification, server_request.", "upstream", "channel"),
		events: f.counter("ctxgate_invalidation_events_total",
			"Invalidation events from context sources, by source (admin: POST /admin/invalidate; redis_stream: redis.events) and result (applied; poison: malformed, skipped; failed: applied here but not sent to the other replicas).", "source", "result"),
		fanoutReceived: f.counter("ctxgate_cache_fanout_received_total",
			"Cache invalidations other replicas published on Redis and this one applied.").WithLabelValues(),
		secondLevel: f.counter("ctxgate_cache_second_level_total",
			"Lookups and stores of the cache's second level on Redis (after a first-level miss): hit, miss, unsealable (sealed under a key not configured), stored, error (Redis did not answer: served as a miss).", "result"),
	}
}

// factory creates and registers series on one registry.
type factory struct{ reg *prometheus.Registry }

func (f factory) histogram(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) counter(name, help string, labels ...string) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

func (f factory) gauge(name, help string, labels ...string) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(v)
	return v
}

// Registry is where the series are registered. Other packages' collectors
// belong here too, so /metrics serves them.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// PolicyReloaded is a policy.Options.OnReload hook: it counts the reload
// and moves the revision gauge.
func (m *Metrics) PolicyReloaded(revision string, err error) {
	if err != nil {
		m.policyReloads.WithLabelValues("failed").Inc()
		return
	}
	// The revision moves before the count, so a scrape that sees the
	// reload counted sees the revision it brought.
	m.setPolicyRevision(revision)
	m.policyReloads.WithLabelValues("ok").Inc()
}

// setPolicyRevision makes revision the only series of the info gauge: the
// new series is set before the old one goes, so no scrape finds none.
func (m *Metrics) setPolicyRevision(revision string) {
	m.revisionMu.Lock()
	defer m.revisionMu.Unlock()
	m.policyRevision.WithLabelValues(revision).Set(1)
	if m.revision != "" && m.revision != revision {
		m.policyRevision.DeleteLabelValues(m.revision)
	}
	m.revision = revision
}

// initRoutes creates the zero series a dashboard expects from the start,
// so rates work before the first event.
func (m *Metrics) initRoutes(routes []string) {
	m.policyReloads.WithLabelValues("ok")
	m.policyReloads.WithLabelValues("failed")
	for _, r := range routes {
		m.sessionsStarted.WithLabelValues(r)
		m.sessionsEnded.WithLabelValues(r)
		m.rateLimited.WithLabelValues(r)
		for _, kind := range []string{"get", "post"} {
			m.openStreams.WithLabelValues(r, kind)
		}
	}
}

// observeRequest records one finished request from its state: the outcome
// counter for every request, the operation histogram for each MCP message
// posted alone.
func (m *Metrics) observeRequest(st *requestState, status int, d time.Duration) {
	if st.relayed {
		return // counted once, as the request that served its message
	}
	route := cmp.Or(st.upstream, labelNone)
	m.requests.WithLabelValues(route, st.outcome()).Inc()
	m.observeCache(st)
	if st.msg == nil || st.msg.Request() == nil {
		return // no single MCP operation: a GET stream, a DELETE, a batch, a client's answer, a rejection before decoding
	}
	m.serverOps.WithLabelValues(methodLabel(st.msg.Method()), st.toolLabel, route, st.errorType(status), st.version).Observe(d.Seconds())
}

// observeDecision records one policy decision's latency.
func (m *Metrics) observeDecision(phase string, d policy.Decision, took time.Duration) {
	result := "allow"
	switch {
	case d.Failure != "":
		result = "failure"
	case !d.Allow:
		result = "deny"
	}
	m.policyDecisions.WithLabelValues(phase, result).Observe(took.Seconds())
}

// outcome classifies a finished request for ctxgate_requests_total.
func (st *requestState) outcome() string {
	switch {
	case st.decision == decisionDeny:
		return "denied"
	case st.err == nil:
		return "allowed"
	case st.err.Code == CodeUnauthenticated:
		return "unauthenticated"
	case st.err.Code == CodeForbidden, st.err.Code == CodeInsufficientScope:
		return "denied"
	}
	return "error"
}

// errorType is the OpenTelemetry error.type of an operation: the JSON-RPC
// error code the client got (the gateway's, or the upstream's when the
// gateway read the answer), else an HTTP error status, else "" (success).
func (st *requestState) errorType(status int) string {
	switch {
	case st.err != nil:
		return strconv.FormatInt(st.err.Code, 10)
	case st.rpcError != "":
		return st.rpcError // bounded by rpcErrorType
	case status >= 400:
		return strconv.Itoa(status)
	}
	return ""
}

// clientNotifications are the notifications a client sends that become
// label values as they are.
var clientNotifications = map[string]bool{
	"notifications/initialized": true, "notifications/cancelled": true, "notifications/progress": true,
	"notifications/roots/list_changed": true,
}

func methodLabel(method string) string {
	// Only names MCP defines (the requests a client may send, and its
	// notifications): raw client input never becomes a label.
	if mcpwire.IsClientMethod(method) || clientNotifications[method] {
		return method
	}
	return labelOther
}

// toolLabel is a tools/call's tool as a label value: its name if the
// upstream listed it, else "other"; "" for other methods.
func (s *Server) toolLabel(upstreamName string, t target) string {
	if t.kind != "tool" {
		return ""
	}
	if _, ok := s.catalog.tool(upstreamName, t.name); ok {
		return t.name
	}
	return labelOther
}

// rpcErrorType is an upstream's JSON-RPC error code as an error.type value.
// Codes outside the ranges JSON-RPC, MCP and the gateway use are "other":
// an upstream must not be able to mint series either.
func rpcErrorType(code int64) string {
	if code >= -32768 && code <= -31000 {
		return strconv.FormatInt(code, 10)
	}
	return labelOther
}
