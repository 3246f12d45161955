package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// The legacy era's GET stream on a federated route. For the client's GET
// (with its federated session) the gateway opens one GET stream per
// member of the session, with that member's own session id, through the
// member's executor as a single route's stream goes, and merges them event
// by event into the client's one stream:
//
//   - each member's message is decided as the single-route relay decides
//     a server-to-client message (transformRequest, respond.go), with the
//     member's own route and the federated route's name for the policy;
//     notifications/resources/updated gets the federated URI (renamed,
//     fedroute.go); list_changed passes through and drops the member's
//     cache entries (observeUpstream) and its last good pages;
//   - a member's server-to-client request (sampling, elicitation, roots)
//     is decided and relayed under an id naming the member, and the
//     client's answer sent back to it (fedask.go); a response is dropped
//     (it answers no request of this stream);
//   - every event the gateway sends carries its own event id, sealed
//     (eventIDFormat) and holding each member's last event id: a client
//     that reconnects with it as Last-Event-ID has each member's stream
//     resumed from that member's own last id. A member that sends no ids
//     (no resumption) is opened afresh: what it sent while the client was
//     away is lost, as on its own route;
//   - a member whose stream ends (closed, broken, stalled past its
//     streams.idle_timeout) is opened again from its last id, after a
//     backoff (fedStreamBackoff, doubling to fedStreamMaxBackoff); one
//     that refuses the stream (404: it ended the session, 405: no stream,
//     any other 4xx) is left out for the rest of this stream. The client
//     sees nothing of either: its stream stays open with the others, and
//     ends (cleanly, resumable) only when every member is left out.
//
// Bounds as on single routes: the stream takes one server.max_streams
// slot (not one per member), gets keep-alive comments at the shortest
// streams.keepalive of its members, and ends at an event boundary after
// the shortest streams.max_duration, or when shutdown begins.

// maxMemberEventID bounds a member's event id kept in the gateway's.
const maxMemberEventID = 256

// eventIDFormat is the sealed box of a federated stream's event id: never
// a session id (1) nor a cursor (cursorFormat).
const eventIDFormat = 3

// Reopening a member's ended stream waits this long, doubling up to the
// maximum; the wait starts again once a reopened stream delivered an event.
const (
	fedStreamBackoff    = 250 * time.Millisecond
	fedStreamMaxBackoff = 30 * time.Second
)

// fedEventID is what a federated stream's event id carries.
type fedEventID struct {
	Route     string            `json:"r"`
	Principal string            `json:"p"`
	Session   string            `json:"s"`           // digest of the client's session id
	Last      map[string]string `json:"l,omitempty"` // member -> its last event id
	IssuedAt  int64             `json:"iat"`
}

// sessionDigest names a session id in an event id without holding it.
func sessionDigest(id string) string {
	sum := sha256.Sum256([]byte(id))
	return base64.RawURLEncoding.EncodeToString(sum[:12])
}

// fedStream is one client's merged stream: the legacy GET, or a modern
// subscriptions/listen (fedlisten.go).
type fedStream struct {
	fr      *fedRequest
	session string // digest of the client's session id
	members []*memberStream
	last    map[string]string // each member's last event id sent on
	events  chan memberEvent
	// inject carries the gateway's own messages for a member's part
	// (context sources' resource updates, subscriptions.go), handled as
	// the member's own.
	inject chan memberEvent
	// handle is what the client gets for one member event (nil: nothing);
	// ended, if set, is the last thing it gets when every member is gone.
	handle func(context.Context, memberEvent) []byte
	ended  func() []byte
	// first is written before any member's event (a listen's merged
	// acknowledgement).
	first []byte
	// joins are the members that join the session while the stream is
	// open (fedjoin.go); nil for a listen.
	joins <-chan memberJoin
	// listenID is a listen's request id (zero for a GET stream).
	listenID jsonrpc.ID
}

// memberStream is one member's part of a merged stream. last and resp
// belong to the goroutine that follows the member (after the first open,
// which is done before it starts).
type memberStream struct {
	m    *route
	fwd  *forward // as the member's own route would see the stream
	last string
	resp *http.Response
	// events reads resp when its first events were read before the merge
	// (a listen's acknowledgement); nil: read opens its own reader.
	events *mcpwire.Reader
	// subscribed are the resources a listen's member agreed to, under
	// its own names.
	subscribed []string
	// unlive unregisters the part for the gateway's own updates (nil
	// when it is not registered); the merge's goroutine's.
	unlive func()
}

