package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time              { return c.t }
func (c *clock) add(d time.Duration)         { c.t = c.t.Add(d) }
func newClock() *clock                       { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func rateOf(rps float64, b int) *config.Rate { return &config.Rate{RPS: rps, Burst: b} }

func TestRateLimiter(t *testing.T) {
	c := newClock()
	l := newRateLimiter(config.RateLimit{PerPrincipal: rateOf(1, 2), PerTool: map[string]config.Rate{"t": *rateOf(1, 1)}}, c.now)
	type step struct {
		principal, tool string
		advance         time.Duration
		ok              bool
	}
	steps := []step{
		{principal: "a", tool: "t", ok: true},  // a: 1 left; a/t: 0
		{principal: "a", tool: "t", ok: false}, // a/t empty: takes nothing from a
		{principal: "a", ok: true},             // a: 0
		{principal: "a", ok: false},
		{principal: "b", ok: true}, // another principal is untouched
		{principal: "a", advance: time.Second, ok: true},
	}
	for i, s := range steps {
		c.add(s.advance)
		ok, wait := l.allow(s.principal, s.tool)
		if ok != s.ok || ok != (wait == 0) {
			t.Errorf("step %d: allow = %v, wait %s; want %v", i, ok, wait, s.ok)
		}
	}
	if got := newRateLimiter(config.RateLimit{}, c.now); got != nil {
		t.Error("a route without limits has a limiter")
	}
}

func TestRateLimiterBounded(t *testing.T) {
	c := newClock()
	l := newRateLimiter(config.RateLimit{PerPrincipal: rateOf(1, 5)}, c.now)
	for i := range maxLimiters + 100 {
		l.allow(fmt.Sprint("p", i), "")
	}
	if l.size() > maxLimiters {
		t.Fatalf("%d buckets held, bound %d", l.size(), maxLimiters)
	}
	// Once every bucket has refilled, one new principal clears them all:
	// a refilled bucket is the same as a new one.
	c.add(5 * time.Second)
	l.allow("fresh", "")
	if l.size() != 1 {
		t.Errorf("%d buckets after the refill, want 1", l.size())
	}
}

func TestIdempotencyStore(t *testing.T) {
	c := newClock()
	s := newIdempotencyStore(time.Minute, 2, c.now)
	d1, d2 := [32]byte{1}, [32]byte{2}

	e, first, err := s.begin("k1", d1)
	if !first || err != nil {
		t.Fatalf("first begin: %v %v", first, err)
	}
	if dup, first, err := s.begin("k1", d1); first || err != nil || dup != e {
		t.Fatalf("duplicate: first %v, err %v; want the running entry", first, err)
	}
	if _, _, err := s.begin("k1", d2); err != errIdempotencyMismatch {
		t.Fatalf("other call under the key: %v; want a mismatch", err)
	}
	if _, _, err := s.begin("k2", d1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.begin("k3", d1); err != errIdempotencyFull {
		t.Fatalf("third key while two run: %v; want full", err)
	}
	s.finish(e, true)
	if _, first, err := s.begin("k3", d1); !first || err != nil {
		t.Fatalf("third key once k1 finished: %v %v; want k1 evicted", first, err)
	}

	s = newIdempotencyStore(time.Minute, 10, c.now)
	e, _, _ = s.begin("k", d1)
	s.finish(e, true)
	c.add(59 * time.Second)
	if _, first, _ := s.begin("k", d1); first {
		t.Error("key forgotten inside the window")
	}
	c.add(2 * time.Second)
	if _, first, _ := s.begin("k", d1); !first {
		t.Error("key remembered after the window")
	}

	e, _, _ = s.begin("never-ran", d1)
	s.finish(e, false)
	if _, first, _ := s.begin("never-ran", d1); !first {
		t.Error("a call that never ran is still remembered: its retry would be refused")
	}
}

func TestIdempotencyKeyParse(t *testing.T) {
	long := strings.Repeat("k", 256)
	tests := []struct {
		name    string
		headers []string
		meta    string // the _meta member, raw JSON; "" for none
		want    string
		wantErr bool
	}{
		{name: "none", want: ""},
		{name: "header", headers: []string{"h1"}, want: "h1"},
		{name: "meta", meta: `"m1"`, want: "m1"},
		{name: "both agree", headers: []string{"k"}, meta: `"k"`, want: "k"},
		{name: "both differ", headers: []string{"a"}, meta: `"b"`, wantErr: true},
		{name: "two headers", headers: []string{"a", "b"}, wantErr: true},
		{name: "meta not a string", meta: `7`, wantErr: true},
		{name: "too long", headers: []string{long}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := `{"name":"x"}`
			if tt.meta != "" {
				params = `{"name":"x","_meta":{"io.ctxgate/idempotency-key":` + tt.meta + `}}`
			}
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			for _, h := range tt.headers {
				r.Header.Add("Idempotency-Key", h)
			}
			got, err := idempotencyKey(r, &jsonrpc.Request{Method: "tools/call", Params: []byte(params)})
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v; want %q (error: %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestWithID(t *testing.T) {
	id, _ := jsonrpc.MakeID("dup-2")
	got, err := withID([]byte(`{"jsonrpc":"2.0","id":1,"result":{"x":[1]}}`), id)
	if err != nil || string(got) != `{"id":"dup-2","jsonrpc":"2.0","result":{"x":[1]}}` {
		t.Errorf("withID = %s, %v", got, err)
	}
}

// TestUpstreamError: each classified failure becomes its documented answer.
func TestUpstreamError(t *testing.T) {
	post := &forward{body: []byte("{}")}
	ctx := func(r upstream.Retry) context.Context {
		return upstream.WithRetry(context.WithValue(context.Background(), forwardKey{}, post), r)
	}
	fail := func(kind error, sent bool) error {
		return &upstream.Failure{Upstream: "up", Kind: kind, Sent: sent, RetryAfter: 1500 * time.Millisecond, Err: errors.New("cause")}
	}
	tests := []struct {
		name       string
		ctx        context.Context
		err        error
		status     int
		code       int64
		retryAfter string
	}{
		{"breaker open", ctx(upstream.RetryUnsent), fail(upstream.ErrBreakerOpen, false), 503, CodeBreakerOpen, "2"},
		{"bulkhead full", ctx(upstream.RetrySafe), fail(upstream.ErrBulkheadFull, false), 503, CodeOverloaded, "2"},
		{"unsafe call cut after sending", ctx(upstream.RetryUnsent), fail(upstream.ErrTransport, true), 502, CodeOutcomeUnknown, ""},
		{"unsafe call timed out", ctx(upstream.RetryUnsent), fail(upstream.ErrTimeout, true), 504, CodeOutcomeUnknown, ""},
		{"client answer cut after sending", ctx(upstream.RetryNever), fail(upstream.ErrTransport, true), 502, CodeOutcomeUnknown, ""},
		{"unsafe call never sent", ctx(upstream.RetryUnsent), fail(upstream.ErrTransport, false), 502, CodeUpstreamUnavailable, ""},
		{"safe request timed out", ctx(upstream.RetrySafe), fail(upstream.ErrTimeout, true), 504, CodeUpstreamTimeout, ""},
		{"safe request cut", ctx(upstream.RetrySafe), fail(upstream.ErrTransport, true), 502, CodeUpstreamUnavailable, ""},
		{"unusable answer", ctx(upstream.RetryUnsent), errUpstreamUnauthorized, 502, CodeUpstreamUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := upstreamError(tt.ctx, tt.err)
			got := []any{e.Status, e.Code, e.Header.Get("Retry-After")}
			if diff := cmp.Diff([]any{tt.status, tt.code, tt.retryAfter}, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if !errors.Is(e, tt.err) {
				t.Error("the cause is lost for the log")
			}
		})
	}
}

// TestRetryClass: only what is safe to repeat is retried after it may have
// been received; a client's answer to the server never is.
func TestRetryClass(t *testing.T) {
	rt := &route{res: routeResilience{idempotentTools: map[string]bool{"search": true}}}
	tests := []struct {
		name   string
		body   string // "" for a GET stream
		stream bool
		want   upstream.Retry
	}{
		{name: "tools/list", body: `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`, want: upstream.RetrySafe},
		{name: "resources/read", body: `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://x"}}`, want: upstream.RetrySafe},
		{name: "ping", body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`, want: upstream.RetrySafe},
		{name: "tools/call", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete"}}`, want: upstream.RetryUnsent},
		{name: "tools/call of an idempotent tool", body: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}`, want: upstream.RetrySafe},
		{name: "initialize", body: `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`, want: upstream.RetryUnsent},
		{name: "notification", body: `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}`, want: upstream.RetryUnsent},
		{name: "sampling answer", body: `{"jsonrpc":"2.0","id":"s1","result":{"content":{"type":"text","text":"y"}}}`, want: upstream.RetryNever},
		// Retried as RetrySafe, outside the bulkhead (issue 15).
		{name: "GET stream", stream: true, want: upstream.RetryStream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &requestState{}
			fwd := &forward{requestState: st, stream: tt.stream}
			if tt.body != "" {
				msg, err := decodeMessage([]byte(tt.body))
				if err != nil {
					t.Fatal(err)
				}
				fwd.body, st.msg = msg.Raw, msg
				if req := msg.Request(); req != nil {
					st.target = targetOf(req)
				}
			}
			if got := rt.retryClass(fwd); got != tt.want {
				t.Errorf("retryClass = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestUpstreamErrorRestartBackoff: a stdio start refused by the restart
// backoff is 503 -31051 with Retry-After rounded up to whole seconds.
func TestUpstreamErrorRestartBackoff(t *testing.T) {
	err := fmt.Errorf("attempt: %w", &upstream.RestartBackoff{Wait: 1500 * time.Millisecond, Crashes: 2})
	e := upstreamError(context.Background(), err)
	if e.Status != http.StatusServiceUnavailable || e.Code != CodeUpstreamRestartBackoff || e.Header.Get("Retry-After") != "2" {
		t.Errorf("got %d %d Retry-After %q, want 503 -31051 Retry-After 2", e.Status, e.Code, e.Header.Get("Retry-After"))
	}
}
