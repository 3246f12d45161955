package gateway

import (
	"io"
	"sync"
	"time"
)

// listenKeepAlive is how long a subscriptions/listen stream may go without
// an event before the gateway sends a keep-alive comment. A listen stream
// is idle by nature (it carries notifications only when something
// changes); the comment keeps proxies and load balancers between the client
// and the gateway from closing it as dead, and tells the gateway early when
// the client has gone (the write fails, the upstream stream is closed).
const listenKeepAlive = 15 * time.Second

// keepAliveComment is an SSE comment: clients ignore it.
var keepAliveComment = []byte(": keep-alive\n\n")

// keepAlive relays an upstream event stream like sseRelay and, when no event
// arrived for a whole interval, inserts a keep-alive comment, always between
// two events, never inside one. Closing it (the client went away, or the
// relay finished) closes the upstream stream: in the modern era closing a
// response stream is how a client cancels, and the upstream must see it too.
type keepAlive struct {
	relay   *sseRelay
	chunks  chan relayChunk
	done    chan struct{}
	ticker  *time.Ticker
	pending []byte
	err     error
	// boundary: the last chunk relayed ended an event; active: one arrived
	// since the last tick.
	boundary, active bool
	closeOnce        sync.Once
}

type relayChunk struct {
	data     []byte
	err      error
	boundary bool
}

func newKeepAlive(relay *sseRelay, every time.Duration) *keepAlive {
	k := &keepAlive{relay: relay, chunks: make(chan relayChunk), done: make(chan struct{}), ticker: time.NewTicker(every), boundary: true}
	go k.pump()
	return k
}

// pump reads the relay, which only it touches.
func (k *keepAlive) pump() {
	for {
		buf := make([]byte, 32<<10)
		n, err := k.relay.Read(buf)
		c := relayChunk{data: buf[:n], err: err, boundary: len(k.relay.pending) == 0}
		select {
		case k.chunks <- c:
		case <-k.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (k *keepAlive) Read(p []byte) (int, error) {
	for len(k.pending) == 0 {
		if k.err != nil {
			return 0, k.err
		}
		select {
		case c := <-k.chunks:
			k.pending, k.err, k.boundary, k.active = c.data, c.err, c.boundary, true
		case <-k.done:
			return 0, io.ErrClosedPipe
		case <-k.ticker.C:
			if !k.active && k.boundary {
				k.pending = keepAliveComment
			}
			k.active = false
		}
	}
	n := copy(p, k.pending)
	k.pending = k.pending[n:]
	return n, nil
}

func (k *keepAlive) Close() error {
	k.closeOnce.Do(func() {
		k.ticker.Stop()
		close(k.done)
	})
	return k.relay.Close()
}

var _ io.ReadCloser = (*keepAlive)(nil)
