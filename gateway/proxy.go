package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxInitializeResponseBytes bounds the initialize answer the gateway reads
// whole to learn the negotiated protocol version.
const maxInitializeResponseBytes = 1 << 20

// maxFilteredResponseBytes bounds a JSON answer the gateway reads whole to
// apply the policy to it; larger answers are refused, never relayed
// unfiltered. (SSE answers are filtered event by event.)
const maxFilteredResponseBytes = 32 << 20

// forwardedHeaders are the only client request headers sent upstream. An
// allow-list, not a deny-list: the client's Authorization, Cookie, identity
// claims (X-Forwarded-User and friends), Idempotency-Key (which would let
// Go's Transport silently re-send a POST) and anything else unknown stay at
// the gateway. Hop-by-hop headers were already removed by ReverseProxy.
// traceparent and tracestate are not copied: the upstream attempt sets its
// own (attemptTransport), so the upstream's parent is the gateway's span.
var forwardedHeaders = []string{
	"Accept",
	"Content-Type",
	"Last-Event-Id",
	"Mcp-Protocol-Version",
	"Mcp-Method",
	"Mcp-Name",
	"User-Agent",
}

// forwardedHeaderPrefixes extend the allow-list to header families.
var forwardedHeaderPrefixes = []string{"Mcp-Param-"}

func (s *Server) newProxy(rt *route, transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: transport,
		// Text/event-stream responses are flushed after every write
		// (ReverseProxy does so for that content type); the SSE relay makes
		// each write one event.
		BufferPool:     s.buffers,
		ModifyResponse: s.modifyResponse,
		ErrorHandler:   s.proxyError,
		ErrorLog:       nil,
	}
}

// rewrite builds the upstream request from what the route handler decided.
// It uses Rewrite, not Director: headers set here cannot be stripped by a
// client's Connection header (golang/go#50580).
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	fwd := forwardOf(pr.In.Context())
	out := pr.Out
	// Exactly the configured endpoint: the client's path and query are not
	// appended to it.
	u := *fwd.route.upstream.URL
	out.URL = &u
	out.Host = ""
	out.Header = forwardHeaders(pr.In.Header)
	if st := stateOf(pr.In.Context()); st != nil {
		// The gateway's own id, so the upstream's logs can be correlated
		// with the gateway's; a client's X-Request-Id is not forwarded.
		out.Header.Set("X-Request-Id", st.id)
	}
	if fwd.upstreamSession != "" {
		out.Header.Set("Mcp-Session-Id", fwd.upstreamSession)
	}
	if fwd.bridge != nil {
		out.Header.Set("Mcp-Protocol-Version", fwd.bridge.version)
	}
	if fwd.route.identityHeaders {
		// Only ever the verified principal; the client's own copies of these
		// headers were dropped with everything else not allow-listed.
		out.Header.Set("X-Ctxgate-Principal", fwd.principal.ID)
		out.Header.Set("X-Ctxgate-Principal-Kind", fwd.principal.Kind)
	}
	if fwd.body != nil {
		// What is forwarded is exactly what was decoded and checked.
		out.Body = checkedBody{r: bytes.NewReader(fwd.body)}
		out.ContentLength = int64(len(fwd.body))
		out.GetBody = nil
	} else {
		out.Body, out.ContentLength = nil, 0
	}
}

func forwardHeaders(in http.Header) http.Header {
	out := make(http.Header, len(forwardedHeaders)+2)
	for _, name := range forwardedHeaders {
		if vs, ok := in[name]; ok {
			out[name] = vs
		}
	}
	for name, vs := range in {
		for _, prefix := range forwardedHeaderPrefixes {
			if strings.HasPrefix(name, prefix) {
				out[name] = vs
			}
		}
	}
	if _, ok := out["User-Agent"]; !ok {
		out["User-Agent"] = []string{""} // no Go default User-Agent
	}
	return out
}

// relayStream makes an event stream's body the filtering relay.
func (s *Server) relayStream(ctx context.Context, resp *http.Response, fwd *forward) {
	h := resp.Header
	// Tell buffering proxies in front of us to pass events through, and
	// caches not to keep them (the upstream's Cache-Control is not relayed).
	h.Set("X-Accel-Buffering", "no")
	h.Set("Cache-Control", "no-cache")
	h.Del("Content-Length")
	resp.ContentLength = -1
	stop := context.Background()
	limits := streamLimits{idle: fwd.route.res.streams.IdleTimeout, max: fwd.route.res.streams.MaxDuration}
	if fwd.stream || fwd.listen {
		// Long-lived: they end at an event boundary when shutdown
		// begins, and only they can be quiet for long, so only they
		// get keep-alive comments (proxies in between would otherwise
		// close them as dead). Closing a modern listen stream is how a
		// client cancels it: the relay's Close closes the upstream's.
		stop = s.streams
		limits.keepalive = fwd.route.res.streams.Keepalive
		if p := fwd.principal; p != nil && !p.Expiry.IsZero() {
			// What arrives on the stream is the principal's: it ends when
			// the token it was opened with expires, at an event boundary,
			// and the client resumes (Last-Event-ID) with a fresh one, as
			// every POST with the old token is refused from then on.
			left := max(p.Expiry.Sub(s.now()), time.Nanosecond)
			if limits.max == 0 || left < limits.max {
				limits.max = left
			}
		}
	}
	relay := newSSERelay(resp.Body, stop, limits)
	kind := "post"
	switch {
	case fwd.listen:
		kind = "listen"
	case fwd.stream:
		kind = "get"
	}
	open := s.metrics.openStreams.WithLabelValues(fwd.route.upstream.Name, kind)
	open.Inc()
	relay.onClose = open.Dec
	// Context sources' resource events reach the stream here
	// (subscriptions.go).
	detach := s.attachLive(fwd, relay)
	relay.onClose = func() { open.Dec(); detach() }
	relay.observe = func(data []byte) { s.observeUpstream(fwd.route.upstream.Name, data) }
	if s.policy != nil || fwd.federation != "" {
		// A federated member's requests of the client are renamed even
		// without a policy (fedask.go).
		relay.transform = func(data []byte) ([]byte, bool) { return s.transformMessage(ctx, fwd, data) }
	}
	// A stream that ends abnormally (stalled, an event over the limit,
	// broken) answers the requests it left pending.
	relay.onEnd = func(cause error) []byte { return s.pendingErrors(ctx, fwd, cause) }
	resp.Body = relay
}

