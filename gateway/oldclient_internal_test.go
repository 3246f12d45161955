package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// TestOldClientsBound: the registry of HTTP+SSE sessions holds at most
// maxOldSessions; one more is refused (openOld answers 503 -31090) until
// one ends.
func TestOldClientsBound(t *testing.T) {
	c := newOldClients()
	for i := range maxOldSessions {
		if !c.add(&oldSession{key: string(rune(i + 1))}) {
			t.Fatalf("session %d of %d refused", i+1, maxOldSessions)
		}
	}
	if c.add(&oldSession{key: "one more"}) {
		t.Fatalf("session %d accepted, want the bound of %d", maxOldSessions+1, maxOldSessions)
	}
	c.remove(string(rune(1)))
	if !c.add(&oldSession{key: "one more"}) {
		t.Error("a session refused after one ended")
	}
}

// TestOldClientPendingBound: a client that stops reading its stream holds
// at most maxOldPendingBytes of answers in the gateway, whatever their
// number, JSON or events: an answer that does not fit is refused as it is
// written (its request then fails), and what the client reads is given
// back to the budget.
func TestOldClientPendingBound(t *testing.T) {
	const size = 1 << 20
	const answers = 64 // maxOldInflight: 64 MiB without the budget
	data := `{"jsonrpc":"2.0","id":1,"result":{"text":"` + strings.Repeat("x", size) + `"}}`
	for _, tt := range []struct {
		name, contentType, body string
	}{
		{name: "JSON", contentType: "application/json", body: data},
		{name: "events", contentType: "text/event-stream", body: "event: message\ndata: " + data + "\n\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			sess := &oldSession{outbox: make(chan []byte), ctx: ctx, end: cancel}
			sess.pending.max = maxOldPendingBytes
			var wg sync.WaitGroup
			waiting := 0
			for range answers {
				a := &oldAnswer{sess: sess, header: http.Header{"Content-Type": {tt.contentType}}}
				a.WriteHeader(http.StatusOK)
				if _, err := a.Write([]byte(tt.body)); err == nil {
					waiting++
				}
				// As relayOld: the handler is done, the answer waits for
				// the client's stream, which no one reads.
				wg.Go(a.finish)
			}
			if held := waiting * len(tt.body); held > maxOldPendingBytes || waiting == 0 {
				t.Fatalf("%d answers of %d bytes (%d) wait for a client that does not read, want between 1 and the budget of %d bytes", waiting, len(tt.body), held, maxOldPendingBytes)
			}
			// The client reads again: what it read is released.
			for range waiting {
				<-sess.outbox
			}
			wg.Wait()
			if n := sess.pending.used.Load(); n != 0 {
				t.Errorf("%d bytes still reserved after every answer was read", n)
			}
			a := &oldAnswer{sess: sess, header: http.Header{"Content-Type": {tt.contentType}}}
			if _, err := a.Write([]byte(tt.body)); err != nil {
				t.Errorf("an answer after the client read the others: %v", err)
			}
		})
	}
}

// oldFakeUpstream is a Streamable HTTP upstream for the internal HTTP+SSE
// tests: initialize opens session up-1 (JSON), a GET stream ends as soon
// as it opens, a tools/call is answered with a text of big bytes (JSON),
// anything else is accepted; every request is recorded as "METHOD
// session".
type oldFakeUpstream struct {
	big      int
	mu       sync.Mutex
	requests []string
}

func (u *oldFakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.requests = append(u.requests, r.Method+" "+r.Header.Get("Mcp-Session-Id"))
	u.mu.Unlock()
	switch {
	case r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
	case strings.Contains(string(body), `"initialize"`):
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Mcp-Session-Id", "up-1")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"u","version":"1"}}}`)
	case strings.Contains(string(body), `"tools/call"`):
		var call struct {
			ID json.RawMessage `json:"id"`
		}
		_ = json.Unmarshal(body, &call)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}]}}`, call.ID, strings.Repeat("x", u.big))
	default:
		w.WriteHeader(http.StatusAccepted)
	}
}

func (u *oldFakeUpstream) received(method string) (n int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.requests {
		if strings.HasPrefix(r, method+" ") {
			n++
		}
	}
	return n
}

// startOldGateway is a gateway in front of up, on clock now (nil:
// time.Now), for anonymous clients; with auth, that auth block instead.
func startOldGateway(t *testing.T, up http.Handler, now func() time.Time, auth string) (*Server, *httptest.Server) {
	t.Helper()
	upSrv := httptest.NewServer(up)
	t.Cleanup(func() { upSrv.CloseClientConnections(); upSrv.Close() })
	return startGatewayOn(t, fmt.Sprintf("upstreams: [{name: up, url: %q}]\n", upSrv.URL), now, auth)
}

// startGatewayOn serves a gateway of the upstreams (and routes) yaml
// gives, on the clock now, with auth (anonymous when empty).
func startGatewayOn(t *testing.T, yaml string, now func() time.Time, auth string) (*Server, *httptest.Server) {
	t.Helper()
	if auth == "" {
		auth = "{anonymous: true}"
	}
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {listen: "127.0.0.1:0", public_url: "https://gw.example"}
auth: %s
%s`, auth, yaml), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, pool, Options{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	gw := httptest.NewServer(s.Handler())
	t.Cleanup(func() { gw.CloseClientConnections(); gw.Close() })
	return s, gw
}

