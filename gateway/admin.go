package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/ctxgate/ctxgate/identity"
)

// AdminHandler serves the operator endpoints, one line each below:
//
//	/healthz           the process is alive (never needs the token)
//	/readyz            listeners up and not shutting down; the detail
//	                   (policy revision, upstreams) only with the token
//	/metrics           Prometheus
//	/status            an HTML status page for people (status.go)
//	/admin/upstreams   each upstream: url, requests, errors, last error,
//	                   circuit breaker state, retries, bulkhead rejections
//	/admin/policy      the policy's revision and reload history
//	/admin/invalidate  POST: a context source says what changed
//	                   (invalidate.go); every replica's cache drops it
//	/admin/pins        tool pins and their status; POST /admin/pins/approve
//	                   ?upstream=&tool= approves a changed or new tool
//	/admin/grants/<principal>/<upstream>  DELETE revokes a user's connected
//	                   account (user_oauth); the principal path-escaped
//	/debug/pprof/      Go's profiler, with admin.pprof only
//
// With admin.token_sha256 set, every endpoint but /healthz and /readyz
// requires Authorization: Bearer <token>. Every endpoint but /healthz and
// /readyz checks Host and Origin (newAdminGuard); a call that changes
// state (POST, DELETE) also needs the header X-Ctxgate-Admin: 1.
func (s *Server) AdminHandler() http.Handler {
	r := chi.NewRouter()
	// Probes are answered whatever their Host: a kubelet may send any, and
	// the answer without the guard passing is the bare status.
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Group(func(r chi.Router) {
		r.Use(s.checkAdminHostOrigin, s.requireAdmin, requireAdminIntent)
		r.Handle("/metrics", s.metrics.Handler())
		r.Get("/status", s.status)
		for prefix, h := range s.adminRoutes {
			r.Mount(prefix, http.StripPrefix(prefix, h))
		}
		r.Get("/admin/upstreams", s.adminUpstreams)
		r.Get("/admin/policy", s.adminPolicy)
		r.Handle("/admin/cache", s.cacheAdmin())
		r.Post("/admin/invalidate", s.adminInvalidate)
		r.Get("/admin/pins", s.adminPins)
		r.Post("/admin/pins/approve", s.adminApprovePin)
		r.Delete("/admin/grants/{principal}/{upstream}", s.adminDeleteGrant)
		if s.cfg.Admin.PProf {
			r.Mount("/debug", middleware.Profiler())
		}
	})
	return r
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	case !s.ready.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
		return
	case s.policy != nil && !s.policy.Status().Ready:
		// No bundle revision is active yet: every request would be denied.
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "policy_not_ready"})
		return
	case s.oidc != nil && !s.oidc.Ready():
		// Not ready until every issuer's keys are loaded: a replica that
		// would refuse every token must not get traffic. Once loaded,
		// keys are kept through IdP outages, so this is a start-up state.
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "waiting_for_oidc_keys"})
		return
	}
	redisErr := s.pingRedis(r.Context())
	if redisErr != nil && s.redis.Deny() {
		// on_error deny: every rate-limited request this replica gets
		// would be refused; traffic belongs on a replica that reaches Redis.
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "redis_unavailable"})
		return
	}
	detail := map[string]any{"status": "ready"}
	if !s.adminAuthorized(r) || s.adminOrigins.check(r) != nil {
		// Probes need no credential; what is deployed is not theirs to see,
		// nor a rebinding page's (a foreign Host or Origin).
		writeJSON(w, http.StatusOK, detail)
		return
	}
	if s.oidc != nil {
		detail["oidc_keys_loaded"] = s.oidc.Ready()
	}
	if s.policy != nil {
		// The policy in force, and a reload that failed (the last good
		// policy is still deciding).
		st := s.policy.Status()
		detail["policy_revision"] = st.Revision
		if st.Bundles != nil {
			detail["policy_bundles"] = st.Bundles
		}
		if st.LastReloadError != "" {
			detail["policy_reload_error"] = st.LastReloadError
		}
	}
	names := []string{}
	for _, up := range s.pool.All() {
		names = append(names, up.Name)
	}
	detail["upstreams"] = names
	// Degraded, not unready: see health.go for why readiness stays 200.
	var degraded bool
	if detail["upstream_health"], degraded = s.healthDetail(); degraded {
		detail["status"] = "degraded"
	}
	if s.redis != nil {
		// Degraded, not unready: with on_error local each replica decides
		// alone until Redis answers again.
		detail["redis"] = map[string]any{"status": "reachable"}
		if redisErr != nil {
			detail["redis"] = map[string]any{"status": "degraded", "detail": redisErr.Error()}
			detail["status"] = "degraded"
		}
	}
	writeJSON(w, http.StatusOK, detail)
}

