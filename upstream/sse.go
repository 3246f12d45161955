package upstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// SSE is the HTTP+SSE transport of protocol 2024-11-05: one GET stream on
// URL per session announces (the endpoint event) where the client's
// messages are POSTed, and carries every server message back. It gives the
// gateway what a Streamable HTTP server would: an initialize without a
// session opens a transport session (its id is the Mcp-Session-Id the
// gateway seals), each request's response is read from the stream by its
// JSON-RPC id and answered as application/json, and the server's
// notifications and requests go to the session's Open stream.
//
// Limits: the server's messages that are not responses are kept for the
// Open stream (at most sseBacklog of them while none is open; more are
// dropped), never attributed to a request; a session lives in this
// process only (another replica answers 404 and the client initializes
// again); a request cancelled while it waits is not cancelled upstream.
type SSE struct {
	// URL is the server's SSE endpoint.
	URL *url.URL
	// Next carries the GET and the POSTs: the upstream's credentialed
	// transport.
	Next http.RoundTripper
	// MaxSessions bounds the open sessions; one more initialize fails with
	// ErrSessionsFull. Zero is DefaultSSEMaxSessions.
	MaxSessions int
	// IdleTimeout ends a session nobody used for this long (no request in
	// flight, no Open stream). Zero is DefaultSSEIdleTimeout.
	IdleTimeout time.Duration
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu       sync.Mutex
	sessions map[string]*sseSession
	opening  int // sessions being opened: counted against MaxSessions
	reaper   *time.Timer
}

// Defaults of SSE's bounds.
const (
	DefaultSSEMaxSessions = 1000
	DefaultSSEIdleTimeout = 30 * time.Minute
	// sseBacklog is how many server messages a session keeps while no
	// Open stream takes them.
	sseBacklog = 64
	// sseMaxErrorBody bounds what is read of a refused POST's answer.
	sseMaxErrorBody = 64 << 10
)

// ErrSessionsFull is the error of an initialize when the transport already
// holds its maximum of sessions: nothing was sent.
var ErrSessionsFull = errors.New("upstream sessions full")

// ErrEndpointOrigin is the error of an initialize whose server announced
// an endpoint on another origin than its SSE stream's.
var ErrEndpointOrigin = errors.New("endpoint not on the SSE stream's origin")

// The HTTP+SSE transport is one way to an upstream.
var _ Transport = (*SSE)(nil)

// NewSSE returns the HTTP+SSE transport to the server at u, reached on
// next.
func NewSSE(u *url.URL, next http.RoundTripper) *SSE {
	return &SSE{URL: u, Next: next}
}

func (t *SSE) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *SSE) maxSessions() int {
	if t.MaxSessions > 0 {
		return t.MaxSessions
	}
	return DefaultSSEMaxSessions
}

func (t *SSE) idleTimeout() time.Duration {
	if t.IdleTimeout > 0 {
		return t.IdleTimeout
	}
	return DefaultSSEIdleTimeout
}

// Send posts m on its session and answers with the responses to its
// requests; an initialize without a session opens one first.
func (t *SSE) Send(ctx context.Context, m Message) (*http.Response, error) {
	calls, method, err := requestIDs(m.Body)
	if err != nil {
		return sseAnswer(http.StatusBadRequest, "", "text/plain; charset=utf-8", []byte("not a JSON-RPC message: "+err.Error())), nil
	}
	id := m.Header.Get("Mcp-Session-Id")
	if id == "" {
		if method != "initialize" {
			// What a Streamable HTTP server answers a sessionless request:
			// the era probe (server/discover) reads it as legacy only.
			return sseAnswer(http.StatusBadRequest, "", "text/plain; charset=utf-8", []byte("no session: initialize first")), nil
		}
		s, resp, err := t.open(ctx, m.Header)
		if s == nil {
			return resp, err
		}
		resp, err = s.exchange(ctx, t.Next, m, calls)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.drop(s) // no session for a refused initialize
		}
		return resp, err
	}
	s := t.session(id)
	if s == nil {
		return sessionGone(), nil
	}
	return s.exchange(ctx, t.Next, m, calls)
}

