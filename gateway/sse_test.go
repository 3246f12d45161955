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

	"github.com/ctxgate/ctxgate/mcpwire"
)

// repeatReader yields the same byte forever.
type repeatReader byte

func (b repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

// bigLine is "data: " followed by filler bytes: a line of 6+filler bytes,
// built without holding it in memory.
func bigLine(filler int, rest string) io.Reader {
	return io.MultiReader(strings.NewReader("data: "), io.LimitReader(repeatReader('a'), int64(filler)), strings.NewReader(rest))
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
	upstream := io.NopCloser(io.MultiReader(strings.NewReader("data: ok\n\n"), bigLine(mcpwire.MaxEventBytes, "\n\n")))
	relay := newSSERelay(upstream, context.Background(), streamLimits{})
	got, err := io.ReadAll(relay)
	if !errors.Is(err, mcpwire.ErrEventTooLarge) {
		t.Errorf("ReadAll error = %v, want mcpwire.ErrEventTooLarge", err)
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
				// Stop closed the upstream: its writer sees a closed pipe
				// (once stop's goroutine is done: the Read can end first,
				// when it has closed the relay's quit but not yet the pipe).
				synctest.Wait()
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
			return io.NopCloser(io.MultiReader(strings.NewReader("data: ok\n\n"), bigLine(mcpwire.MaxEventBytes, "\n\n")))
		}, cause: mcpwire.ErrEventTooLarge},
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
