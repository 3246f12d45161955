package mcpwire

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// MaxEventBytes bounds one server-sent event from an upstream. An
// upstream that never ends an event cannot grow the gateway's memory.
const MaxEventBytes = 16 << 20

// ErrEventTooLarge is Reader.Next's error for an event over MaxEventBytes.
var ErrEventTooLarge = fmt.Errorf("upstream SSE event larger than %d bytes", MaxEventBytes)

// Event is one event of a text/event-stream, with every field the MCP
// transport uses kept, so relaying it re-emits the same event: ids (for
// Last-Event-ID resumption), retry (for polling), comments (keep-alives) and
// empty-data priming events.
type Event struct {
	ID       string
	HasID    bool
	Event    string
	Data     []byte // lines joined with \n, as the SSE spec assembles them
	HasData  bool
	Retry    string
	Comments []string
}

// Reader parses a text/event-stream per the WHATWG rules: lines end in
// \n, \r\n or \r; a blank line ends an event; "field: value" drops one
// leading space; unknown fields are ignored.
type Reader struct {
	r *bufio.Reader
	// skipLF: the last line ended in \r, so a \n right after it belongs to
	// that line ending. Remembered rather than peeked at, so an event ended
	// by a lone \r is delivered at once, not when the next byte arrives.
	skipLF bool
}

// NewReader reads events from r through a 4 KiB buffer: the parser takes a
// byte at a time whatever the size, and an open stream holds its buffer for
// its whole life (32 KiB was a quarter of a stream's cost, issue 15).
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 4<<10)}
}

// Next returns the next event, io.EOF at a clean end of stream, and
// io.ErrUnexpectedEOF when the stream ends inside an event.
func (s *Reader) Next() (*Event, error) {
	ev := &Event{}
	size, lines := 0, 0
	for {
		line, err := s.readLine(MaxEventBytes - size)
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

func (ev *Event) addField(line []byte) {
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
func (s *Reader) readLine(limit int) ([]byte, error) {
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
			return nil, ErrEventTooLarge
		}
		line = append(line, b)
	}
}

// AppendTo appends the event's encoding to b and returns it. Data containing newlines becomes several data
// lines, which the client joins back.
func (ev *Event) AppendTo(b []byte) []byte {
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
