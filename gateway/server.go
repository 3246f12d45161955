package gateway

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/identity"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/session"
	"github.com/ctxgate/ctxgate/shared"
	"github.com/ctxgate/ctxgate/upstream"
)

// Options are the gateway's injectable dependencies. Nil fields mean the
// default.
type Options struct {
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock for session issue and expiry; nil is time.Now.
	Now func() time.Time
	// Policy decides every request; nil forwards everything the other
	// checks let through (tests only: ctxgate serve always sets it).
	Policy *policy.Engine
	// Metrics receives the gateway's series and is served at /metrics;
	// nil means a registry of the gateway's own.
	Metrics *Metrics
	// TracerProvider records spans; nil means none are recorded (a valid
	// incoming trace context is still passed upstream).
	TracerProvider trace.TracerProvider
	// Cache is the response cache; nil builds one from the configuration
	// when an upstream has a cache block (on the Now clock).
	Cache *cache.Store
	// HealthInterval is how often each upstream's reachability is probed
	// (health.go), starting when Serve starts. Zero means
	// DefaultHealthInterval; negative disables probing.
	HealthInterval time.Duration
	// AdminRoutes are further handlers on the admin listener, by path
	// prefix, behind the admin token like the rest (the demo's controls
	// of its sample server). Nil: none.
	AdminRoutes map[string]http.Handler
	// Redis holds the state replicas share (rate limits); nil keeps all
	// of it in this process.
	Redis *shared.Client
	// OnReady is called once by Serve, as /readyz starts answering ready
	// (after the start-up health probe), so whatever it announces (the
	// "ctxgate listening" record start-up scripts wait for) means ready to
	// poll. Nil: nothing is called.
	OnReady func()
}

// Server is one gateway: its routes, its admin endpoints and its lifecycle.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	pool     *upstream.Pool
	auth     *identity.Authenticator
	sessions *session.Sealer
	origins  *originGuard
	// adminOrigins guards the admin listener the same way.
	adminOrigins *originGuard
	buffers      httputil.BufferPool
	// streamBuffers are the stream proxies' copy buffers (routes).
	streamBuffers httputil.BufferPool
	handler       http.Handler
	// tls is the public listener's TLS configuration; nil serves plain HTTP.
	tls *tls.Config
	// oidc verifies bearer JWTs; nil without auth.oidc.
	oidc *identity.OIDCVerifier
	// policy decides requests, list items and responses; nil allows all.
	policy decider
	// catalog remembers upstream tool annotations for decisions;
	// toolFetch fills it for a call that comes before any list.
	catalog   *catalog
	toolFetch toolFetcher
	// health is each upstream's last reachability probe, every
	// healthInterval.
	health         healthState
	healthInterval time.Duration
	// statusRoutes are the single-upstream routes and decisions the last
	// decisions, for the status page (status.go).
	statusRoutes []*route
	decisions    decisionRing
	adminRoutes  map[string]http.Handler
	// pins holds the tool pins of upstreams with pin_tools (pinning.go).
	pins *pinStore
	// schemas holds tool input schemas for argument validation (argschema.go).
	schemas *schemaStore
	metrics *Metrics
	tracer  trace.Tracer
	// adminToken is the SHA-256 of the admin bearer token; nil: none.
	adminToken []byte
	// now is the clock of sessions, rate limits and idempotency windows.
	now func() time.Time
	// upstreamStats feed /admin/upstreams, by upstream name.
	upstreamStats map[string]*upstreamStats
	// cache holds raw upstream answers (cache.go); nil caches nothing.
	cache *cache.Store
	// listeners are the cache's change listeners by upstream name
	// (cachelisten.go), started by Serve.
	listeners sync.Map
	// federated are the federated routes (federation.go).
	federated []*route

	ready    atomic.Bool // listeners are up
	draining atomic.Bool // shutdown began: not ready, streams closing
	// admission bounds the requests and streams the gateway works on at
	// once (admission.go).
	admission *admission
	// streams is cancelled at shutdown; long-lived GET streams watch it and
	// end at an event boundary.
	streams     context.Context
	stopStreams context.CancelFunc
	// redis is the shared state's client; nil: everything in memory.
	redis *shared.Client
	// fanout sends cache invalidations to the other replicas and follows
	// theirs; nil without redis or without a cache (invalidate.go).
	fanout *shared.Fanout
	// replicaName names this process among the replicas.
	replicaName string
	// sealer seals the cache's second level on Redis; nil: no second
	// level (cachel2.go).
	sealer *cache.Sealer
	// subscriptions are the open streams and the sessions' resource
	// subscriptions (subscriptions.go).
	subscriptions *subscriptionRegistry
	// onReady is Options.OnReady.
	onReady func()
	// old are the HTTP+SSE (2024-11-05) client sessions open here
	// (oldclient.go).
	old *oldClients
}