// memberEvent is what a member's goroutine hands the merge: one event, or
// (ev nil) that the member is left out of the stream for good.
type memberEvent struct {
	ms *memberStream
	ev *mcpwire.Event
	// injected: the gateway's own message for the member's part
	// (subscriptions.go), not the member's activity.
	injected bool
}

// stream serves the client's GET on a federated route.
func (fr *fedRequest) stream(w http.ResponseWriter) error {
	s, r := fr.s, fr.r
	if err := checkBodyless(r); err != nil {
		return err
	}
	if err := checkAccept(r, "text/event-stream"); err != nil {
		return err
	}
	id := r.Header.Get("Mcp-Session-Id")
	// Watched before the session's members are read: a member that joins
	// after is announced (one in both is merged once).
	joins, unwatch := fr.f.joins.watch(id)
	defer unwatch()
	claims, err := fr.openSession()
	if err != nil {
		return err
	}
	fr.fo = legacyFan(claims)
	fr.recoverMembers(id) // a stream is the session's request too
	fs := &fedStream{fr: fr, session: sessionDigest(id), events: make(chan memberEvent), inject: make(chan memberEvent, injectBuffer), joins: joins}
	fs.handle = fs.event
	if fs.last, err = fs.resumeFrom(r.Header.Values("Last-Event-Id")); err != nil {
		return err
	}
	done, err := s.openStream(r.Context())
	if err != nil {
		return err
	}
	defer done()
	if err := fs.openAll(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	for _, ms := range fs.members {
		go fs.follow(ctx, ms)
	}
	open := s.metrics.openStreams.WithLabelValues(fr.f.cfg.Name, "get")
	open.Inc()
	defer open.Dec()
	fs.run(ctx, w)
	return nil
}

// resumeFrom opens the client's Last-Event-ID: each member's last id. An
// id that is not one of this session's streams is refused, as a member
// refuses one it never sent.
func (fs *fedStream) resumeFrom(ids []string) (map[string]string, error) {
	last := map[string]string{}
	if len(ids) == 0 || len(ids) == 1 && ids[0] == "" {
		return last, nil // an empty id is no id (as an EventSource's before any)
	}
	fr := fs.fr
	var id fedEventID
	err := fr.s.sessions.OpenAs(eventIDFormat, ids[0], &id)
	switch {
	case err != nil:
	case len(ids) > 1:
		err = errors.New("more than one Last-Event-ID")
	case id.Route != fr.f.cfg.Path, id.Principal != fr.p.ID, id.Session != fs.session:
		err = errors.New("minted for another route, principal or session")
	case fr.s.sessions.Expired(id.IssuedAt):
		err = errors.New("expired")
	}
	if err != nil {
		return nil, badRequest("invalid Last-Event-ID: not an event id of this session's stream", err)
	}
	for name, v := range id.Last {
		if _, ok := fr.fo.claims.Members[name]; ok {
			last[name] = v
		}
	}
	return last, nil
}

// openAll opens every member's stream in parallel, before the client's
// stream is answered: once it is, every member that could be reached is
// delivering to it. A member that failed for now is opened again later
// (follow); the stream fails only when every member refused it for good.
func (fs *fedStream) openAll() error {
	fr := fs.fr
	in, _ := fr.f.sessionMembers(fr.fo.claims)
	terminal := make([]error, len(in))
	fs.members = make([]*memberStream, len(in))
	done := make(chan struct{})
	for i, m := range in {
		ms := fs.memberStream(m)
		fs.members[i] = ms
		go func() {
			defer func() { done <- struct{}{} }()
			resp, final, err := fs.open(fr.r.Context(), ms)
			if err != nil {
				fs.logEnd(ms, err)
			}
			ms.resp = resp
			if final {
				terminal[i] = err
			}
		}()
	}
	for range in {
		<-done
	}
	kept := fs.members[:0]
	for i, ms := range fs.members {
		if terminal[i] == nil {
			kept = append(kept, ms)
		}
	}
	fs.members = kept
	if len(kept) > 0 {
		return nil
	}
	return streamRefused(terminal)
}

// memberStream is member m's part of the stream, before it is opened: the
// forward as m's own route would see the stream, and m's last id.
func (fs *fedStream) memberStream(m *route) *memberStream {
	mf := fs.fr.forward(m)
	mf.stream = true
	base := baseInput(fs.fr.r, mf)
	base.Route = fs.fr.f.cfg.Name // policies are written per member upstream
	mf.base = base
	return &memberStream{m: m, fwd: mf, last: fs.last[m.upstream.Name]}
}

// streamRefused is the answer to a GET every member refused for good:
// 405 when none has a stream, 404 when every one ended its session (as a
// single route's upstream answers: the client initializes again), else
// 502.
func streamRefused(refusals []error) error {
	noStream, ended := 0, 0
	for _, err := range refusals {
		switch {
		case errors.Is(err, errNoMemberStream):
			noStream++
		case errors.Is(err, errMemberSessionEnded):
			ended++
		}
	}
	switch len(refusals) {
	case noStream:
		e := newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "no member of the federated route offers a GET stream", nil)
		e.Header = http.Header{"Allow": {"POST, DELETE"}}
		return e
	case ended:
		return newError(http.StatusNotFound, CodeSessionNotFound, "session not found; initialize a new session", errMemberUnavailable{member: "every member", err: errMemberSessionEnded})
	}
	return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "no member of the federated route can open its stream", errors.Join(refusals...))
}

