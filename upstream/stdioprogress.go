package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Progress on the request's own stream. A request whose params._meta
// carries a progressToken, from a client that accepts an event stream, is
// answered with one: the process's notifications/progress with that token
// as they come, then the response, as a Streamable HTTP server sends the
// messages of a request on its POST's stream. Every other message of the
// process still goes to the session's GET stream (a stdio notification
// names no request; only progress says which one it is about). This is
// what a modern client on the bridge gets progress by, having no GET
// stream.

// stdioProgressBuffer is how many progress notifications wait for the
// request's stream; more go to the session's stream.
const stdioProgressBuffer = 64

// progressKey is the progress token of a request line (params._meta.
// progressToken) as a key that a notification's token, as the server
// re-encodes it, matches: "" when there is none.
func progressKey(raw json.RawMessage) string {
	if len(raw) == 0 {
		return ""
	}
	var token any
	if json.Unmarshal(raw, &token) != nil {
		return ""
	}
	switch t := token.(type) {
	case string:
		return "s:" + t
	case float64:
		return fmt.Sprintf("n:%v", t)
	}
	return ""
}

// requestProgressKey reads a request's progress token.
func requestProgressKey(body []byte) string {
	var m struct {
		Params struct {
			Meta struct {
				ProgressToken json.RawMessage `json:"progressToken"`
			} `json:"_meta"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	return progressKey(m.Params.Meta.ProgressToken)
}

// notificationProgressKey reads a notifications/progress's token.
func notificationProgressKey(line []byte) string {
	var m struct {
		Params struct {
			ProgressToken json.RawMessage `json:"progressToken"`
		} `json:"params"`
	}
	if json.Unmarshal(line, &m) != nil {
		return ""
	}
	return progressKey(m.Params.ProgressToken)
}

// acceptsEventStream reports whether the request's Accept lists
// text/event-stream.
func acceptsEventStream(h http.Header) bool {
	for _, v := range h.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			if media, _, _ := strings.Cut(strings.TrimSpace(part), ";"); strings.EqualFold(strings.TrimSpace(media), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// progressFor hands a notifications/progress line to the request stream
// waiting for its token; false when none is (or it is full).
func (p *process) progressFor(line []byte) bool {
	key := notificationProgressKey(line)
	if key == "" {
		return false
	}
	p.mu.Lock()
	ch := p.progress[key]
	p.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case ch <- line:
		return true
	default:
		return false
	}
}

// callStreaming is call for a request with progress token key: the answer
// is an event stream of the token's progress, then the response.
func (p *process) callStreaming(ctx context.Context, session, id, key string, body []byte) (*http.Response, error) {
	ch, prog := make(chan []byte, 1), make(chan []byte, stdioProgressBuffer)
	p.mu.Lock()
	if _, dup := p.pending[id]; dup {
		p.mu.Unlock()
		return jsonAnswer(http.StatusOK, session, rpcError(json.RawMessage(id), -32600, "a request with this id is in progress")), nil
	}
	if _, dup := p.progress[key]; dup {
		p.mu.Unlock()
		return p.call(ctx, session, id, body) // its progress goes to the session's stream
	}
	if p.progress == nil {
		p.progress = map[string]chan []byte{}
	}
	p.pending[id], p.progress[key] = ch, prog
	p.inflight++
	p.mu.Unlock()
	done := func() {
		p.mu.Lock()
		delete(p.pending, id)
		delete(p.progress, key)
		p.inflight--
		p.mu.Unlock()
		p.touch()
	}
	if err := p.write(ctx, body); err != nil {
		done()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer done()
		for {
			select {
			case line := <-prog:
				if _, err := fmt.Fprintf(pw, "event: message\ndata: %s\n\n", line); err != nil {
					return // the reader closed the stream
				}
			case resp := <-ch:
				// The process wrote its progress before its response:
				// whatever of it is still buffered goes first.
				for drained := false; !drained; {
					select {
					case line := <-prog:
						_, _ = fmt.Fprintf(pw, "event: message\ndata: %s\n\n", line)
					default:
						drained = true
					}
				}
				_, _ = fmt.Fprintf(pw, "event: message\ndata: %s\n\n", resp)
				pw.Close()
				return
			case <-p.exited:
				pw.CloseWithError(errProcessExited)
				return
			case <-ctx.Done():
				pw.CloseWithError(ctx.Err())
				return
			}
		}
	}()
	resp := jsonAnswer(http.StatusOK, session, nil)
	resp.Header.Set("Content-Type", "text/event-stream")
	resp.Body = pr
	return resp, nil
}
