package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// Old clients: the HTTP+SSE transport of protocol 2024-11-05, served by
// the gateway itself on every route.
//
// A client opens GET <route>/sse; the first event (endpoint) tells it
// where to POST its messages: <route>/messages?session=<id>, the id a box
// of the session sealer in a format of its own (oldSessionFormat), bound
// to the route and the principal, so it never opens as an Mcp-Session-Id
// and an Mcp-Session-Id never opens as it. Each message is served by the
// route's own Streamable HTTP handler (serveRoute or serveFederated), in
// process, as a request the gateway synthesizes with the Mcp-Session-Id
// its initialize was issued: authentication, policy, pinning, cache,
// resilience, federation and observability apply exactly as they do to a
// Streamable HTTP client, with no case of their own. The answer, JSON or
// events, becomes `event: message` events on the client's stream
// (oldAnswer). After the client's notifications/initialized the gateway
// opens the route's GET stream for the session and relays what the
// server sends on it; the client's stream closing ends the session
// (DELETE).
//
// Unlike a Streamable HTTP session, an HTTP+SSE session lives in this
// replica's memory: its answers go to a stream that is open here. A POST
// that reaches another replica is 404 (-31003), so old clients need
// sticky load balancing.

const (
	// maxOldSessions bounds the HTTP+SSE sessions one gateway holds open:
	// each is a stream to the client, usually one to the upstream, and a
	// goroutine per message in progress. One more is 503 -31090.
	maxOldSessions = 1024
	// maxOldInflight bounds the requests in progress on one HTTP+SSE
	// session (answered later on its stream). One more is 503 -31091.
	maxOldInflight = 64
	// oldSessionFormat is the sealer's format byte of an HTTP+SSE session
	// id (session.FormatSession is 1, cursorFormat 2).
	oldSessionFormat = 3
	// oldListenBackoff, doubled to oldListenMaxBackoff, spaces the
	// re-openings of a session's GET stream that ends soon after opening.
	oldListenBackoff    = time.Second
	oldListenMaxBackoff = 30 * time.Second
	// maxOldPendingBytes bounds the bytes of answers one HTTP+SSE session
	// holds for its client: read from the upstream and not yet written to
	// the client's stream. Without it a client that stops reading holds
	// every answer it asked for (64 of up to 32 MiB each) after the inner
	// request's admission slot is free. The largest answer relayed whole
	// (maxFilteredResponseBytes) fits when nothing else waits.
	maxOldPendingBytes = maxFilteredResponseBytes
	// maxOldPendingTotal bounds the same across every HTTP+SSE session of
	// the replica: 1,024 sessions of 32 MiB would be 32 GiB.
	maxOldPendingTotal = 512 << 20
)

// errOldBudget is an answer's write that would take the session's
// waiting answers over maxOldPendingBytes.
var errOldBudget = errors.New("the answers waiting for this HTTP+SSE client exceed its budget")

// oldBudget counts the bytes of answers a session holds for its client;
// parent, if set, is the replica's budget for all sessions, taken from
// as well.
type oldBudget struct {
	used   atomic.Int64
	max    int64
	parent *oldBudget
}

// reserve takes n bytes of the budget (and its parent's), or reports false
// when they do not fit (nothing is taken).
func (b *oldBudget) reserve(n int64) bool {
	for {
		used := b.used.Load()
		if used+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			break
		}
	}
	if b.parent != nil && !b.parent.reserve(n) {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *oldBudget) release(n int64) {
	b.used.Add(-n)
	if b.parent != nil {
		b.parent.release(n)
	}
}

// full reports whether no more answers fit.
func (b *oldBudget) full() bool {
	return b.used.Load() >= b.max || b.parent != nil && b.parent.full()
}

// oldClaims is what an HTTP+SSE session id carries: the route and the
// principal it is bound to, and the session's key in this replica's
// registry.
type oldClaims struct {
	Route     string `json:"r"`
	Principal string `json:"p"`
	Key       string `json:"k"`
	IssuedAt  int64  `json:"iat"`
}

