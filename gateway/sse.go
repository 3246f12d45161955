package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
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

func newSSEReader(r io.Reader) *sseReader {
	return &sseReader{r: bufio.NewReaderSize(r, 32<<10)}
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

// sseRelay is an upstream event stream as an io.ReadCloser that yields whole
// events, one per Read (or several Reads for a large one), so the reverse
// proxy flushes each event to the client as it arrives. When stop is done
// (shutdown) the stream ends at an event boundary with io.EOF, which ends
// the client's response cleanly instead of cutting it mid-event.
type sseRelay struct {
	upstream io.ReadCloser
	events   *sseReader
	pending  []byte
	stopped  atomic.Bool
	cancel   func() bool
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
}

func newSSERelay(upstream io.ReadCloser, stop context.Context) *sseRelay {
	s := &sseRelay{upstream: upstream, events: newSSEReader(upstream)}
	s.cancel = context.AfterFunc(stop, func() {
		s.stopped.Store(true)
		_ = upstream.Close() // unblocks a Read waiting on the upstream
	})
	return s
}

func (s *sseRelay) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.stopped.Load() {
			return 0, io.EOF
		}
		ev, err := s.events.next()
		if err != nil {
			if s.stopped.Load() {
				return 0, io.EOF
			}
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, err
		}
		if s.observe != nil && ev.HasData {
			s.observe(ev.Data)
		}
		if s.transform != nil && ev.HasData && len(ev.Data) > 0 {
			data, drop := s.transform(ev.Data)
			if drop {
				if !ev.HasID && ev.Retry == "" {
					continue
				}
				ev.Data, ev.HasData, ev.Event = nil, false, ""
			} else {
				ev.Data = data
			}
		}
		s.pending = ev.appendTo(s.pending[:0])
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *sseRelay) Close() error {
	s.cancel()
	if s.onClose != nil && s.closed.CompareAndSwap(false, true) {
		s.onClose()
	}
	return s.upstream.Close()
}
