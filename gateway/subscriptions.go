package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"sync"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// Context sources' resource events reach subscribers: when a
// POST /admin/invalidate or stream event names a resource (uri, or
// uri_prefix), every session subscribed to a matching resource gets
// notifications/resources/updated on its legacy GET stream, on whichever
// replica holds that stream, decided by the policy like any message the
// upstream sends there. The gateway learns subscriptions from the
// resources/subscribe and resources/unsubscribe requests it forwards
// (recorded when forwarded: an upstream that then refuses one makes the
// session get an update it did not ask for, which clients ignore), kept
// with the session's lifetime in memory, or on Redis with a redis block
// so that a subscription made through one replica counts on all.

// injectBuffer bounds the notifications waiting for one stream; more are
// dropped (logged): a stream whose client does not read must not hold
// the gateway's memory.
const injectBuffer = 16

// liveStream is an open legacy GET stream the gateway can add messages to.
type liveStream struct {
	session string // subscriptionKey of its session
	inject  chan []byte
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
	if fwd.msg == nil || fwd.upstreamSession == "" || fwd.federation != "" {
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

// openLiveStream registers a legacy GET stream of a session; the returned
// function unregisters it.
func (s *Server) openLiveStream(fwd *forward) (*liveStream, func()) {
	ls := &liveStream{session: subscriptionKey(fwd.route.upstream.Name, fwd.upstreamSession), inject: make(chan []byte, injectBuffer)}
	reg := s.subscriptions
	name := fwd.route.upstream.Name
	reg.mu.Lock()
	if reg.streams[name] == nil {
		reg.streams[name] = map[*liveStream]bool{}
	}
	reg.streams[name][ls] = true
	reg.mu.Unlock()
	return ls, func() {
		reg.mu.Lock()
		delete(reg.streams[name], ls)
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
		for _, uri := range s.subscribedURIs(ctx, ls.session) {
			if uri != u.URI && !(u.Prefix && strings.HasPrefix(uri, u.URI)) {
				continue
			}
			msg, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": map[string]string{"uri": uri}})
			select {
			case ls.inject <- msg:
			default:
				s.log.Warn("resources/updated not sent: the session's stream is not being read", "upstream", u.Upstream, "uri", uri)
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
