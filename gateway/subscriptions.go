package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// Context sources' resource events reach subscribers: when a
// POST /admin/invalidate or stream event names a resource (uri, or
// uri_prefix), every stream subscribed to a matching resource gets
// notifications/resources/updated, on whichever replica holds it, decided
// by the policy like any message the upstream sends there: a session's
// legacy GET stream, and a modern subscriptions/listen, on single and on
// federated routes (where the URI is renamed as the member's own updates
// are). A listen carries its subscriptions; for a session, the gateway
// learns them from the resources/subscribe and resources/unsubscribe
// requests it forwards (recorded when forwarded: an upstream that then
// refuses one makes the session get an update it did not ask for, which
// clients ignore), kept with the session's lifetime in memory, or on Redis
// with a redis block so that a subscription made through one replica
// counts on all.

// injectBuffer bounds the notifications waiting for one stream; more are
// dropped (logged): a stream whose client does not read must not hold
// the gateway's memory.
const injectBuffer = 16

// liveStream is an open stream the gateway can add messages to.
type liveStream struct {
	// session is the subscriptionKey of a legacy session's stream; for a
	// listen it is empty and uris are the listen's subscriptions (under
	// the upstream's names), listenID its request id, which the
	// notification carries as its subscriptionId.
	session  string
	uris     []string
	listenID any
	// deliver hands a message to the stream without waiting; false when
	// the stream has no room for it.
	deliver func(msg []byte) bool
}

// sessionStream is the liveStream of a legacy session's stream, given
// what the stream takes its messages from.
func sessionStream(upstreamName, upstreamSession string, deliver func([]byte) bool) *liveStream {
	return &liveStream{session: subscriptionKey(upstreamName, upstreamSession), deliver: deliver}
}

// listenStream is the liveStream of a modern listen subscribed to uris.
func listenStream(uris []string, id jsonrpc.ID, deliver func([]byte) bool) *liveStream {
	return &liveStream{uris: uris, listenID: id.Raw(), deliver: deliver}
}

