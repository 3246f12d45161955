package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/upstream"
)

// scripted is an upstream that speaks just enough Streamable HTTP to script
// exact bytes, and records what it receives.
type scripted struct {
	mu       sync.Mutex
	received []*http.Request
	// release lets the tools/call stream send its second event.
	release chan struct{}
}

func (u *scripted) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.received = append(u.received, r.Clone(context.Background()))
	u.mu.Unlock()
	flush := w.(http.Flusher).Flush
	switch {
	case r.Method == http.MethodPost && strings.Contains(string(body), `"initialize"`):
		w.Header().Set("Mcp-Session-Id", "upstream-session-1")
		w.Header().Set("Set-Cookie", "upstream=1")
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"scripted","version":"1"}}}`)
	case r.Method == http.MethodPost && strings.Contains(string(body), `"tools/call"`):
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Mcp-Session-Id", "upstream-session-1")
		// A priming event (id, retry, empty data), a comment, then two
		// messages with a pause the client must not have to wait through.
		fmt.Fprint(w, "id: prime-1\nretry: 1500\ndata: \n\n: keep-alive\n\n")
		fmt.Fprint(w, "id: ev-1\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\r\ndata: \"params\":{\"progress\":1}}\r\n\r\n")
		flush()
		<-u.release
		fmt.Fprint(w, "id: ev-2\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n")
	case r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "id: ev-8\ndata: {\"resumed-after\":%q}\n\n", r.Header.Get("Last-Event-Id"))
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}

func (u *scripted) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.received[len(u.received)-1]
}

func newGateway(t *testing.T, upstreamURL string) *httptest.Server {
	t.Helper()
	return newGatewayOpts(t, upstreamURL, gateway.Options{}, "")
}

// newGatewayOpts is newGateway with options and further keys of the
// upstream's configuration (", bridge: true").
func newGatewayOpts(t *testing.T, upstreamURL string, opts gateway.Options, upstreamKeys string) *httptest.Server {
	t.Helper()
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams: [{name: up, url: %q%s}]
`, upstreamURL, upstreamKeys), opts)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// startGatewayYAML serves a gateway built from a valid configuration; the
// error is gateway.New's.
func startGatewayYAML(t *testing.T, yaml string, opts gateway.Options) (*httptest.Server, error) {
	t.Helper()
	gw, err := newGatewayYAML(t, yaml, nil, &opts)
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return srv, nil
}

// newGatewayYAML builds a gateway from a valid configuration; with, when
// set, completes opts from the parsed configuration first. The error is
// with's or gateway.New's.
func newGatewayYAML(t *testing.T, yaml string, with func(*config.Config) error, opts *gateway.Options) (*gateway.Server, error) {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	if with != nil {
		if err := with(cfg); err != nil {
			return nil, err
		}
	}
	return gateway.New(cfg, pool, *opts)
}

func send(t *testing.T, method, url, session, body string, header http.Header) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if session != "" {
		req.Header.Set("Mcp-Session-Id", session)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// readEvent reads one SSE event block (up to a blank line) as raw text.
func readEvent(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading event after %q: %v", b.String(), err)
		}
		b.WriteString(line)
		if line == "\n" {
			return b.String()
		}
	}
}

func TestSSERelay(t *testing.T) {
	up := &scripted{release: make(chan struct{})}
	upSrv := httptest.NewServer(up)
	defer upSrv.Close()
	gw := newGateway(t, upSrv.URL)
	url := gw.URL + "/mcp/up"

	init := send(t, http.MethodPost, url, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`, nil)
	session := init.Header.Get("Mcp-Session-Id")
	if init.StatusCode != http.StatusOK || session == "" || session == "upstream-session-1" {
		t.Fatalf("initialize: %s, session %q", init.Status, session)
	}
	if init.Header.Get("Set-Cookie") != "" {
		t.Errorf("upstream Set-Cookie reached the client: %q", init.Header.Get("Set-Cookie"))
	}

	t.Run("events are relayed one by one with their fields", func(t *testing.T) {
		resp := send(t, http.MethodPost, url, session, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}`, http.Header{"Cookie": {"session=client-secret"}, "X-Forwarded-User": {"admin"}})
		if got := up.last().Header.Get("Mcp-Session-Id"); got != "upstream-session-1" {
			t.Errorf("upstream got session %q, want its own id", got)
		}
		for _, h := range []string{"Cookie", "X-Forwarded-User"} {
			if got := up.last().Header.Get(h); got != "" {
				t.Errorf("client header %s forwarded upstream: %q", h, got)
			}
		}
		if resp.Header.Get("Mcp-Session-Id") != "" {
			t.Errorf("upstream session id reached the client")
		}
		if resp.Header.Get("X-Accel-Buffering") != "no" {
			t.Errorf("X-Accel-Buffering = %q, want no", resp.Header.Get("X-Accel-Buffering"))
		}
		r := bufio.NewReader(resp.Body)
		got := []string{readEvent(t, r), readEvent(t, r), readEvent(t, r)}
		// The third event arrived while the upstream still holds the
		// fourth: nothing is buffered.
		close(up.release)
		got = append(got, readEvent(t, r))
		want := []string{
			"id: prime-1\nretry: 1500\ndata: \n\n",
			": keep-alive\n\n",
			"id: ev-1\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\ndata: \"params\":{\"progress\":1}}\n\n",
			"id: ev-2\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\n\n",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("relayed events (-want +got):\n%s", diff)
		}
		if rest, err := io.ReadAll(r); err != nil || len(rest) != 0 {
			t.Errorf("after the last event: %q, %v; want a clean end", rest, err)
		}
	})

	t.Run("GET resumes with Last-Event-ID", func(t *testing.T) {
		resp := send(t, http.MethodGet, url, session, "", http.Header{"Last-Event-Id": {"ev-7"}, "Accept": {"text/event-stream"}})
		body, _ := io.ReadAll(resp.Body)
		if want := "id: ev-8\ndata: {\"resumed-after\":\"ev-7\"}\n\n"; string(body) != want {
			t.Errorf("GET stream = %q, want %q", body, want)
		}
	})

	t.Run("GET without text/event-stream in Accept is 406", func(t *testing.T) {
		before := len(up.received)
		resp := send(t, http.MethodGet, url, session, "", http.Header{"Accept": {"application/json"}})
		if resp.StatusCode != http.StatusNotAcceptable || len(up.received) != before {
			t.Errorf("status %s, upstream requests %d -> %d", resp.Status, before, len(up.received))
		}
	})

	t.Run("PUT is 405 with Allow", func(t *testing.T) {
		resp := send(t, http.MethodPut, url, session, "{}", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
			t.Errorf("status %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
		}
	})
}

func TestUpstreamDown(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close() // connection refused from now on
	gw := newGateway(t, deadURL)
	resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", `{"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{}}`, nil)
	body, _ := io.ReadAll(resp.Body)
	want := `{"jsonrpc":"2.0","id":"init-1","error":{"code":-31010,"message":"upstream unavailable"}}`
	if resp.StatusCode != http.StatusBadGateway || string(body) != want {
		t.Errorf("got %s %s, want 502 %s", resp.Status, body, want)
	}
}

func TestUnknownRoute(t *testing.T) {
	gw := newGateway(t, "http://127.0.0.1:1/")
	resp := send(t, http.MethodPost, gw.URL+"/mcp/nope", "", `{}`, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %s, want 404", resp.Status)
	}
}