// upstreamStatus is one entry of /admin/upstreams.
type upstreamStatus struct {
	Name string `json:"name"`
	// URL is the configured endpoint without its query, which may hold a
	// tenant key.
	URL         string    `json:"url"`
	Requests    int64     `json:"requests"`
	Errors      int64     `json:"errors"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	// CircuitBreaker is closed, open or half_open.
	CircuitBreaker     string `json:"circuit_breaker"`
	Retries            uint64 `json:"retries"`
	BulkheadRejections uint64 `json:"bulkhead_rejections"`
	// Processes is a stdio upstream's: running now, and started, crashed
	// and reaped since start-up; absent for every other transport.
	Processes *processStatus `json:"processes,omitempty"`
	// Sessions is an HTTP+SSE upstream's open sessions; absent otherwise.
	Sessions *int `json:"sessions,omitempty"`
}

type processStatus struct {
	Running int   `json:"running"`
	Started int64 `json:"started"`
	Crashed int64 `json:"crashed"`
	Reaped  int64 `json:"reaped"`
}

func (s *Server) adminUpstreams(w http.ResponseWriter, _ *http.Request) {
	out := []upstreamStatus{}
	for _, up := range s.pool.All() {
		st := s.upstreamStats[up.Name]
		st.mu.Lock()
		e := upstreamStatus{Name: up.Name, URL: redactedURL(up.URL), LastError: st.lastError, LastErrorAt: st.lastErrorAt}
		st.mu.Unlock()
		e.Requests, e.Errors = st.requests.Load(), st.errors.Load()
		res := up.Resilience.Stats()
		e.CircuitBreaker, e.Retries, e.BulkheadRejections = res.Breaker, res.Retries, res.BulkheadRejections
		if p := up.Stdio; p != nil {
			e.Processes = &processStatus{Running: p.Running(), Started: p.Started.Load(), Crashed: p.Crashed.Load(), Reaped: p.Reaped.Load()}
		}
		if up.SSE != nil {
			n := up.SSE.Sessions()
			e.Sessions = &n
		}
		out = append(out, e)
	}
	writeJSON(w, http.StatusOK, map[string]any{"upstreams": out})
}

func (s *Server) adminPolicy(w http.ResponseWriter, _ *http.Request) {
	if s.policy == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no policy engine"})
		return
	}
	writeJSON(w, http.StatusOK, s.policy.Status())
}

// adminIntentHeader must accompany every state-changing admin call. A
// browser sends a custom header cross-site only after a CORS preflight,
// which the admin listener never grants, so a web page cannot forge the
// call (a text/plain POST is a "simple" request and would otherwise go
// through: OWASP CSRF cheat sheet, custom request headers).
const adminIntentHeader = "X-Ctxgate-Admin"

// checkAdminHostOrigin refuses a foreign Host (DNS rebinding) or Origin
// (a cross-site page) before anything else is looked at.
func (s *Server) checkAdminHostOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.adminOrigins.check(r); err != nil {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": err.Error() + " on the admin listener: use an IP address, localhost, the admin.listen host or a name in admin.allowed_hosts, and no cross-site Origin"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireAdminIntent refuses a state-changing call (any method but GET
// and HEAD) without X-Ctxgate-Admin: 1.
func requireAdminIntent(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(adminIntentHeader) != "1" {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": r.Method + " on the admin listener needs the header " + adminIntentHeader + ": 1 (a defence against cross-site requests)"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireAdmin refuses a request without the admin token, when one is
// configured.
func (s *Server) requireAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.adminAuthorized(r) {
			w.Header().Set("Www-Authenticate", `Bearer realm="ctxgate-admin"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "admin token required: Authorization: Bearer <token>"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// adminAuthorized reports whether r may see admin detail: there is no
// admin token, or r presents it. The presented token's hash is compared in
// constant time, so timing reveals nothing of the configured one.
func (s *Server) adminAuthorized(r *http.Request) bool {
	if s.adminToken == nil {
		return true
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || len(token) > identity.MaxCredentialBytes {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], s.adminToken) == 1
}

// adminTokenHash decodes admin.token_sha256; nil when unset. A malformed
// one is an error, never "no token": that would open the admin plane.
func adminTokenHash(hexSum string) ([]byte, error) {
	if hexSum == "" {
		return nil, nil
	}
	b, err := hex.DecodeString(hexSum)
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("admin.token_sha256: must be 64 hex digits")
	}
	return b, nil
}
