package gateway_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/upstream"
)

// startOverloadGateway is startResGateway with server settings (the
// admission limits), upstreams[0].max_concurrent, and the per-principal
// share off, so one principal can fill what is tested.
func startOverloadGateway(t *testing.T, upstreamURL, server string, maxConcurrent int) *resGateway {
	t.Helper()
	cfg, err := config.Parse(fmt.Appendf(nil, `
server: {%s}
auth: {api_keys: [{name: alice, sha256: %q}]}
policy: {dir: unused-the-test-passes-an-engine}
upstreams:
  - {name: up, url: %q, max_concurrent: %d, max_concurrent_per_principal: %[4]d}
`, server, hexSHA256(aliceKey), upstreamURL, maxConcurrent), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		t.Fatal(problems)
	}
	g := &resGateway{metrics: gateway.NewMetrics(), decisions: filepath.Join(t.TempDir(), "decisions.log")}
	decisions, err := os.Create(g.decisions)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { decisions.Close() })
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.CloseIdleConnections)
	gw, err := gateway.New(cfg, pool, gateway.Options{Policy: newObsEngine(t, slog.New(slog.DiscardHandler), decisions), Metrics: g.metrics})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	g.URL = srv.URL + "/mcp/up"
	return g
}

// openGETStream opens a legacy GET stream and reads its first event, so
// the stream is open end to end; the caller closes the body.
func openGETStream(t *testing.T, g *resGateway, session string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, g.URL, nil)
	req.Header = http.Header{"Accept": {"text/event-stream"}, "Authorization": {"Bearer " + aliceKey}, "Mcp-Session-Id": {session}, "Mcp-Protocol-Version": {"2025-11-25"}}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		if first := readEvent(t, bufio.NewReader(resp.Body)); !strings.Contains(first, "notifications/message") {
			t.Fatalf("first event %q", first)
		}
	}
	return resp, nil
}