// oldClients are the HTTP+SSE sessions open on this replica, by key.
type oldClients struct {
	mu   sync.Mutex
	open map[string]*oldSession
	// pending is the answers every session holds for its client.
	pending oldBudget
}

func newOldClients() *oldClients {
	c := &oldClients{open: map[string]*oldSession{}}
	c.pending.max = maxOldPendingTotal
	return c
}

// add registers sess, or reports false when maxOldSessions are open.
func (c *oldClients) add(sess *oldSession) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.open) >= maxOldSessions {
		return false
	}
	c.open[sess.key] = sess
	return true
}

func (c *oldClients) get(key string) *oldSession {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open[key]
}

func (c *oldClients) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.open, key)
}

// oldSession is one HTTP+SSE client session.
type oldSession struct {
	key   string
	route *route
	// handler is the route's Streamable HTTP handler (behind
	// authenticate in chain); principal and opened (the GET that opened
	// the stream) serve the gateway's own requests for the session: its
	// GET stream and the DELETE that ends it.
	handler   http.Handler
	principal *Principal
	opened    *http.Request
	// outbox carries the messages for the client's stream; ctx ends with
	// the stream (end ends it early: the upstream session is gone).
	outbox   chan []byte
	ctx      context.Context
	end      context.CancelFunc
	inflight chan struct{}
	// pending is what the session's answers hold for the client.
	pending oldBudget
	// initSent: an initialize was accepted; listening: the GET stream was
	// started. mcpSession and version are what that initialize was
	// issued, for every later request of the session; ended that endOld
	// has looked at mcpSession (an upstream session opened after that is
	// its initialize's to end).
	initSent  atomic.Bool
	listening atomic.Bool
	mu        sync.Mutex
	mcpSession,
	version string
	ended bool
}

// serveOld serves a route's HTTP+SSE endpoints: GET <route>/sse opens a
// session, POST <route>/messages carries one of its messages. handler is
// the route's Streamable HTTP handler.
func (s *Server) serveOld(rt *route, handler http.Handler, stream bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch {
		case stream && r.Method == http.MethodGet:
			s.openOld(w, r, rt, handler)
		case !stream && r.Method == http.MethodPost:
			s.postOld(w, r, rt)
		default:
			allow := map[bool]string{true: http.MethodGet, false: http.MethodPost}[stream]
			e := newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "method not allowed; use "+allow, nil)
			e.Header = http.Header{"Allow": {allow}}
			writeError(w, r, e)
		}
	}
}