// New builds a gateway for a validated configuration.
func New(cfg *config.Config, pool *upstream.Pool, opts Options) (*Server, error) {
	s := &Server{cfg: cfg, pool: pool, log: opts.Logger, origins: newOriginGuard(cfg.Server), adminOrigins: newAdminGuard(cfg.Admin), buffers: newBufferPool(), catalog: newCatalog(), schemas: newSchemaStore()}
	if opts.Policy != nil {
		s.policy = opts.Policy
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.metrics = opts.Metrics
	if s.metrics == nil {
		s.metrics = NewMetrics()
	}
	var tp trace.TracerProvider = noop.NewTracerProvider()
	if opts.TracerProvider != nil {
		tp = opts.TracerProvider
	}
	s.tracer = tp.Tracer(tracerName)
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	s.now = now
	s.healthInterval, s.adminRoutes = opts.HealthInterval, opts.AdminRoutes
	s.redis = opts.Redis
	s.onReady = opts.OnReady
	s.old = newOldClients()
	if s.healthInterval == 0 {
		s.healthInterval = DefaultHealthInterval
	}
	var err error
	if s.adminToken, err = adminTokenHash(cfg.Admin.TokenSHA256); err != nil {
		return nil, err
	}
	if s.auth, err = identity.NewAuthenticator(cfg.Auth); err != nil {
		return nil, err
	}
	if s.pins, err = newPinStore(cfg.Upstreams); err != nil {
		return nil, err
	}
	if cfg.Server.TLS != nil {
		if s.tls, err = identity.NewTLSConfig(cfg.Server.TLS, s.log, now); err != nil {
			return nil, err
		}
	}
	if cfg.Auth.MTLS != nil {
		s.auth.Certs = identity.NewCertIdentity(cfg.Auth.MTLS)
	}
	if len(cfg.Auth.OIDC) > 0 {
		// Discovery and key fetches start now, in the background; until an
		// issuer's keys arrive its tokens are refused (fail closed).
		if s.oidc, err = identity.NewOIDCVerifier(cfg.Auth.OIDC, identity.OIDCOptions{Now: now, Log: s.log}); err != nil {
			return nil, fmt.Errorf("auth.oidc: %w", err)
		}
		s.auth.Tokens = s.oidc
	}
	secrets := make([][]byte, 0, len(cfg.Sessions.Keys))
	for _, k := range cfg.Sessions.Keys {
		secrets = append(secrets, []byte(k))
	}
	if len(secrets) == 0 {
		s.log.Warn("no sessions.keys configured: using a random session key; sessions will not survive a restart or work across replicas")
		secrets = [][]byte{session.RandomSecret()}
	}
	if s.sessions, err = session.NewSealer(secrets, cfg.Sessions.TTL, now); err != nil {
		return nil, fmt.Errorf("sessions: %w", err)
	}
	if s.cache, err = newCache(cfg, opts.Cache, now); err != nil {
		return nil, err
	}
	s.replicaName = newReplicaName()
	s.subscriptions = newSubscriptionRegistry()
	if s.redis != nil && s.cache != nil {
		if slices.ContainsFunc(cfg.Cache.EncryptionKeys, func(k string) bool { return k != "" }) {
			if s.sealer, err = cache.NewSealer(cfg.Cache.EncryptionKeys); err != nil {
				return nil, fmt.Errorf("cache.encryption_keys: %w", err)
			}
		} else {
			s.log.Info("cache entries stay in each replica's memory: set cache.encryption_keys to share them on Redis (sealed)")
		}
	}
	if s.redis != nil && len(s.pins.sets) > 0 {
		s.pins.shareWith(context.Background(), s.redis, s.log)
	}
	if s.redis != nil && (s.cache != nil || len(s.pins.sets) > 0) {
		everything, _ := json.Marshal(s.everything())
		s.fanout = s.redis.NewFanout(s.replicaName, everything, s.log)
		fanout := s.fanout
		// Registered once per registry: tests may build several servers
		// on one Metrics.
		_ = s.metrics.registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ctxgate_cache_fanout_in_step",
			Help: "1 while this replica follows every invalidation and pin change published on Redis (its cache is used), 0 while it may have missed one (its cache is bypassed; its pins are read again when back in step).",
		}, func() float64 {
			if fanout.Synced() {
				return 1
			}
			return 0
		}))
	}
	s.streams, s.stopStreams = context.WithCancel(context.Background())
	s.admission = newAdmission(cfg.Server)
	s.streamBuffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 4<<10); return &b }}}
	s.upstreamStats = map[string]*upstreamStats{}
	var names []string
	for _, up := range pool.All() {
		s.upstreamStats[up.Name] = &upstreamStats{}
		names = append(names, up.Name)
	}
	s.metrics.initRoutes(names)
	if err := s.metrics.registry.Register(resilienceCollector{pool}); err != nil {
		return nil, fmt.Errorf("register resilience metrics: %w", err)
	}
	if err := s.metrics.registry.Register(stdioCollector{pool}); err != nil {
		return nil, fmt.Errorf("register stdio metrics: %w", err)
	}
	if err := s.metrics.registry.Register(admissionCollector{s.admission}); err != nil {
		return nil, fmt.Errorf("register admission metrics: %w", err)
	}
	if s.cache != nil {
		s.metrics.registerStore(s.cache)
	}
	if s.policy != nil {
		s.metrics.setPolicyRevision(s.policy.Revision())
	}
	s.handler = s.chain()
	if err := s.checkNameCollisions(context.Background()); err != nil {
		return nil, err
	}
	return s, nil
}

