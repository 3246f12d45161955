package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// sseSession is one HTTP+SSE session: its GET stream, the endpoint it
// announced, and the requests waiting for their responses.
type sseSession struct {
	id       string
	endpoint *url.URL
	events   *mcpwire.Reader
	body     io.Closer          // the GET stream's body
	cancel   context.CancelFunc // ends the GET stream
	header   http.Header        // what the initialize carried, for the POSTs
	done     chan struct{}      // closed when the session ends
	endOnce  sync.Once

	mu       sync.Mutex
	pending  map[string]chan []byte // by request id
	backlog  chan []byte            // server messages for the Open stream
	streamed bool                   // an Open stream is being served
	busy     int                    // requests in flight
	used     time.Time
	now      func() time.Time
}

func newSSESession(endpoint *url.URL, events *mcpwire.Reader, body io.Closer, cancel context.CancelFunc, h http.Header, now func() time.Time) *sseSession {
	return &sseSession{
		id: newSessionID(), endpoint: endpoint, events: events, body: body, cancel: cancel, now: now,
		header: h.Clone(), done: make(chan struct{}),
		pending: map[string]chan []byte{}, backlog: make(chan []byte, sseBacklog),
	}
}

func (s *sseSession) touch(now time.Time) {
	s.mu.Lock()
	s.used = now
	s.mu.Unlock()
}

// idleSince is how long the session has been unused; zero while a request
// is in flight or its stream is open.
func (s *sseSession) idleSince(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy > 0 || s.streamed {
		return 0
	}
	return now.Sub(s.used)
}

// end closes the GET stream; the waiting requests are answered 404.
func (s *sseSession) end() {
	s.endOnce.Do(func() {
		close(s.done)
		s.cancel()
		_ = s.body.Close()
	})
}

func (s *sseSession) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// read reads the GET stream until it ends, delivering each response to
// the request waiting for it and every other message to the backlog.
func (s *sseSession) read() {
	defer s.end()
	for {
		ev, err := s.events.Next()
		if err != nil {
			return // lost, closed or an event over mcpwire.MaxEventBytes
		}
		if !ev.HasData || (ev.Event != "" && ev.Event != "message") {
			continue
		}
		for _, msg := range splitBatch(ev.Data) {
			s.deliver(msg)
		}
	}
}

// deliver hands one server message to whoever takes it.
func (s *sseSession) deliver(msg []byte) {
	var env struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	if json.Unmarshal(msg, &env) != nil {
		return // not JSON-RPC: nothing the gateway could relay
	}
	if env.Method == "" && len(env.ID) > 0 {
		s.mu.Lock()
		ch := s.pending[idKey(env.ID)]
		delete(s.pending, idKey(env.ID))
		s.mu.Unlock()
		if ch != nil {
			ch <- msg // buffered: one response per request
		}
		return
	}
	select {
	case s.backlog <- msg:
	default: // nobody has taken the last sseBacklog: dropped
	}
}

// splitBatch returns the messages of one event's data.
func splitBatch(data []byte) [][]byte {
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '[' {
		var batch []json.RawMessage
		if json.Unmarshal(t, &batch) != nil {
			return nil
		}
		out := make([][]byte, len(batch))
		for i, m := range batch {
			out[i] = m
		}
		return out
	}
	return [][]byte{data}
}

// exchange POSTs m to the endpoint and waits for the responses to calls.
func (s *sseSession) exchange(ctx context.Context, next http.RoundTripper, m Message, calls []string) (*http.Response, error) {
	waits, err := s.await(calls)
	if err != nil {
		return sseAnswer(http.StatusBadRequest, s.id, "text/plain; charset=utf-8", []byte(err.Error())), nil
	}
	defer s.release(calls)
	if resp, err := s.post(ctx, next, m); resp != nil || err != nil {
		return resp, err
	}
	if len(calls) == 0 {
		return sseAnswer(http.StatusAccepted, s.id, "", nil), nil
	}
	answers := make([][]byte, 0, len(waits))
	for _, ch := range waits {
		select {
		case msg := <-ch:
			answers = append(answers, msg)
		case <-s.done:
			return sessionGone(), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	body := answers[0]
	if len(calls) > 1 || bytes.HasPrefix(bytes.TrimSpace(m.Body), []byte{'['}) {
		body = append(append([]byte{'['}, bytes.Join(answers, []byte{','})...), ']')
	}
	return sseAnswer(http.StatusOK, s.id, "application/json", body), nil
}

// await registers calls as waiting; an id already waiting is refused (its
// response could not be told apart).
func (s *sseSession) await(calls []string) ([]chan []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range calls {
		if s.pending[id] != nil {
			return nil, fmt.Errorf("request id %s is already in flight on this session", id)
		}
	}
	waits := make([]chan []byte, len(calls))
	for i, id := range calls {
		waits[i] = make(chan []byte, 1)
		s.pending[id] = waits[i]
	}
	s.busy++
	return waits, nil
}

func (s *sseSession) release(calls []string) {
	s.mu.Lock()
	for _, id := range calls {
		delete(s.pending, id)
	}
	s.busy--
	s.used = s.now() // idle from the end of its last request
	s.mu.Unlock()
}

// post sends m to the endpoint. An answer other than 2xx is returned to
// be relayed (a 404 ends the session first); nil, nil is accepted.
func (s *sseSession) post(ctx context.Context, next http.RoundTripper, m Message) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint.String(), bytes.NewReader(m.Body))
	if err != nil {
		return nil, fmt.Errorf("sse post: %w", err)
	}
	copyHeaders(req.Header, m.Header)
	req.Header.Set("Content-Type", "application/json")
	resp, err := next.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("sse post: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, sseMaxErrorBody))
	switch {
	case resp.StatusCode < 300:
		return nil, nil
	case resp.StatusCode == http.StatusNotFound:
		s.end() // the server forgot the session
		return sessionGone(), nil
	}
	return sseAnswer(resp.StatusCode, s.id, resp.Header.Get("Content-Type"), raw), nil
}

// stream returns the Open stream's body, unless one is open already.
func (s *sseSession) stream(ctx context.Context) (io.ReadCloser, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.streamed {
		return nil, false
	}
	s.streamed = true
	return &sseStream{s: s, ctx: ctx, closed: make(chan struct{})}, true
}

// sseStream is an Open stream: the session's server messages as events.
type sseStream struct {
	s         *sseSession
	ctx       context.Context
	closed    chan struct{}
	closeOnce sync.Once
	buf       []byte
}

func (b *sseStream) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		select {
		case msg := <-b.s.backlog:
			ev := mcpwire.Event{Event: "message", Data: msg, HasData: true}
			b.buf = ev.AppendTo(nil)
		case <-b.s.done:
			return 0, io.EOF
		case <-b.closed:
			return 0, io.ErrClosedPipe
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		}
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

func (b *sseStream) Close() error {
	b.closeOnce.Do(func() {
		close(b.closed)
		b.s.mu.Lock()
		b.s.streamed = false
		b.s.used = b.s.now() // idle from the end of its stream
		b.s.mu.Unlock()
	})
	return nil
}
