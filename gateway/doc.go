// Package gateway is ctxgate's HTTP front: listeners, the middleware chain,
// MCP Streamable HTTP handling, the SSE relay, the one error writer and
// the admin endpoints. Who is calling is identity's (a Principal), what
// they may do policy's, the wire format mcpwire's, the sealed session
// session's; this package calls them in order.
//
// The order is code, in three places: chain (server.go) decides the
// middleware, request.go the route's request stages, respond.go the
// response's. A POST to a route:
//
//	chain:  request id + access log + span (log.go) -> recover
//	        -> Host/Origin check (origin.go) -> body limit and read deadline
//	        -> admission: a slot of server.max_inflight or 503 now, before
//	           the body is read or the token verified (admission.go)
//	        -> authenticate: a verified Principal (auth.go, identity/)
//	request.go, serveRoute:
//	        routeScope: the request's one scope (forward, carrying the
//	          requestState the access record is written from)
//	        -> prepareByMethod: POST -> preparePost:
//	             Content-Type/Accept -> strict decode, once, within the
//	             budget, params typed (mcpwire: DecodeWith, CheckParams)
//	             -> batch | modern era (no session; MCP-Protocol-Version,
//	             Mcp-Method/Mcp-Name against the body: modern.go)
//	             | initialize | session open (sealed, bound to principal
//	             and route) and protocol version (mcp.go)
//	           GET (server stream) / DELETE (session end): headers, session
//	        -> nameTarget (tool, prompt or resource, for logs and metrics)
//	        -> prepareCredential: the upstream credential (credentials.go)
//	        -> baseInput -> authorize (enforce.go), per message: client
//	           method check (methods.go), tool list learnt if unknown
//	           (toolfetch.go), policy input (authorize.go) and decision
//	           (memoized per policy revision where the policy allows),
//	           tool pin and argument checks (pinning.go, argschema.go)
//	        -> prepareBridge: a modern request to a legacy-only upstream
//	           on a bridged legacy session (bridge.go)
//	        -> the gateway's own answer, or forwardUpstream: rate limits
//	           -> response cache (cache.go: hits, single-flight misses,
//	           stale answers) -> stream slot for a long-lived stream
//	           -> idempotency key -> reverse proxy (proxy.go): exactly the
//	           checked bytes, client credentials stripped, upstream session
//	           id swapped in -> upstream executor: deadline, bulkhead,
//	           retries by request class, breaker, per-attempt timeout; each
//	           attempt one attemptTransport round trip
//	respond.go, modifyResponse:
//	        checkAnswer: headers allow-listed, 3xx/401 refused, answer
//	          classified (answer.go: only 200 JSON or SSE carries upstream
//	          bytes) -> bookSession (a sealed session minted on initialize)
//	        -> per message, transformMessage: matched to its request
//	          (strays dropped), the result through filterResult (enforce.go),
//	          one walk over its parsed tool page: read with exact names
//	          (toolpage.go), screened by pins and its text neutralised once
//	          per page (toolscreen.go, untrusted.go), list items the
//	          principal may not see removed, redacted; server requests and
//	          notifications decided and redacted (pipeline.go)
//	        -> written: a JSON answer's new body, or the SSE relay (sse.go)
//	          event by event with a flush each, ended at an event boundary
//	          when idle or too long (pending requests answered)
//
// A failure of the executor is answered by kind (breaker open, bulkhead
// full, timeout, transport, outcome unknown): see upstreamError. Every
// failure on the way is answered by writeError (errors.go).
//
// Requests the gateway sends of its own (probes, handshakes, federation's
// fan-out, tool-list fetches) go through askUpstream (reach.go), which
// names at each call site whether it takes the executor (viaResilience)
// or not (direct). A federated route (federation.go) runs its own front
// (serveFederated) and sends each member's share through the member's
// route stages (authorize, forwardUpstream), on the fedRequest receiver.
// HTTP+SSE (2024-11-05) clients reach every route at <route>/sse and
// <route>/messages (oldclient.go): each message they POST is served by
// the route's handler above as a Streamable HTTP request the gateway makes
// in process, so the whole pipeline applies to them unchanged.
//
// Observability follows the same request: the first step starts its span
// (continuing an incoming traceparent) and, when the request ends, writes
// the access record and the metrics from one requestState; authentication
// and each policy decision are child spans; every HTTP request to an
// upstream is an attempt (attemptTransport) with its own client span, whose
// context is the traceparent the upstream receives (in the headers and in
// a request's params._meta). AdminHandler serves the metrics and status on
// the admin listener.
package gateway
