package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// route is one MCP endpoint of the gateway and the upstream behind it.
type route struct {
	path     string
	upstream *upstream.Upstream
	proxy    http.Handler
	// streamProxy is proxy for long-lived streams, with small copy
	// buffers: a stream holds its buffer for as long as it is open.
	streamProxy http.Handler
	// resource is the route's canonical URL (public_url + path): the RFC
	// 8707 resource a client asks a token for.
	resource string
	// metadataURL is where the route's RFC 9728 metadata is served.
	metadataURL    string
	requiredScopes []string
	// identityHeaders tells the upstream who the principal is.
	identityHeaders bool
	// cache is what is cached of the upstream; nil caches nothing.
	cache *config.UpstreamCache
	// res is what the route adds around the upstream's executor.
	res routeResilience
	// transport is the upstream's executor around attemptTransport: what
	// the proxy and the cache's fetches send through.
	transport http.RoundTripper
	// era is what the gateway learned of the upstream's revisions; nil
	// means unknown (the gateway's whole list is assumed).
	era *upstreamEra
	// bridge holds the legacy sessions that serve modern clients when the
	// upstream speaks only the legacy era; nil: no bridging.
	bridge *bridgeSessions
	// fed is set on a federated route (federation.go), whose upstream is
	// only its name.
	fed *federation
}

// forward is the request's scope on a route: everything the reverse proxy
// needs to send one request on, decided by the route's stages
// (request.go) before anything leaves the gateway. It carries the
// request's *requestState, what the access record, the metrics and the
// error writer read, so a stage takes one pointer: fwd.version is the
// state's. Two names are the forward's own: route is the route (the
// state's route is its name, fwd.requestState.route) and principal the
// verified principal (the same pointer the state holds). A federated
// request has one forward per member it reaches, all on the request's one
// state.
type forward struct {
	*requestState
	route           *route
	principal       *Principal
	body            []byte            // the checked bytes; nil for GET and DELETE
	messages        []jsonrpc.Message // body decoded: one message, or a batch's
	upstreamSession string
	initialize      bool
	caps            string // digest of the client capabilities declared at initialize
	stream          bool   // a long-lived GET stream: ends when shutdown begins
	// era is the request's protocol era, eraLegacy or eraModern; listen
	// marks a modern subscriptions/listen stream.
	era    string
	listen bool
	// servedVersions are the revisions the route serves this request;
	// bridging marks a modern request for a legacy-only upstream that the
	// gateway bridges, on the legacy session bridge; answer is the
	// gateway's own answer (server/discover on a bridged route).
	servedVersions []string
	bridging       bool
	bridge         *bridgeSession
	answer         []byte
	// base is the policy input every decision about this exchange starts
	// from (principal, route, protocol, source); exchanges are the client
	// requests awaiting responses, by id.
	base      *policy.Input
	exchanges map[string]*exchange
	// federation is the federated route's name when the request came
	// through one (the policy's input.route); route is then the member's.
	federation string
	// asks records the member requests relayed to the client of a legacy
	// federated session (fedask.go); nil elsewhere.
	asks *sessionAsks
	// pushed are the response-phase redactions decided for the messages
	// of a stream no client request asked for, by method (pipeline.go).
	pushed map[string][]policy.Redaction
	// urlElicit: the client declared the elicitation url capability.
	urlElicit bool
}

type forwardKey struct{}

// withForward is ctx carrying fwd, for the proxy's rewrite and response
// hooks, which see only the request.
func withForward(ctx context.Context, fwd *forward) context.Context {
	return context.WithValue(ctx, forwardKey{}, fwd)
}

func forwardOf(ctx context.Context) *forward {
	f, _ := ctx.Value(forwardKey{}).(*forward)
	return f
}

// readPost checks a POST's headers, reads its (size-limited) body and
// decodes it strictly into st.msg; a batch is errBatch, left to the caller.
func (s *Server) readPost(r *http.Request, fwd *forward) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	if err := checkAccept(r, "application/json", "text/event-stream"); err != nil {
		return err
	}
	return s.decodePost(r, fwd)
}