// openOld opens an HTTP+SSE session and streams it until the client
// leaves, the gateway shuts down, the session's upstream session is lost,
// the route's streams.max_duration passes or the token it was opened with
// expires; then the session ends.
func (s *Server) openOld(w http.ResponseWriter, r *http.Request, rt *route, handler http.Handler) {
	p, err := principalOf(r.Context())
	if err == nil {
		err = checkAccept(r, "text/event-stream")
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	sess := &oldSession{key: newRequestID(), route: rt, handler: handler, principal: p, opened: r,
		outbox: make(chan []byte), inflight: make(chan struct{}, maxOldInflight)}
	sess.pending.max, sess.pending.parent = maxOldPendingBytes, &s.old.pending
	sess.ctx, sess.end = context.WithCancel(r.Context())
	defer sess.end()
	if !s.old.add(sess) {
		e := newError(http.StatusServiceUnavailable, CodeOldSessionsFull, "too many HTTP+SSE sessions open on this gateway; retry later or use the Streamable HTTP endpoint", nil)
		setRetryAfter(e, 0)
		writeError(w, r, e)
		return
	}
	defer s.old.remove(sess.key)
	done, err := s.openStream(r.Context()) // a stream slot, like any long-lived stream
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer done()
	id, err := s.sessions.SealAs(oldSessionFormat, oldClaims{Route: rt.path, Principal: p.ID, Key: sess.key, IssuedAt: s.sessions.Now().Unix()})
	if err != nil {
		writeError(w, r, err)
		return
	}
	defer s.endOld(sess)
	s.streamOld(w, r, sess, s.publicPath(rt.path)+"/messages?session="+id)
}

// publicPath is path as a client must send it: under server.public_url's
// path, when it has one (a gateway behind a path-routing proxy).
func (s *Server) publicPath(path string) string {
	u, err := url.Parse(s.cfg.Server.PublicURL)
	if err != nil {
		return path
	}
	return strings.TrimSuffix(u.Path, "/") + path
}

// streamOld writes the session's stream: the endpoint event, then each
// message of the outbox, with keep-alive comments when quiet.
func (s *Server) streamOld(w http.ResponseWriter, r *http.Request, sess *oldSession, endpoint string) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	write := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write((&sseEvent{Event: "endpoint", Data: []byte(endpoint), HasData: true}).AppendTo(nil)) {
		return
	}
	limits := sess.route.res.streams
	if limits.MaxDuration == 0 { // a federated route has no streams of its own
		limits.MaxDuration, limits.Keepalive = config.DefaultStreamMaxDuration, config.DefaultStreamKeepalive
	}
	if exp := sess.principal.Expiry; !exp.IsZero() {
		// The server's messages on this stream are the principal's: they
		// stop when its token expires (the client reconnects with a fresh
		// one), as every POST is refused from then on.
		limits.MaxDuration = min(limits.MaxDuration, max(exp.Sub(s.now()), time.Nanosecond))
	}
	keepalive := newTimer(limits.Keepalive)
	deadline := newTimer(limits.MaxDuration)
	if deadline != nil {
		defer deadline.Stop()
	}
	if keepalive != nil {
		defer keepalive.Stop()
	}
	for {
		select {
		case <-sess.ctx.Done():
			return
		case <-s.streams.Done():
			return
		case <-timerC(deadline):
			return
		case <-timerC(keepalive):
			if !write(keepaliveEvent) {
				return
			}
		case data := <-sess.outbox:
			if !write((&sseEvent{Event: "message", Data: data, HasData: true}).AppendTo(nil)) {
				return
			}
		}
		resetTimer(keepalive, limits.Keepalive)
	}
}

// endOld ends the session: what is in progress is cancelled and the
// upstream session, if one was opened, is ended with a DELETE.
func (s *Server) endOld(sess *oldSession) {
	sess.end()
	sess.mu.Lock()
	opened := sess.mcpSession != ""
	sess.ended = true
	sess.mu.Unlock()
	if opened {
		s.deleteOld(sess)
	}
}

// deleteOld ends the session's upstream session with a DELETE.
func (s *Server) deleteOld(sess *oldSession) {
	// The stream's context is over: the DELETE is the session's last
	// request and must still be sent.
	ctx := context.WithoutCancel(sess.ctx)
	req := sess.innerRequest(ctx, sess.opened, http.MethodDelete, nil)
	a := &oldAnswer{sess: sess, header: http.Header{}}
	s.serveInner(a, req, sess, sess.principal)
	a.finish() // nothing to send to an ended stream; what it held is released
}

