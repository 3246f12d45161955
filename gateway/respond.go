package gateway

import (
	"bytes"
	"context"
	"net/http"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// This file is the response path of one forwarded request, top to
// bottom: what comes back from the upstream is checked as an answer
// (answer.go), the session bookkept, then each message goes through one
// pipeline (transformMessage) before anything is written to the client:
// matched to its request, the result filtered and redacted as the
// request's decision says (filterResult, enforce.go: tool pages read and
// screened, list items hidden, text neutralised, values redacted),
// server requests and notifications decided and redacted. The writing is
// ReverseProxy's: a JSON answer's new body, or an SSE relay (sse.go) that
// runs the pipeline per event. The request side is request.go's.

// modifyResponse rewrites what comes back before the client sees any of
// it; what an answer may be is answer.go's note.
func (s *Server) modifyResponse(resp *http.Response) error {
	fwd := forwardOf(resp.Request.Context())
	kind, upstreamSession, err := s.checkAnswer(resp, fwd)
	if err != nil {
		return err
	}
	if err := s.bookSession(resp, fwd, upstreamSession); err != nil {
		return err
	}
	// The attempt's context ends when its body is closed (failsafe-go
	// cancels it then), which for a JSON answer is before the policy reads
	// it: decisions run on its values without its cancellation. Each is
	// still bounded by policy.timeout, and a relay stops deciding when the
	// client goes (the proxy closes it).
	ctx := context.WithoutCancel(resp.Request.Context())
	switch kind {
	case answerStream:
		s.relayStream(ctx, resp, fwd) // proxy.go: transformMessage per event
	case answerJSON:
		if s.policy != nil {
			return s.transformJSONBody(ctx, resp, fwd) // proxy.go: transformJSON
		}
	case answerEmpty:
		emptyBody(resp)
	case answerError:
		s.filterErrorBody(ctx, resp, fwd) // answer.go
	}
	return nil
}

// checkAnswer is the first look at an upstream's answer: its headers
// allow-listed, a redirect, a 401 and an ended bridged session refused,
// and the answer classified (answer.go); an encoded body with content is
// refused, since the policy could not read it. It returns the kind and
// the upstream's session id (before the allow-list drops it).
func (s *Server) checkAnswer(resp *http.Response, fwd *forward) (answerKind, string, error) {
	h := resp.Header
	upstreamSession, encoding := h.Get("Mcp-Session-Id"), h.Get("Content-Encoding")
	// Allow-listed, not deny-listed: the upstream's session id (the client
	// holds only the gateway's sealed id, bound to its principal), cookies
	// (shared by every principal), its WWW-Authenticate (it authenticates
	// the gateway, not the client), HSTS, CORS and the rest stay here.
	onlyRelayedHeaders(h)
	if err := refuseRedirect(resp); err != nil {
		return 0, "", err
	}
	if resp.StatusCode == http.StatusUnauthorized {
		_ = resp.Body.Close()
		return 0, "", errUpstreamUnauthorized
	}
	if fwd.bridge != nil && bridgeSessionLost(resp) {
		// The upstream ended the bridged session; the next request opens a
		// new one.
		fwd.route.bridge.drop(fwd.principal.ID, fwd.bridge)
		_ = resp.Body.Close()
		return 0, "", errBridgeSessionEnded
	}
	if fwd.federation != "" && fwd.upstreamSession != "" && bridgeSessionLost(resp) {
		// A member of a federated session forgot its own: answered as the
		// federated list is (memberSessionEnded), never relayed as the
		// member's own 404 or 400.
		_ = resp.Body.Close()
		return 0, "", errMemberUnavailable{member: fwd.route.upstream.Name, err: errMemberSessionEnded}
	}
	kind, err := classifyAnswer(resp, fwd)
	if err == nil && kind != answerEmpty {
		err = refuseEncoded(encoding)
	}
	if err != nil {
		_ = resp.Body.Close()
		return 0, "", err
	}
	return kind, upstreamSession, nil
}

// bookSession mints the client's sealed session on a successful
// initialize (proxy.go's mintSession) and counts an ended one.
func (s *Server) bookSession(resp *http.Response, fwd *forward, upstreamSession string) error {
	if fwd.initialize && resp.StatusCode == http.StatusOK {
		if err := s.mintSession(resp, fwd, upstreamSession); err != nil {
			return err
		}
	}
	if resp.Request.Method == http.MethodDelete && resp.StatusCode < 300 {
		s.metrics.sessionsEnded.WithLabelValues(fwd.route.upstream.Name).Inc()
	}
	return nil
}

// transformJSON applies transformMessage to a JSON response body, a single
// message or (2025-03-26) a batch.
func (s *Server) transformJSON(ctx context.Context, fwd *forward, body []byte) ([]byte, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		out, drop := s.transformMessage(ctx, fwd, body)
		if drop {
			// The one message of a JSON answer is the response to the
			// request: there is nothing to relay in its place.
			return nil, errUnreadableAnswer
		}
		return out, nil
	}
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if _, err := dec.ReadToken(); err != nil {
		return nil, errUnreadableAnswer
	}
	out := []byte{'['}
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return nil, errUnreadableAnswer
		}
		m, drop := s.transformMessage(ctx, fwd, v)
		if drop {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, m...)
	}
	return append(out, ']'), nil
}

