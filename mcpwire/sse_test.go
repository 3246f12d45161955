package mcpwire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateEmpty treats a nil Data or Comments like an empty one: HasData
// carries whether a data field was seen.
var equateEmpty = cmpopts.EquateEmpty()

// readEvents parses r to the end and returns the events and the final error.
func readEvents(r io.Reader) ([]Event, error) {
	events := NewReader(r)
	var out []Event
	for {
		ev, err := events.Next()
		if err != nil {
			return out, err
		}
		out = append(out, *ev)
	}
}

// repeatReader yields the same byte forever.
type repeatReader byte

func (b repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// cycleReader yields its pattern over and over, forever.
type cycleReader struct {
	pattern string
	off     int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.pattern[c.off]
		c.off = (c.off + 1) % len(c.pattern)
	}
	return len(p), nil
}

// bigLine is "data: " followed by filler bytes: a line of 6+filler bytes,
// built without holding it in memory.
func bigLine(filler int, rest string) io.Reader {
	return io.MultiReader(strings.NewReader("data: "), io.LimitReader(repeatReader('a'), int64(filler)), strings.NewReader(rest))
}

func TestSSEReader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Event
		wantErr error
	}{
		{name: "empty stream", in: "", wantErr: io.EOF},
		{name: "only blank lines", in: "\n\r\n\r\n", wantErr: io.EOF},
		{
			name: "one event",
			in:   "data: hello\n\n",
			want: []Event{{Data: []byte("hello"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "multi-line data joined with LF",
			in:   "data: {\"a\":\ndata: 1}\ndata: \n\n",
			want: []Event{{Data: []byte("{\"a\":\n1}\n"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "CRLF line endings",
			in:   "id: 7\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n",
			want: []Event{{ID: "7", HasID: true, Event: "message", Data: []byte("a\nb"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "lone CR line endings",
			in:   "id: 7\revent: message\rdata: a\rdata: b\r\r",
			want: []Event{{ID: "7", HasID: true, Event: "message", Data: []byte("a\nb"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "mixed line endings across events",
			in:   "data: 1\r\rdata: 2\n\ndata: 3\r\n\r\n",
			want: []Event{
				{Data: []byte("1"), HasData: true},
				{Data: []byte("2"), HasData: true},
				{Data: []byte("3"), HasData: true},
			},
			wantErr: io.EOF,
		},
		{
			name: "CR CR LF is two line ends, not one",
			in:   "data: x\r\r\ndata: y\n\n",
			want: []Event{{Data: []byte("x"), HasData: true}, {Data: []byte("y"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "comments",
			in:   ": keep-alive\n:\n:no space\n:  two spaces\n\n",
			want: []Event{{Comments: []string{"keep-alive", "", "no space", " two spaces"}}}, wantErr: io.EOF,
		},
		{
			name: "comment-only event between events",
			in:   "data: a\n\n: ping\n\ndata: b\n\n",
			want: []Event{
				{Data: []byte("a"), HasData: true},
				{Comments: []string{"ping"}},
				{Data: []byte("b"), HasData: true},
			},
			wantErr: io.EOF,
		},
		{
			name: "id, event and retry",
			in:   "id: ev-1\nevent: message\nretry: 1500\ndata: {}\n\n",
			want: []Event{{ID: "ev-1", HasID: true, Event: "message", Retry: "1500", Data: []byte("{}"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "priming event: id and empty data",
			in:   "id: prime-1\nretry: 100\ndata:\n\n",
			want: []Event{{ID: "prime-1", HasID: true, Retry: "100", Data: []byte{}, HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "data without colon is an empty value",
			in:   "data\n\n",
			want: []Event{{HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "data without colon after data adds an empty line",
			in:   "data: a\ndata\n\n",
			want: []Event{{Data: []byte("a\n"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "id without colon is an empty id",
			in:   "id\ndata: x\n\n",
			want: []Event{{HasID: true, Data: []byte("x"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "one leading space stripped, only once",
			in:   "data:  two\ndata:none\ndata:   three\n\n",
			want: []Event{{Data: []byte(" two\nnone\n  three"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "leading tab is kept",
			in:   "data:\tx\n\n",
			want: []Event{{Data: []byte("\tx"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "colons after the first belong to the value",
			in:   "data: a: b:c\n\n",
			want: []Event{{Data: []byte("a: b:c"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "unknown and case-variant fields ignored",
			in:   "foo: bar\nData: no\nDATA: no\ndata : no\n data: no\ndata: yes\n\n",
			want: []Event{{Data: []byte("yes"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "only unknown fields is an empty event",
			in:   "foo: bar\n\n",
			want: []Event{{}}, wantErr: io.EOF,
		},
		{
			name: "later id and event replace earlier ones",
			in:   "id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n",
			want: []Event{{ID: "2", HasID: true, Event: "b", Data: []byte("x"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "stray blank lines between events",
			in:   "\n\n\ndata: a\n\n\n\r\n\rdata: b\n\n\n",
			want: []Event{{Data: []byte("a"), HasData: true}, {Data: []byte("b"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "non-ASCII and NUL kept",
			in:   "id: \x00é\ndata: ✓\n\n",
			want: []Event{{ID: "\x00é", HasID: true, Data: []byte("✓"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "EOF after a complete line inside an event",
			in:   "data: a\n\ndata: b\n",
			want: []Event{{Data: []byte("a"), HasData: true}}, wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "EOF inside a line",
			in:   "data: a\n\ndata: b",
			want: []Event{{Data: []byte("a"), HasData: true}}, wantErr: io.ErrUnexpectedEOF,
		},
		{
			name:    "EOF inside the first line",
			in:      "da",
			wantErr: io.ErrUnexpectedEOF,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readEvents(strings.NewReader(tt.in))
			if diff := cmp.Diff(tt.want, got, equateEmpty); diff != "" {
				t.Errorf("events mismatch (-want +got):\n%s", diff)
			}
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == io.EOF && err != io.EOF) {
				t.Errorf("final error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestSSEReaderEventSizeLimit(t *testing.T) {
	const prefix = len("data: ")
	tests := []struct {
		name     string
		in       func() io.Reader
		wantData int // length of the one event's data; -1: ErrEventTooLarge
	}{
		{
			name:     "one line of exactly MaxEventBytes",
			in:       func() io.Reader { return bigLine(MaxEventBytes-prefix, "\n\n") },
			wantData: MaxEventBytes - prefix,
		},
		{
			name:     "one line of MaxEventBytes+1",
			in:       func() io.Reader { return bigLine(MaxEventBytes-prefix+1, "\n\n") },
			wantData: -1,
		},
		{
			name: "several lines together over the limit",
			in: func() io.Reader {
				return io.MultiReader(bigLine(MaxEventBytes/2, "\n"), bigLine(MaxEventBytes/2, "\n\n"))
			},
			wantData: -1,
		},
		{
			name:     "endless line without a terminator",
			in:       func() io.Reader { return io.MultiReader(strings.NewReader("data: "), repeatReader('a')) },
			wantData: -1,
		},
		{
			name:     "endless event of unknown-field lines",
			in:       func() io.Reader { return &cycleReader{pattern: "foo: " + strings.Repeat("x", 1000) + "\n"} },
			wantData: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := NewReader(tt.in()).Next()
			if tt.wantData < 0 {
				if !errors.Is(err, ErrEventTooLarge) {
					t.Fatalf("next() = %v, want ErrEventTooLarge", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("next() = %v, want an event", err)
			}
			if len(ev.Data) != tt.wantData {
				t.Errorf("data length = %d, want %d", len(ev.Data), tt.wantData)
			}
		})
	}
}

func TestSSEEventRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string // the encoding
	}{
		{
			name: "data",
			ev:   Event{Data: []byte(`{"jsonrpc":"2.0"}`), HasData: true},
			want: "data: {\"jsonrpc\":\"2.0\"}\n\n",
		},
		{
			name: "every field",
			ev:   Event{ID: "ev-1", HasID: true, Event: "message", Retry: "1500", Comments: []string{"a", ""}, Data: []byte("x"), HasData: true},
			want: ": a\n: \nid: ev-1\nevent: message\nretry: 1500\ndata: x\n\n",
		},
		{
			name: "multi-line data",
			ev:   Event{Data: []byte("a\n\nb\n"), HasData: true},
			want: "data: a\ndata: \ndata: b\ndata: \n\n",
		},
		{
			name: "empty data and empty id",
			ev:   Event{HasID: true, HasData: true},
			want: "id: \ndata: \n\n",
		},
		{
			name: "values with leading spaces",
			ev:   Event{ID: " i", HasID: true, Event: "  e", Comments: []string{" c"}, Data: []byte(" d\n  d"), HasData: true},
			want: ":  c\nid:  i\nevent:   e\ndata:  d\ndata:   d\n\n",
		},
		{
			name: "comment only",
			ev:   Event{Comments: []string{"keep-alive"}},
			want: ": keep-alive\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := tt.ev.AppendTo(nil)
			if string(enc) != tt.want {
				t.Errorf("appendTo = %q, want %q", enc, tt.want)
			}
			got, err := readEvents(bytes.NewReader(enc))
			if err != io.EOF {
				t.Fatalf("re-parse ended with %v, want io.EOF", err)
			}
			if diff := cmp.Diff([]Event{tt.ev}, got, equateEmpty); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzSSEReader checks that the parser never panics, and that every event
// it yields survives the relay's re-encoding unchanged.
func FuzzSSEReader(f *testing.F) {
	for _, s := range []string{
		"data: hello\n\n",
		"id: 7\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n",
		"id: 7\revent: message\rdata: a\rdata: b\r\r",
		": keep-alive\n:\n:no space\n\n",
		"data\n\nid\n\nretry: 5\ndata:  x\n\n",
		"foo: bar\n\n\n\ndata: b\n",
		"data: a: b\r\r\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		events := NewReader(bytes.NewReader(in))
		for {
			ev, err := events.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("next() = %v, want io.EOF or io.ErrUnexpectedEOF from a bytes.Reader", err)
				}
				return
			}
			enc := ev.AppendTo(nil)
			got, err := readEvents(bytes.NewReader(enc))
			if err != io.EOF {
				t.Fatalf("re-parse of %q ended with %v, want io.EOF", enc, err)
			}
			var want []Event
			if !cmp.Equal(*ev, Event{}, equateEmpty) {
				// An event with nothing kept (only unknown fields) encodes
				// as a blank line, which is no event at all.
				want = []Event{*ev}
			}
			if diff := cmp.Diff(want, got, equateEmpty); diff != "" {
				t.Fatalf("re-encoding %q changed the event (-want +got):\n%s", enc, diff)
			}
		}
	})
}

// TestSSEReaderLoneCRDeliveredAtOnce: an event whose blank line is a lone
// \r is complete; the reader must not wait for the next byte to find out
// whether a \n follows.
func TestSSEReaderLoneCRDeliveredAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() { _, _ = pw.Write([]byte("data: x\r\r")) }()
		got := make(chan *Event, 1)
		go func() {
			ev, _ := NewReader(pr).Next()
			got <- ev
		}()
		synctest.Wait()
		select {
		case ev := <-got:
			if string(ev.Data) != "x" {
				t.Errorf("event data %q, want x", ev.Data)
			}
		default:
			t.Fatal("event ended by a lone CR was held back until more bytes arrive")
		}
	})
}
