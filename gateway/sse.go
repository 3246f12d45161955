package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// streamLimits bound one relayed stream; a zero field is no bound.
type streamLimits struct {
	// idle ends the stream when the upstream sends nothing this long.
	idle time.Duration
	// max ends the stream this long after it started.
	max time.Duration
	// keepalive sends an SSE comment when nothing was relayed this long
	// (GET streams), so proxies in between keep the connection.
	keepalive time.Duration
}

// keepaliveEvent is the comment sent on a quiet stream; clients ignore it.
var keepaliveEvent = []byte(": keepalive\n\n")

// sseRelay is an upstream event stream as an io.ReadCloser that yields whole
// events, one per Read (or several Reads for a large one), so the reverse
// proxy flushes each event to the client as it arrives. When stop is done
// (shutdown), the upstream stays silent for limits.idle, or the stream
// reaches limits.max, it ends at an event boundary with io.EOF, which ends
// the client's response cleanly instead of cutting it mid-event.
//
// One goroutine parses the upstream and hands over one event at a time on
// an unbuffered channel: it holds at most the event being handed over, so
// a client that does not read stops the relay reading the upstream
// (backpressure) instead of growing memory. Close ends the goroutine.
type sseRelay struct {
	upstream io.ReadCloser
	events   chan sseResult
	quit     chan struct{} // closed once, by Close or stop: the parser ends
	quitOnce sync.Once
	pending  []byte
	stopped  atomic.Bool
	cancel   func() bool
	limits   streamLimits
	idle     *time.Timer // nil without limits.idle
	deadline *time.Timer // nil without limits.max
	quiet    *time.Timer // nil without limits.keepalive
	// transform, if set, rewrites each event's data (one JSON-RPC message)
	// or drops it. A dropped event keeps its id and retry, so resumption
	// still works, but carries no data and so dispatches nothing.
	transform func(data []byte) ([]byte, bool)
	// onClose, if set, is called once, on the first Close (the open
	// streams gauge).
	onClose func()
	closed  atomic.Bool
	// observe, if set, sees each event's data before transform (cache
	// invalidation on the upstream's change notifications).
	observe func(data []byte)
	// onEnd, if set, gives the events to send when the relay ends the
	// stream abnormally (cause: stalled, too long, an event over the
	// limit, a broken upstream): the errors for the requests still
	// pending. The stream then ends cleanly after them.
	onEnd func(cause error) []byte
	// done: the stream has ended; Read returns io.EOF once pending is out.
	done bool
	// inject, if set, carries messages of the gateway's own to add to the
	// stream between the upstream's events (subscriptions.go), through
	// transform like the upstream's (but not observe, and not counted as
	// the upstream's activity).
	inject <-chan []byte
	// watch, if set, sees each of the upstream's messages first, on the
	// reading goroutine (a listen's subscriptions.go hook).
	watch func(data []byte)
}

// sseResult is what the parser hands over: an event or the error that
// ended the upstream stream.
type sseResult struct {
	ev  *mcpwire.Event
	err error
}

func newSSERelay(upstream io.ReadCloser, stop context.Context, limits streamLimits) *sseRelay {
	s := &sseRelay{upstream: upstream, events: make(chan sseResult), quit: make(chan struct{}), limits: limits}
	s.cancel = context.AfterFunc(stop, func() {
		s.stopped.Store(true)
		s.end()
	})
	s.idle = newTimer(limits.idle)
	s.deadline = newTimer(limits.max)
	s.quiet = newTimer(limits.keepalive)
	go s.parse(mcpwire.NewReader(upstream))
	return s
}

// newTimer is a running timer, or nil for d == 0 (its channel never fires).
func newTimer(d time.Duration) *time.Timer {
	if d <= 0 {
		return nil
	}
	return time.NewTimer(d)
}

func timerC(t *time.Timer) <-chan time.Time {
	if t == nil {
		return nil
	}
	return t.C
}