// Handler is the public MCP handler with the whole middleware chain.
func (s *Server) Handler() http.Handler { return s.handler }

// chain builds the public handler. This is the only place the order of the
// middleware is decided; each step's position has a reason. The order of a
// route's own stages, behind authenticate, is request.go's (serveRoute).
func (s *Server) chain() http.Handler {
	r := chi.NewRouter()
	// 1. Request id and access log wrap everything else, so every line and
	//    every rejection below carries the id.
	r.Use(s.requestLog)
	// 2. A panic anywhere below becomes a 500 through the error writer, and
	//    so a logged access record with its stack, never a crashed process.
	r.Use(s.recoverer)
	// 3. Host and Origin before authentication: a DNS-rebinding page must
	//    learn nothing, not even whether a credential is needed.
	r.Use(s.checkHostOrigin)
	// 4. Body size bound before anything reads the body.
	r.Use(s.limitBody)
	// 5. Admission (server.max_inflight) before the body is read and the
	//    token verified: under overload the cheapest answer is a 503 now,
	//    not a denial after queueing for CPU (admission.go).
	r.Use(s.admit)
	// Protected-resource metadata is public: clients read it to learn where
	// to get a token.
	r.Get(wellKnownPRM, s.protectedResource(nil))
	own := s.routes()
	s.statusRoutes = own
	for _, rt := range append(own, s.federations(own)...) {
		r.Get(wellKnownPRM+rt.path, s.protectedResource(rt))
		handler := s.serveRoute(rt)
		if rt.fed != nil {
			handler = s.serveFederated(rt)
		}
		// 6. Authentication, per route so a challenge can name the route's
		//    metadata: every route handler runs with a verified Principal.
		r.With(s.authenticate(rt)).Handle(rt.path, handler)
		// The same route for HTTP+SSE (2024-11-05) clients, behind the
		// same chain; each message is served by handler (oldclient.go).
		r.With(s.authenticate(rt)).Handle(rt.path+"/sse", s.serveOld(rt, handler, true))
		r.With(s.authenticate(rt)).Handle(rt.path+"/messages", s.serveOld(rt, handler, false))
	}
	// 7. The connect-your-account pages of user_oauth upstreams
	//    (connect.go): reached by a browser, not an MCP client.
	s.mountConnect(r, own)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, newError(http.StatusNotFound, CodeInvalidRequest, "no MCP route at this path; routes are /mcp/<upstream>", nil))
	})
	return r
}