// decodePost reads a POST's (size-limited) body and decodes it strictly
// into st.msg; a batch is errBatch, left to the caller. The Streamable
// HTTP endpoint (readPost) and the HTTP+SSE one (oldclient.go) both read
// a message this way.
func (s *Server) decodePost(r *http.Request, fwd *forward) error {
	body, err := readBody(r, s.cfg.Server.MaxBodyBytes)
	if err != nil {
		return bodyReadError(err)
	}
	fwd.body = body
	msg, err := mcpwire.DecodeWith(body, mcpwire.Limits{Values: s.cfg.Server.MaxJSONValues, StringBytes: s.cfg.Server.MaxJSONStringBytes})
	switch {
	case errors.Is(err, mcpwire.ErrOverBudget):
		fwd.rejectedID = mcpwire.PeekID(body)
		return newError(http.StatusRequestEntityTooLarge, CodePayloadTooLarge, "request too large: "+err.Error(), nil)
	case errors.Is(err, mcpwire.ErrBatch):
		return err
	case errors.Is(err, mcpwire.ErrMalformed):
		return newError(http.StatusBadRequest, CodeParseError, "parse error: "+err.Error(), nil)
	case err != nil:
		fwd.rejectedID = mcpwire.PeekID(body)
		return badRequest("invalid JSON-RPC message: "+err.Error(), nil)
	}
	fwd.msg = msg
	fwd.messages = []jsonrpc.Message{msg.Msg}
	// A method the modern era removed is answered 404 as it is
	// (prepareModern), whatever its params: never forwarded either way.
	if err := msg.CheckParams(); err != nil && !removedModernMethod(r, msg) {
		return newError(http.StatusBadRequest, CodeInvalidParams, err.Error(), nil)
	}
	return nil
}

// readBody reads a request body whole. A declared Content-Length (within
// limit, which the body reader enforces) sizes the buffer once: growing it
// as io.ReadAll does would allocate about twice the body on the way.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	n := r.ContentLength
	if n <= 0 || n > limit {
		return io.ReadAll(r.Body)
	}
	buf := bytes.NewBuffer(make([]byte, 0, n+bytes.MinRead))
	_, err := buf.ReadFrom(r.Body)
	return buf.Bytes(), err
}

// checkedBody is the body of a forwarded request: the checked bytes. It
// is deliberately not an io.Seeker: failsafehttp would then rewind one
// shared reader for a retry while the transport's write loop of the
// attempt before may still be reading it (a data race that can corrupt
// the retried body); a plain reader makes it take its own copy, each
// attempt reading a reader of its own.
type checkedBody struct{ r *bytes.Reader }

func (b checkedBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (checkedBody) Close() error { return nil }

// prepareBatch accepts a JSON-RPC batch only where the session's protocol
// revision allows one, and only if every element passes the same strict
// decode as a single message.
func (s *Server) prepareBatch(r *http.Request, fwd *forward) error {
	if err := checkLegacyMcpHeaders(r.Header, nil); err != nil {
		return err // no header can mirror a whole batch
	}
	if err := s.prepareSession(r, fwd); err != nil {
		return err
	}
	if !mcpwire.AllowsBatch(fwd.version) {
		return badRequest("JSON-RPC batches are not supported in protocol version "+fwd.version, nil)
	}
	dec := jsontext.NewDecoder(bytes.NewReader(fwd.body))
	if _, err := dec.ReadToken(); err != nil {
		return badRequest("invalid batch", err)
	}
	n := 0
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return badRequest("invalid batch", err)
		}
		// The element as a slice of the body, which never changes: v is
		// the decoder's buffer, void after the next read, and the decoded
		// message keeps slices of what it decodes.
		end := dec.InputOffset()
		msg, err := mcpwire.Decode(fwd.body[end-int64(len(v)) : end])
		if err != nil {
			return badRequest("invalid message in batch: "+err.Error(), err)
		}
		if err := msg.CheckParams(); err != nil {
			return newError(http.StatusBadRequest, CodeInvalidParams, "invalid message in batch: "+err.Error(), nil)
		}
		if msg.Method() == "initialize" {
			return badRequest("initialize must not be part of a batch", nil)
		}
		fwd.messages = append(fwd.messages, msg.Msg)
		n++
	}
	if n == 0 {
		return badRequest("empty batch", nil)
	}
	return nil
}

// prepareSession opens the request's sealed session. Missing is 400; an
// invalid, expired, foreign-principal or foreign-route session is 404, the
// answer the spec gives for an unknown session, so a client learns nothing
// about whose session it replayed.
func (s *Server) prepareSession(r *http.Request, fwd *forward) error {
	ids := r.Header.Values("Mcp-Session-Id")
	switch len(ids) {
	case 0:
		return badRequest("Mcp-Session-Id header is required; send initialize first", nil)
	case 1:
	default:
		return badRequest("more than one Mcp-Session-Id header", nil)
	}
	claims, err := s.sessions.Open(ids[0])
	switch {
	case err != nil:
	case claims.Route != fwd.route.path:
		err = errors.New("session belongs to route " + claims.Route)
	case claims.Principal != fwd.principal.ID:
		// Bound to the verified principal id, never to anything the client
		// merely asserts.
		err = errors.New("session belongs to another principal")
	}
	if err != nil {
		return newError(http.StatusNotFound, CodeSessionNotFound, "session not found; initialize a new session", err)
	}
	fwd.session = true
	fwd.upstreamSession = claims.Upstream
	fwd.caps = claims.Caps
	fwd.urlElicit = claims.URLElicit
	fwd.version, err = requestVersion(r, &claims)
	return err
}

// writeJSON writes a small JSON document (admin answers).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// isEventStream reports whether a response is a text/event-stream.
func isEventStream(h http.Header) bool {
	ct, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "text/event-stream")
}
