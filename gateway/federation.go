package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// Federation serves several upstreams (members) at one route
// (config.Route). What it does, in the legacy protocol era:
//
//   - initialize is sent to every member in parallel, each with the
//     client's own params and within the route's member_timeout; the
//     members that answer are the session (their upstream session ids are
//     sealed in the gateway's session id), the others are left out,
//     named in the result's _meta io.ctxgate/partial, and retried for the
//     session until they join it (fedrecover.go). The result is the
//     gateway's: the lowest protocol version the members negotiated, the
//     union of their capabilities, their instructions.
//   - the GET stream merges one stream per member of the session, event by
//     event, each decided and renamed as on the member's route, resumable
//     with the gateway's own Last-Event-ID (fedstream.go).
//   - lists are asked of every member of the session in parallel, each
//     within member_timeout, filtered by the policy per member, named
//     (naming.go) and merged in route order (merge.go). A member that fails
//     is filled in from its last good answer, else left out; either way
//     the result says so (_meta io.ctxgate/partial) and
//     ctxgate_federation_partial_total counts it. Cursors are the
//     gateway's own (cursor.go).
//   - tools/call, prompts/get, resources/read, resources/(un)subscribe
//     and completion/complete go to the member that owns the name or URI,
//     with the member's own name, through the member's whole pipeline
//     (policy, rate limits, cache, idempotency, resilience).
//   - ping is answered by the gateway; logging/setLevel and client
//     notifications go to every member.
//
// In the modern era (2026-07-28, stateless; fedmodern.go) the same is done
// without sessions: server/discover is answered by the gateway with the
// union of the members' capabilities, lists are fanned out to every member
// and merged as above, named requests are routed as above. A member that
// speaks only the legacy era is bridged (bridge.go) when configured so,
// else left out and named in _meta io.ctxgate/partial (reason: legacy
// only).
//
// A member's requests of the client (sampling, elicitation, roots, and so
// a multi-round-trip tool's input requests on a legacy session) are
// decided as on its own route and relayed under an id naming the member;
// the client's answer goes back to that member (fedask.go).
// subscriptions/listen merges the members' listens as the GET stream
// merges their streams (fedlisten.go, fedstream.go).
//
// Not served on a federated route: batches (400).

// federation is one federated route.
type federation struct {
	cfg     config.Route
	route   *route   // the route as authentication and metadata see it
	members []*route // the members' own routes, in route order
	names   *namer
	// lastGood holds each member's last good list answer, raw, for the
	// partial answers of a member that fails.
	lastGood sync.Map // string -> lastGood
	partial  *prometheus.CounterVec
	// late are the sessions whose members failed at initialize, retried
	// (fedrecover.go).
	late lateSessions
	// joins tells a session's open merged streams of a member that joined
	// (fedjoin.go).
	joins joinWatchers
	// asks are the member requests relayed to clients (fedask.go).
	asks memberAsks
}

type lastGood struct {
	result json.RawMessage
	at     time.Time
}

func (f *federation) member(name string) *route {
	for _, m := range f.members {
		if m.upstream.Name == name {
			return m
		}
	}
	return nil
}

// federations builds the configured federated routes over the upstreams'
// own routes.
func (s *Server) federations(own []*route) []*route {
	if len(s.cfg.Routes) == 0 {
		return nil
	}
	partial := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ctxgate_federation_partial_total",
		Help: "Merged lists answered without a member's fresh part, by route, member and how (missing, stale).",
	}, []string{"route", "member", "how"})
	if err := s.metrics.registry.Register(partial); err != nil {
		s.log.Warn("federation metrics not registered", "error", err)
	}
	byName := map[string]*route{}
	for _, rt := range own {
		byName[rt.upstream.Name] = rt
	}
	base := strings.TrimSuffix(s.cfg.Server.PublicURL, "/")
	var out []*route
	for _, c := range s.cfg.Routes {
		f := &federation{cfg: c, partial: partial, names: newNamer(c.Prefix, c.Separator, c.Upstreams)}
		rt := &route{path: c.Path, upstream: &upstream.Upstream{Name: c.Name}, fed: f}
		for _, name := range c.Upstreams {
			m := byName[name]
			f.members = append(f.members, m)
			// A token for the federated route must carry every scope any
			// member requires: it reaches them all.
			for _, sc := range m.requiredScopes {
				if !slices.Contains(rt.requiredScopes, sc) {
					rt.requiredScopes = append(rt.requiredScopes, sc)
				}
			}
		}
		rt.resource = base + rt.path
		rt.metadataURL = base + wellKnownPRM + rt.path
		f.route = rt
		out = append(out, rt)
	}
	s.federated = out
	return out
}

// serveFederated handles the Streamable HTTP endpoint of a federated route.
func (s *Server) serveFederated(rt *route) http.HandlerFunc {
	f := rt.fed
	return func(w http.ResponseWriter, r *http.Request) {
		st := stateOf(r.Context())
		st.upstream, st.route = f.cfg.Name, f.cfg.Name
		principal, err := principalOf(r.Context())
		if err == nil {
			fr := &fedRequest{s: s, r: r, f: f, p: principal, st: st}
			switch r.Method {
			case http.MethodPost:
				err = fr.post(w)
			case http.MethodGet:
				err = fr.stream(w) // fedstream.go
			case http.MethodDelete:
				err = fr.delete(w)
			default:
				e := newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "method not allowed; use POST, GET or DELETE", nil)
				e.Header = http.Header{"Allow": {"GET, POST, DELETE"}}
				err = e
			}
		}
		if err != nil {
			writeError(w, r, err)
		}
	}
}