// errNoMemberStream is a member's 405 to the GET: it has no stream.
var errNoMemberStream = errors.New("the member offers no GET stream (405)")

// open opens member ms's stream from its last id. final reports a refusal
// that will not change for this session (the stream is not retried).
func (fs *fedStream) open(ctx context.Context, ms *memberStream) (_ *http.Response, final bool, _ error) {
	fr := fs.fr
	if _, err := fr.s.prepareCredential(fr.r, ms.fwd); err != nil {
		return nil, true, err
	}
	h := http.Header{"Accept": {"text/event-stream"}}
	if id := requestIDHeader(ctx); id != nil {
		h.Set("X-Request-Id", id.Get("X-Request-Id"))
	}
	if ms.last != "" {
		h.Set("Last-Event-Id", ms.last)
	}
	// As a single route's GET: through the member's executor (breaker,
	// retries), outside its bulkhead, with the gateway's credential for it.
	resp, err := askUpstream(withForward(upstream.WithRetry(ctx, upstream.RetryStream), ms.fwd), ms.m.viaResilience(),
		upstreamRequest{method: http.MethodGet, session: ms.fwd.upstreamSession, version: fr.fo.claims.Version, as: ms.m.identity(fr.p), header: h})
	if err != nil {
		return nil, false, err
	}
	kind, _, err := fr.s.checkAnswer(resp, ms.fwd)
	if err != nil {
		// The gateway's credential refused, or the member's session gone
		// (its 404, or a 400 naming the session): neither comes back.
		return nil, errors.Is(err, errUpstreamUnauthorized) || errors.Is(err, errMemberSessionEnded), err
	}
	if kind == answerStream {
		return resp, false, nil
	}
	_ = resp.Body.Close()
	status := resp.StatusCode
	switch {
	case status == http.StatusBadRequest && ms.last != "":
		// The member cannot resume from that id (it keeps no events, or
		// forgot them): opened afresh next time.
		ms.last = ""
		return nil, false, fmt.Errorf("member refused to resume its stream (HTTP %d)", status)
	case status == http.StatusMethodNotAllowed:
		return nil, true, errNoMemberStream
	case status == http.StatusNotFound:
		return nil, true, errMemberSessionEnded
	case status == http.StatusConflict, status == http.StatusTooManyRequests:
		// Another stream of the session is still open (the one this
		// replaces is being closed), or the member sheds load: retried.
		return nil, false, fmt.Errorf("member answered HTTP %d to the stream", status)
	case status >= 400 && status < 500:
		return nil, true, fmt.Errorf("member refused the stream (HTTP %d)", status)
	}
	return nil, false, fmt.Errorf("member answered HTTP %d to the stream", status)
}