// Open answers with the session's stream of server messages; a session
// has at most one at a time (another is 409).
func (t *SSE) Open(ctx context.Context, h http.Header) (*http.Response, error) {
	s := t.session(h.Get("Mcp-Session-Id"))
	if s == nil {
		return sessionGone(), nil
	}
	body, ok := s.stream(ctx)
	if !ok {
		return sseAnswer(http.StatusConflict, s.id, "text/plain; charset=utf-8", []byte("the session's stream is already open")), nil
	}
	resp := sseAnswer(http.StatusOK, s.id, "text/event-stream", nil)
	resp.Body, resp.ContentLength = body, -1
	return resp, nil
}

// End ends the session: its GET stream is closed.
func (t *SSE) End(_ context.Context, h http.Header) (*http.Response, error) {
	s := t.session(h.Get("Mcp-Session-Id"))
	if s == nil {
		return sessionGone(), nil
	}
	t.drop(s)
	return sseAnswer(http.StatusOK, "", "", nil), nil
}

// Close ends every session.
func (t *SSE) Close() {
	t.mu.Lock()
	all := make([]*sseSession, 0, len(t.sessions))
	for _, s := range t.sessions {
		all = append(all, s)
	}
	t.mu.Unlock()
	for _, s := range all {
		t.drop(s)
	}
}

// Sessions is the number of open sessions.
func (t *SSE) Sessions() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.sessions)
}

// session returns the open session id names, or nil; it counts as used.
func (t *SSE) session(id string) *sseSession {
	if id == "" {
		return nil
	}
	t.mu.Lock()
	s := t.sessions[id]
	t.mu.Unlock()
	if s == nil || s.ended() {
		return nil // a lost stream, not yet forgotten
	}
	s.touch(t.now())
	return s
}

// drop ends s and forgets it.
func (t *SSE) drop(s *sseSession) {
	t.mu.Lock()
	if t.sessions[s.id] == s {
		delete(t.sessions, s.id)
	}
	t.mu.Unlock()
	s.end()
}

// open opens a session: the GET stream, then its endpoint event. A nil
// session comes with the answer (or error) the initialize gets instead.
func (t *SSE) open(ctx context.Context, h http.Header) (*sseSession, *http.Response, error) {
	t.Reap()
	t.mu.Lock()
	if len(t.sessions)+t.opening >= t.maxSessions() {
		t.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: %d open", ErrSessionsFull, t.maxSessions())
	}
	t.opening++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.opening--
		t.mu.Unlock()
	}()
	s, resp, err := t.dial(ctx, h)
	if s == nil {
		return nil, resp, err
	}
	t.mu.Lock()
	if t.sessions == nil {
		t.sessions = map[string]*sseSession{}
	}
	t.sessions[s.id] = s
	if t.reaper == nil {
		t.reaper = time.AfterFunc(t.idleTimeout()/2, t.reap)
	}
	t.mu.Unlock()
	s.touch(t.now())
	go func() {
		s.read()
		t.drop(s) // a lost stream ends the session: its next request is 404
	}()
	return s, nil, nil
}

// reap is the reaper's timer: it runs while there are sessions.
func (t *SSE) reap() {
	t.Reap()
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.sessions) == 0 {
		t.reaper = nil
		return
	}
	t.reaper.Reset(t.idleTimeout() / 2)
}

// Reap ends the sessions idle for longer than IdleTimeout. It runs on its
// own timer and before a session is opened.
func (t *SSE) Reap() {
	now := t.now()
	t.mu.Lock()
	var idle []*sseSession
	for _, s := range t.sessions {
		if s.idleSince(now) > t.idleTimeout() {
			idle = append(idle, s)
		}
	}
	t.mu.Unlock()
	for _, s := range idle {
		t.drop(s)
	}
}

