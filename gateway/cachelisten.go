package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/upstream"
)

// The change listener: for every upstream with a cache block, the gateway
// keeps a legacy session of its own (authenticated with the gateway's
// upstream credential, as every forwarded request is) and reads its GET
// stream, so the upstream's list_changed and resources/updated
// notifications invalidate the cache even when no client has a stream
// open. Cached resources/read URIs are subscribed to on that session when
// the upstream offers subscriptions.
//
// Notifications sent while the listener is disconnected are lost; those
// entries expire by TTL. A lost stream does not purge the upstream's
// entries: the upstream being down is exactly when stale ones are wanted.

const (
	// listenerClientName is how the gateway's own session introduces itself.
	listenerClientName = "ctxgate-cache-listener"
	// maxListenerSubscriptions bounds the URIs one listener subscribes to.
	maxListenerSubscriptions = 10000
	listenerRequestTimeout   = 10 * time.Second
	listenerMaxBackoff       = time.Minute
)

// errNoStream: the upstream offers no GET stream (stateless, or 405), so
// there is nothing to listen to; the listener stops.
var errNoStream = errors.New("upstream offers no session stream to listen to")

// changeListener is one upstream's listening session.
type changeListener struct {
	s  *Server
	up *upstream.Upstream

	mu         sync.Mutex
	session    string
	version    string
	subscribe  bool // the upstream declared resources.subscribe
	subscribed map[string]bool
	nextID     int
}

// startChangeListeners starts a listener per cached upstream; they end
// when stop is done (shutdown).
func (s *Server) startChangeListeners(stop context.Context) {
	for _, up := range s.pool.All() {
		if s.cache == nil || s.cacheConfig(up.Name) == nil {
			continue
		}
		l := &changeListener{s: s, up: up, subscribed: map[string]bool{}}
		s.listeners.Store(up.Name, l)
		go l.run(stop)
	}
}

// run keeps the listening session up, reconnecting with capped exponential
// backoff, until stop is done or the upstream has no stream to offer.
func (l *changeListener) run(stop context.Context) {
	log := l.s.log.With("upstream", l.up.Name, "component", "cache listener")
	backoff := time.Second
	for {
		connected, err := l.listen(stop)
		if stop.Err() != nil {
			return
		}
		if errors.Is(err, errNoStream) {
			log.Info("not listening for change notifications; cached entries expire by TTL", "reason", err)
			return
		}
		if connected {
			backoff = time.Second
		}
		log.Warn("change notification stream lost; reconnecting", "error", err, "in", backoff)
		select {
		case <-stop.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenerMaxBackoff)
	}
}

// listen opens a session and reads its stream until it ends. connected
// reports whether the stream was reached.
func (l *changeListener) listen(stop context.Context) (connected bool, err error) {
	if err := l.initialize(stop); err != nil {
		return false, err
	}
	// direct, as every request of the listener: the gateway's own
	// long-lived session must not hold a bulkhead slot for its whole life
	// nor count towards the breaker clients' requests open, and a lost
	// stream is reconnected with its own backoff (run).
	resp, err := askUpstream(stop, l.up.Direct(), l.request(upstreamRequest{method: http.MethodGet,
		header: http.Header{"Accept": {"text/event-stream"}}}))
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusMethodNotAllowed:
		return false, fmt.Errorf("%w: GET answered 405", errNoStream)
	case resp.StatusCode != http.StatusOK || !isEventStream(resp.Header):
		return false, fmt.Errorf("GET stream: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := newSSEReader(resp.Body)
	for {
		ev, err := events.Next()
		if err != nil {
			return true, fmt.Errorf("read stream: %w", err)
		}
		if ev.HasData && len(ev.Data) > 0 {
			l.s.observeUpstream(l.up.Name, ev.Data)
			l.answerServerRequest(stop, ev.Data)
		}
	}
}

// initialize starts the listener's own session.
func (l *changeListener) initialize(ctx context.Context) error {
	l.mu.Lock()
	l.session, l.version = "", ""
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, listenerRequestTimeout)
	defer cancel()
	params := json.RawMessage(`{"protocolVersion":"` + supportedVersions[len(supportedVersions)-1] +
		`","capabilities":{},"clientInfo":{"name":"` + listenerClientName + `","version":"1"}}`)
	opened, err := openSession(ctx, l.up.Direct(), handshake{id: 1, params: params, req: l.request(upstreamRequest{}), needSession: true})
	if errors.Is(err, errNoSession) {
		return fmt.Errorf("%w: %w", errNoStream, err)
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.session, l.version = opened.id, opened.version
	l.subscribe = declaresSubscribe(opened.result)
	clear(l.subscribed)
	l.mu.Unlock()
	return nil
}

// post sends one message on the listener's session and reads the answer
// (bounded).
func (l *changeListener) post(ctx context.Context, body string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, listenerRequestTimeout)
	defer cancel()
	resp, answer, err := askAndRead(ctx, l.up.Direct(), l.request(upstreamRequest{body: []byte(body)}), maxInitializeResponseBytes)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp, answer, nil
}

// request is req on the listener's session, named as the listener.
func (l *changeListener) request(req upstreamRequest) upstreamRequest {
	l.mu.Lock()
	req.session, req.version = l.session, l.version
	l.mu.Unlock()
	h := http.Header{"User-Agent": {listenerClientName}}
	for k, vs := range req.header {
		h[k] = vs
	}
	req.header = h
	return req
}

// answerServerRequest answers what the upstream asks the listener: ping
// gets its empty result, anything else "method not found" (the listener
// declared no capabilities), so the upstream never waits on it.
func (l *changeListener) answerServerRequest(ctx context.Context, data []byte) {
	msg, err := decodeRPC(data)
	req, ok := msg.(*jsonrpc.Request)
	if err != nil || !ok || !req.ID.IsValid() {
		return
	}
	answer := &jsonrpc.Response{ID: req.ID, Result: json.RawMessage(`{}`)}
	if req.Method != "ping" {
		answer = &jsonrpc.Response{ID: req.ID, Error: &jsonrpc.Error{Code: jsonrpc.CodeMethodNotFound, Message: "the gateway's listener offers no " + req.Method}}
	}
	body, err := jsonrpc.EncodeMessage(answer)
	if err == nil {
		go func() { _, _, _ = l.post(ctx, string(body)) }()
	}
}

// subscribeTo subscribes the listener's session to a cached resource, once,
// if the upstream offers subscriptions, so its resources/updated drops the
// entry.
func (l *changeListener) subscribeTo(ctx context.Context, uri string) {
	l.mu.Lock()
	if !l.subscribe || l.session == "" || l.subscribed[uri] || len(l.subscribed) >= maxListenerSubscriptions {
		l.mu.Unlock()
		return
	}
	l.subscribed[uri] = true
	l.nextID++
	id := l.nextID
	l.mu.Unlock()
	params, _ := json.Marshal(map[string]string{"uri": uri})
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":"subscribe-%d","method":"resources/subscribe","params":%s}`, id, params)
	if _, _, err := l.post(ctx, body); err != nil {
		l.s.log.Debug("cache listener could not subscribe", "upstream", l.up.Name, "uri", uri, "error", err)
	}
}

// declaresSubscribe reports whether an initialize result declares
// capabilities.resources.subscribe.
func declaresSubscribe(result json.RawMessage) bool {
	var init struct {
		Capabilities struct {
			Resources struct {
				Subscribe bool `json:"subscribe"`
			} `json:"resources"`
		} `json:"capabilities"`
	}
	return json.Unmarshal(result, &init) == nil && init.Capabilities.Resources.Subscribe
}
