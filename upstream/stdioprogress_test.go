package upstream

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestStdioProgressOnTheRequestStream: a request with a progress token,
// from a client that accepts an event stream, is answered with one: its
// progress, then its response; without either it is answered JSON and
// its progress goes to the session's stream.
func TestStdioProgressOnTheRequestStream(t *testing.T) {
	s := newTestStdio(t, 2, nil)
	session, _ := initialize(t, s)
	events := func(r io.Reader) []string {
		var out []string
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				out = append(out, data)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name, token, accept string
		want                []string
	}{
		{"string token", `"p-1"`, "application/json, text/event-stream", []string{
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"progressToken":"p-1"}}`,
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":2,"progressToken":"p-1"}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"_meta":{"progressToken":"p-1"}}}`,
		}},
		{"number token", `7`, "text/event-stream;q=0.9, application/json", []string{
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"progressToken":7}}`,
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":2,"progressToken":7}}`,
			`{"id":2,"jsonrpc":"2.0","result":{"_meta":{"progressToken":7}}}`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.Send(context.Background(), Message{
				Body:   []byte(`{"jsonrpc":"2.0","id":2,"method":"progress","params":{"_meta":{"progressToken":` + tc.token + `}}}`),
				Header: http.Header{"Mcp-Session-Id": {session}, "Accept": {tc.accept}},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
				t.Errorf("Content-Type %q, want text/event-stream", ct)
			}
			if diff := cmp.Diff(tc.want, events(resp.Body)); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("json only: progress on the session's stream", func(t *testing.T) {
		stream, err := s.Open(context.Background(), http.Header{"Mcp-Session-Id": {session}})
		if err != nil || stream.StatusCode != http.StatusOK {
			t.Fatalf("Open: %v %v", err, stream)
		}
		defer stream.Body.Close()
		resp, err := s.Send(context.Background(), Message{
			Body:   []byte(`{"jsonrpc":"2.0","id":3,"method":"progress","params":{"_meta":{"progressToken":"p-2"}}}`),
			Header: http.Header{"Mcp-Session-Id": {session}, "Accept": {"application/json"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" || !strings.Contains(string(body), `"id":3`) {
			t.Errorf("answer %q %s, want the JSON response", ct, body)
		}
		r := bufio.NewReader(stream.Body)
		var got []string
		for len(got) < 2 {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("session stream: %v after %q", err, got)
			}
			if data, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "data: "); ok {
				got = append(got, data)
			}
		}
		want := []string{
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1,"progressToken":"p-2"}}`,
			`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":2,"progressToken":"p-2"}}`,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("session stream (-want +got):\n%s", diff)
		}
	})
}

// lockedBuffer is a log destination safe for the process's goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStdioDroppedMessagesLoggedSparingly: a session whose stream is never
// opened (a bridged one) drops what the process sends on its own once
// the buffer is full; the drops are logged the first time and every
// 100th, not once each.
func TestStdioDroppedMessagesLoggedSparingly(t *testing.T) {
	s := newTestStdio(t, 1, nil)
	logs := &lockedBuffer{}
	s.Log = slog.New(slog.NewJSONHandler(logs, nil))
	session, _ := initialize(t, s)
	const sent = stdioStreamBuffer + 150 // 150 dropped: the 1st and the 101st logged
	for i := range sent {
		if resp, _, err := send(t, s, session, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"notify"}`, i+10)); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("notify %d: %v %v", i, resp, err)
		}
	}
	// Every notification was read before its answer: all drops are logged by now.
	var dropped []float64
	for _, line := range strings.Split(logs.String(), "\n") {
		var rec struct {
			Msg     string  `json:"msg"`
			Dropped float64 `json:"dropped"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && strings.HasPrefix(rec.Msg, "stdio upstream message dropped") {
			dropped = append(dropped, rec.Dropped)
		}
	}
	if diff := cmp.Diff([]float64{1, 101}, dropped); diff != "" {
		t.Errorf("drop records (-want +got):\n%s", diff)
	}
}