// transformMessage is the policy's last word on one upstream message before
// the client sees it, whatever channel it comes on (pipeline.go). It
// returns the message to relay, or drop.
//   - the response to a client request: the result goes through
//     filterResult (tool items read and pinned, list items the principal
//     may not see removed, text neutralised, the request decision's
//     redactions applied), an error through redactError; anything that
//     cannot be filtered is replaced by an error, never relayed unfiltered;
//   - a response no request of the exchange asked for: dropped, or on a
//     stream of its own filtered as filterResponse says;
//   - a server-to-client request and a notification: transformRequest.
func (s *Server) transformMessage(ctx context.Context, fwd *forward, data []byte) ([]byte, bool) {
	if s.policy == nil {
		return memberRequestRenamed(fwd, data), false
	}
	msg, err := decodeRPC(data)
	if err != nil {
		// What the gateway cannot read it cannot filter or redact: withheld,
		// never relayed unfiltered (a duplicate "result" member, say, could
		// be read one way here and another way by the client).
		loggerOf(ctx, s.log).Warn("upstream message withheld: not a JSON-RPC message the policy can read", "error", err)
		return nil, true
	}
	switch m := msg.(type) {
	case *jsonrpc.Response:
		if !fwd.claimResponse(m.ID) {
			s.dropStrayResponse(ctx, fwd, m.ID)
			return nil, true
		}
		out := s.filterResponse(ctx, fwd, m, data)
		if ex := fwd.exchanges[idKey(m.ID)]; fwd.bridge != nil && ex != nil && ex.input != nil {
			out = bridgedResult(out, ex.input.Method) // bridge.go
		}
		return s.renamed(fwd, out), false
	case *jsonrpc.Request:
		return s.transformRequest(ctx, fwd, m, data)
	}
	return data, false
}

// transformRequest is transformMessage for a message with a method:
//   - a server-to-client request (sampling, elicitation, roots): decided;
//     if denied it is dropped and the upstream gets the refusal; if allowed
//     its params are redacted as that decision says (and on a federated
//     route its id names the member: fedask.go);
//   - notifications/resources/updated for a resource the principal may not
//     see (or whose uri is ambiguous): dropped;
//   - every notification: its params redacted (relatedRedactions).
func (s *Server) transformRequest(ctx context.Context, fwd *forward, m *jsonrpc.Request, data []byte) ([]byte, bool) {
	if m.ID.IsValid() && fwd.bridge != nil {
		// A bridged modern client cannot be asked (the bridge's session
		// declared no client capabilities): refused to the upstream.
		go s.answerUpstream(fwd, errorMessage(m.ID, newError(0, CodeMethodNotFound, m.Method+" is not available: the client is bridged from the modern protocol era", nil)))
		return data, true
	}
	if m.ID.IsValid() {
		d, ok := s.allowServerRequest(ctx, fwd, m)
		if !ok {
			return data, true
		}
		out, drop := s.redactParams(ctx, fwd, m, data, d.Redact, "server_request")
		if !drop {
			// On a federated route, under an id naming the member, so the
			// client's answer finds its way back (fedask.go).
			out = memberRequestRenamed(fwd, out)
		}
		return out, drop
	}
	if m.Method == "notifications/resources/updated" && !s.updateVisible(ctx, fwd, m) {
		return nil, true
	}
	rs, ok := s.relatedRedactions(ctx, fwd, m.Method)
	if !ok {
		return nil, true
	}
	out, drop := s.redactParams(ctx, fwd, m, data, rs, "notification")
	return s.renamed(fwd, out), drop
}
