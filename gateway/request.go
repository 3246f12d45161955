package gateway

import (
	"errors"
	"net/http"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// This file is the request path of one route, top to bottom: the order of
// the route's stages is decided here and nowhere else (the middleware in
// front of it is chain's; the response's is respond.go's; the drawing is
// in doc.go). Each stage is a named function with one job, most in the
// file of its concern; a stage returns an error that stops the request,
// answered by writeError.

// serveRoute handles the Streamable HTTP endpoint of one route: the
// request's scope, then its stages in order, then an answer of the
// gateway's own or the upstream's.
func (s *Server) serveRoute(rt *route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		fwd, err := s.routeScope(r, rt)
		if err == nil {
			err = s.prepareByMethod(r, fwd) // headers, decode, session, version
		}
		s.nameTarget(fwd) // for the access record and the metrics, even on failure
		if err == nil {
			r, err = s.prepareCredential(r, fwd) // credentials.go
		}
		if err == nil {
			fwd.base = baseInput(r, fwd)
			err = s.authorize(r, fwd) // enforce.go: a decision per message
		}
		if err == nil && fwd.bridging {
			err = s.prepareBridge(r, fwd, fwd.msg.Request()) // bridge.go
			if fwd.bridge != nil {
				defer rt.bridge.release(fwd.bridge) // in use until answered
			}
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		if fwd.answer != nil {
			writeAnswer(w, fwd.answer) // the gateway's own (bridged server/discover)
			return
		}
		s.noteSubscription(r.Context(), fwd) // subscriptions.go
		s.forwardUpstream(w, r, rt, fwd)
	}
}

// routeScope starts the request's scope on rt: its state (requestLog's)
// and the verified principal (authenticate's).
func (s *Server) routeScope(r *http.Request, rt *route) (*forward, error) {
	st := stateOf(r.Context())
	st.upstream = rt.upstream.Name
	principal, err := principalOf(r.Context())
	if err != nil {
		return &forward{requestState: st, route: rt, era: eraLegacy}, err
	}
	return &forward{requestState: st, route: rt, principal: principal, era: eraLegacy}, nil
}

// prepareByMethod is the stage dispatch by HTTP method: a POST carries a
// message (preparePost), a GET opens the server's stream, a DELETE ends
// the session; both of those legacy-era only and without a body.
func (s *Server) prepareByMethod(r *http.Request, fwd *forward) error {
	switch r.Method {
	case http.MethodPost:
		return s.preparePost(r, fwd)
	case http.MethodGet:
		fwd.stream = true
		if err := checkBodyless(r); err != nil {
			return err
		}
		if err := checkAccept(r, "text/event-stream"); err != nil {
			return err
		}
		return s.prepareSession(r, fwd)
	case http.MethodDelete:
		if err := checkBodyless(r); err != nil {
			return err
		}
		return s.prepareSession(r, fwd)
	}
	err := newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "method not allowed; use POST, GET or DELETE", nil)
	err.Header = http.Header{"Allow": {"GET, POST, DELETE"}}
	return err
}

// checkBodyless checks the headers of a GET or DELETE: legacy era only,
// with no message for the Mcp- headers to mirror.
func checkBodyless(r *http.Request) error {
	if err := modernStreamless(r); err != nil {
		return err
	}
	return checkLegacyMcpHeaders(r.Header, nil)
}

// preparePost reads and strictly decodes the body (readPost), then
// dispatches on what it is: a batch, a modern-era request (no session),
// initialize (a session starts), or a request on an open session.
func (s *Server) preparePost(r *http.Request, fwd *forward) error {
	err := s.readPost(r, fwd) // mcp.go
	if errors.Is(err, errBatch) {
		return s.prepareBatch(r, fwd)
	}
	if err != nil {
		return err
	}
	msg := fwd.msg
	if isModernRequest(r, msg) {
		return s.prepareModern(r, fwd, msg) // modern.go
	}
	if err := checkLegacyMcpHeaders(r.Header, msg); err != nil {
		return err
	}
	if msg.Method() == "initialize" {
		return prepareInitialize(r, fwd, msg)
	}
	return s.prepareSession(r, fwd) // mcp.go
}