// follow reads member ms's stream into the merge for as long as ctx
// lasts, opening it again when it ends, until the member refuses it.
func (fs *fedStream) follow(ctx context.Context, ms *memberStream) {
	wait := fedStreamBackoff
	for {
		if ms.resp != nil {
			progressed, err := fs.read(ctx, ms)
			_ = ms.resp.Body.Close()
			ms.resp = nil
			if ctx.Err() != nil {
				return
			}
			fs.logEnd(ms, err)
			if progressed {
				wait = fedStreamBackoff
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, fedStreamMaxBackoff)
		resp, final, err := fs.open(ctx, ms)
		if final {
			fs.logEnd(ms, err)
			select {
			case fs.events <- memberEvent{ms: ms}:
			case <-ctx.Done():
			}
			return
		}
		if err != nil && ctx.Err() == nil {
			fs.logEnd(ms, err)
		}
		ms.resp = resp
	}
}

// read hands member ms's events to the merge, one at a time (a client
// that does not read stops the members being read), until the stream
// ends. A member silent for its streams.idle_timeout is taken as stalled:
// its stream is closed (and follow opens it again).
func (fs *fedStream) read(ctx context.Context, ms *memberStream) (progressed bool, err error) {
	body := ms.resp.Body
	idle := ms.m.res.streams.IdleTimeout
	var stall *time.Timer
	if idle > 0 {
		stall = time.AfterFunc(idle, func() { _ = body.Close() })
		defer stall.Stop()
	}
	events := ms.events
	if events == nil {
		events = mcpwire.NewReader(body)
	}
	for {
		ev, err := events.Next()
		if err != nil {
			return progressed, err
		}
		if stall != nil {
			stall.Reset(idle)
		}
		select {
		case fs.events <- memberEvent{ms: ms, ev: ev}:
		case <-ctx.Done():
			return progressed, ctx.Err()
		}
		progressed = true
		if ev.HasID && len(ev.ID) <= maxMemberEventID {
			ms.last = ev.ID
		}
	}
}

func (fs *fedStream) logEnd(ms *memberStream, err error) {
	loggerOf(fs.fr.r.Context(), fs.fr.s.log).Warn("federated stream: member stream ended or not opened",
		"route", fs.fr.f.cfg.Path, "member", ms.m.upstream.Name, "error", err)
}

// run writes the merged stream to the client until the client leaves, the
// stream reaches its maximum duration, shutdown begins, or every member
// is left out.
func (fs *fedStream) run(ctx context.Context, w http.ResponseWriter) {
	s := fs.fr.s
	var limits streamLimits
	for _, ms := range fs.members {
		st := ms.m.res.streams
		limits.keepalive = shortest(limits.keepalive, st.Keepalive)
		limits.max = shortest(limits.max, st.MaxDuration)
	}
	if p := fs.fr.p; p != nil && !p.Expiry.IsZero() {
		// What arrives is the principal's: the stream ends when the token
		// it was opened with expires, as a single route's does (proxy.go).
		limits.max = shortest(limits.max, max(p.Expiry.Sub(s.now()), time.Nanosecond))
	}
	for _, ms := range fs.members {
		fs.live(ms)
	}
	defer func() {
		for _, ms := range fs.members {
			ms.leave()
		}
	}()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if _, err := w.Write(fs.first); err != nil {
		return
	}
	_ = rc.Flush()
	quiet, deadline := newTimer(limits.keepalive), newTimer(limits.max)
	defer func() {
		for _, t := range []*time.Timer{quiet, deadline} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	left := len(fs.members)
	for left > 0 {
		var out []byte
		select {
		case me := <-fs.events:
			if me.ev == nil {
				me.ms.leave()
				if left--; left == 0 && fs.ended != nil {
					out = fs.ended()
					break
				}
				continue
			}
			if out = fs.handle(ctx, me); out == nil {
				continue
			}
		case me := <-fs.inject:
			if out = fs.handle(ctx, me); out == nil {
				continue
			}
		case j := <-fs.joins:
			ms, announced, ok := fs.join(j)
			if !ok {
				continue
			}
			left++
			fs.live(ms)
			go fs.follow(ctx, ms)
			if out = announced; out == nil {
				continue
			}
		case <-timerC(quiet):
			out = keepaliveEvent
		case <-timerC(deadline):
			return // ends cleanly: the client resumes with Last-Event-ID
		case <-s.streams.Done():
			return
		case <-ctx.Done():
			return
		}
		if _, err := w.Write(out); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		resetTimer(quiet, limits.keepalive)
	}
}

// live registers member ms's part of the stream for the gateway's own
// resource updates (subscriptions.go): a session's, subscribed through the
// federated route, or a listen's; leave unregisters it, when the member
// leaves the stream or the stream ends.
func (fs *fedStream) live(ms *memberStream) {
	deliver := offer(fs.inject, func(msg []byte) memberEvent {
		return memberEvent{ms: ms, ev: &mcpwire.Event{Data: msg, HasData: true}, injected: true}
	})
	ls := sessionStream(ms.m.upstream.Name, ms.fwd.upstreamSession, deliver)
	if ms.fwd.listen {
		if len(ms.subscribed) == 0 {
			return // nothing for the gateway to add
		}
		ls = listenStream(ms.subscribed, fs.listenID, deliver)
	}
	ms.unlive = fs.fr.s.openLiveStream(ms.m.upstream.Name, ls)
}

func (ms *memberStream) leave() {
	if ms.unlive != nil {
		ms.unlive()
		ms.unlive = nil
	}
}

// shortest is the shorter of two bounds, zero being none.
func shortest(a, b time.Duration) time.Duration {
	if a <= 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// event is what the client gets for one member event: the message as the
// policy decides it, under a new sealed event id; nil when there is
// nothing to send (no message, no new id).
func (fs *fedStream) event(ctx context.Context, me memberEvent) []byte {
	s, ev, name := fs.fr.s, me.ev, me.ms.m.upstream.Name
	// A member's id goes into every event id the gateway sends: one that
	// is too long is not kept (the member is then resumed from the id
	// before it), so a member cannot bloat the others' events.
	moved := ev.HasID && ev.ID != fs.last[name] && len(ev.ID) <= maxMemberEventID
	if moved {
		fs.last[name] = ev.ID
	}
	out := sseEvent{}
	if ev.HasData && len(ev.Data) > 0 {
		if !me.injected {
			s.observeUpstream(name, ev.Data)
			fs.fr.f.observeMember(name, ev.Data)
		}
		if data, drop := s.fedStreamMessage(ctx, me.ms.fwd, ev.Data); !drop {
			out.Event, out.Data, out.HasData = "message", data, true
		}
	}
	if !out.HasData && !moved {
		return nil
	}
	return fs.sealed(out)
}

// sealed is ev with the stream's event id: every member's last id so far.
func (fs *fedStream) sealed(ev sseEvent) []byte {
	s := fs.fr.s
	id, err := s.sessions.SealAs(eventIDFormat, fedEventID{Route: fs.fr.f.cfg.Path, Principal: fs.fr.p.ID, Session: fs.session, Last: fs.last, IssuedAt: s.sessions.Now().Unix()})
	if err != nil {
		loggerOf(fs.fr.r.Context(), s.log).Error("federated stream: event id not sealed; the event is sent without one", "error", err)
	} else {
		ev.ID, ev.HasID = id, true
	}
	return ev.AppendTo(nil)
}

// fedStreamMessage is the policy's word on one message of a member's GET
// stream: a notification or a server-to-client request as the single
// route's relay decides it (transformRequest); a response is dropped.
// Without a policy the message is only renamed (a server request under
// its member-naming id, as transformMessage does).
func (s *Server) fedStreamMessage(ctx context.Context, fwd *forward, data []byte) ([]byte, bool) {
	msg, err := decodeRPC(data)
	if err != nil {
		loggerOf(ctx, s.log).Warn("upstream message withheld: not a JSON-RPC message the policy can read", "upstream", fwd.route.upstream.Name, "error", err)
		return nil, true
	}
	m, ok := msg.(*jsonrpc.Request)
	if !ok {
		// Federated requests are answered on their own POST: a response
		// on the member's GET stream answers nothing this client asked. On
		// a listen stream it is the member's end of the listen, which the
		// merge answers once every member ended.
		if !fwd.listen {
			s.dropStrayResponse(ctx, fwd, msg.(*jsonrpc.Response).ID)
		}
		return nil, true
	}
	if s.policy != nil {
		return s.transformRequest(ctx, fwd, m, data)
	}
	if m.ID.IsValid() {
		return memberRequestRenamed(fwd, data), false
	}
	return s.renamed(fwd, data), false
}

// observeMember drops member's last good pages of the lists a
// list_changed notification says changed: served stale, they would be
// the old list.
func (f *federation) observeMember(member string, data []byte) {
	if !bytes.Contains(data, []byte("list_changed")) {
		return
	}
	var n struct {
		Method string `json:"method"`
	}
	if json.Unmarshal(data, &n) != nil {
		return
	}
	for _, method := range invalidatedBy[n.Method] {
		prefix := member + "\x00" + method + "\x00" // lastGoodKey's
		f.lastGood.Range(func(k, _ any) bool {
			if strings.HasPrefix(k.(string), prefix) {
				f.lastGood.Delete(k)
			}
			return true
		})
	}
}

// streamCapabilities adds to caps what the merged GET stream serves:
// listChanged of tools, prompts and resources, and resources.subscribe,
// each when any member declares it (its notifications reach the client).
func streamCapabilities(caps map[string]map[string]any, members []initResult) {
	for _, m := range members {
		for _, k := range []string{"tools", "prompts", "resources"} {
			var sub map[string]any
			if json.Unmarshal(m.Capabilities[k], &sub) != nil || caps[k] == nil {
				continue
			}
			for _, sk := range []string{"listChanged", "subscribe"} {
				if v, ok := sub[sk].(bool); ok && v && (sk == "listChanged" || k == "resources") {
					caps[k][sk] = true
				}
			}
		}
	}
}
