package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// fedRequestID is the id of the requests the gateway itself sends members.
const fedRequestID = "ctxgate-federation"

// memberPost sends body to member m on session (may be "") and reads the
// whole answer, bounded, through the member's executor.
func (s *Server) memberPost(ctx context.Context, m *route, p *Principal, session, version string, body []byte) (*http.Response, []byte, error) {
	return s.memberSend(ctx, http.MethodPost, m, p, session, version, body)
}

func (s *Server) memberSend(ctx context.Context, method string, m *route, p *Principal, session, version string, body []byte) (*http.Response, []byte, error) {
	return s.memberSendHeader(ctx, method, m, p, session, version, nil, body)
}

// setUpstreamHeaders sets what a request the gateway itself sends an
// upstream carries: JSON in, JSON or SSE back, the upstream session and
// revision when there are any and, when the route forwards identity
// (identity), the verified principal p: never anything a client sent.
func setUpstreamHeaders(h http.Header, session, version string, p *Principal, identity bool) {
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json, text/event-stream")
	if version != "" {
		h.Set("Mcp-Protocol-Version", version)
	}
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	if identity && p != nil {
		h.Set("X-Ctxgate-Principal", p.ID)
		h.Set("X-Ctxgate-Principal-Kind", p.Kind)
	}
}

// memberSendHeader is memberSend with extra headers (a modern request's
// Mcp-Method).
func (s *Server) memberSendHeader(ctx context.Context, method string, m *route, p *Principal, session, version string, extra http.Header, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, m.upstream.URL.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body == nil {
		req.Body, req.ContentLength = nil, 0
	}
	setUpstreamHeaders(req.Header, session, version, p, m.identityHeaders)
	for k, vs := range extra {
		req.Header[k] = vs
	}
	if st := stateOf(ctx); st != nil {
		req.Header.Set("X-Request-Id", st.id)
	}
	resp, err := m.transport.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxFilteredResponseBytes+1))
	if err == nil && len(raw) > maxFilteredResponseBytes {
		err = fmt.Errorf("answer larger than %d bytes", maxFilteredResponseBytes)
	}
	return resp, raw, err
}

// memberResult is the result of the gateway's own request in a member's
// answer; a JSON-RPC error or an HTTP failure is an error.
func memberResult(resp *http.Response, raw []byte) (json.RawMessage, error) {
	if resp.StatusCode == http.StatusNotFound && resp.Request != nil && resp.Request.Header.Get("Mcp-Session-Id") != "" {
		return nil, errMemberSessionEnded
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered HTTP %d", resp.StatusCode)
	}
	for _, payload := range messagePayloads(raw, isEventStream(resp.Header)) {
		msg, err := decodeRPC(payload)
		if err != nil {
			continue
		}
		if r, ok := msg.(*jsonrpc.Response); ok {
			if r.Error != nil {
				return nil, r.Error
			}
			return r.Result, nil
		}
	}
	return nil, errors.New("answer holds no response")
}

// errMemberSessionEnded is a member's 404 to a request on its session: the
// member forgot the session (a restart, its own expiry).
var errMemberSessionEnded = errors.New("the member ended its session")

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