// oldOpened is a session openOldSession opened: the client's stream
// (events, after the endpoint event), the URL to POST to, the session.
type oldOpened struct {
	resp   *http.Response
	events *bufio.Reader
	url    string
	sess   *oldSession
}

// openOldSession opens GET /mcp/up/sse on gw with the authorization
// header (none when empty), once the session is registered.
func openOldSession(t *testing.T, s *Server, gw *httptest.Server, authorization string) oldOpened {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+"/mcp/up/sse", nil)
	req.Header.Set("Accept", "text/event-stream")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := gw.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /sse: %s", resp.Status)
	}
	// The endpoint event is written after the session is registered.
	o := oldOpened{resp: resp, events: bufio.NewReader(resp.Body)}
	ev, err := o.events.ReadString('\n')
	data, _ := o.events.ReadString('\n')
	path, ok := strings.CutPrefix(data, "data: ")
	if err != nil || ev != "event: endpoint\n" || !ok {
		t.Fatalf("first event %q %q %v, want the endpoint", ev, data, err)
	}
	o.url = gw.URL + strings.TrimSpace(path)
	s.old.mu.Lock()
	defer s.old.mu.Unlock()
	for _, sess := range s.old.open {
		o.sess = sess
		return o
	}
	t.Fatal("no HTTP+SSE session registered")
	return o
}

