package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/upstream"
)

// Reaching an upstream. A client's request is relayed by the route's
// reverse proxy (proxy.go) through the executor. Every request the gateway
// sends of its own (the era probe, a health probe, the handshakes of the
// bridge, of federation members and of the cache listener, federation's
// fan-out, a tool-list fetch, the refusal of an upstream's request) goes
// through askUpstream, on one of a route's two ways, named at the call
// site:
//
//   - viaResilience: the upstream's executor (principal share, deadline,
//     bulkhead, retries as the context's upstream.Retry allows, breaker)
//     around one attempt (span, attempt metrics, /admin/upstreams), as a
//     client's request goes;
//   - direct: one request on the upstream's credentialed transport, and
//     nothing around it. A call site that takes it says why.
//
// Both are upstream.Transport: the Streamable HTTP implementation today,
// whatever the upstream's transport is next.

// viaResilience is the route's way through its executor.
func (rt *route) viaResilience() upstream.Transport {
	return upstream.HTTP{URL: rt.upstream.URL, Next: rt.transport}
}

// direct is the route's way around its executor.
func (rt *route) direct() upstream.Transport { return rt.upstream.Direct() }

// identity is who a request on p's behalf names to the route's upstream:
// p when the route forwards identity (identity_headers), else nobody.
func (rt *route) identity(p *Principal) *Principal {
	if rt.identityHeaders {
		return p
	}
	return nil
}

// upstreamRequest is one request of the gateway's own to an upstream.
type upstreamRequest struct {
	// method is http.MethodPost (or ""), a message; http.MethodGet, the
	// session's stream; http.MethodDelete, the session's end.
	method string
	body   []byte // the message or batch, for a POST
	// session and version name the upstream session and revision; ""
	// sends none.
	session, version string
	// as is the verified principal named to the upstream (identity
	// headers); nil names nobody. Set it with route.identity.
	as *Principal
	// header adds to, or replaces, what setUpstreamHeaders sets
	// (Mcp-Method, User-Agent, X-Request-Id, Accept).
	header http.Header
}

// askUpstream sends req on way and returns the answer, its body unread:
// the one place the gateway's own requests are built.
func askUpstream(ctx context.Context, way upstream.Transport, req upstreamRequest) (*http.Response, error) {
	h := make(http.Header, 4+len(req.header))
	setUpstreamHeaders(h, req.session, req.version, req.as, req.as != nil)
	for k, vs := range req.header {
		h[k] = vs
	}
	switch req.method {
	case http.MethodGet:
		h.Del("Content-Type") // a GET has no body
		return way.Open(ctx, h)
	case http.MethodDelete:
		return way.End(ctx, h)
	}
	return way.Send(ctx, upstream.Message{Body: req.body, Header: h})
}

// readAnswer reads an answer whole, at most limit bytes (a longer one is an
// error), and closes it.
func readAnswer(resp *http.Response, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err == nil && int64(len(raw)) > limit {
		err = fmt.Errorf("answer larger than %d bytes", limit)
	}
	return raw, err
}

// askAndRead is askUpstream with the answer read whole (readAnswer).
func askAndRead(ctx context.Context, way upstream.Transport, req upstreamRequest, limit int64) (*http.Response, []byte, error) {
	resp, err := askUpstream(ctx, way, req)
	if err != nil {
		return nil, nil, err
	}
	raw, err := readAnswer(resp, limit)
	return resp, raw, err
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

// handshake is an initialize of the gateway's own.
type handshake struct {
	id     any             // the initialize's JSON-RPC id
	params json.RawMessage // protocolVersion, capabilities, clientInfo
	// req carries both messages' headers: the initialize's version (the
	// confirmation carries the negotiated one), the principal, extras.
	req upstreamRequest
	// needSession refuses an upstream that opens no session (stateless)
	// before confirming: errNoSession.
	needSession bool
}

// openedSession is what a handshake opened.
type openedSession struct {
	id      string          // the upstream's Mcp-Session-Id; "" if it assigned none
	version string          // the negotiated revision
	result  json.RawMessage // the initialize result
}

// errNoSession: the upstream answered initialize without a session.
var errNoSession = errors.New("no Mcp-Session-Id (a stateless server)")

// openSession initializes a session of the gateway's own with an
// upstream: initialize, its result checked (a revision the gateway
// relays), then notifications/initialized on the new session. The bridge,
// federation members and the cache listener all open theirs here.
func openSession(ctx context.Context, way upstream.Transport, hs handshake) (openedSession, error) {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": hs.id, "method": "initialize", "params": hs.params})
	if err != nil {
		return openedSession{}, err
	}
	req := hs.req
	req.method, req.body, req.session = http.MethodPost, body, ""
	resp, raw, err := askAndRead(ctx, way, req, maxInitializeResponseBytes)
	if err != nil {
		return openedSession{}, fmt.Errorf("initialize: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return openedSession{}, fmt.Errorf("upstream answered initialize with %s", resp.Status)
	}
	result, err := memberResult(resp, raw)
	if err != nil {
		return openedSession{}, fmt.Errorf("initialize: %w", err)
	}
	var init struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	if json.Unmarshal(result, &init) != nil || !isSupportedVersion(init.ProtocolVersion) {
		return openedSession{}, fmt.Errorf("initialize result unusable (version %q)", init.ProtocolVersion)
	}
	sess := openedSession{id: resp.Header.Get("Mcp-Session-Id"), version: init.ProtocolVersion, result: result}
	if hs.needSession && sess.id == "" {
		return openedSession{}, errNoSession
	}
	req.body, req.session, req.version = []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), sess.id, sess.version
	if resp, err = askUpstream(ctx, way, req); err != nil {
		return openedSession{}, fmt.Errorf("notifications/initialized: %w", err)
	}
	_, _ = readAnswer(resp, maxInitializeResponseBytes)
	if resp.StatusCode >= 300 {
		return openedSession{}, fmt.Errorf("notifications/initialized answered HTTP %d", resp.StatusCode)
	}
	return sess, nil
}

// memberResult is the result of the gateway's own request in an answer; a
// JSON-RPC error or an HTTP failure is an error.
func memberResult(resp *http.Response, raw []byte) (json.RawMessage, error) {
	if sessionLost(resp, raw) {
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

// sessionLost reports whether a member's answer (raw, its whole body) to
// a request on its session says it no longer has that session: 404 as the
// spec has it, or 400 for no request as the TypeScript SDK answers a
// session it does not know (bridgeSessionLost).
func sessionLost(resp *http.Response, raw []byte) bool {
	onSession := resp.Request != nil && resp.Request.Header.Get("Mcp-Session-Id") != ""
	return onSession && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest && sessionErrorBody(raw))
}

// errMemberSessionEnded is an upstream's 404 to a request on its session:
// it forgot the session (a restart, its own expiry).
var errMemberSessionEnded = errors.New("the member ended its session")