// oldSessionOf is the open session a POST names in its session parameter,
// if it was opened on rt for p; anything else is 404 -31003, as for an
// unknown Streamable HTTP session.
func (s *Server) oldSessionOf(r *http.Request, rt *route, p *Principal) (*oldSession, error) {
	ids := r.URL.Query()["session"]
	if len(ids) != 1 {
		return nil, badRequest("exactly one session query parameter is required; open a session with GET "+s.publicPath(rt.path)+"/sse", nil)
	}
	var c oldClaims
	err := s.sessions.OpenAs(oldSessionFormat, ids[0], &c)
	var sess *oldSession
	switch {
	case err != nil:
	case s.sessions.Expired(c.IssuedAt):
		err = errors.New("HTTP+SSE session id expired")
	case c.Route != rt.path:
		err = errors.New("HTTP+SSE session belongs to route " + c.Route)
	case c.Principal != p.ID:
		// Bound to the verified principal id, never to anything the
		// client merely asserts.
		err = errors.New("HTTP+SSE session belongs to another principal")
	default:
		if sess = s.old.get(c.Key); sess == nil || sess.ctx.Err() != nil {
			err = errors.New("HTTP+SSE session not open on this replica")
		}
	}
	if err != nil {
		return nil, newError(http.StatusNotFound, CodeSessionNotFound, "session not found; open a new one with GET "+s.publicPath(rt.path)+"/sse", err)
	}
	return sess, nil
}

// postOld accepts one message of an HTTP+SSE session: the session and
// the body are checked here (a refusal is the POST's answer and nothing
// is sent upstream); then the route's handler serves it. A request is
// answered 202 at once and its answer goes to the stream; a notification
// or a response is answered as the upstream accepted it.
func (s *Server) postOld(w http.ResponseWriter, r *http.Request, rt *route) {
	st := stateOf(r.Context())
	p, err := principalOf(r.Context())
	var sess *oldSession
	if err == nil {
		sess, err = s.oldSessionOf(r, rt, p)
	}
	fwd := &forward{requestState: st, route: rt, principal: p, era: eraLegacy}
	if err == nil {
		err = checkContentType(r)
	}
	if err == nil {
		err = s.decodePost(r, fwd) // mcp.go: as strictly as the Streamable HTTP endpoint
	}
	batch := errors.Is(err, errBatch)
	if batch {
		err = nil // the route's handler decides whether the session's revision has batches
	}
	call := err == nil && (batch || fwd.msg.IsCall())
	if call {
		select {
		case sess.inflight <- struct{}{}:
			if sess.pending.full() {
				<-sess.inflight
				err = oldBusy("the answers waiting for this HTTP+SSE client fill its budget; read the stream, then retry")
			}
		default:
			err = oldBusy("too many requests in progress on this HTTP+SSE session; retry after an answer arrives")
		}
	}
	// Only an initialize that is accepted counts as sent: one refused
	// above may be sent again.
	if err == nil && call && !batch && fwd.msg.Method() == "initialize" && !sess.initSent.CompareAndSwap(false, true) {
		<-sess.inflight
		err = badRequest("this HTTP+SSE session was already initialized; open a new one with GET "+s.publicPath(rt.path)+"/sse", nil)
	}
	if err != nil {
		writeError(w, r, err)
		return
	}
	// The message is accepted: from here it is the route handler's
	// request, admitted on its own (a request the gateway answers later
	// must not hold this POST's slot).
	ticketOf(r.Context()).end()
	st.relayed = true
	if !call {
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		s.serveInner(ww, sess.innerRequest(r.Context(), r, http.MethodPost, fwd.body), sess, p)
		if ww.Status()/100 == 2 && fwd.msg.Method() == "notifications/initialized" && sess.listening.CompareAndSwap(false, true) {
			go s.listenOld(sess)
		}
		return
	}
	// The answer outlives this POST but not the session.
	ctx, cancel := context.WithCancel(context.WithoutCancel(r.Context()))
	stop := context.AfterFunc(sess.ctx, cancel)
	go func() {
		defer func() { stop(); cancel(); <-sess.inflight }()
		s.relayOld(sess, sess.innerRequest(ctx, r, http.MethodPost, fwd.body), p, fwd.msg)
	}()
	w.WriteHeader(http.StatusAccepted)
}

// oldBusy is the 503 -31091 of a message the session cannot take now.
func oldBusy(msg string) *Error {
	e := newError(http.StatusServiceUnavailable, CodeOldSessionBusy, msg, nil)
	setRetryAfter(e, 0)
	return e
}

