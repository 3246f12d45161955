package upstream_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// sdkSSEServer is a real 2024-11-05 peer: the Go SDK's SSEHandler serving
// a tool "echo" that reports progress before it answers.
func sdkSSEServer(t *testing.T) *httptest.Server {
	t.Helper()
	server := mcp.NewServer(&mcp.Implementation{Name: "sse-peer", Version: "1"}, nil)
	mcp.AddTool(server, &mcp.Tool{Name: "echo"}, func(ctx context.Context, req *mcp.CallToolRequest, in struct {
		Text string `json:"text"`
	}) (*mcp.CallToolResult, any, error) {
		if tok := req.Params.GetProgressToken(); tok != nil {
			_ = req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{ProgressToken: tok, Progress: 1, Message: "halfway"})
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "echo: " + in.Text}}}, nil, nil
	})
	srv := httptest.NewServer(mcp.NewSSEHandler(func(*http.Request) *mcp.Server { return server }, nil))
	t.Cleanup(srv.Close)
	return srv
}

func newSSE(t *testing.T, raw string) *upstream.SSE {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	tr := upstream.NewSSE(u, http.DefaultTransport)
	t.Cleanup(tr.Close)
	return tr
}

// sseSend sends body on session and returns the answer's status, session
// and body.
func sseSend(t *testing.T, tr upstream.Transport, session, body string) (int, string, string) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if session != "" {
		h.Set("Mcp-Session-Id", session)
	}
	resp, err := tr.Send(context.Background(), upstream.Message{Body: []byte(body), Header: h})
	if err != nil {
		t.Fatalf("send %s: %v", body, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Mcp-Session-Id"), string(raw)
}

const sseInitialize = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`

// TestSSETransportSDKPeer: against the Go SDK's HTTP+SSE server, a session
// is opened by initialize, requests are answered by id, a notification the
// server sends during a call reaches the Open stream, and End ends the
// session (404 after).
func TestSSETransportSDKPeer(t *testing.T) {
	tr := newSSE(t, sdkSSEServer(t).URL)
	status, session, body := sseSend(t, tr, "", sseInitialize)
	if status != http.StatusOK || session == "" || !strings.Contains(body, `"sse-peer"`) || !strings.Contains(body, `"id":1`) {
		t.Fatalf("initialize: %d session %q %s", status, session, body)
	}
	if status, _, body = sseSend(t, tr, session, `{"jsonrpc":"2.0","method":"notifications/initialized"}`); status != http.StatusAccepted {
		t.Fatalf("notifications/initialized: %d %s", status, body)
	}
	if status, _, body = sseSend(t, tr, session, `{"jsonrpc":"2.0","id":"l","method":"tools/list"}`); status != http.StatusOK || !strings.Contains(body, `"echo"`) || !strings.Contains(body, `"id":"l"`) {
		t.Errorf("tools/list: %d %s", status, body)
	}
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"progressToken":"p1"}}}`
	if status, _, body = sseSend(t, tr, session, call); status != http.StatusOK || !strings.Contains(body, "echo: hi") {
		t.Errorf("tools/call: %d %s", status, body)
	}

	stream, err := tr.Open(context.Background(), http.Header{"Mcp-Session-Id": {session}})
	if err != nil || stream.StatusCode != http.StatusOK || stream.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("open: %v %+v", err, stream)
	}
	ev, err := mcpwire.NewReader(stream.Body).Next()
	if err != nil || !strings.Contains(string(ev.Data), `"notifications/progress"`) || !strings.Contains(string(ev.Data), "halfway") {
		t.Errorf("the Open stream: %v %+v, want the progress notification", err, ev)
	}
	if second, _ := tr.Open(context.Background(), http.Header{"Mcp-Session-Id": {session}}); second.StatusCode != http.StatusConflict {
		t.Errorf("a second Open stream: %d, want 409", second.StatusCode)
	}
	_ = stream.Body.Close()

	if resp, err := tr.End(context.Background(), http.Header{"Mcp-Session-Id": {session}}); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("end: %v %+v", err, resp)
	}
	if status, _, _ = sseSend(t, tr, session, `{"jsonrpc":"2.0","id":3,"method":"ping"}`); status != http.StatusNotFound {
		t.Errorf("a request after End: %d, want 404", status)
	}
	if tr.Sessions() != 0 {
		t.Errorf("%d sessions after End, want 0", tr.Sessions())
	}
}