// routes builds one route per upstream, at /mcp/<name>.
func (s *Server) routes() []*route {
	base := strings.TrimSuffix(s.cfg.Server.PublicURL, "/")
	byName := map[string]config.Upstream{}
	for _, c := range s.cfg.Upstreams {
		byName[c.Name] = c
	}
	var out []*route
	for _, up := range s.pool.All() {
		c := byName[up.Name]
		rt := &route{
			path:            "/mcp/" + up.Name,
			upstream:        up,
			requiredScopes:  c.RequiredScopes,
			identityHeaders: c.IdentityHeaders,
			cache:           c.Cache,
			res:             newRouteResilience(c, s.now, s.redis),
			era:             &upstreamEra{},
		}
		if c.Bridge {
			rt.bridge = newBridgeSessions(s.cfg.Sessions.TTL)
			rt.bridge.gone = up.SessionGone
			// In the background: the last request using the session is
			// being answered, and a process may take its grace to end.
			rt.bridge.end = func(sess *bridgeSession) { go s.endBridge(rt, sess) }
		}
		rt.resource = base + rt.path
		rt.metadataURL = base + wellKnownPRM + rt.path
		// Each attempt the executor makes is one attemptTransport round trip.
		// Outermost, the request's admission slot is given up while the
		// upstream has it (waiting in the bulkhead, retries, the answer).
		if up.Stdio != nil {
			up.Stdio.Log = s.log // each process logs with its upstream and pid
		}
		attempts := &attemptTransport{s: s, name: up.Name, next: up.Transport, stats: s.upstreamStats[up.Name]}
		rt.transport = admissionTransport{up.Resilience.RoundTripper(attempts)}
		rt.proxy = s.newProxy(rt, rt.transport)
		// A relayed stream hands over one event per read (several for a
		// large one), so 4 KiB copies lose nothing, and 1,000 open streams
		// hold 4 MiB of buffers, not 32 (issue 15).
		sp := s.newProxy(rt, rt.transport)
		sp.BufferPool = s.streamBuffers
		rt.streamProxy = sp
		out = append(out, rt)
	}
	return out
}

func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // net/http's way to abort a response mid-stream
			}
			writeError(w, r, fmt.Errorf("panic: %v\n%s", v, debug.Stack()))
		}()
		next.ServeHTTP(w, r)
	})
}

func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 1 && len(r.TransferEncoding) > 0 {
			// RFC 9112 §6.1: after a request with both Transfer-Encoding and
			// Content-Length (a smuggling attempt: a front end may have
			// framed it by the other) the server must close the connection.
			// net/http lets Transfer-Encoding win and deletes the
			// Content-Length before any handler runs, so which requests had
			// both cannot be told: every HTTP/1 request with a
			// Transfer-Encoding closes its connection after the answer.
			// MCP clients send Content-Length; chunked ones lose keep-alive.
			w.Header().Set("Connection", "close")
		}
		bodyDeadline(w, r, s.cfg.Server.ReadBodyTimeout)
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.Server.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// Serve runs the public and admin listeners until ctx is done, then shuts
// down gracefully: readiness fails at once, long-lived GET streams end at an
// event boundary, in-flight requests may finish until the drain deadline
// (server.shutdown_timeout), and whatever remains is closed.
func (s *Server) Serve(ctx context.Context, public, admin net.Listener) error {
	pub := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.Server.IdleTimeout,
		MaxHeaderBytes:    s.cfg.Server.MaxHeaderBytes,
		// No WriteTimeout: it would cut every long SSE stream.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	adm := &http.Server{
		Handler:           s.AdminHandler(),
		ReadHeaderTimeout: s.cfg.Server.ReadHeaderTimeout,
		ErrorLog:          pub.ErrorLog,
	}
	if s.tls != nil {
		// Through tls.NewListener with http.Server.TLSConfig left nil, so
		// net/http still negotiates HTTP/2 from the config's NextProtos.
		public = tls.NewListener(public, s.tls)
	}
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	for _, p := range []struct {
		srv *http.Server
		ln  net.Listener
	}{{pub, public}, {adm, admin}} {
		wg.Go(func() {
			if err := p.srv.Serve(p.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	s.startChangeListeners(s.streams)
	s.startFanout(s.streams)
	if s.healthInterval > 0 {
		// The start-up probe finishes before the gateway says it is ready
		// (each probe is bounded by healthTimeout), so a dead upstream is
		// in the log and in /readyz from the first answer on.
		s.probeUpstreams(s.streams)
		go s.runHealth(s.streams, s.healthInterval)
	}
	s.ready.Store(true)
	if s.onReady != nil {
		s.onReady()
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.shutdown(pub, adm)
	wg.Wait()
	return serveErr
}

func (s *Server) shutdown(pub, adm *http.Server) {
	s.draining.Store(true)
	s.stopStreams()
	s.log.Info("shutting down: draining in-flight requests", "deadline", s.cfg.Server.ShutdownTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Server.ShutdownTimeout)
	defer cancel()
	if err := pub.Shutdown(ctx); err != nil {
		s.log.Warn("drain deadline passed: closing the remaining connections", "error", err)
		_ = pub.Close()
	}
	_ = adm.Close()
	s.pool.CloseIdleConnections()
	s.pool.Close() // stdio processes (SIGTERM, SIGKILL after a grace), HTTP+SSE streams
	if s.oidc != nil {
		s.oidc.Close()
	}
	s.log.Info("shutdown complete")
}