// relayOld serves a request of the session and sends its answer to the
// session's stream. msg is nil for a batch. A request whose answer ended
// without its response is answered with an error, so the client never
// waits for nothing.
func (s *Server) relayOld(sess *oldSession, req *http.Request, p *Principal, msg *mcpwire.Message) {
	a := &oldAnswer{sess: sess, header: http.Header{}, relayErrors: true}
	if msg != nil {
		a.want, a.hasWant = msg.ID(), true
		a.keep = msg.Method() == "initialize"
	}
	s.serveInner(a, req, sess, p)
	s.relayedOld(sess, a)
}

// relayedOld sends on what a, a request's answer, held once its handler
// is done, and settles what the answer decided of the session.
func (s *Server) relayedOld(sess *oldSession, a *oldAnswer) {
	a.finish()
	switch {
	case a.hasWant && !a.answered && a.overBudget:
		sess.send(errorMessage(a.want, oldBusy("the answer would take the answers waiting for this HTTP+SSE client over its budget; read the stream, then retry")))
	case a.hasWant && !a.answered:
		sess.send(errorMessage(a.want, newError(http.StatusBadGateway, CodeUpstreamUnavailable, "the upstream's answer ended before its response", nil)))
	}
	if a.keep && !a.opened {
		sess.initSent.Store(false) // a failed initialize may be sent again
	}
	if a.keep && a.late {
		// The client left while its initialize was in progress: endOld
		// found no upstream session to end, so this one is ended here.
		s.deleteOld(sess)
	}
	if a.status == http.StatusNotFound {
		// In the legacy era a 404 means the session is gone (the gateway's
		// -31003, or the upstream's own): the client must open a new one.
		sess.end()
	}
}

// initialized records what an initialize was issued, from its answer
// (status, headers) and response (data): the Mcp-Session-Id and the
// negotiated version every later request of the session carries. It runs
// before the response is sent on, so the client's next message finds the
// session open. It reports whether the session is open, and late when
// the session had already ended (endOld will not end the upstream
// session: the caller must).
func (sess *oldSession) initialized(status int, h http.Header, data []byte) (opened, late bool) {
	id := h.Get("Mcp-Session-Id")
	version, ok := negotiatedVersion(data, false)
	if status != http.StatusOK || id == "" || !ok {
		return false, false
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	sess.mcpSession, sess.version = id, version
	return true, sess.ended
}

// listenOld keeps the session's GET stream open and its messages flowing
// to the client's stream: re-opened when it ends (idle timeout, maximum
// duration), after a growing pause when it ends soon after opening; not
// at all when the route has none (405, a federated route); a lost upstream
// session (404), or the principal's token expired, ends the client's
// session.
func (s *Server) listenOld(sess *oldSession) {
	backoff := oldListenBackoff
	for sess.ctx.Err() == nil {
		if sess.expired(s.now()) {
			// Opened as the principal the client's stream authenticated:
			// never once its token has expired. The client reconnects
			// with a fresh one.
			sess.end()
			return
		}
		start := time.Now()
		a := &oldAnswer{sess: sess, header: http.Header{}}
		s.serveInner(a, sess.innerRequest(sess.ctx, sess.opened, http.MethodGet, nil), sess, sess.principal)
		a.finish()
		switch {
		case a.status == http.StatusNotFound:
			sess.end()
			return
		case a.status/100 == 4:
			return
		}
		if time.Since(start) > oldListenMaxBackoff {
			backoff = oldListenBackoff
		}
		t := time.NewTimer(backoff)
		select {
		case <-sess.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, oldListenMaxBackoff)
	}
}

// expired reports whether the credential the session's stream was opened
// with (an OIDC token) has expired at now.
func (sess *oldSession) expired(now time.Time) bool {
	exp := sess.principal.Expiry
	return !exp.IsZero() && !now.Before(exp)
}

// innerRequest is the Streamable HTTP request that carries one message
// (or opens the GET stream, or ends the session) of sess on its route:
// the client's own request's headers (its credential, for the
// credential stage), less the transport's, plus the session's.
func (sess *oldSession) innerRequest(ctx context.Context, from *http.Request, method string, body []byte) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, method, sess.route.path, bytes.NewReader(body))
	if body == nil {
		req.Body = http.NoBody
	}
	req.Host, req.RemoteAddr, req.TLS = from.Host, from.RemoteAddr, from.TLS
	req.Proto, req.ProtoMajor, req.ProtoMinor = from.Proto, from.ProtoMajor, from.ProtoMinor
	req.Header = from.Header.Clone()
	for name := range req.Header {
		// What the client sent for its own transport is not the inner
		// request's: the session, the revision and the media types are
		// the gateway's (Mcp-Session-Id, MCP-Protocol-Version, Mcp-Method,
		// Mcp-Name, Mcp-Param-*, Last-Event-ID).
		if strings.HasPrefix(name, "Mcp-") || name == "Last-Event-Id" || name == "Content-Length" {
			delete(req.Header, name)
		}
	}
	switch method {
	case http.MethodPost:
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
	case http.MethodGet:
		req.Header.Set("Accept", "text/event-stream")
	default:
		req.Header.Del("Accept")
		req.Header.Del("Content-Type")
	}
	sess.mu.Lock()
	if sess.mcpSession != "" {
		req.Header.Set("Mcp-Session-Id", sess.mcpSession)
		req.Header.Set("Mcp-Protocol-Version", sess.version)
	}
	sess.mu.Unlock()
	return req
}

