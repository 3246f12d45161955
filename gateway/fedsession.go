package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// fedRequestID is the id of the requests the gateway itself sends members.
const fedRequestID = "ctxgate-federation"

// askMember sends the gateway's own request to member m, through the
// member's executor as a client's request to it would go, and reads the
// whole answer, bounded.
func askMember(ctx context.Context, m *route, req upstreamRequest) (*http.Response, []byte, error) {
	if id := requestIDHeader(ctx); id != nil {
		maps.Copy(id, req.header)
		req.header = id
	}
	return askAndRead(ctx, m.viaResilience(), req, maxFilteredResponseBytes)
}

// requestIDHeader names the client request ctx serves, so a member's log
// can be correlated with the gateway's; nil outside a client's request.
func requestIDHeader(ctx context.Context) http.Header {
	if st := stateOf(ctx); st != nil {
		return http.Header{"X-Request-Id": {st.id}}
	}
	return nil
}

// initResult is what the gateway reads of a member's initialize result.
type initResult struct {
	ProtocolVersion string                     `json:"protocolVersion"`
	Capabilities    map[string]json.RawMessage `json:"capabilities"`
	Instructions    string                     `json:"instructions"`
}

// memberInit is one member's part of a federated initialize.
type memberInit struct {
	session string
	result  initResult
	denied  bool
	err     error
}

// initialize starts one session with every member the policy allows, in
// parallel, and answers with the merged server.
func (fr *fedRequest) initialize(w http.ResponseWriter) error {
	s, f, st := fr.s, fr.f, fr.st
	var err error
	if st.version, err = requestVersion(fr.r, nil); err != nil {
		return err
	}
	req := st.msg.Request()
	fr.fo = legacyFan(sessionClaims{})
	inits := make([]memberInit, len(f.members))
	var wg sync.WaitGroup
	for i, m := range f.members {
		if _, ok := fr.allowed(fr.input(m, req)); !ok {
			inits[i].denied = true
			continue
		}
		wg.Go(func() { inits[i] = fr.initMember(fr.r.Context(), m, st.version, req.Params) })
	}
	wg.Wait()
	claims := sessionClaims{Route: f.cfg.Path, Principal: fr.p.ID, Caps: capabilityDigest(mcpwire.ParamsOf(req)), Members: map[string]string{}}
	var ok []initResult
	var missing []string
	for i, in := range inits {
		name := f.members[i].upstream.Name
		switch {
		case in.denied:
		case in.err != nil:
			missing = append(missing, name)
			loggerOf(fr.r.Context(), s.log).Warn("federated initialize: member left out of the session", "route", f.cfg.Path, "member", name, "error", in.err)
		default:
			claims.Members[name] = in.session
			ok = append(ok, in.result)
		}
	}
	if len(ok) == 0 {
		if len(missing) == 0 {
			return newError(http.StatusOK, CodePolicyDenied, "request denied by policy", nil)
		}
		return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "no member of the federated route could be initialized", nil)
	}
	result, version := mergeInit(f.cfg.Name, ok, missing)
	claims.Version = version
	id, err := s.sessions.Seal(claims)
	if err != nil {
		return fmt.Errorf("seal session: %w", err)
	}
	fr.rememberLate(id, claims, missing, req.Params)
	w.Header().Set("Mcp-Session-Id", id)
	s.metrics.sessionsStarted.WithLabelValues(f.cfg.Name).Inc()
	return s.answer(w, req.ID, result)
}

// initMember initializes member m with the client's params, within the
// route's member timeout, and confirms it with notifications/initialized.
func (fr *fedRequest) initMember(ctx context.Context, m *route, version string, params json.RawMessage) memberInit {
	ctx, cancel := context.WithTimeout(upstream.WithRetry(ctx, upstream.RetrySafe), fr.f.cfg.MemberTimeout)
	defer cancel()
	// viaResilience: the member is reached as the client's request to it
	// would be, and a handshake is safe to retry (a lost session is only
	// unused).
	opened, err := openSession(ctx, m.viaResilience(), handshake{id: fedRequestID, params: params,
		req: upstreamRequest{version: version, as: m.identity(fr.p), header: requestIDHeader(ctx)}})
	if err != nil {
		return memberInit{err: err}
	}
	var init initResult
	if err := json.Unmarshal(opened.result, &init); err != nil {
		return memberInit{err: fmt.Errorf("initialize result unusable: %w", err)}
	}
	return memberInit{session: opened.id, result: init}
}