// TestStreamsHaveTheirOwnBound: open streams take server.max_streams
// slots, neither the requests the gateway works on nor the upstream's
// bulkhead: streams open while max_concurrent is full, and with more
// streams open than max_inflight and max_concurrent a call is still
// answered (issue 15: 1,000 streams opening filled the bulkhead and calls
// got 503 -31014). One stream over
// max_streams is refused 503 -31018 with Retry-After, and never reaches
// the upstream.
func TestStreamsHaveTheirOwnBound(t *testing.T) {
	up := newFaultUpstream(t)
	g := startOverloadGateway(t, up.srv.URL, "max_inflight: 1, max_streams: 3", 1)
	c := g.open(t, aliceKey)
	// The one bulkhead slot is taken by a call the upstream holds; streams
	// still open (they take none).
	hung := make(chan struct{})
	go func() {
		defer close(hung)
		_, _ = c.post(t.Context(), callBody(1, "slow", "n-slow"), nil)
	}()
	waitUntil(t, "the slow call to reach the upstream", func() bool { return up.executions("n-slow") == 1 })
	for range 3 {
		resp, err := openGETStream(t, g, c.session)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET: %v %v", err, resp)
		}
		t.Cleanup(func() { resp.Body.Close() })
	}
	close(up.gate)
	<-hung
	a, err := c.post(t.Context(), callBody(2, "echo", "n-after-streams"), nil)
	if err != nil || a.status != http.StatusOK || a.code() != 0 {
		t.Fatalf("call with 3 streams open, max_inflight 1 and max_concurrent 1: %v %d %s; want 200 and a result", err, a.status, a.body)
	}
	before := up.receipts.Load()
	resp, err := openGETStream(t, g, c.session)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"code":-31018`)) || resp.Header.Get("Retry-After") == "" {
		t.Errorf("fourth stream: %d %s %v; want 503, -31018, Retry-After", resp.StatusCode, body, resp.Header)
	}
	if up.receipts.Load() != before {
		t.Error("the refused stream reached the upstream")
	}
	if got := g.series(t)[`ctxgate_shed_total{kind="streams"}`]; got != 1 {
		t.Errorf(`ctxgate_shed_total{kind="streams"} = %v, want 1`, got)
	}
}

// TestAdmissionSheds: with server.max_inflight requests in the gateway's
// hands (here one whose body is still arriving), one more is answered at
// once with 503, Retry-After and -31018, before its body is read: never
// queued until the policy's budget runs out and denied (no decision is
// made for it, nothing is forwarded). A request the upstream is working
// on holds no slot: that is max_concurrent's to bound.
func TestAdmissionSheds(t *testing.T) {
	up := newFaultUpstream(t)
	g := startOverloadGateway(t, up.srv.URL, "max_inflight: 1", 100)
	c := g.open(t, aliceKey)

	// A call the upstream holds does not count against max_inflight.
	hung := make(chan struct{})
	go func() {
		defer close(hung)
		_, _ = c.post(t.Context(), callBody(1, "slow", "n-slow"), nil)
	}()
	waitUntil(t, "the slow call to reach the upstream", func() bool { return up.executions("n-slow") == 1 })
	if a, err := c.post(t.Context(), callBody(2, "echo", "n-beside-slow"), nil); err != nil || a.status != http.StatusOK || a.code() != 0 {
		t.Fatalf("call while the upstream holds another: %v %d %s; want 200", err, a.status, a.body)
	}
	close(up.gate)
	<-hung

	// A request whose body has not arrived is in the gateway's hands.
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, g.URL, pr)
	req.Header = http.Header{"Content-Type": {"application/json"}, "Accept": {"application/json, text/event-stream"},
		"Authorization": {"Bearer " + aliceKey}, "Mcp-Session-Id": {c.session}, "Mcp-Protocol-Version": {"2025-11-25"}}
	first := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			close(first)
			return
		}
		first <- resp
	}()
	waitUntil(t, "the first request to be admitted", func() bool { return g.series(t)[`ctxgate_inflight{kind="requests"}`] == 1 })
	decided := decisionCount(t, g)
	if decided == 0 {
		t.Fatal("the decision log is empty: the check below could not fail")
	}

	a, err := c.post(t.Context(), callBody(3, "echo", "n-shed"), nil)
	if err != nil || a.status != http.StatusServiceUnavailable || a.code() != -31018 || a.header.Get("Retry-After") != "1" {
		t.Fatalf("call over max_inflight: %v %d %s %v; want 503, -31018, Retry-After: 1", err, a.status, a.body, a.header)
	}
	if up.executions("n-shed") != 0 {
		t.Error("the shed call reached the upstream")
	}
	if got := decisionCount(t, g); got != decided {
		t.Errorf("the shed call was decided (%d decisions, want %d): shedding comes before the policy", got, decided)
	}
	if got := g.series(t)[`ctxgate_shed_total{kind="requests"}`]; got != 1 {
		t.Errorf(`ctxgate_shed_total{kind="requests"} = %v, want 1`, got)
	}

	// The admitted request completes, and its slot is free again.
	fmt.Fprint(pw, callBody(4, "echo", "n-first"))
	pw.Close()
	resp, ok := <-first
	if !ok {
		t.Fatal("the first request failed")
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || up.executions("n-first") != 1 {
		t.Errorf("the admitted request: %d, executions %d; want 200 and 1", resp.StatusCode, up.executions("n-first"))
	}
	waitUntil(t, "the slot to be free", func() bool { return g.series(t)[`ctxgate_inflight{kind="requests"}`] == 0 })
	if a, err := c.post(t.Context(), callBody(5, "echo", "n-after"), nil); err != nil || a.status != http.StatusOK {
		t.Fatalf("call after the slot came back: %v %d %s", err, a.status, a.body)
	}
}

// decisionCount is how many decisions the gateway's decision log holds.
func decisionCount(t *testing.T, g *resGateway) int {
	t.Helper()
	b, err := os.ReadFile(g.decisions)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// TestStreamOpenTimesOut: a stream opens outside failsafe-go's timeout
// policy (which would keep two goroutines per open stream), so its own
// bound applies: an upstream that never sends a GET stream's headers is
// answered 504 -31011 after upstreams[].timeout, not held open forever.
func TestStreamOpenTimesOut(t *testing.T) {
	up := newFaultUpstream(t)
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			<-r.Context().Done() // no headers, ever
			return
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(silent.Close)
	g := startResGateway(t, silent.URL, "timeout: 1s\nretry: {max_attempts: 1}")
	c := g.open(t, aliceKey)
	resp, err := openGETStream(t, g, c.session)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusGatewayTimeout || !bytes.Contains(body, []byte(`"code":-31011`)) {
		t.Errorf("stream whose headers never come: %d %s; want 504 -31011", resp.StatusCode, body)
	}
}