// federatedInitialize starts one session with every member the policy
// allows, in parallel, and answers with the merged server.
func (s *Server) federatedInitialize(w http.ResponseWriter, r *http.Request, f *federation, fwd *forward, st *requestState) error {
	var err error
	if st.version, err = requestVersion(r, nil); err != nil {
		return err
	}
	req := st.msg.Request()
	inits := make([]memberInit, len(f.members))
	var wg sync.WaitGroup
	for i, m := range f.members {
		mf := legacyFan(sessionClaims{}).forward(f, m, fwd.principal)
		if s.policy != nil && !s.decide(r.Context(), policy.PhaseRequest, s.policyInput(r, mf, st, req)).Allow {
			inits[i].denied = true
			continue
		}
		wg.Go(func() { inits[i] = s.initMember(r.Context(), f, m, fwd.principal, st.version, req.Params) })
	}
	wg.Wait()
	claims := sessionClaims{Route: f.cfg.Path, Principal: fwd.principal.ID, Caps: capabilityDigest(req.Params), Members: map[string]string{}}
	var ok []initResult
	var missing []string
	for i, in := range inits {
		name := f.members[i].upstream.Name
		switch {
		case in.denied:
		case in.err != nil:
			missing = append(missing, name)
			loggerOf(r.Context(), s.log).Warn("federated initialize: member left out of the session", "route", f.cfg.Path, "member", name, "error", in.err)
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
	w.Header().Set("Mcp-Session-Id", id)
	s.metrics.sessionsStarted.WithLabelValues(f.cfg.Name).Inc()
	return s.answer(w, req.ID, result)
}

// initMember initializes member m with the client's params, within the
// route's member timeout, and confirms it with notifications/initialized.
func (s *Server) initMember(ctx context.Context, f *federation, m *route, p *Principal, version string, params json.RawMessage) memberInit {
	ctx, cancel := context.WithTimeout(upstream.WithRetry(ctx, upstream.RetrySafe), f.cfg.MemberTimeout)
	defer cancel()
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": fedRequestID, "method": "initialize", "params": params})
	if err != nil {
		return memberInit{err: err}
	}
	resp, raw, err := s.memberPost(ctx, m, p, "", version, body)
	if err != nil {
		return memberInit{err: err}
	}
	result, err := memberResult(resp, raw)
	if err != nil {
		return memberInit{err: err}
	}
	var init initResult
	if err := json.Unmarshal(result, &init); err != nil || !isSupportedVersion(init.ProtocolVersion) {
		return memberInit{err: fmt.Errorf("initialize result unusable (version %q)", init.ProtocolVersion)}
	}
	sess := resp.Header.Get("Mcp-Session-Id")
	resp, _, err = s.memberPost(ctx, m, p, sess, init.ProtocolVersion, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`))
	if err == nil && resp.StatusCode >= 300 {
		err = fmt.Errorf("notifications/initialized answered HTTP %d", resp.StatusCode)
	}
	return memberInit{session: sess, result: init, err: err}
}

// mergeInit is the federated server's initialize result: the lowest
// version the members negotiated, the union of their capabilities (less
// what needs a GET stream), their instructions, and the members left out.
func mergeInit(name string, members []initResult, missing []string) (json.RawMessage, string) {
	version := members[0].ProtocolVersion
	for _, m := range members {
		version = min(version, m.ProtocolVersion) // revisions are dates
	}
	caps, instructions := mergeCapabilities(members, "tools", "prompts", "resources", "completions", "logging")
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

// federatedNotify sends a client notification on to every member the
// policy lets it reach. notifications/initialized was already sent by the
// gateway at initialize.
func (s *Server) federatedNotify(r *http.Request, f *federation, p *Principal, claims sessionClaims, st *requestState, req *jsonrpc.Request, body []byte) {
	if req.Method == "notifications/initialized" {
		return
	}
	s.fanOut(r, f, p, claims, st, req, body)
}

// fanOut sends the client's message to every member of the session the
// policy lets it reach: each is decided as on the member's own route.
func (s *Server) fanOut(r *http.Request, f *federation, p *Principal, claims sessionClaims, st *requestState, req *jsonrpc.Request, body []byte) {
	members, _ := f.sessionMembers(claims)
	members = slices.DeleteFunc(members, func(m *route) bool {
		mf := legacyFan(claims).forward(f, m, p)
		return s.policy != nil && !s.decide(r.Context(), policy.PhaseRequest, s.policyInput(r, mf, st, req)).Allow
	})
	s.sendAll(r, f, p, claims, members, http.MethodPost, body)
}

// sendAll sends one message to members in parallel, each within the
// member timeout; answers are not read beyond their status (best effort).
func (s *Server) sendAll(r *http.Request, f *federation, p *Principal, claims sessionClaims, members []*route, method string, body []byte) {
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), f.cfg.MemberTimeout)
			defer cancel()
			if _, _, err := s.memberSend(ctx, method, m, p, claims.Members[m.upstream.Name], claims.Version, body); err != nil {
				loggerOf(ctx, s.log).Warn("federated message not delivered to a member", "member", m.upstream.Name, "method", method, "error", err)
			}
		})
	}
	wg.Wait()
}

// federatedDelete ends the session with every member.
func (s *Server) federatedDelete(w http.ResponseWriter, r *http.Request, f *federation, p *Principal, st *requestState) error {
	if err := modernStreamless(r); err != nil {
		return err
	}
	claims, err := s.openFederatedSession(r, f, p, st)
	if err != nil {
		return err
	}
	members, _ := f.sessionMembers(claims)
	s.sendAll(r, f, p, claims, members, http.MethodDelete, nil)
	s.metrics.sessionsEnded.WithLabelValues(f.cfg.Name).Inc()
	w.WriteHeader(http.StatusNoContent)
	return nil
}