// fedRequest is one client request on a federated route: the receiver of
// every federation step, which is how federation reaches the core (the
// policy, the members' pipelines, the upstream helper), never with the
// route, principal, session and state passed one by one.
type fedRequest struct {
	s  *Server
	r  *http.Request // nil for the gateway's own requests (fedcheck.go)
	f  *federation
	p  *Principal
	st *requestState
	// fo is how the members are reached: set once the request's era (and
	// in the legacy era its session) is known.
	fo *fanout
}

// forward is the forward of this request to member m, as the member's own
// route would see it.
func (fr *fedRequest) forward(m *route) *forward {
	fwd := fr.fo.forward(fr.f, m, fr.p, fr.st)
	if id := fr.sessionID(); fwd.era == eraLegacy && id != "" {
		fwd.asks = &sessionAsks{asks: &fr.f.asks, session: id}
	}
	return fwd
}

// sessionID is the client's session id; "" without one, or for the
// gateway's own requests.
func (fr *fedRequest) sessionID() string {
	if fr.r == nil {
		return ""
	}
	return fr.r.Header.Get("Mcp-Session-Id")
}

// input is the policy input of this request as sent to member m.
func (fr *fedRequest) input(m *route, req *jsonrpc.Request) *policy.Input {
	return fr.s.policyInput(fr.r, fr.forward(m), req)
}

// allowed decides in as a request; without a policy everything is.
func (fr *fedRequest) allowed(in *policy.Input) (policy.Decision, bool) {
	if fr.s.policy == nil {
		return policy.Decision{}, true
	}
	d := fr.s.decide(fr.r.Context(), policy.PhaseRequest, in)
	return d, d.Allow
}

// post checks and decodes one POST, then serves it by method.
func (fr *fedRequest) post(w http.ResponseWriter) error {
	s, r, f, st := fr.s, fr.r, fr.f, fr.st
	fwd := &forward{requestState: st, route: f.route, principal: fr.p, era: eraLegacy, federation: f.cfg.Name}
	err := s.readPost(r, fwd)
	if errors.Is(err, errBatch) {
		return badRequest("JSON-RPC batches are not supported on a federated route", nil)
	}
	if err != nil {
		return err
	}
	msg := st.msg
	if isModernRequest(r, msg) {
		return fr.modern(w, fwd)
	}
	if err := checkLegacyMcpHeaders(r.Header, msg); err != nil {
		return err
	}
	if msg.Method() == "initialize" {
		if !msg.IsCall() {
			return badRequest("initialize must be a request with an id", nil)
		}
		return fr.initialize(w)
	}
	claims, err := fr.openSession()
	if err != nil {
		return err
	}
	fr.fo = legacyFan(claims)
	fr.recoverMembers(r.Header.Get("Mcp-Session-Id"))
	req := msg.Request()
	switch {
	case req == nil:
		// A client's answer to a member's request (fedask.go).
		return fr.answerMember(w)
	case !req.ID.IsValid():
		if err := fr.notify(req, fwd.body); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	case req.Method == "ping":
		return s.answer(w, req.ID, json.RawMessage(`{}`))
	case req.Method == "logging/setLevel":
		if err := fr.fanOut(req, fwd.body); err != nil {
			return err
		}
		return s.answer(w, req.ID, json.RawMessage(`{}`))
	case listShapes[req.Method].items != "":
		return fr.list(w, req)
	}
	return fr.routed(w, req)
}

// openSession opens and checks the client's session, as prepareSession
// does for a single upstream.
func (fr *fedRequest) openSession() (sessionClaims, error) {
	fwd := &forward{requestState: fr.st, route: fr.f.route, principal: fr.p}
	if err := fr.s.prepareSession(fr.r, fwd); err != nil {
		return sessionClaims{}, err
	}
	id := fr.r.Header.Get("Mcp-Session-Id")
	claims, _ := fr.s.sessions.Open(id)
	return fr.f.late.joined(id, claims), nil
}

// answer writes the gateway's own result for id.
func (s *Server) answer(w http.ResponseWriter, id jsonrpc.ID, result json.RawMessage) error {
	body, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Result: result})
	if err != nil {
		return err
	}
	writeAnswer(w, body)
	return nil
}

// sessionMembers are the members of a federated session, in route order.
func (f *federation) sessionMembers(claims sessionClaims) (in []*route, out []string) {
	for _, m := range f.members {
		if _, ok := claims.Members[m.upstream.Name]; ok {
			in = append(in, m)
		} else {
			out = append(out, m.upstream.Name)
		}
	}
	return in, out
}

// errMemberUnavailable wraps a member's failure for the log.
type errMemberUnavailable struct {
	member string
	err    error
}

func (e errMemberUnavailable) Error() string { return fmt.Sprintf("member %s: %v", e.member, e.err) }
func (e errMemberUnavailable) Unwrap() error { return e.err }

// memberSessionEnded is the answer to any request on a federated session
// one of whose members ended its own session (it restarted, or expired
// it): 404 -31003, as a single upstream's 404 is, whatever the method, so
// the client initializes again and gets a new session with every member.
func memberSessionEnded(cause error) *Error {
	return newError(http.StatusNotFound, CodeSessionNotFound, "session not found; initialize a new session", cause)
}
