package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/ctxgate/ctxgate/upstream"
)

// Member recovery. A member that failed at the federated initialize (not
// one the policy denied) is retried for that session: in the background,
// kicked by the session's own requests (a session nobody uses needs no
// member), at most once per backoff (recoverFirst doubling to
// recoverMax, on the gateway's clock). A retry is the member's initialize
// with the client's own params at the session's protocol version; when
// it answers, it joins the session: every later request of the session
// reaches it as if it had answered the first initialize (its items are
// listed fresh, its tools callable, it is sent DELETE with the others).
// Until then a call naming one of its items is 503 -31070 with
// Retry-After, not "unknown tool": the client can tell "not yet" from
// "no such tool".
//
// The client's sealed session id cannot change, so joined members are
// held by the gateway, per replica, in memory: bounded by maxLateSessions
// sessions of at most maxLateParams of the client's params each (64 MiB
// in all, whatever clients send), and by the sessions' TTL. Another
// replica serving the same session sees the member missing, as before.
// No credential is held: a retry runs as the session's request that
// started it, with that request's freshly verified principal (the
// session's, by id), so a token that expired since initialize is never
// used, and an abandoned session's tokens are not kept until its TTL.

const (
	recoverFirst    = time.Second
	recoverMax      = time.Minute
	maxLateSessions = 4096
	maxLateParams   = 16 << 10
)

// lateSessions are the federated sessions with members that failed at
// initialize, by the gateway's session id. The zero value is ready.
type lateSessions struct {
	mu   sync.Mutex
	byID map[string]*lateSession
}

// lateSession is what a retry needs, and the members retried.
type lateSession struct {
	principal string          // the session's principal id, never its credentials
	params    json.RawMessage // the client's initialize params, at version
	version   string          // the session's protocol version
	expires   time.Time       // the session's TTL, set by add
	members   map[string]*lateMember
}

// lateMember is one member being retried, or joined.
type lateMember struct {
	session string // its upstream session, once joined
	joined  bool
	trying  bool
	next    time.Time // no retry before
	backoff time.Duration
}

// add records a new session's failed members, for ttl; false when the
// gateway holds maxLateSessions already (after dropping those past their
// ttl).
func (ls *lateSessions) add(id string, sess *lateSession, now time.Time, ttl time.Duration) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.byID == nil {
		ls.byID = map[string]*lateSession{}
	}
	ls.expire(now)
	if len(ls.byID) >= maxLateSessions {
		return false
	}
	for _, m := range sess.members {
		m.next, m.backoff = now.Add(recoverFirst), recoverFirst
	}
	sess.expires = now.Add(ttl)
	ls.byID[id] = sess
	return true
}

// expire drops the sessions past their TTL, at every add and due: a
// session nobody ends (no DELETE) is not held beyond the sealed id's own
// life. At most maxLateSessions entries, under ls.mu.
func (ls *lateSessions) expire(now time.Time) {
	for k, s := range ls.byID {
		if now.After(s.expires) {
			delete(ls.byID, k)
		}
	}
}

// remove forgets a session (it ended) and returns its joined members'
// upstream sessions, by member. A retry that finishes after remove is not
// kept (done is false): it ends its member session itself.
func (ls *lateSessions) remove(id string) map[string]string {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	sess := ls.byID[id]
	delete(ls.byID, id)
	if sess == nil {
		return nil
	}
	joined := map[string]string{}
	for name, m := range sess.members {
		if m.joined {
			joined[name] = m.session
		}
	}
	return joined
}

// joined adds the session's joined members to claims (a copy).
func (ls *lateSessions) joined(id string, claims sessionClaims) sessionClaims {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	sess := ls.byID[id]
	if sess == nil {
		return claims
	}
	members := make(map[string]string, len(claims.Members)+len(sess.members))
	for name, upstream := range claims.Members {
		members[name] = upstream
	}
	for name, m := range sess.members {
		if m.joined {
			members[name] = m.session
		}
	}
	claims.Members = members
	return claims
}

// due marks and returns the session's members whose retry is due at now,
// for a request of principal (the session's, as prepareSession checked).
func (ls *lateSessions) due(id, principal string, now time.Time) (*lateSession, []string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.expire(now)
	sess := ls.byID[id]
	if sess == nil || sess.principal != principal {
		// Another principal's request never runs a session's retry: it
		// would reach the member with that principal's credentials.
		return nil, nil
	}
	var names []string
	for name, m := range sess.members {
		if !m.joined && !m.trying && !now.Before(m.next) {
			m.trying = true
			names = append(names, name)
		}
	}
	return sess, names
}

// done records a retry's outcome: joined with upstream session, or the
// next retry after a doubled backoff. ok is false when the session ended
// meanwhile (the member's new session is then the caller's to end).
func (ls *lateSessions) done(id, name, upstream string, joined bool, now time.Time) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	sess := ls.byID[id]
	if sess == nil || sess.members[name] == nil {
		return false
	}
	m := sess.members[name]
	m.trying = false
	if joined {
		m.joined, m.session = true, upstream
		return true
	}
	m.backoff = min(2*m.backoff, recoverMax)
	m.next = now.Add(m.backoff)
	return true
}