// attachLive makes relay, a single route's relayed stream, take the
// gateway's own resource updates: a legacy session's GET stream from its
// start, a modern listen once its acknowledgement is relayed, for the
// resources the upstream agreed to, and until its result (updates before
// or after would break the listen's order). Other streams take none; a
// federated member's are registered by its merge (fedstream.go). The
// returned function, called when the stream closes, unregisters it.
func (s *Server) attachLive(fwd *forward, relay *sseRelay) func() {
	if fwd.federation != "" || !fwd.stream {
		return func() {}
	}
	inject := make(chan []byte, injectBuffer)
	deliver := offer(inject, func(msg []byte) []byte { return msg })
	name := fwd.route.upstream.Name
	switch {
	case fwd.listen && fwd.msg != nil:
		req := fwd.msg.Request()
		var asked listenParams
		if json.Unmarshal(req.Params, &asked) != nil || asked.Notifications == nil || len(asked.Notifications.ResourceSubscriptions) == 0 {
			return func() {}
		}
		var mu sync.Mutex // the watch (the relay's reader) and the close
		var unregister func()
		leave := func() {
			mu.Lock()
			defer mu.Unlock()
			if unregister != nil {
				unregister()
				unregister = func() {}
			}
		}
		first := true
		relay.watch = func(data []byte) {
			if !first {
				if isResponse(data) { // the listen's result: it is over
					relay.inject = nil
					leave()
				}
				return
			}
			first = false
			uris := agreedSubscriptions(data, asked.Notifications.ResourceSubscriptions)
			if len(uris) == 0 {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if unregister == nil {
				unregister = s.openLiveStream(name, listenStream(uris, req.ID, deliver))
				relay.inject = inject
			}
		}
		return leave
	case fwd.era == eraLegacy && fwd.upstreamSession != "":
		relay.inject = inject
		return s.openLiveStream(name, sessionStream(name, fwd.upstreamSession, deliver))
	}
	return func() {}
}

// agreedSubscriptions are the resources of asked that a listen's
// acknowledgement (ack, its first message) agreed to; none when ack is
// not one.
func agreedSubscriptions(ack []byte, asked []string) []string {
	var m struct {
		Method string       `json:"method"`
		Params listenParams `json:"params"`
	}
	if json.Unmarshal(ack, &m) != nil || m.Method != methodAcknowledged || m.Params.Notifications == nil {
		return nil
	}
	var out []string
	for _, uri := range m.Params.Notifications.ResourceSubscriptions {
		if slices.Contains(asked, uri) {
			out = append(out, uri)
		}
	}
	return out
}

// isResponse reports whether data is a JSON-RPC response (an id, no
// method).
func isResponse(data []byte) bool {
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	return json.Unmarshal(data, &m) == nil && m.Method == "" && len(m.ID) > 0 && string(m.ID) != "null"
}

// offer is a deliver that sends on ch without waiting.
func offer[T any](ch chan<- T, wrap func([]byte) T) func([]byte) bool {
	return func(msg []byte) bool {
		select {
		case ch <- wrap(msg):
			return true
		default:
			return false
		}
	}
}

// subscriptionRegistry is the process's open streams and, without Redis,
// its sessions' subscriptions.
type subscriptionRegistry struct {
	mu      sync.Mutex
	streams map[string]map[*liveStream]bool // by upstream
	local   map[string]map[string]bool      // session key -> URIs
}

func newSubscriptionRegistry() *subscriptionRegistry {
	return &subscriptionRegistry{streams: map[string]map[*liveStream]bool{}, local: map[string]map[string]bool{}}
}

// maxLocalSubscriptions bounds the sessions tracked in memory; past it
// the oldest knowledge is dropped (those sessions get no gateway-sent
// updates, their upstreams' own still arrive).
const maxLocalSubscriptions = 100_000

// subscriptionKey names a session (upstream and its upstream session) for
// the subscription records without putting the session id in Redis.
func subscriptionKey(upstreamName, upstreamSession string) string {
	sum := sha256.Sum256([]byte("ctxgate subscription\x00" + upstreamName + "\x00" + upstreamSession))
	return hex.EncodeToString(sum[:16])
}

// noteSubscription records a resources/subscribe or unsubscribe about to
// be forwarded.
func (s *Server) noteSubscription(ctx context.Context, fwd *forward) {
	if fwd.msg == nil || fwd.upstreamSession == "" {
		return
	}
	method := fwd.msg.Method()
	if method != "resources/subscribe" && method != "resources/unsubscribe" {
		return
	}
	p := mcpwire.ParamsOf(fwd.msg.Request())
	if p == nil || p.URI == "" {
		return
	}
	key := subscriptionKey(fwd.route.upstream.Name, fwd.upstreamSession)
	if s.redis != nil {
		var err error
		if method == "resources/subscribe" {
			err = s.redis.Subscribe(ctx, key, p.URI, s.cfg.Sessions.TTL)
		} else {
			err = s.redis.Unsubscribe(ctx, key, p.URI)
		}
		if err != nil {
			loggerOf(ctx, s.log).Warn("resource subscription not recorded on Redis: context sources' events for it reach this session only through its upstream", "error", err.Error())
		}
		return
	}
	reg := s.subscriptions
	reg.mu.Lock()
	defer reg.mu.Unlock()
	uris := reg.local[key]
	if method == "resources/unsubscribe" {
		delete(uris, p.URI)
		return
	}
	if uris == nil {
		if len(reg.local) >= maxLocalSubscriptions {
			clear(reg.local)
		}
		uris = map[string]bool{}
		reg.local[key] = uris
	}
	uris[p.URI] = true
}

// openLiveStream registers ls, a stream of upstream upstreamName's (a
// member's, on a federated route); the returned function unregisters it.
func (s *Server) openLiveStream(upstreamName string, ls *liveStream) func() {
	reg := s.subscriptions
	reg.mu.Lock()
	if reg.streams[upstreamName] == nil {
		reg.streams[upstreamName] = map[*liveStream]bool{}
	}
	reg.streams[upstreamName][ls] = true
	reg.mu.Unlock()
	return func() {
		reg.mu.Lock()
		delete(reg.streams[upstreamName], ls)
		reg.mu.Unlock()
	}
}

// resourceUpdate is a resource a context source said changed.
type resourceUpdate struct {
	Upstream string `json:"upstream"`
	URI      string `json:"uri"`
	Prefix   bool   `json:"prefix,omitempty"` // URI is a prefix
}

// notifySubscribers sends notifications/resources/updated to this
// replica's open streams whose sessions subscribed to a resource u names.
func (s *Server) notifySubscribers(ctx context.Context, u resourceUpdate) {
	reg := s.subscriptions
	reg.mu.Lock()
	var streams []*liveStream
	for ls := range reg.streams[u.Upstream] {
		streams = append(streams, ls)
	}
	reg.mu.Unlock()
	for _, ls := range streams {
		uris := ls.uris
		if ls.session != "" {
			uris = s.subscribedURIs(ctx, ls.session)
		}
		for _, uri := range uris {
			if uri != u.URI && !(u.Prefix && strings.HasPrefix(uri, u.URI)) {
				continue
			}
			params := map[string]any{"uri": uri}
			if ls.listenID != nil {
				params["_meta"] = map[string]any{metaSubscriptionID: ls.listenID}
			}
			msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": params})
			if !ls.deliver(msg) {
				s.log.Warn("resources/updated not sent: the stream is not being read", "upstream", u.Upstream, "uri", uri)
			}
		}
	}
}

func (s *Server) subscribedURIs(ctx context.Context, session string) []string {
	if s.redis != nil {
		uris, err := s.redis.Subscribed(ctx, session)
		if err != nil {
			s.log.Warn("resource subscriptions not read from Redis", "error", err.Error())
		}
		return uris
	}
	reg := s.subscriptions
	reg.mu.Lock()
	defer reg.mu.Unlock()
	var out []string
	for uri := range reg.local[session] {
		out = append(out, uri)
	}
	return out
}