// serveInner serves req with the route's handler as its own request (an
// id, an access record, an admission slot), for p, who authenticated the
// HTTP+SSE request it comes from. A reverse proxy's abort (an upstream
// answer broken mid-way) ends only that request.
func (s *Server) serveInner(w http.ResponseWriter, req *http.Request, sess *oldSession, p *Principal) {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			s.log.Error("panic serving an HTTP+SSE message", "panic", v)
		}
	}()
	adopt := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// As authenticate does, with the principal already verified.
		st := stateOf(r.Context())
		st.upstream, st.route = sess.route.upstream.Name, sess.route.upstream.Name
		st.principal, st.caller = p, callerOf(p)
		ctx := upstream.WithCaller(upstream.WithPrincipal(r.Context(), p.ID), st.caller)
		sess.handler.ServeHTTP(w, r.WithContext(ctx))
	})
	s.requestLog(s.recoverer(s.admit(adopt))).ServeHTTP(w, req)
}

// send hands one message to the session's stream; false when the session
// has ended.
func (sess *oldSession) send(data []byte) bool {
	select {
	case sess.outbox <- data:
		return true
	case <-sess.ctx.Done():
		return false
	}
}

// oldAnswer is the ResponseWriter of a request the gateway serves for an
// HTTP+SSE session: it turns the route's answer into messages on the
// session's stream. An event stream is parsed as it is written (each
// event's data is a message); a JSON answer is sent when whole, an error
// answer only with relayErrors (POSTs: the client waits for its
// response; the gateway's GET and DELETE have no one to tell).
type oldAnswer struct {
	sess        *oldSession
	header      http.Header
	status      int
	relayErrors bool
	buf         bytes.Buffer
	pw          *io.PipeWriter
	parsed      chan struct{}
	// held is what the answer holds of the session's budget: reserved as
	// it is written, released as its messages reach the client's stream
	// (or it ends); overBudget that a write did not fit, cut that a write
	// was refused (what was written is no whole answer).
	held       atomic.Int64
	overBudget bool
	cut        bool
	// want is the id of the request answered, answered whether its
	// response was sent; keep marks an initialize, opened that its
	// response opened the session, late after the session ended.
	want     jsonrpc.ID
	hasWant  bool
	answered bool
	keep     bool
	opened   bool
	late     bool
}

func (a *oldAnswer) Header() http.Header { return a.header }