// fakeSSE is a 2024-11-05 server the test drives: the GET announces
// endpoint, then writes what the test puts on events until stop; a POST
// of initialize is answered on the stream, any other POST is accepted and
// left unanswered.
type fakeSSE struct {
	endpoint string // the endpoint event's data; "" is /messages
	events   chan string
	stop     chan struct{}
	once     sync.Once
	posted   chan string
	ended    chan struct{} // a GET stream ended by the client
}

func newFakeSSE(t *testing.T, endpoint string) (*fakeSSE, *httptest.Server) {
	t.Helper()
	f := &fakeSSE{endpoint: endpoint, events: make(chan string, 4), stop: make(chan struct{}), posted: make(chan string, 16), ended: make(chan struct{}, 4)}
	srv := httptest.NewServer(f)
	t.Cleanup(func() { f.close(); srv.Close() })
	return f, srv
}

func (f *fakeSSE) close() { f.once.Do(func() { close(f.stop) }) }

func (f *fakeSSE) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		f.posted <- string(body)
		if strings.Contains(string(body), `"initialize"`) {
			f.events <- "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-03-26\",\"capabilities\":{},\"serverInfo\":{\"name\":\"fake\",\"version\":\"1\"}}}\n\n"
		}
		w.WriteHeader(http.StatusAccepted)
		return
	}
	endpoint := f.endpoint
	if endpoint == "" {
		endpoint = "/messages?session=1"
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprintf(w, ": hello\n\nevent: endpoint\ndata: %s\n\n", endpoint)
	w.(http.Flusher).Flush()
	for {
		select {
		case ev := <-f.events:
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		case <-f.stop:
			return
		case <-r.Context().Done():
			select {
			case f.ended <- struct{}{}:
			default: // nobody counts these streams' ends
			}
			return
		}
	}
}

// TestSSETransportEndpointOrigin: an endpoint on another scheme, host or
// port than the SSE stream's is refused, and nothing is POSTed to it.
func TestSSETransportEndpointOrigin(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("a message reached the other origin")
	}))
	defer other.Close()
	tests := []struct {
		name, endpoint string
		refused        bool
	}{
		{"relative", "/messages?session=1", false},
		{"absolute, same origin", "", false}, // filled below
		{"another port", other.URL + "/messages", true},
		{"another host", "http://evil.example/messages", true},
		{"another scheme", "", true}, // filled below
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFakeSSE(t, tt.endpoint)
			switch tt.name {
			case "absolute, same origin":
				f.endpoint = srv.URL + "/messages"
			case "another scheme":
				f.endpoint = strings.Replace(srv.URL, "http://", "https://", 1) + "/messages"
			}
			tr := newSSE(t, srv.URL+"/sse")
			h := http.Header{}
			resp, err := tr.Send(context.Background(), upstream.Message{Body: []byte(sseInitialize), Header: h})
			if tt.refused {
				if !errors.Is(err, upstream.ErrEndpointOrigin) {
					t.Errorf("initialize: %v %+v, want ErrEndpointOrigin", err, resp)
				}
				if tr.Sessions() != 0 {
					t.Errorf("%d sessions after a refused endpoint", tr.Sessions())
				}
				return
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("initialize: %v %+v", err, resp)
			}
		})
	}
}

// openFake opens a session on a fakeSSE server.
func openFake(t *testing.T, tr *upstream.SSE) string {
	t.Helper()
	status, session, body := sseSend(t, tr, "", sseInitialize)
	if status != http.StatusOK || session == "" {
		t.Fatalf("initialize: %d %q %s", status, session, body)
	}
	return session
}