// mergeInit is the federated server's initialize result: the lowest
// version the members negotiated, the union of their capabilities (with
// listChanged and subscribe, which the merged GET stream serves), their
// instructions, and the members left out.
func mergeInit(name string, members []initResult, missing []string) (json.RawMessage, string) {
	version := members[0].ProtocolVersion
	for _, m := range members {
		version = min(version, m.ProtocolVersion) // revisions are dates
	}
	caps, instructions := mergeCapabilities(members, "tools", "prompts", "resources", "completions", "logging")
	skillsCapability(caps, members)
	streamCapabilities(caps, members) // the session's GET stream carries them (fedstream.go)
	result := map[string]any{
		"protocolVersion": version,
		"capabilities":    caps,
		"serverInfo":      map[string]string{"name": "ctxgate federation " + name, "version": "1"},
	}
	if instructions != "" {
		result["instructions"] = instructions
	}
	if len(missing) > 0 {
		result["_meta"] = map[string]any{partialMetaKey: partialNote{Missing: missing}}
	}
	raw, _ := json.Marshal(result)
	return raw, version
}

// mergeCapabilities is the union of the members' capabilities of the given
// kinds, less what needs a stream (listChanged, subscribe), and their
// instructions joined: era-agnostic, for initialize and server/discover.
func mergeCapabilities(members []initResult, kinds ...string) (map[string]map[string]any, string) {
	caps := map[string]map[string]any{}
	var instructions []string
	for _, m := range members {
		for _, k := range kinds {
			raw, ok := m.Capabilities[k]
			if !ok {
				continue
			}
			if caps[k] == nil {
				caps[k] = map[string]any{}
			}
			var sub map[string]any
			_ = json.Unmarshal(raw, &sub)
			for sk, sv := range sub {
				if sk != "listChanged" && sk != "subscribe" {
					caps[k][sk] = sv
				}
			}
		}
		if m.Instructions != "" {
			// Neutralised like any upstream text a model reads (untrusted.go).
			instructions = append(instructions, neutralise(m.Instructions))
		}
	}
	return caps, strings.Join(instructions, "\n\n")
}

// notify sends a client notification on to every member the policy lets
// it reach. notifications/initialized was already sent by the gateway at
// initialize.
func (fr *fedRequest) notify(req *jsonrpc.Request, body []byte) error {
	if req.Method == "notifications/initialized" {
		return nil
	}
	return fr.fanOut(req, body)
}

// fanOut sends the client's message to every member of the session the
// policy lets it reach: each is decided as on the member's own route. A
// member that ended its session makes the answer memberSessionEnded, as
// on every other method.
func (fr *fedRequest) fanOut(req *jsonrpc.Request, body []byte) error {
	members, _ := fr.f.sessionMembers(fr.fo.claims)
	members = slices.DeleteFunc(members, func(m *route) bool {
		_, ok := fr.allowed(fr.input(m, req))
		return !ok
	})
	if ended := fr.sendAll(members, http.MethodPost, body); ended != "" {
		return memberSessionEnded(errMemberUnavailable{member: ended, err: errMemberSessionEnded})
	}
	return nil
}

// sendAll sends one message to members in parallel, each within the
// member timeout; answers are not read beyond what says a member ended
// its session (best effort). ended names such a member, if any.
func (fr *fedRequest) sendAll(members []*route, method string, body []byte) (ended string) {
	claims := fr.fo.claims
	var wg sync.WaitGroup
	lost := make([]bool, len(members))
	for i, m := range members {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(fr.r.Context(), fr.f.cfg.MemberTimeout)
			defer cancel()
			req := upstreamRequest{method: method, body: body, session: claims.Members[m.upstream.Name], version: claims.Version, as: m.identity(fr.p)}
			resp, raw, err := askMember(ctx, m, req)
			if err != nil {
				loggerOf(ctx, fr.s.log).Warn("federated message not delivered to a member", "member", m.upstream.Name, "method", method, "error", err)
				return
			}
			lost[i] = method == http.MethodPost && sessionLost(resp, raw)
		})
	}
	wg.Wait()
	for i, m := range members {
		if lost[i] {
			return m.upstream.Name
		}
	}
	return ""
}

// delete ends the session with every member.
func (fr *fedRequest) delete(w http.ResponseWriter) error {
	if err := modernStreamless(fr.r); err != nil {
		return err
	}
	claims, err := fr.openSession()
	if err != nil {
		return err
	}
	// Out of the retried sessions before any DELETE: a member that joined
	// since openSession is in what remove returns, and one that joins
	// after it is ended by its own retry (lateSessions.done).
	joined := fr.f.late.remove(fr.r.Header.Get("Mcp-Session-Id"))
	fr.f.asks.end(fr.r.Header.Get("Mcp-Session-Id"))
	all := make(map[string]string, len(claims.Members)+len(joined))
	maps.Copy(all, claims.Members)
	maps.Copy(all, joined)
	claims.Members = all
	fr.fo = legacyFan(claims)
	members, _ := fr.f.sessionMembers(claims)
	fr.sendAll(members, http.MethodDelete, nil)
	fr.s.metrics.sessionsEnded.WithLabelValues(fr.f.cfg.Name).Inc()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