// pending reports whether member name is being retried for the session,
// and how long until its next retry.
func (ls *lateSessions) pending(id, name string, now time.Time) (time.Duration, bool) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	sess := ls.byID[id]
	if sess == nil || sess.members[name] == nil || sess.members[name].joined {
		return 0, false
	}
	return max(0, sess.members[name].next.Sub(now)), true
}

// rememberLate records the members of a new session that failed, for
// retries; params are the client's initialize params.
func (fr *fedRequest) rememberLate(id string, claims sessionClaims, failed []string, params json.RawMessage) {
	if len(failed) == 0 {
		return
	}
	params, err := withProtocolVersion(params, claims.Version)
	if err != nil || len(params) > maxLateParams {
		loggerOf(fr.r.Context(), fr.s.log).Warn("federated initialize: the client's params are too large to keep; missing members are not retried", "route", fr.f.cfg.Path, "members", failed)
		return
	}
	sess := &lateSession{principal: fr.p.ID, params: params, version: claims.Version, members: map[string]*lateMember{}}
	for _, name := range failed {
		sess.members[name] = &lateMember{}
	}
	if !fr.f.late.add(id, sess, fr.s.now(), fr.s.cfg.Sessions.TTL) {
		loggerOf(fr.r.Context(), fr.s.log).Warn("federated initialize: too many sessions with missing members; these are not retried", "route", fr.f.cfg.Path, "members", failed)
	}
}

// withProtocolVersion is params with protocolVersion set to version, so a
// late member negotiates the session's revision or none.
func withProtocolVersion(params json.RawMessage, version string) (json.RawMessage, error) {
	all := map[string]json.RawMessage{}
	if len(params) > 0 {
		if err := json.Unmarshal(params, &all); err != nil {
			return nil, err
		}
	}
	all["protocolVersion"], _ = json.Marshal(version)
	return json.Marshal(all)
}

// recoverMembers starts, in the background, the retries of the session's
// missing members that are due, as this request's principal.
func (fr *fedRequest) recoverMembers(id string) {
	sess, names := fr.f.late.due(id, fr.p.ID, fr.s.now())
	for _, name := range names {
		m := fr.f.member(name)
		// Not the request's context: the retry outlives the request, and
		// must not touch its state (its admission slot, its message). Only
		// the caller, for the member's credentials (token_exchange) and
		// the principal's bulkhead share, as authenticate gave this
		// request: its token was verified now, the initialize's may have
		// expired since.
		ctx := upstream.WithCaller(upstream.WithPrincipal(context.Background(), fr.p.ID), callerOf(fr.p))
		go fr.recoverMember(ctx, id, sess, m, fr.p)
	}
}

// recoverMember is one retry of member m for session id, as principal p.
func (fr *fedRequest) recoverMember(ctx context.Context, id string, sess *lateSession, m *route, p *Principal) {
	s, f, name := fr.s, fr.f, m.upstream.Name
	retry := &fedRequest{s: s, f: f, p: p}
	in := retry.initMember(ctx, m, sess.version, sess.params)
	joined := in.err == nil && in.result.ProtocolVersion == sess.version
	if in.err == nil && !joined {
		// Another revision than the session's: the member's requests would
		// carry a version it did not negotiate.
		loggerOf(ctx, s.log).Warn("federated session: a recovered member negotiated another revision; left out", "route", f.cfg.Path, "member", name, "version", in.result.ProtocolVersion, "session_version", sess.version)
	}
	kept := f.late.done(id, name, in.session, joined, s.now())
	if in.err == nil && (!joined || !kept) {
		// A member session nobody will use (another revision, or the
		// client's session ended while the member was asked): ended.
		dctx, cancel := context.WithTimeout(ctx, f.cfg.MemberTimeout)
		defer cancel()
		_, _, _ = askMember(dctx, m, upstreamRequest{method: http.MethodDelete, session: in.session, version: in.result.ProtocolVersion, as: m.identity(p)})
		return
	}
	if joined {
		loggerOf(ctx, s.log).Info("federated session: a member that was missing joined", "route", f.cfg.Path, "member", name)
		f.joins.announce(id, memberJoin{member: name, session: in.session, caps: in.result.Capabilities}) // fedjoin.go
	}
}

// memberRecovering is the answer to a call naming an item of a member
// that is being retried for the session.
func memberRecovering(member string, wait time.Duration) *Error {
	e := newError(http.StatusServiceUnavailable, CodeMemberRecovering, "member "+member+" is not in this session yet: it was unavailable at initialize and is being retried; retry later", nil)
	setRetryAfter(e, wait)
	return e
}
