package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// What an upstream's HTTP answer may be, before any of it reaches the
// client (issue 14, finding 4). Every answer to a request is either
// filtered or withheld: the response-side controls (list filtering,
// redaction, pins, neutralising) run on 200 with application/json or
// text/event-stream, the two answers MCP's Streamable HTTP transport
// defines, and nothing else carries an upstream's bytes to the client:
//   - POST, 200: JSON or SSE, filtered; any other content type is 502;
//   - POST, 202 or 204: the answer to notifications and responses alone
//     (relayed without a body); to a body with requests, 502: nothing
//     would ever answer them;
//   - GET, 200: SSE, filtered; anything else 502 (405 is "no stream");
//   - DELETE, 2xx: relayed without a body;
//   - any other 2xx (201, 203, 206, ...): 502;
//   - 3xx: 502 (refuseRedirect); 401: the gateway's credential was refused
//     (502); 404 on a bridged session: it ended;
//   - 4xx and 5xx otherwise: the status is kept (a 404 tells the client its
//     session is gone, a 429 or 503 when to retry), the body is the
//     upstream's JSON-RPC error, redacted, or else the gateway's own.
// Response headers are allow-listed (relayedResponseHeaders).

// relayedResponseHeaders are the only upstream response headers a client
// sees; the gateway sets its own Mcp-Session-Id and Content-Length. Not
// relayed, among others: Strict-Transport-Security, Alt-Svc and
// Content-Security-Policy (an upstream must not set the gateway origin's
// transport or document policy), Access-Control-Allow-* (CORS is the
// gateway's decision), Location and Refresh (no steering), Set-Cookie
// (shared by every principal), WWW-Authenticate (the upstream
// authenticates the gateway), Content-Encoding (an encoded body is
// withheld: refuseEncoded).
//
// Cache-Control is not relayed either: every answer is filtered for one
// principal, and an upstream's "public, max-age=..." would let a shared
// cache in front of the gateway serve it to another (RFC 9111, 3.5). The
// gateway marks event streams no-cache itself (relayStream).
var relayedResponseHeaders = []string{
	"Content-Type",
	"Retry-After", // 429 and 503: when to come back
	"Allow",       // 405: which methods the endpoint serves
}

var (
	errUnfilterableAnswer = errors.New("upstream answer is neither 200 JSON nor an event stream: withheld, the policy cannot filter it")
	errUnansweredRequests = errors.New("upstream accepted requests without answering them")
	errEncodedAnswer      = errors.New("upstream answer is in a content coding the gateway did not decode: withheld")
)

// onlyRelayedHeaders removes every header not in relayedResponseHeaders.
func onlyRelayedHeaders(h http.Header) {
	keep := make(map[string][]string, len(relayedResponseHeaders))
	for _, name := range relayedResponseHeaders {
		if vs, ok := h[name]; ok {
			keep[name] = vs
		}
	}
	clear(h)
	for name, vs := range keep {
		h[name] = vs
	}
}

// answerKind is what modifyResponse does with an answer.
type answerKind int

const (
	answerStream answerKind = iota // an event stream, filtered event by event
	answerJSON                     // a JSON body, filtered whole
	answerEmpty                    // relayed without a body
	answerError                    // 4xx or 5xx: the status, a filtered error body
)

// classifyAnswer decides what an answer is, or withholds it.
func classifyAnswer(resp *http.Response, fwd *forward) (answerKind, error) {
	status, h := resp.StatusCode, resp.Header
	switch method := resp.Request.Method; {
	case status >= 400:
		return answerError, nil
	case method == http.MethodDelete:
		return answerEmpty, nil
	case status == http.StatusOK && isEventStream(h):
		return answerStream, nil
	case status == http.StatusOK && method == http.MethodPost && isJSON(h):
		return answerJSON, nil
	case (status == http.StatusAccepted || status == http.StatusNoContent) && method == http.MethodPost:
		if hasCalls(fwd) {
			return 0, fmt.Errorf("%w (HTTP %d)", errUnansweredRequests, status)
		}
		return answerEmpty, nil
	}
	return 0, fmt.Errorf("%w (HTTP %d, %q)", errUnfilterableAnswer, status, clip(h.Get("Content-Type"), 64))
}

// refuseEncoded withholds a body in a content coding: Go's Transport
// decodes the gzip it asked for (and removes the header); any other coding
// the gateway would relay as bytes it never read.
func refuseEncoded(encoding string) error {
	if e := strings.TrimSpace(encoding); e != "" && !strings.EqualFold(e, "identity") {
		return fmt.Errorf("%w (Content-Encoding %q)", errEncodedAnswer, clip(e, 32))
	}
	return nil
}

// hasCalls reports whether the forwarded body holds a request that
// expects a response.
func hasCalls(fwd *forward) bool {
	for _, m := range fwd.messages {
		if r, ok := m.(*jsonrpc.Request); ok && r.ID.IsValid() {
			return true
		}
	}
	return false
}

// singleID is the id of the body's one request, or no id (null).
func singleID(fwd *forward) jsonrpc.ID {
	var id jsonrpc.ID
	for _, m := range fwd.messages {
		if r, ok := m.(*jsonrpc.Request); ok && r.ID.IsValid() {
			if id.IsValid() {
				return jsonrpc.ID{}
			}
			id = r.ID
		}
	}
	return id
}

// emptyBody replaces an answer's body with nothing.
func emptyBody(resp *http.Response) {
	_ = resp.Body.Close()
	resp.Body = http.NoBody
	resp.ContentLength = 0
	resp.Header.Del("Content-Type")
	resp.Header.Set("Content-Length", "0")
}

// maxErrorBodyBytes bounds an upstream error body the gateway reads.
const maxErrorBodyBytes = 64 << 10

// filterErrorBody keeps a 4xx or 5xx answer's status and replaces its
// body: the upstream's JSON-RPC error, through the same response-side
// pipeline as any answer (redacted), or the gateway's own error when the
// body is anything else (text, HTML, an unreadable or oversized body).
func (s *Server) filterErrorBody(ctx context.Context, resp *http.Response, fwd *forward) {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBodyBytes+1))
	_ = resp.Body.Close()
	var out []byte
	if err == nil && len(body) <= maxErrorBodyBytes && isJSON(resp.Header) {
		if msg, derr := decodeRPC(body); derr == nil && s.policy != nil {
			out = s.filterUpstreamError(ctx, fwd, msg, body)
		} else if m, ok := msg.(*jsonrpc.Response); derr == nil && ok && m.Error != nil {
			out = body // no policy: nothing to redact in a readable error
		}
	}
	if out == nil {
		e := newError(resp.StatusCode, CodeUpstreamUnavailable, "upstream answered HTTP "+strconv.Itoa(resp.StatusCode), nil)
		out = errorMessage(singleID(fwd), e)
	}
	resp.Body = io.NopCloser(bytes.NewReader(out))
	resp.ContentLength = int64(len(out))
	resp.Header.Set("Content-Type", "application/json")
	resp.Header.Set("Content-Length", strconv.Itoa(len(out)))
}