// waitForOld polls cond for up to 20 s.
func waitForOld(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOldClientLeavesMidInitialize: a client that closes its stream while
// its initialize is answered (the answer read from the upstream, not yet
// sent on) leaves no upstream session behind: endOld found none to end,
// so the initialize's answer ends the one it opened with a DELETE.
func TestOldClientLeavesMidInitialize(t *testing.T) {
	up := &oldFakeUpstream{}
	s, gw := startOldGateway(t, up, nil, "")
	o := openOldSession(t, s, gw, "")
	resp, sess := o.resp, o.sess
	body := []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	id, err := jsonrpc.MakeID(float64(1))
	if err != nil {
		t.Fatal(err)
	}
	a := &oldAnswer{sess: sess, header: http.Header{}, relayErrors: true, want: id, hasWant: true, keep: true}
	s.serveInner(a, sess.innerRequest(t.Context(), sess.opened, http.MethodPost, body), sess, sess.principal)
	if a.status != http.StatusOK || a.buf.Len() == 0 {
		t.Fatalf("initialize answer: %d %q", a.status, a.buf.String())
	}
	// The client leaves before the answer is sent on.
	resp.Body.Close()
	waitForOld(t, "the session to end", func() bool { return s.old.get(sess.key) == nil })
	if n := up.received(http.MethodDelete); n != 0 {
		t.Fatalf("%d DELETE before the upstream session was known", n)
	}
	s.relayedOld(sess, a)
	if n := up.received(http.MethodDelete); n != 1 {
		t.Errorf("the upstream received %d DELETE for the session the initialize opened after the client left, want 1", n)
	}
}

// TestOldClientInitializeRefusedBusy: an initialize refused because the
// session has its 64 requests in progress (503 -31091) may be sent again
// once they are answered; it is not "already initialized".
func TestOldClientInitializeRefusedBusy(t *testing.T) {
	s, gw := startOldGateway(t, &oldFakeUpstream{}, nil, "")
	o := openOldSession(t, s, gw, "")
	post := func(body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, o.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := gw.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(raw)
	}
	initialize := `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	for range maxOldInflight { // the session's requests in progress
		o.sess.inflight <- struct{}{}
	}
	if status, body := post(initialize); status != http.StatusServiceUnavailable || !strings.Contains(body, "-31091") {
		t.Fatalf("initialize with 64 requests in progress: %d %s, want 503 -31091", status, body)
	}
	for range maxOldInflight {
		<-o.sess.inflight
	}
	if status, body := post(initialize); status != http.StatusAccepted {
		t.Fatalf("initialize once the requests were answered: %d %s, want 202", status, body)
	}
	ev, _ := o.events.ReadString('\n')
	for ev == "\n" { // the end of the endpoint event
		ev, _ = o.events.ReadString('\n')
	}
	if ev != "event: message\n" {
		t.Errorf("after the initialize the stream sent %q, want its answer", ev)
	}
}

// TestOldClientTokenExpiry: the server's messages to an HTTP+SSE client
// stop when the OIDC token its stream was opened with expires: the GET
// stream is not opened again as that principal, and the client's stream
// ends (at the latest when the token expires).
func TestOldClientTokenExpiry(t *testing.T) {
	post := func(t *testing.T, gw *httptest.Server, o oldOpened, token, body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, o.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := gw.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST %s: %s %s", body, resp.Status, raw)
		}
	}
	// ended reports when the client's stream has ended.
	ended := func(o oldOpened) func() bool {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(io.Discard, o.events)
		}()
		return func() bool {
			select {
			case <-done:
				return true
			default:
				return false
			}
		}
	}
	t.Run("re-opening the GET stream", func(t *testing.T) {
		f := newOIDCFixture(t, fixtureOptions{})
		up := &oldFakeUpstream{}
		s, gw := startOldGateway(t, up, f.clock.now, "{anonymous: false}")
		s.auth.Tokens = f.v
		token := f.token(t, nil) // expires in an hour on the fixture's clock
		o := openOldSession(t, s, gw, "Bearer "+token)
		post(t, gw, o, token, `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
		for line := ""; line != "event: message\n"; { // the initialize's answer
			var err error
			if line, err = o.events.ReadString('\n'); err != nil {
				t.Fatalf("reading the initialize's answer: %v", err)
			}
		}
		post(t, gw, o, token, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)
		isEnded := ended(o)
		// The upstream ends each GET stream at once; the gateway opens it
		// again after a pause, each time as the stream's principal.
		waitForOld(t, "the GET stream opened", func() bool { return up.received(http.MethodGet) > 0 })
		if isEnded() {
			t.Fatal("the client's stream ended before the token expired")
		}
		f.clock.mu.Lock()
		f.clock.t = f.clock.t.Add(time.Hour + time.Minute)
		f.clock.mu.Unlock()
		waitForOld(t, "the client's stream to end once the token expired", isEnded)
	})
	t.Run("the client's stream", func(t *testing.T) {
		f := newOIDCFixture(t, fixtureOptions{})
		s, gw := startOldGateway(t, &oldFakeUpstream{}, f.clock.now, "{anonymous: false}")
		s.auth.Tokens = f.v
		// Valid on the fixture's clock, which stands still, for 2 s of
		// the stream's timer.
		token := f.token(t, map[string]any{"exp": f.clock.now().Add(2 * time.Second).Unix()})
		o := openOldSession(t, s, gw, "Bearer "+token)
		waitForOld(t, "the client's stream to end when the token expires", ended(o))
	})
}

// TestOldClientSlowReader: through the route's whole pipeline, a client
// that stops reading its stream and asks for 64 answers of 4 MiB (256 MiB)
// gets what fits the session's budget and -31091 for the rest, once it
// reads again; none is lost.
func TestOldClientSlowReader(t *testing.T) {
	up := &oldFakeUpstream{big: 4 << 20}
	s, gw := startOldGateway(t, up, nil, "")
	o := openOldSession(t, s, gw, "")
	post := func(body string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, o.url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := gw.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted && (resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(raw), "-31091")) {
			t.Fatalf("POST %.80s: %s %s, want 202 or 503 -31091", body, resp.Status, raw)
		}
		return resp.StatusCode
	}
	// next is the data of the stream's next message.
	next := func() string {
		t.Helper()
		for {
			line, err := o.events.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the stream: %v", err)
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				return data
			}
		}
	}
	post(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`)
	next()
	// The client stops reading.
	accepted := 0
	for id := 10; id < 10+maxOldInflight; id++ {
		if post(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"big","arguments":{}}}`, id)) == http.StatusAccepted {
			accepted++
		}
	}
	// Every call accepted reached the upstream and its answer was read
	// (held for the client, or refused).
	waitForOld(t, "every call answered by the upstream and read", func() bool {
		return up.received(http.MethodPost) == 1+accepted && s.admission.requests.Load() == 0
	})
	if used := o.sess.pending.used.Load(); used > maxOldPendingBytes {
		t.Fatalf("%d bytes held for the client, over the budget of %d", used, maxOldPendingBytes)
	}
	// The client reads again: an answer for every call, whole or -31091.
	whole, busy := 0, 0
	for range accepted {
		switch data := next(); {
		case strings.Contains(data, `"result"`) && len(data) > up.big:
			whole++
		case strings.Contains(data, `"code":-31091`):
			busy++
		default:
			t.Fatalf("answer of %d bytes %.200s ... %s, want the result or -31091", len(data), data, data[max(0, len(data)-200):])
		}
	}
	t.Logf("%d calls accepted: %d answered whole, %d refused -31091", accepted, whole, busy)
	if whole == 0 || busy == 0 {
		t.Errorf("%d answered whole and %d refused -31091 of %d answers of 4 MiB to a client that did not read, want some of each (a budget of %d)", whole, busy, accepted, maxOldPendingBytes)
	}
}

