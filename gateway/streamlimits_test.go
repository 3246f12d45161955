package gateway

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// relayRead is one Read of a relay, run in a goroutine.
type relayRead struct {
	data string
	err  error
}

func readAsync(relay *sseRelay) <-chan relayRead {
	out := make(chan relayRead, 1)
	go func() {
		buf := make([]byte, 1024)
		n, err := relay.Read(buf)
		out <- relayRead{string(buf[:n]), err}
	}()
	return out
}

// TestSSERelayLimits: a quiet stream gets keep-alives, a silent upstream
// ends the stream at the idle timeout, and any stream ends at its maximum
// duration, each at an event boundary and closing the upstream.
func TestSSERelayLimits(t *testing.T) {
	tests := []struct {
		name   string
		limits streamLimits
		every  time.Duration // the upstream sends an event this often; 0: once
		want   []string      // what successive Reads return, then io.EOF
	}{
		{
			name:   "idle timeout after the last event",
			limits: streamLimits{idle: 5 * time.Second},
			want:   []string{"data: e\n\n"},
		},
		{
			name:   "keep-alives while quiet, then the idle timeout",
			limits: streamLimits{idle: 5 * time.Second, keepalive: 2 * time.Second},
			want:   []string{"data: e\n\n", ": keepalive\n\n", ": keepalive\n\n"},
		},
		{
			name:   "maximum duration ends a busy stream",
			limits: streamLimits{idle: 5 * time.Second, max: 3500 * time.Millisecond},
			every:  time.Second,
			want:   []string{"data: e\n\n", "data: e\n\n", "data: e\n\n", "data: e\n\n"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				pr, pw := io.Pipe()
				relay := newSSERelay(pr, context.Background(), tt.limits)
				writer := make(chan struct{})
				go func() {
					defer close(writer)
					for {
						if _, err := pw.Write([]byte("data: e\n\n")); err != nil || tt.every == 0 {
							return
						}
						time.Sleep(tt.every)
					}
				}()
				for i, want := range tt.want {
					if got := <-readAsync(relay); got.data != want || got.err != nil {
						t.Fatalf("Read %d = %q, %v; want %q", i, got.data, got.err, want)
					}
				}
				if got := <-readAsync(relay); got.data != "" || got.err != io.EOF {
					t.Fatalf("last Read = %q, %v; want io.EOF (a clean end)", got.data, got.err)
				}
				if _, err := pw.Write([]byte("data: late\n\n")); err == nil {
					t.Error("the upstream stream is still open after the relay ended")
				}
				relay.Close()
				<-writer
			})
		})
	}
}

// endless is an upstream that never stops sending events and counts the
// bytes taken from it.
type endless struct {
	taken  atomic.Int64
	closed atomic.Bool
}

func (e *endless) Read(p []byte) (int, error) {
	if e.closed.Load() {
		return 0, io.ErrClosedPipe
	}
	const ev = "data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n\n"
	n := 0
	for n+len(ev) <= len(p) {
		n += copy(p[n:], ev)
	}
	e.taken.Add(int64(n))
	return n, nil
}

func (e *endless) Close() error {
	e.closed.Store(true)
	return nil
}

// TestSSERelayBackpressure: when the client does not read, the relay stops
// reading the upstream (it holds one buffer and one event, not the stream),
// and Close ends its parser goroutine (synctest.Test fails on a goroutine
// left blocked).
func TestSSERelayBackpressure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		up := &endless{}
		relay := newSSERelay(up, context.Background(), streamLimits{})
		synctest.Wait() // the parser is blocked handing over an event
		first := up.taken.Load()
		for range 100 {
			time.Sleep(time.Second)
			synctest.Wait()
		}
		if got := up.taken.Load(); got != first || got > 64<<10 {
			t.Errorf("an unread relay took %d bytes from the upstream (%d at first); want one buffer, no more", got, first)
		}
		relay.Close()
	})
}
