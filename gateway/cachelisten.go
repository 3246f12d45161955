package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	req, err := http.NewRequestWithContext(stop, http.MethodGet, l.up.URL.String(), nil)
	if err != nil {
		return false, err
	}
	l.setHeaders(req.Header, "text/event-stream")
	resp, err := l.up.Transport.RoundTrip(req)
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
	body := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"` + supportedVersions[len(supportedVersions)-1] +
		`","capabilities":{},"clientInfo":{"name":"` + listenerClientName + `","version":"1"}}}`
	l.mu.Lock()
	l.session, l.version = "", ""
	l.mu.Unlock()
	resp, answer, err := l.post(ctx, body)
	if err != nil {
		return fmt.Errorf("initialize: %w", err)
	}
	version, ok := negotiatedVersion(answer, isEventStream(resp.Header))
	session := resp.Header.Get("Mcp-Session-Id")
	switch {
	case !ok || !isSupportedVersion(version):
		return fmt.Errorf("initialize: HTTP %d, no usable protocol version", resp.StatusCode)
	case session == "":
		return fmt.Errorf("%w: no Mcp-Session-Id (a stateless server)", errNoStream)
	}
	l.mu.Lock()
	l.session, l.version = session, version
	l.subscribe = declaresSubscribe(answer, isEventStream(resp.Header))
	clear(l.subscribed)
	l.mu.Unlock()
	if _, _, err := l.post(ctx, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); err != nil {
		return fmt.Errorf("notifications/initialized: %w", err)
	}
	return nil
}

// post sends one message on the listener's session and reads the answer
// (bounded).
func (l *changeListener) post(ctx context.Context, body string) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, listenerRequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.up.URL.String(), strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	l.setHeaders(req.Header, "application/json, text/event-stream")
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.up.Transport.RoundTrip(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxInitializeResponseBytes))
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return resp, answer, nil
}

func (l *changeListener) setHeaders(h http.Header, accept string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h.Set("Accept", accept)
	h.Set("User-Agent", listenerClientName)
	if l.session != "" {
		h.Set("Mcp-Session-Id", l.session)
		h.Set("Mcp-Protocol-Version", l.version)
	}
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

// declaresSubscribe reports whether an initialize answer declares
// capabilities.resources.subscribe.
func declaresSubscribe(body []byte, sse bool) bool {
	for _, p := range messagePayloads(body, sse) {
		var msg struct {
			Result struct {
				Capabilities struct {
					Resources struct {
						Subscribe bool `json:"subscribe"`
					} `json:"resources"`
				} `json:"capabilities"`
			} `json:"result"`
		}
		if json.Unmarshal(p, &msg) == nil && msg.Result.Capabilities.Resources.Subscribe {
			return true
		}
	}
	return false
}
