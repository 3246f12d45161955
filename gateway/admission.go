package gateway

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ctxgate/ctxgate/config"
)

// admission is the gateway's own overload bound (server.max_inflight):
// how many requests it is working on at once. A request over it is shed at
// once, before its body is read, so an overloaded gateway answers 503 with
// Retry-After in microseconds instead of queueing the request for CPU until
// the policy's budget expires and the answer is a denial (issue 15: at
// 2,000 req/s one in ten calls failed that way).
//
// What counts: a request from its arrival to its answer, except while the
// upstream has it (from sending to the answer's headers), which is
// upstreams[].max_concurrent's business, and except an open stream, which
// holds a stream slot instead (server.max_streams): a thousand idle
// streams must not starve calls.
type admission struct {
	maxRequests, maxStreams   int64
	requests, streams         atomic.Int64
	shedRequests, shedStreams atomic.Uint64
}

func newAdmission(c config.Server) *admission {
	return &admission{maxRequests: int64(c.MaxInflight), maxStreams: int64(c.MaxStreams)}
}

// ticket is one admitted request's slot. Its methods are safe to call from
// any goroutine of the request (a relay's reader, a federated fan-out):
// the slot is counted at most once, and never again once the request has
// ended or become a stream, whatever reads come late.
type ticket struct {
	a     *admission
	state atomic.Int32 // ticketHeld, ticketFree or ticketEnded
}

const (
	ticketFree int32 = iota
	ticketHeld
	ticketEnded
)

// admit is the admission middleware: a slot, or 503 before anything else
// is read.
func (s *Server) admit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := s.admission
		if !acquire(&a.requests, a.maxRequests) {
			a.shedRequests.Add(1)
			writeError(w, r, gatewayBusy("gateway busy: too many requests in progress (server.max_inflight); nothing was read or sent, retry later"))
			return
		}
		st := stateOf(r.Context())
		if st == nil {
			// Only the chain's own tests run without requestLog.
			st = &requestState{}
			r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
		}
		t := &st.slot
		t.a = a
		t.state.Store(ticketHeld)
		defer t.end()
		next.ServeHTTP(w, r)
	})
}

// acquire counts one more unless n is at limit. Compare-and-swap, not
// add-then-undo: an undone add would briefly count a request that was
// never admitted and shed another that should have been.
func acquire(n *atomic.Int64, limit int64) bool {
	for {
		cur := n.Load()
		if cur >= limit {
			return false
		}
		if n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

func gatewayBusy(message string) *Error {
	e := newError(http.StatusServiceUnavailable, CodeGatewayBusy, message, nil)
	setRetryAfter(e, 0)
	return e
}

// ticketOf is the request's slot; nil outside an admitted request (the
// gateway's own requests: probes, listeners).
func ticketOf(ctx context.Context) *ticket {
	if st := stateOf(ctx); st != nil && st.slot.a != nil {
		return &st.slot
	}
	return nil
}

// release gives the slot back for a while; nil-safe.
func (t *ticket) release() {
	if t != nil && t.state.CompareAndSwap(ticketHeld, ticketFree) {
		t.a.requests.Add(-1)
	}
}

// resume takes the slot again when the upstream's answer arrives, even
// over the limit: the work it brings is already paid for upstream, so it
// is finished, and the count it adds sheds new arrivals instead. Never
// waiting also means no request can wait on a slot another one holds.
func (t *ticket) resume() {
	if t != nil && t.state.CompareAndSwap(ticketFree, ticketHeld) {
		t.a.requests.Add(1)
	}
}

// end gives the slot back for good: the request was answered or became a
// stream.
func (t *ticket) end() {
	if t != nil && t.state.Swap(ticketEnded) == ticketHeld {
		t.a.requests.Add(-1)
	}
}

// openStream moves a request that is about to become a long-lived stream
// from its request slot to a stream slot, or refuses it (before anything
// is sent upstream). The returned func frees the stream slot.
func (s *Server) openStream(ctx context.Context) (func(), error) {
	a := s.admission
	if !acquire(&a.streams, a.maxStreams) {
		a.shedStreams.Add(1)
		return nil, gatewayBusy("gateway busy: too many open streams (server.max_streams); nothing was sent, retry later")
	}
	ticketOf(ctx).end()
	return func() { a.streams.Add(-1) }, nil
}

// admissionTransport frees the request's slot while the upstream has the
// request: until the answer's headers arrive, and while a read of the
// answer's body waits for the upstream's bytes (a tool call streaming
// progress for minutes is the upstream's time, not the gateway's).
type admissionTransport struct{ next http.RoundTripper }

func (t admissionTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tk := ticketOf(req.Context())
	if tk == nil {
		return t.next.RoundTrip(req) // the gateway's own request
	}
	tk.release()
	defer tk.resume()
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		resp.Body = &admittedBody{ReadCloser: resp.Body, t: tk}
	}
	return resp, err
}

// admittedBody is an upstream answer's body that gives its request's slot
// up while a read waits on the upstream.
type admittedBody struct {
	io.ReadCloser
	t *ticket
}

func (b *admittedBody) Read(p []byte) (int, error) {
	b.t.release()
	defer b.t.resume()
	return b.ReadCloser.Read(p)
}

// admissionCollector exports the admission state at scrape time.
type admissionCollector struct{ a *admission }

var (
	inflightDesc = prometheus.NewDesc("ctxgate_inflight",
		"Requests the gateway is working on (kind requests, bounded by server.max_inflight) and open streams (kind streams, bounded by server.max_streams).",
		[]string{"kind"}, nil)
	shedDesc = prometheus.NewDesc("ctxgate_shed_total",
		"Requests refused with 503 -31018 because server.max_inflight requests (kind requests) or server.max_streams streams (kind streams) were in progress.",
		[]string{"kind"}, nil)
)

func (c admissionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- inflightDesc
	ch <- shedDesc
}

func (c admissionCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(max(c.a.requests.Load(), 0)), "requests")
	ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(c.a.streams.Load()), "streams")
	ch <- prometheus.MustNewConstMetric(shedDesc, prometheus.CounterValue, float64(c.a.shedRequests.Load()), "requests")
	ch <- prometheus.MustNewConstMetric(shedDesc, prometheus.CounterValue, float64(c.a.shedStreams.Load()), "streams")
}
