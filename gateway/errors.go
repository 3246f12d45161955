package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/identity"
)

// JSON-RPC error codes the gateway answers with. The standard ones keep
// their JSON-RPC meaning; the gateway's own live in -31999..-31000, outside
// the ranges JSON-RPC (-32768..-32000) reserves, so a client can tell "the
// gateway said no" from "the upstream said no".
const (
	CodeParseError     = jsonrpc.CodeParseError     // -32700: body is not valid JSON
	CodeInvalidRequest = jsonrpc.CodeInvalidRequest // -32600: not a valid MCP message or request
	CodeMethodNotFound = jsonrpc.CodeMethodNotFound // -32601
	CodeInternalError  = jsonrpc.CodeInternalError  // -32603: a gateway bug; details in the log

	CodeUnauthenticated     = -31001 // 401: no valid credential
	CodeForbidden           = -31002 // 403: Origin or Host not allowed
	CodeSessionNotFound     = -31003 // 404: unknown, expired or foreign session
	CodeInsufficientScope   = -31005 // 403: the token lacks a scope the route requires
	CodePayloadTooLarge     = -31004 // 413: body over server.max_body_bytes
	CodeUpstreamUnavailable = -31010 // 502: upstream unreachable or broken answer
	CodeUpstreamTimeout     = -31011 // 504: upstream did not answer in time
	CodeUnavailable         = -31012 // 503: the gateway is shutting down, or a token's issuer's keys are not loaded yet (+ Retry-After)

	// Resilience: the client can tell each from the others, and from an
	// upstream's own errors.
	CodeBreakerOpen            = -31013 // 503 + Retry-After: the upstream's circuit breaker is open; nothing was sent
	CodeOverloaded             = -31014 // 503 + Retry-After: max_concurrent requests in flight (bulkhead); nothing was sent
	CodeRateLimited            = -31015 // 429 + Retry-After: the principal's (or tool's) rate limit
	CodeOutcomeUnknown         = -31016 // 502/504: the call was sent, then the exchange failed: it may or may not have run; not retried
	CodeIdempotencyMismatch    = -31017 // 422: an idempotency key reused for a different call
	CodeGatewayBusy            = -31018 // 503 + Retry-After: the gateway itself is at server.max_inflight requests (or server.max_streams streams); nothing was read or sent
	CodeRateLimitedModern      = -32023 // 429 + Retry-After, 2026-07-28 era only: the draft rate-limited error, data {"retryAfterMs": n}; legacy eras get -31015
	CodeRateLimitUnavailable   = -31019 // 503 + Retry-After: limits shared on Redis, Redis cannot answer, redis.on_error deny; nothing was counted or sent
	CodeUpstreamSessionsFull   = -31050 // 503 + Retry-After: the upstream transport holds its maximum of sessions (stdio: max_processes processes, one per session; sse: its sessions); nothing was started or sent
	CodeUpstreamRestartBackoff = -31051 // 503 + Retry-After: a stdio upstream's processes crashed one after another; its next start waits (0.5 s doubling to 30 s); nothing was started or sent
	CodeIdempotencyInProgress  = -31060 // 409 + Retry-After: the ledger is on Redis and the first call with this key still runs (on any replica) after the duplicate waited its deadline; nothing was sent
	CodeIdempotencyUnavailable = -31061 // 503 + Retry-After: the ledger is on Redis and Redis cannot answer; a call with an idempotency key is refused (whatever redis.on_error); nothing was sent
	CodeOldSessionsFull        = -31090 // 503 + Retry-After: the gateway holds its maximum of HTTP+SSE (2024-11-05) client sessions (1,024 per replica); nothing was opened
	CodeOldSessionBusy         = -31091 // 503 + Retry-After: 64 requests are in progress on this HTTP+SSE session, or its answers waiting for the client fill maxOldPendingBytes; the message was not accepted
	CodeMemberRecovering       = -31070 // 503 + Retry-After: a federated session's member was unavailable at initialize and is being retried; nothing was sent
)

// Error is a failure bound for a client: the HTTP status, the JSON-RPC
// error, and the internal cause that only the log sees.
type Error struct {
	Status  int
	Code    int64
	Message string          // public: safe to show the client
	Header  http.Header     // extra response headers, e.g. WWW-Authenticate, Allow
	Data    json.RawMessage // the JSON-RPC error's data, when the spec defines one (-32022)
	Err     error           // internal: logged with the request id, never sent
	// logMessage, when set, stands for Message in the log: Message holds
	// something only its recipient may see (a single-use connect link).
	logMessage string
}

func (e *Error) Error() string {
	msg := e.Message
	if e.logMessage != "" {
		msg = e.logMessage
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

func newError(status int, code int64, message string, cause error) *Error {
	return &Error{Status: status, Code: code, Message: message, Err: cause}
}

func badRequest(message string, cause error) *Error {
	return newError(http.StatusBadRequest, CodeInvalidRequest, message, cause)
}

// identityError is the answer to a request identity refused, and the
// reason it is counted under. challenge is the route's WWW-Authenticate
// value (RFC 6750 section 3, RFC 9728 section 5.1), with error=
// "invalid_token" when a presented bearer credential was refused.
func identityError(err error, challenge func(invalidToken bool) string) (*Error, string) {
	if errors.Is(err, identity.ErrDuplicateCredential) {
		return badRequest(identity.ErrDuplicateCredential.Error(), nil), identity.ReasonDuplicate
	}
	f, ok := errors.AsType[*identity.Failure](err)
	if !ok {
		// identity refuses with nothing else: a bug, still a refusal.
		return newError(http.StatusInternalServerError, CodeInternalError, "internal gateway error", err), "internal"
	}
	if f.RetryAfter > 0 {
		// Not the token's fault: a 401 invalid_token would make the
		// client throw away a token that may be good.
		e := newError(http.StatusServiceUnavailable, CodeUnavailable, f.Message, f.Err)
		setRetryAfter(e, f.RetryAfter)
		return e, f.Reason
	}
	e := newError(http.StatusUnauthorized, CodeUnauthenticated, f.Message, f.Err)
	e.Header = http.Header{"Www-Authenticate": {challenge(f.InvalidToken)}}
	return e, f.Reason
}

// errorResponse is the JSON-RPC 2.0 error response body. The id is null when
// the request's id is unknown (the body was never decoded).
type errorResponse struct {
	JSONRPC string        `json:"jsonrpc"`
	ID      any           `json:"id"`
	Error   jsonrpc.Error `json:"error"`
}

// writeError is the one place a failure becomes an HTTP response: status,
// headers and a JSON-RPC error carrying the request's id. The internal cause
// goes to the request's access-log record, never to the client.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var gwErr *Error
	if !errors.As(err, &gwErr) {
		gwErr = newError(http.StatusInternalServerError, CodeInternalError, "internal gateway error", err)
	}
	st := stateOf(r.Context())
	var id any
	if st != nil {
		st.err = gwErr
		if st.msg != nil {
			id = st.msg.ID().Raw()
		} else {
			id = st.rejectedID
		}
	}
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; there is no one to answer
	}
	for k, vs := range gwErr.Header {
		w.Header()[k] = vs
	}
	body, _ := json.Marshal(errorResponse{
		JSONRPC: "2.0",
		ID:      id,
		Error:   jsonrpc.Error{Code: gwErr.Code, Message: gwErr.Message, Data: gwErr.Data},
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(gwErr.Status)
	_, _ = w.Write(body)
}