func (a *oldAnswer) WriteHeader(code int) {
	if a.status != 0 || code < 200 {
		return // 1xx are interim; only the first final status counts
	}
	a.status = code
	if code == http.StatusOK && isEventStream(a.header) {
		pr, pw := io.Pipe()
		a.pw, a.parsed = pw, make(chan struct{})
		go a.parse(pr)
	}
}

func (a *oldAnswer) Write(p []byte) (int, error) {
	if a.status == 0 {
		a.WriteHeader(http.StatusOK)
	}
	// Reserved before it is buffered (here or in the parser), so what
	// waits for a client that does not read is bounded by the budget, not
	// by what the upstream sends.
	if !a.sess.pending.reserve(int64(len(p))) {
		a.overBudget, a.cut = true, true
		return 0, errOldBudget
	}
	a.held.Add(int64(len(p)))
	if a.pw != nil {
		return a.pw.Write(p) // the parser's pace: backpressure from the client's stream
	}
	if a.buf.Len()+len(p) > maxFilteredResponseBytes {
		a.cut = true
		return 0, errors.New("answer larger than the gateway relays")
	}
	return a.buf.Write(p)
}

// Flush is a no-op: every message is sent on as soon as it is whole.
func (a *oldAnswer) Flush() {}

// parse sends each event's message on; when the session ends it stops,
// and the writer's next write fails (the proxy then aborts the request).
func (a *oldAnswer) parse(pr *io.PipeReader) {
	defer close(a.parsed)
	in := &countingReader{r: pr}
	events := newSSEReader(in)
	released := int64(0)
	for {
		ev, err := events.Next()
		if err != nil {
			pr.CloseWithError(err)
			return
		}
		if len(bytes.TrimSpace(ev.Data)) > 0 && !a.emit(ev.Data) {
			pr.CloseWithError(context.Canceled)
			return
		}
		// What was read up to this event is on the client's stream (or
		// was a comment): no longer held. (The reader's look-ahead, at
		// most its 4 KiB buffer, is released early.)
		a.release(in.n - released)
		released = in.n
	}
}

// release gives n bytes the answer held back to the session's budget.
func (a *oldAnswer) release(n int64) {
	a.held.Add(-n)
	a.sess.pending.release(n)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// finish sends what a JSON answer held, once the handler is done; then
// nothing of the answer is held.
func (a *oldAnswer) finish() {
	defer func() { a.release(a.held.Load()) }()
	if a.pw != nil {
		_ = a.pw.Close()
		<-a.parsed
		return
	}
	body := bytes.TrimSpace(a.buf.Bytes())
	if a.cut || len(body) == 0 || (a.status/100 != 2 && !a.relayErrors) || (a.status/100 == 2 && a.status != http.StatusOK) {
		return
	}
	if body[0] != '[' {
		if a.status/100 != 2 && !isRPCMessage(body) && a.hasWant {
			body = errorMessage(a.want, newError(a.status, CodeInternalError, "internal gateway error", nil))
		}
		a.emit(bytes.Clone(body))
		return
	}
	var batch []json.RawMessage
	if json.Unmarshal(body, &batch) == nil {
		for _, m := range batch {
			a.emit(m)
		}
	}
}

// emit sends one message on, noting whether it is the response awaited.
func (a *oldAnswer) emit(data []byte) bool {
	if a.hasWant && !a.answered {
		if resp, ok := mustDecodeResponse(data); ok && resp.ID == a.want {
			a.answered = true
			if a.keep {
				a.opened, a.late = a.sess.initialized(a.status, a.header, data)
			}
		}
	}
	return a.sess.send(data)
}

func mustDecodeResponse(data []byte) (*jsonrpc.Response, bool) {
	msg, err := decodeRPC(data)
	if err != nil {
		return nil, false
	}
	resp, ok := msg.(*jsonrpc.Response)
	return resp, ok
}

func isRPCMessage(data []byte) bool {
	_, err := decodeRPC(data)
	return err == nil
}