// TestSSETransportLostStream: a stream that ends, or carries an event
// over mcpwire.MaxEventBytes, ends the session: the request waiting on it
// and every later one are answered 404, so the client initializes again.
func TestSSETransportLostStream(t *testing.T) {
	for _, tt := range []struct {
		name string
		lose func(f *fakeSSE)
	}{
		{"stream closed", func(f *fakeSSE) { f.close() }},
		{"oversized event", func(f *fakeSSE) {
			f.events <- "data: " + strings.Repeat("x", mcpwire.MaxEventBytes) + "\n\n"
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFakeSSE(t, "")
			tr := newSSE(t, srv.URL+"/sse")
			session := openFake(t, tr)
			<-f.posted // the initialize
			answered := make(chan int, 1)
			go func() {
				status, _, _ := sseSend(t, tr, session, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow"}}`)
				answered <- status
			}()
			<-f.posted // the call reached the server; its response never comes
			tt.lose(f)
			if status := <-answered; status != http.StatusNotFound {
				t.Errorf("the request in flight: %d, want 404", status)
			}
			if status, _, _ := sseSend(t, tr, session, `{"jsonrpc":"2.0","id":10,"method":"ping"}`); status != http.StatusNotFound {
				t.Errorf("a request after the stream was lost: %d, want 404", status)
			}
		})
	}
}

// TestSSETransportBounds: sessions beyond MaxSessions are refused with
// ErrSessionsFull before anything is sent; an idle session is reaped; a
// sessionless request other than initialize is 400 (read by the era probe
// as legacy only).
func TestSSETransportBounds(t *testing.T) {
	f, srv := newFakeSSE(t, "")
	tr := newSSE(t, srv.URL+"/sse")
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tr.MaxSessions, tr.IdleTimeout, tr.Now = 1, time.Minute, func() time.Time { return now }

	session := openFake(t, tr)
	<-f.posted
	_, err := tr.Send(context.Background(), upstream.Message{Body: []byte(sseInitialize), Header: http.Header{}})
	if !errors.Is(err, upstream.ErrSessionsFull) {
		t.Errorf("an initialize beyond MaxSessions: %v, want ErrSessionsFull", err)
	}
	select {
	case body := <-f.posted:
		t.Errorf("the refused initialize reached the server: %s", body)
	default:
	}

	now = now.Add(30 * time.Second)
	tr.Reap()
	if tr.Sessions() != 1 {
		t.Fatalf("a session idle for 30s of 1m was reaped")
	}
	now = now.Add(2 * time.Minute)
	tr.Reap()
	if tr.Sessions() != 0 {
		t.Errorf("%d sessions after the idle timeout, want 0", tr.Sessions())
	}
	if status, _, _ := sseSend(t, tr, session, `{"jsonrpc":"2.0","id":2,"method":"ping"}`); status != http.StatusNotFound {
		t.Errorf("a request on a reaped session: %d, want 404", status)
	}

	// A session whose stream is open is in use; once it is closed, idle
	// counts from then.
	session = openFake(t, tr)
	<-f.posted
	stream, err := tr.Open(context.Background(), http.Header{"Mcp-Session-Id": {session}})
	if err != nil || stream.StatusCode != http.StatusOK {
		t.Fatalf("open: %v %+v", err, stream)
	}
	now = now.Add(2 * time.Minute)
	tr.Reap()
	if tr.Sessions() != 1 {
		t.Fatalf("a session with an open stream was reaped")
	}
	_ = stream.Body.Close()
	tr.Reap()
	if tr.Sessions() != 1 {
		t.Fatalf("a session was reaped the moment its stream closed")
	}
	now = now.Add(2 * time.Minute)
	tr.Reap()
	if tr.Sessions() != 0 {
		t.Errorf("%d sessions after the idle timeout since the stream closed, want 0", tr.Sessions())
	}

	if status, _, _ := sseSend(t, tr, "", `{"jsonrpc":"2.0","id":"d","method":"server/discover"}`); status != http.StatusBadRequest {
		t.Errorf("a sessionless server/discover: %d, want 400", status)
	}
}

// TestPoolCloseEndsSSESessions: at shutdown the pool ends every HTTP+SSE
// upstream session, so the server sees its stream close.
func TestPoolCloseEndsSSESessions(t *testing.T) {
	f, srv := newFakeSSE(t, "")
	pool, err := upstream.NewPool([]config.Upstream{{Name: "old", URL: srv.URL + "/sse", Transport: config.TransportSSE}})
	if err != nil {
		t.Fatal(err)
	}
	up := pool.Get("old")
	if up.SSE == nil {
		t.Fatal("an sse upstream has no SSE transport")
	}
	openFake(t, up.SSE)
	<-f.posted // the initialize
	if n := up.SSE.Sessions(); n != 1 {
		t.Fatalf("%d sessions open, want 1", n)
	}
	pool.Close()
	<-f.ended // the server saw the stream end (the test's deadline bounds the wait)
	if n := up.SSE.Sessions(); n != 0 {
		t.Errorf("%d sessions after Close, want 0", n)
	}
}
