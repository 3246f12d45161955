package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// equateEmpty treats a nil Data or Comments like an empty one: HasData
// carries whether a data field was seen.
var equateEmpty = cmpopts.EquateEmpty()

// readEvents parses r to the end and returns the events and the final error.
func readEvents(r io.Reader) ([]sseEvent, error) {
	events := newSSEReader(r)
	var out []sseEvent
	for {
		ev, err := events.next()
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
		want    []sseEvent
		wantErr error
	}{
		{name: "empty stream", in: "", wantErr: io.EOF},
		{name: "only blank lines", in: "\n\r\n\r\n", wantErr: io.EOF},
		{
			name: "one event",
			in:   "data: hello\n\n",
			want: []sseEvent{{Data: []byte("hello"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "multi-line data joined with LF",
			in:   "data: {\"a\":\ndata: 1}\ndata: \n\n",
			want: []sseEvent{{Data: []byte("{\"a\":\n1}\n"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "CRLF line endings",
			in:   "id: 7\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n",
			want: []sseEvent{{ID: "7", HasID: true, Event: "message", Data: []byte("a\nb"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "lone CR line endings",
			in:   "id: 7\revent: message\rdata: a\rdata: b\r\r",
			want: []sseEvent{{ID: "7", HasID: true, Event: "message", Data: []byte("a\nb"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "mixed line endings across events",
			in:   "data: 1\r\rdata: 2\n\ndata: 3\r\n\r\n",
			want: []sseEvent{
				{Data: []byte("1"), HasData: true},
				{Data: []byte("2"), HasData: true},
				{Data: []byte("3"), HasData: true},
			},
			wantErr: io.EOF,
		},
		{
			name: "CR CR LF is two line ends, not one",
			in:   "data: x\r\r\ndata: y\n\n",
			want: []sseEvent{{Data: []byte("x"), HasData: true}, {Data: []byte("y"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "comments",
			in:   ": keep-alive\n:\n:no space\n:  two spaces\n\n",
			want: []sseEvent{{Comments: []string{"keep-alive", "", "no space", " two spaces"}}}, wantErr: io.EOF,
		},
		{
			name: "comment-only event between events",
			in:   "data: a\n\n: ping\n\ndata: b\n\n",
			want: []sseEvent{
				{Data: []byte("a"), HasData: true},
				{Comments: []string{"ping"}},
				{Data: []byte("b"), HasData: true},
			},
			wantErr: io.EOF,
		},
		{
			name: "id, event and retry",
			in:   "id: ev-1\nevent: message\nretry: 1500\ndata: {}\n\n",
			want: []sseEvent{{ID: "ev-1", HasID: true, Event: "message", Retry: "1500", Data: []byte("{}"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "priming event: id and empty data",
			in:   "id: prime-1\nretry: 100\ndata:\n\n",
			want: []sseEvent{{ID: "prime-1", HasID: true, Retry: "100", Data: []byte{}, HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "data without colon is an empty value",
			in:   "data\n\n",
			want: []sseEvent{{HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "data without colon after data adds an empty line",
			in:   "data: a\ndata\n\n",
			want: []sseEvent{{Data: []byte("a\n"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "id without colon is an empty id",
			in:   "id\ndata: x\n\n",
			want: []sseEvent{{HasID: true, Data: []byte("x"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "one leading space stripped, only once",
			in:   "data:  two\ndata:none\ndata:   three\n\n",
			want: []sseEvent{{Data: []byte(" two\nnone\n  three"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "leading tab is kept",
			in:   "data:\tx\n\n",
			want: []sseEvent{{Data: []byte("\tx"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "colons after the first belong to the value",
			in:   "data: a: b:c\n\n",
			want: []sseEvent{{Data: []byte("a: b:c"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "unknown and case-variant fields ignored",
			in:   "foo: bar\nData: no\nDATA: no\ndata : no\n data: no\ndata: yes\n\n",
			want: []sseEvent{{Data: []byte("yes"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "only unknown fields is an empty event",
			in:   "foo: bar\n\n",
			want: []sseEvent{{}}, wantErr: io.EOF,
		},
		{
			name: "later id and event replace earlier ones",
			in:   "id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n",
			want: []sseEvent{{ID: "2", HasID: true, Event: "b", Data: []byte("x"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "stray blank lines between events",
			in:   "\n\n\ndata: a\n\n\n\r\n\rdata: b\n\n\n",
			want: []sseEvent{{Data: []byte("a"), HasData: true}, {Data: []byte("b"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "non-ASCII and NUL kept",
			in:   "id: \x00é\ndata: ✓\n\n",
			want: []sseEvent{{ID: "\x00é", HasID: true, Data: []byte("✓"), HasData: true}}, wantErr: io.EOF,
		},
		{
			name: "EOF after a complete line inside an event",
			in:   "data: a\n\ndata: b\n",
			want: []sseEvent{{Data: []byte("a"), HasData: true}}, wantErr: io.ErrUnexpectedEOF,
		},
		{
			name: "EOF inside a line",
			in:   "data: a\n\ndata: b",
			want: []sseEvent{{Data: []byte("a"), HasData: true}}, wantErr: io.ErrUnexpectedEOF,
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
		wantData int // length of the one event's data; -1: errSSEEventTooLarge
	}{
		{
			name:     "one line of exactly maxSSEEventBytes",
			in:       func() io.Reader { return bigLine(maxSSEEventBytes-prefix, "\n\n") },
			wantData: maxSSEEventBytes - prefix,
		},
		{
			name:     "one line of maxSSEEventBytes+1",
			in:       func() io.Reader { return bigLine(maxSSEEventBytes-prefix+1, "\n\n") },
			wantData: -1,
		},
		{
			name: "several lines together over the limit",
			in: func() io.Reader {
				return io.MultiReader(bigLine(maxSSEEventBytes/2, "\n"), bigLine(maxSSEEventBytes/2, "\n\n"))
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
			ev, err := newSSEReader(tt.in()).next()
			if tt.wantData < 0 {
				if !errors.Is(err, errSSEEventTooLarge) {
					t.Fatalf("next() = %v, want errSSEEventTooLarge", err)
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
		ev   sseEvent
		want string // the encoding
	}{
		{
			name: "data",
			ev:   sseEvent{Data: []byte(`{"jsonrpc":"2.0"}`), HasData: true},
			want: "data: {\"jsonrpc\":\"2.0\"}\n\n",
		},
		{
			name: "every field",
			ev:   sseEvent{ID: "ev-1", HasID: true, Event: "message", Retry: "1500", Comments: []string{"a", ""}, Data: []byte("x"), HasData: true},
			want: ": a\n: \nid: ev-1\nevent: message\nretry: 1500\ndata: x\n\n",
		},
		{
			name: "multi-line data",
			ev:   sseEvent{Data: []byte("a\n\nb\n"), HasData: true},
			want: "data: a\ndata: \ndata: b\ndata: \n\n",
		},
		{
			name: "empty data and empty id",
			ev:   sseEvent{HasID: true, HasData: true},
			want: "id: \ndata: \n\n",
		},
		{
			name: "values with leading spaces",
			ev:   sseEvent{ID: " i", HasID: true, Event: "  e", Comments: []string{" c"}, Data: []byte(" d\n  d"), HasData: true},
			want: ":  c\nid:  i\nevent:   e\ndata:  d\ndata:   d\n\n",
		},
		{
			name: "comment only",
			ev:   sseEvent{Comments: []string{"keep-alive"}},
			want: ": keep-alive\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			enc := tt.ev.appendTo(nil)
			if string(enc) != tt.want {
				t.Errorf("appendTo = %q, want %q", enc, tt.want)
			}
			got, err := readEvents(bytes.NewReader(enc))
			if err != io.EOF {
				t.Fatalf("re-parse ended with %v, want io.EOF", err)
			}
			if diff := cmp.Diff([]sseEvent{tt.ev}, got, equateEmpty); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// closeRecorder is an upstream body that counts Close calls.
type closeRecorder struct {
	io.Reader
	closes int
}

func (c *closeRecorder) Close() error {
	c.closes++
	return nil
}

func TestSSERelayYieldsOneEventPerRead(t *testing.T) {
	upstream := &closeRecorder{Reader: strings.NewReader(
		": keep-alive\r\n\r\nid: 1\r\nevent: message\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n\n\nfoo: ignored\nretry: 10\rdata: last\r\r")}
	relay := newSSERelay(upstream, context.Background(), streamLimits{})
	var got []string
	buf := make([]byte, 64<<10)
	for {
		n, err := relay.Read(buf)
		if n > 0 {
			got = append(got, string(buf[:n]))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		if n == 0 {
			t.Fatal("Read returned 0, nil")
		}
	}
	want := []string{
		": keep-alive\n\n",
		"id: 1\nevent: message\ndata: {\"a\":\ndata: 1}\n\n",
		"retry: 10\ndata: last\n\n",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Reads mismatch (-want +got):\n%s", diff)
	}
	if err := relay.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if upstream.closes != 1 {
		t.Errorf("upstream closed %d times, want 1", upstream.closes)
	}
}

func TestSSERelaySmallReads(t *testing.T) {
	in := "id: 1\ndata: " + strings.Repeat("x", 1000) + "\n\ndata: 2\n\n"
	relay := newSSERelay(io.NopCloser(strings.NewReader(in)), context.Background(), streamLimits{})
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := relay.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
	}
	if string(got) != in {
		t.Errorf("relayed %q, want %q", got, in)
	}
}

func TestSSERelayUpstreamErrors(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
	}{
		{name: "EOF inside an event", in: "data: a\n\ndata: b\n", wantErr: io.ErrUnexpectedEOF},
		{name: "EOF inside a line", in: "data: a\n\ndata: b", wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			relay := newSSERelay(io.NopCloser(strings.NewReader(tt.in)), context.Background(), streamLimits{})
			got, err := io.ReadAll(relay)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ReadAll = %q, %v; want %v", got, err, tt.wantErr)
			}
			if string(got) != "data: a\n\n" {
				t.Errorf("relayed %q, want only the complete event", got)
			}
		})
	}
}

func TestSSERelayEventTooLarge(t *testing.T) {
	upstream := io.NopCloser(io.MultiReader(strings.NewReader("data: ok\n\n"), bigLine(maxSSEEventBytes, "\n\n")))
	relay := newSSERelay(upstream, context.Background(), streamLimits{})
	got, err := io.ReadAll(relay)
	if !errors.Is(err, errSSEEventTooLarge) {
		t.Errorf("ReadAll error = %v, want errSSEEventTooLarge", err)
	}
	if string(got) != "data: ok\n\n" {
		t.Errorf("relayed %q, want only the event before the oversized one", got)
	}
}

func TestSSERelayStop(t *testing.T) {
	tests := []struct {
		name    string
		pending string // written, and read by the relay, before stop
	}{
		{name: "blocked between events"},
		{name: "blocked inside an event", pending: "id: 2\ndata: half"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pr, pw := io.Pipe()
				stop, cancel := context.WithCancel(context.Background())
				relay := newSSERelay(pr, stop, streamLimits{})
				go func() {
					_, _ = pw.Write([]byte("data: one\n\n" + tt.pending))
				}()
				buf := make([]byte, 1024)
				n, err := relay.Read(buf)
				if err != nil || string(buf[:n]) != "data: one\n\n" {
					t.Fatalf("first Read = %q, %v; want the first event", buf[:n], err)
				}
				type result struct {
					n   int
					err error
				}
				done := make(chan result, 1)
				go func() {
					n, err := relay.Read(buf)
					done <- result{n, err}
				}()
				synctest.Wait() // the Read is blocked on the upstream
				select {
				case r := <-done:
					t.Fatalf("Read returned %d, %v with nothing to read", r.n, r.err)
				default:
				}
				cancel()
				r := <-done
				if r.n != 0 || r.err != io.EOF {
					t.Errorf("Read after stop = %d, %v; want 0, io.EOF (a clean end)", r.n, r.err)
				}
				if n, err := relay.Read(buf); n != 0 || err != io.EOF {
					t.Errorf("next Read = %d, %v; want 0, io.EOF", n, err)
				}
				// Stop closed the upstream: its writer sees a closed pipe.
				if _, err := pw.Write([]byte("data: late\n\n")); !errors.Is(err, io.ErrClosedPipe) {
					t.Errorf("upstream write after stop = %v, want io.ErrClosedPipe", err)
				}
				_ = relay.Close()
			})
		})
	}
}

func TestSSERelayStopFinishesThePendingEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		stop, cancel := context.WithCancel(context.Background())
		relay := newSSERelay(io.NopCloser(strings.NewReader("data: first\n\ndata: second\n\n")), stop, streamLimits{})
		buf := make([]byte, 1)
		if n, err := relay.Read(buf); n != 1 || err != nil {
			t.Fatalf("Read = %d, %v", n, err)
		}
		got := bytes.Clone(buf[:1])
		cancel()
		synctest.Wait() // the stop callback has run
		for {
			n, err := relay.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
		}
		if string(got) != "data: first\n\n" {
			t.Errorf("relayed %q, want the whole first event and nothing after", got)
		}
	})
}

func TestSSERelayClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		upstream := &closeRecorder{Reader: strings.NewReader("data: x\n\n")}
		stop, cancel := context.WithCancel(context.Background())
		relay := newSSERelay(upstream, stop, streamLimits{})
		if err := relay.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if upstream.closes != 1 {
			t.Fatalf("Close closed the upstream %d times, want 1", upstream.closes)
		}
		// Close detached the stop callback: a later shutdown does not
		// touch the finished stream.
		cancel()
		synctest.Wait()
		if upstream.closes != 1 {
			t.Errorf("stop after Close closed the upstream again (%d closes)", upstream.closes)
		}
	})
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
		events := newSSEReader(bytes.NewReader(in))
		for {
			ev, err := events.next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("next() = %v, want io.EOF or io.ErrUnexpectedEOF from a bytes.Reader", err)
				}
				return
			}
			enc := ev.appendTo(nil)
			got, err := readEvents(bytes.NewReader(enc))
			if err != io.EOF {
				t.Fatalf("re-parse of %q ended with %v, want io.EOF", enc, err)
			}
			var want []sseEvent
			if !cmp.Equal(*ev, sseEvent{}, equateEmpty) {
				// An event with nothing kept (only unknown fields) encodes
				// as a blank line, which is no event at all.
				want = []sseEvent{*ev}
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
		got := make(chan *sseEvent, 1)
		go func() {
			ev, _ := newSSEReader(pr).next()
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

// TestSSERelayEndsWithPendingErrors: a stream the relay ends abnormally
// (an event over the limit, a broken upstream, a stall) ends cleanly with
// what onEnd gives for the cause (the gateway: errors for the pending
// requests), never cut off or empty (issue 14, findings 4 and partial).
func TestSSERelayEndsWithPendingErrors(t *testing.T) {
	const tail = "data: pending error\n\n"
	tests := []struct {
		name     string
		upstream func() io.ReadCloser
		limits   streamLimits
		cause    error
	}{
		{name: "event over the limit", upstream: func() io.ReadCloser {
			return io.NopCloser(io.MultiReader(strings.NewReader("data: ok\n\n"), bigLine(maxSSEEventBytes, "\n\n")))
		}, cause: errSSEEventTooLarge},
		{name: "broken inside an event", upstream: func() io.ReadCloser {
			return io.NopCloser(strings.NewReader("data: ok\n\ndata: b"))
		}, cause: io.ErrUnexpectedEOF},
		{name: "stalled", upstream: func() io.ReadCloser {
			r, w := io.Pipe()
			go func() { _, _ = w.Write([]byte("data: ok\n\n")) }() // then nothing, until closed
			return r
		}, limits: streamLimits{idle: 30 * time.Second}, cause: errStreamStalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				relay := newSSERelay(tt.upstream(), context.Background(), tt.limits)
				defer relay.Close()
				var causes []error
				relay.onEnd = func(cause error) []byte { causes = append(causes, cause); return []byte(tail) }
				got, err := io.ReadAll(relay)
				if err != nil || string(got) != "data: ok\n\n"+tail {
					t.Errorf("ReadAll = %q, %v; want the complete event, then the pending errors, then a clean end", got, err)
				}
				if len(causes) != 1 || !errors.Is(causes[0], tt.cause) {
					t.Errorf("onEnd causes %v, want once %v", causes, tt.cause)
				}
			})
		})
	}
}
