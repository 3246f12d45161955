package gateway

import (
	"context"
	"errors"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestKeepAlive: an idle listen stream gets a comment per idle interval,
// only between events, and closing it closes the upstream stream.
func TestKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pr, pw := io.Pipe()
		k := newKeepAlive(newSSERelay(pr, context.Background()), 10*time.Second)
		got := make(chan string, 16)
		go func() {
			buf := make([]byte, 1024)
			for {
				n, err := k.Read(buf)
				if err != nil {
					close(got)
					return
				}
				got <- string(buf[:n])
			}
		}()
		drain := func() []string {
			synctest.Wait()
			var out []string
			for {
				select {
				case s := <-got:
					out = append(out, s)
				default:
					return out
				}
			}
		}
		go func() { _, _ = io.WriteString(pw, "data: {\"a\":1}\n\n") }()
		if diff := cmp.Diff([]string{"data: {\"a\":1}\n\n"}, drain()); diff != "" {
			t.Errorf("first event (-want +got):\n%s", diff)
		}
		time.Sleep(25 * time.Second) // ticks at 10s (the event was recent) and 20s (idle)
		if diff := cmp.Diff([]string{": keep-alive\n\n"}, drain()); diff != "" {
			t.Errorf("after 25s idle (-want +got):\n%s", diff)
		}
		go func() { _, _ = io.WriteString(pw, "id: 2\ndata: {\"b\":2}\n\n") }()
		if diff := cmp.Diff([]string{"id: 2\ndata: {\"b\":2}\n\n"}, drain()); diff != "" {
			t.Errorf("second event (-want +got):\n%s", diff)
		}
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := pw.Write([]byte("data: late\n\n")); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("upstream write after Close: %v, want io.ErrClosedPipe (the upstream stream closed)", err)
		}
		synctest.Wait()
	})
}