func resetTimer(t *time.Timer, d time.Duration) {
	if t != nil {
		t.Reset(d)
	}
}

// parse reads upstream events until the stream ends or the relay quits.
func (s *sseRelay) parse(events *mcpwire.Reader) {
	for {
		ev, err := events.Next()
		select {
		case s.events <- sseResult{ev, err}:
		case <-s.quit:
			return
		}
		if err != nil {
			return
		}
	}
}

// end stops the parser and unblocks a Read waiting on the upstream.
func (s *sseRelay) end() {
	s.quitOnce.Do(func() { close(s.quit) })
	_ = s.upstream.Close()
}

func (s *sseRelay) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.done || s.stopped.Load() {
			return 0, io.EOF
		}
		select {
		case r := <-s.events:
			if err := s.take(r); errors.Is(err, io.EOF) {
				return 0, io.EOF
			} else if err != nil {
				if s.onEnd == nil {
					return 0, err
				}
				s.fail(err) // an event over the limit, a broken upstream
			}
		case data := <-s.inject:
			s.takeInjected(data)
		case <-timerC(s.quiet):
			s.pending = append(s.pending[:0], keepaliveEvent...)
		case <-timerC(s.idle):
			// A stalled upstream: the pending requests are answered, then
			// the stream ends cleanly (a GET stream's client may resume).
			s.fail(fmt.Errorf("%w: no event for %v: %w", errStreamStalled, s.limits.idle, context.DeadlineExceeded))
		case <-timerC(s.deadline):
			s.fail(fmt.Errorf("%w: open for %v: %w", errStreamTooLong, s.limits.max, context.DeadlineExceeded))
		case <-s.quit:
			return 0, io.EOF
		}
	}
	resetTimer(s.quiet, s.limits.keepalive)
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

var (
	errStreamStalled = errors.New("upstream stream stalled")
	errStreamTooLong = errors.New("upstream stream reached its maximum duration")
)

// fail ends the stream: the upstream is closed, and what onEnd gives for
// cause is the last thing the client gets.
func (s *sseRelay) fail(cause error) {
	s.end()
	s.done = true
	s.pending = s.pending[:0]
	if s.onEnd != nil {
		s.pending = append(s.pending, s.onEnd(cause)...)
	}
}

// take turns one parsed event into pending bytes (possibly none).
func (s *sseRelay) take(r sseResult) error {
	if r.err != nil {
		if s.stopped.Load() || errors.Is(r.err, io.EOF) {
			return io.EOF
		}
		return r.err
	}
	resetTimer(s.idle, s.limits.idle)
	ev := r.ev
	if s.watch != nil && ev.HasData && len(ev.Data) > 0 {
		s.watch(ev.Data)
	}
	if s.observe != nil && ev.HasData {
		s.observe(ev.Data)
	}
	if s.transform != nil && ev.HasData && len(ev.Data) > 0 {
		data, drop := s.transform(ev.Data)
		if drop {
			if !ev.HasID && ev.Retry == "" {
				return nil
			}
			ev.Data, ev.HasData, ev.Event = nil, false, ""
		} else {
			ev.Data = data
		}
	}
	s.pending = ev.AppendTo(s.pending[:0])
	return nil
}

// takeInjected turns one of the gateway's own messages into pending bytes
// (none when transform drops it).
func (s *sseRelay) takeInjected(data []byte) {
	if s.transform != nil {
		var drop bool
		if data, drop = s.transform(data); drop {
			return
		}
	}
	s.pending = (&mcpwire.Event{Event: "message", Data: data, HasData: true}).AppendTo(s.pending[:0])
}

func (s *sseRelay) Close() error {
	s.cancel()
	if s.onClose != nil && s.closed.CompareAndSwap(false, true) {
		s.onClose()
	}
	s.quitOnce.Do(func() { close(s.quit) })
	for _, t := range []*time.Timer{s.idle, s.deadline, s.quiet} {
		if t != nil {
			t.Stop()
		}
	}
	return s.upstream.Close()
}