// prepareInitialize prepares an initialize: the client's capabilities
// recorded for the session to be minted, and the version it asks for.
func prepareInitialize(r *http.Request, fwd *forward, msg *mcpwire.Message) error {
	if !msg.IsCall() {
		return badRequest("initialize must be a request with an id", nil)
	}
	// A new session starts here; a session header sent along is not
	// forwarded (the upstream session is created fresh).
	fwd.initialize = true
	p := msg.Params()
	fwd.caps = capabilityDigest(p)
	fwd.urlElicit = declaresURLElicitation(p.Capabilities)
	var err error
	if fwd.version, err = requestVersion(r, nil); err != nil {
		return err
	}
	// Until the answer says what was negotiated, the version in effect
	// is the one the client asks for (what a server supporting it
	// answers), not the header default: the policy, the logs and the
	// metrics see that, and mintSession corrects it to the answer's.
	if v := p.ProtocolVersion; isSupportedVersion(v) {
		fwd.version = v
	}
	return nil
}

// nameTarget records the tool, prompt or resource a single message names,
// as the access record and the metrics label it.
func (s *Server) nameTarget(fwd *forward) {
	if fwd.msg != nil && fwd.msg.Request() != nil {
		fwd.target = targetOf(fwd.msg.Request())
		fwd.toolLabel = s.toolLabel(fwd.route.upstream.Name, fwd.target)
	}
}

// baseInput is the policy input every decision about this exchange starts
// from: principal, route, protocol, source.
func baseInput(r *http.Request, fwd *forward) *policy.Input {
	name := fwd.route.upstream.Name
	return &policy.Input{
		Principal: policyPrincipal(fwd.principal),
		Route:     name,
		Upstream:  name,
		Phase:     policy.PhaseRequest,
		Protocol:  policy.Protocol{Version: fwd.version, Era: fwd.era},
		Source:    policy.Source{IP: remoteIP(r), UserAgent: r.UserAgent()},
	}
}

// forwardUpstream sends an authorized request on, in this order: rate
// limits (resilience.go), the response cache (cache.go; a hit is still a
// request the principal made, so after the rate limit), a stream slot for
// a long-lived stream, the idempotency key of a tools/call
// (idempotency.go: at most once per principal and key), and otherwise
// straight through the route's proxy (proxy.go's rewrite, then the
// upstream executor; the answer comes back through respond.go).
func (s *Server) forwardUpstream(w http.ResponseWriter, r *http.Request, rt *route, fwd *forward) {
	r = r.WithContext(upstream.WithRetry(withForward(r.Context(), fwd), rt.retryClass(fwd)))
	if err := s.rateLimit(r.Context(), rt, fwd); err != nil {
		writeError(w, r, err)
		return
	}
	if s.serveCached(w, r, fwd) {
		return
	}
	if fwd.stream || fwd.listen {
		// A stream is open for as long as the client keeps it: it holds a
		// stream slot, not one of the requests the gateway works on (a
		// thousand idle streams must not shed calls).
		done, err := s.openStream(r.Context())
		if err != nil {
			writeError(w, r, err)
			return
		}
		defer done()
		if rt.streamProxy != nil {
			rt.streamProxy.ServeHTTP(w, r)
			return
		}
	}
	if fwd.msg != nil && fwd.msg.IsCall() && fwd.msg.Method() == "tools/call" {
		key, err := idempotencyKey(r, fwd.msg.Request())
		if err != nil {
			writeError(w, r, err)
			return
		}
		if key != "" {
			s.forwardOnce(w, r, rt, fwd.principal.ID, key, fwd.requestState)
			return
		}
	}
	rt.proxy.ServeHTTP(w, r)
}