// transformJSONBody reads a JSON answer whole (bounded), lets the policy
// filter it, and replaces the body.
func (s *Server) transformJSONBody(ctx context.Context, resp *http.Response, fwd *forward) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxFilteredResponseBytes+1))
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read upstream response: %w", err)
	}
	if len(body) > maxFilteredResponseBytes {
		return fmt.Errorf("upstream JSON response larger than %d bytes", maxFilteredResponseBytes)
	}
	if body, err = s.transformJSON(ctx, fwd, body); err != nil {
		return err
	}
	if fwd.bridge != nil && resp.StatusCode == http.StatusOK && missingCapability(body) {
		resp.StatusCode, resp.Status = http.StatusBadRequest, "400 Bad Request" // as a modern server answers it (bridge.go)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// mintSession reads the initialize answer, learns the negotiated version,
// and hands the client a sealed session id in place of the upstream's.
func (s *Server) mintSession(resp *http.Response, fwd *forward, upstreamSession string) error {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInitializeResponseBytes+1))
	_ = resp.Body.Close()
	if err != nil {
		return fmt.Errorf("read initialize response: %w", err)
	}
	if len(body) > maxInitializeResponseBytes {
		return fmt.Errorf("initialize response larger than %d bytes", maxInitializeResponseBytes)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	version, ok := negotiatedVersion(body, isEventStream(resp.Header))
	if !ok {
		return nil // an error answer: no session to mint
	}
	if !isSupportedVersion(version) {
		return fmt.Errorf("upstream negotiated protocol version %q, which the gateway does not relay", version)
	}
	if st := stateOf(resp.Request.Context()); st != nil {
		st.version = version // the access log and metrics name the negotiated version
	}
	id, err := s.sessions.Seal(sessionClaims{
		Route:     fwd.route.path,
		Principal: fwd.principal.ID,
		Upstream:  upstreamSession,
		Version:   version,
		Caps:      fwd.caps,
		URLElicit: fwd.urlElicit,
	})
	if err != nil {
		return fmt.Errorf("seal session: %w", err)
	}
	resp.Header.Set("Mcp-Session-Id", id)
	s.metrics.sessionsStarted.WithLabelValues(fwd.route.upstream.Name).Inc()
	return nil
}

// negotiatedVersion finds result.protocolVersion in an initialize answer,
// sent as JSON or as SSE events.
func negotiatedVersion(body []byte, sse bool) (string, bool) {
	for _, p := range messagePayloads(body, sse) {
		var msg struct {
			Result *struct {
				ProtocolVersion string `json:"protocolVersion"`
			} `json:"result"`
		}
		if json.Unmarshal(p, &msg) == nil && msg.Result != nil && msg.Result.ProtocolVersion != "" {
			return msg.Result.ProtocolVersion, true
		}
	}
	return "", false
}

// messagePayloads returns the messages of a whole answer: the body itself,
// or the data of each of its events.
func messagePayloads(body []byte, sse bool) [][]byte {
	if !sse {
		return [][]byte{body}
	}
	var payloads [][]byte
	events := newSSEReader(bytes.NewReader(body))
	for {
		ev, err := events.Next()
		if err != nil {
			return payloads
		}
		if ev.HasData {
			payloads = append(payloads, ev.Data)
		}
	}
}

var (
	errUpstreamUnauthorized = errors.New("upstream answered 401: the gateway's credential for it was refused")
	errBridgeSessionEnded   = errors.New("upstream answered 404 (or 400): it ended the bridged session")
)

// proxyError answers a request the upstream could not serve.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		err = fmt.Errorf("client went away: %w", context.Canceled)
	} else {
		err = upstreamError(r.Context(), err)
	}
	writeError(w, r, err)
}

// bufferPool lends ReverseProxy its copy buffers; without one it allocates
// 32 KiB per response.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (p *bufferPool) Get() []byte  { return *p.pool.Get().(*[]byte) }
func (p *bufferPool) Put(b []byte) { p.pool.Put(&b) }