// A session's budget also takes from the replica's: what one session may
// hold is bounded by what all of them hold together.
func TestOldBudgetParent(t *testing.T) {
	total := &oldBudget{max: 100}
	a, b := &oldBudget{max: 80, parent: total}, &oldBudget{max: 80, parent: total}
	if !a.reserve(60) || !b.reserve(40) {
		t.Fatal("reservations within both budgets refused")
	}
	if b.reserve(1) || !b.full() {
		t.Error("the replica's budget is spent: another byte was taken, or b is not full")
	}
	if b.used.Load() != 40 || total.used.Load() != 100 {
		t.Errorf("a refused reservation took bytes: session %d, replica %d", b.used.Load(), total.used.Load())
	}
	a.release(60)
	if !b.reserve(30) || total.used.Load() != 70 {
		t.Errorf("after a's release: replica %d, want 70 and b's 30 taken", total.used.Load())
	}
}

// A Streamable HTTP GET stream opened with an OIDC token ends when the
// token expires (the client resumes with a fresh one), not at
// max_duration: what arrives on it is the principal's.
func TestStreamEndsAtTokenExpiry(t *testing.T) {
	held := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet: // a quiet stream, open until the gateway leaves
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case http.MethodPost:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Mcp-Session-Id", "upstream-session")
			if strings.Contains(r.Header.Get("Mcp-Method")+readAll(r), `"initialize"`) {
				fmt.Fprint(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-11-25","capabilities":{},"serverInfo":{"name":"held","version":"1"}}}`)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	a, b := httptest.NewServer(held), httptest.NewServer(held)
	for _, srv := range []*httptest.Server{a, b} {
		t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	}
	for _, tt := range []struct{ name, path string }{
		{"single route", "/mcp/a"},
		{"federated route", "/mcp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newOIDCFixture(t, fixtureOptions{})
			s, gw := startGatewayOn(t, fmt.Sprintf(`upstreams: [{name: a, url: %q}, {name: b, url: %q}]
routes: [{path: /mcp, upstreams: [a, b]}]
`, a.URL, b.URL), f.clock.now, "{anonymous: false}")
			s.auth.Tokens = f.v
			token := f.token(t, nil) // expires in an hour on the fixture's clock
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, gw.URL+tt.path, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := gw.Client().Do(req)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("initialize: %v %v", resp, err)
			}
			resp.Body.Close()
			session := resp.Header.Get("Mcp-Session-Id")
			// A second before the token expires, on the gateway's clock.
			f.clock.mu.Lock()
			f.clock.t = f.clock.t.Add(time.Hour - time.Second)
			f.clock.mu.Unlock()
			get, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+tt.path, nil)
			get.Header.Set("Accept", "text/event-stream")
			get.Header.Set("Authorization", "Bearer "+token)
			get.Header.Set("Mcp-Session-Id", session)
			get.Header.Set("Mcp-Protocol-Version", "2025-11-25")
			stream, err := gw.Client().Do(get)
			if err != nil || stream.StatusCode != http.StatusOK {
				t.Fatalf("GET stream: %v %v", stream, err)
			}
			ended := make(chan struct{})
			go func() {
				_, _ = io.Copy(io.Discard, stream.Body)
				close(ended)
			}()
			// The stream's default max_duration is an hour: only the
			// token's expiry can end it this soon.
			select {
			case <-ended:
			case <-time.After(time.Minute):
				t.Fatal("the GET stream outlived the token it was opened with")
			}
		})
	}
}

// readAll is r's body, read whole (a test upstream's).
func readAll(r *http.Request) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
