package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// maxSSEEventBytes bounds one server-sent event from an upstream. An
// upstream that never ends an event cannot grow the gateway's memory.
const maxSSEEventBytes = 16 << 20

var errSSEEventTooLarge = fmt.Errorf("upstream SSE event larger than %d bytes", maxSSEEventBytes)

// sseEvent is one event of a text/event-stream, with every field the MCP
// transport uses kept, so relaying it re-emits the same event: ids (for
// Last-Event-ID resumption), retry (for polling), comments (keep-alives) and
// empty-data priming events.
type sseEvent struct {
	ID       string
	HasID    bool
	Event    string
	Data     []byte // lines joined with \n, as the SSE spec assembles them
	HasData  bool
	Retry    string
	Comments []string
}

// sseReader parses a text/event-stream per the WHATWG rules: lines end in
// \n, \r\n or \r; a blank line ends an event; "field: value" drops one
// leading space; unknown fields are ignored.
type sseReader struct {
	r *bufio.Reader
	// skipLF: the last line ended in \r, so a \n right after it belongs to
	// that line ending. Remembered rather than peeked at, so an event ended
	// by a lone \r is delivered at once, not when the next byte arrives.
	skipLF bool
}

// newSSEReader reads r through a 4 KiB buffer: the parser takes a byte at a
// time whatever the size, and an open stream holds its buffer for its whole
// life (32 KiB was a quarter of a stream's cost, issue 15).
func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 4<<10)}
}

// next returns the next event, io.EOF at a clean end of stream, and
// io.ErrUnexpectedEOF when the stream ends inside an event.
func (s *sseReader) next() (*sseEvent, error) {
	ev := &sseEvent{}
	size, lines := 0, 0
	for {
		line, err := s.readLine(maxSSEEventBytes - size)
		if err != nil {
			if err == io.EOF && lines > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(line) == 0 {
			if lines == 0 {
				continue // stray blank lines between events
			}
			return ev, nil
		}
		lines++
		size += len(line) + 1
		ev.addField(line)
	}
}

func (ev *sseEvent) addField(line []byte) {
	name, value, found := bytes.Cut(line, []byte{':'})
	if found && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	switch {
	case len(name) == 0:
		ev.Comments = append(ev.Comments, string(value))
	case string(name) == "data":
		if ev.HasData {
			ev.Data = append(ev.Data, '\n')
		}
		ev.Data = append(ev.Data, value...)
		ev.HasData = true
	case string(name) == "id":
		ev.ID, ev.HasID = string(value), true
	case string(name) == "event":
		ev.Event = string(value)
	case string(name) == "retry":
		ev.Retry = string(value)
	}
}

// readLine reads one line without its terminator, accepting \n, \r\n and \r.
func (s *sseReader) readLine(limit int) ([]byte, error) {
	var line []byte
	for {
		b, err := s.r.ReadByte()
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if s.skipLF {
			s.skipLF = false
			if b == '\n' {
				continue
			}
		}
		switch b {
		case '\n':
			return line, nil
		case '\r':
			s.skipLF = true
			return line, nil
		}
		if len(line) >= limit {
			return nil, errSSEEventTooLarge
		}
		line = append(line, b)
	}
}

// appendTo encodes the event. Data containing newlines becomes several data
// lines, which the client joins back.
func (ev *sseEvent) appendTo(b []byte) []byte {
	for _, c := range ev.Comments {
		b = append(append(append(b, ':', ' '), c...), '\n')
	}
	if ev.HasID {
		b = append(append(append(b, "id: "...), ev.ID...), '\n')
	}
	if ev.Event != "" {
		b = append(append(append(b, "event: "...), ev.Event...), '\n')
	}
	if ev.Retry != "" {
		b = append(append(append(b, "retry: "...), ev.Retry...), '\n')
	}
	if ev.HasData {
		for line := range bytes.SplitSeq(ev.Data, []byte{'\n'}) {
			b = append(append(append(b, "data: "...), line...), '\n')
		}
	}
	return append(b, '\n')
}

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
}

// sseResult is what the parser hands over: an event or the error that
// ended the upstream stream.
type sseResult struct {
	ev  *sseEvent
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
	go s.parse(newSSEReader(upstream))
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
func (s *sseRelay) parse(events *sseReader) {
	for {
		ev, err := events.next()
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
	s.pending = ev.appendTo(s.pending[:0])
	return nil
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