// dial opens the GET stream and reads its endpoint event.
func (t *SSE) dial(ctx context.Context, h http.Header) (*sseSession, *http.Response, error) {
	// The stream outlives the initialize that opens it, but keeps its
	// values (the principal a per-caller credential is obtained for).
	streamCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel) // until the endpoint is known
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet, t.URL.String(), nil)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("sse stream: %w", err)
	}
	copyHeaders(req.Header, h)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := t.Next.RoundTrip(req)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("sse stream: %w", err)
	}
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		cancel()
		return nil, resp, nil // the gateway's own credential was refused: its answer
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		_ = resp.Body.Close()
		cancel()
		return nil, nil, fmt.Errorf("sse stream: answered %s (%s), not an event stream", resp.Status, resp.Header.Get("Content-Type"))
	}
	events := mcpwire.NewReader(resp.Body)
	endpoint, err := t.endpoint(events)
	if !stop() || err != nil {
		_ = resp.Body.Close()
		cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, nil, fmt.Errorf("sse stream: %w", err)
	}
	return newSSESession(endpoint, events, resp.Body, cancel, h, t.now), nil, nil
}

// endpoint reads the stream's first event, which must be the endpoint on
// the stream's own origin.
func (t *SSE) endpoint(events *mcpwire.Reader) (*url.URL, error) {
	for {
		ev, err := events.Next()
		if err != nil {
			return nil, fmt.Errorf("before the endpoint event: %w", err)
		}
		if !ev.HasData && ev.Event == "" {
			continue // a keep-alive comment
		}
		if ev.Event != "endpoint" {
			return nil, fmt.Errorf("first event is %q, not endpoint", ev.Event)
		}
		u, err := t.URL.Parse(strings.TrimSpace(string(ev.Data)))
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", ev.Data, err)
		}
		// The messages carry the client's requests and the gateway's
		// credential: a server may not send them to another host (the
		// 2024-11-05 spec gives it the URI; we give it no SSRF).
		if !sameOrigin(t.URL, u) {
			return nil, fmt.Errorf("%w: %s is not on %s", ErrEndpointOrigin, u.Redacted(), origin(t.URL))
		}
		return u, nil
	}
}

// sameOrigin: scheme, host and port equal, the default port spelt or not.
func sameOrigin(a, b *url.URL) bool { return origin(a) == origin(b) }

func origin(u *url.URL) string {
	scheme, port := strings.ToLower(u.Scheme), u.Port()
	if port == "" {
		switch scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return scheme + "://" + strings.ToLower(u.Hostname()) + ":" + port
}

// copyHeaders copies what the gateway set for the upstream (its identity
// headers, request id, trace context, user agent), without what belongs
// to the Streamable HTTP exchange and not to this one.
func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		switch k {
		case "Mcp-Session-Id", "Mcp-Protocol-Version", "Mcp-Method", "Accept", "Content-Type", "Content-Length", "Last-Event-Id":
			continue
		}
		dst[k] = vs
	}
}

// requestIDs reads the ids of the requests in a message or batch (the
// responses Send waits for) and the first message's method.
func requestIDs(body []byte) (ids []string, method string, err error) {
	type envelope struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	var msgs []envelope
	if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(trimmed, &msgs)
	} else {
		var one envelope
		err = json.Unmarshal(body, &one)
		msgs = []envelope{one}
	}
	if err != nil {
		return nil, "", err
	}
	for _, m := range msgs {
		if m.Method != "" && len(m.ID) > 0 && string(m.ID) != "null" {
			ids = append(ids, idKey(m.ID))
		}
	}
	if len(msgs) > 0 {
		method = msgs[0].Method
	}
	return ids, method, nil
}

// idKey is a JSON-RPC id as a map key: its JSON text, compacted.
func idKey(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// sessionGone is the answer for a session the transport does not hold (it
// ended, its stream was lost, another process opened it): 404, so the
// client initializes again.
func sessionGone() *http.Response {
	return sseAnswer(http.StatusNotFound, "", "text/plain; charset=utf-8", []byte("session not found"))
}

// sseAnswer makes the *http.Response the Transport contract asks for.
func sseAnswer(status int, session, contentType string, body []byte) *http.Response {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(body)), ContentLength: int64(len(body)),
	}
}

// newSessionID is a transport session's id: 128 random bits.
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
