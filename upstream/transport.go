package upstream

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Transport is a way to one MCP server: what the gateway asks of an
// upstream, whatever carries it. HTTP (Streamable HTTP) implements it
// today; a stdio process or an HTTP+SSE (2024-11-05) server implements the
// same three calls.
//
// Every answer is an *http.Response, whatever the transport: its status
// (200 with a body, 202 for an accepted notification, 404 for a session the
// server ended), its Content-Type (application/json or text/event-stream),
// its Mcp-Session-Id, and a body the caller must close. A transport that is
// not HTTP makes one, so the gateway's answer path (the relay, the policy,
// the cache) has no case per transport.
type Transport interface {
	// Send sends one JSON-RPC message, or a batch, and returns the answer:
	// one JSON message or an event stream ending with the response. A
	// modern subscriptions/listen is a Send whose answer is a long-lived
	// stream.
	Send(ctx context.Context, m Message) (*http.Response, error)
	// Open opens the session's long-lived stream of server messages (the
	// legacy era's GET); h names the session (Mcp-Session-Id) and may
	// resume it (Last-Event-Id).
	Open(ctx context.Context, h http.Header) (*http.Response, error)
	// End ends the session h names (the legacy era's DELETE).
	End(ctx context.Context, h http.Header) (*http.Response, error)
}

// Message is what Send carries.
type Message struct {
	// Body is one JSON-RPC message or a batch, exactly the bytes that go
	// upstream; nil sends no body.
	Body []byte
	// Header is what goes with it: Mcp-Session-Id, MCP-Protocol-Version,
	// Mcp-Method, Content-Type and Accept. A transport without headers
	// reads what it needs (the session) and ignores the rest. Nil is no
	// header.
	Header http.Header
}

// HTTP is the Streamable HTTP transport: each call is one HTTP request to
// URL, sent with Next. Next decides what surrounds the request: the
// upstream's executor (timeouts, retries, breaker, bulkhead) around one
// attempt, or the upstream's bare credentialed transport.
type HTTP struct {
	// URL is the upstream's endpoint; the request is sent to exactly it.
	URL *url.URL
	// Next sends the request; it must not be nil.
	Next http.RoundTripper
}

// The Streamable HTTP transport is one way to an upstream.
var _ Transport = HTTP{}

// Send POSTs m.
func (t HTTP) Send(ctx context.Context, m Message) (*http.Response, error) {
	return t.do(ctx, http.MethodPost, m.Header, m.Body)
}

// Open GETs the session's stream.
func (t HTTP) Open(ctx context.Context, h http.Header) (*http.Response, error) {
	return t.do(ctx, http.MethodGet, h, nil)
}

// End DELETEs the session.
func (t HTTP) End(ctx context.Context, h http.Header) (*http.Response, error) {
	return t.do(ctx, http.MethodDelete, h, nil)
}

func (t HTTP) do(ctx context.Context, method string, h http.Header, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.URL.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("upstream request: %w", err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	if body != nil {
		// A plain reader, not an io.Seeker: the executor then takes a copy
		// per attempt rather than rewinding one reader a previous attempt's
		// write loop may still be reading.
		req.Body, req.ContentLength = onceBody{bytes.NewReader(body)}, int64(len(body))
	}
	return t.Next.RoundTrip(req)
}

// onceBody hides bytes.Reader's Seek (see HTTP.do).
type onceBody struct{ r *bytes.Reader }

func (b onceBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (onceBody) Close() error { return nil }

// RoundTripper lets a Transport carry HTTP requests: a POST is Send, a GET
// Open, a DELETE End, each with the request's headers and context. It is
// how a transport that is not HTTP goes under the executor and the
// reverse proxy (Upstream.Transport), which speak http.RoundTripper.
func RoundTripper(t Transport) http.RoundTripper { return roundTripper{t} }

type roundTripper struct{ t Transport }

func (a roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	switch req.Method {
	case http.MethodGet:
		return withRequest(a.t.Open(ctx, req.Header))(req)
	case http.MethodDelete:
		return withRequest(a.t.End(ctx, req.Header))(req)
	case http.MethodPost:
	default:
		return nil, fmt.Errorf("upstream transport: method %s has no MCP meaning", req.Method)
	}
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
	return withRequest(a.t.Send(ctx, Message{Body: body, Header: req.Header}))(req)
}

// withRequest sets an answer's Request, as net/http's transport does: the
// reverse proxy's ModifyResponse finds the request (its context) there.
func withRequest(resp *http.Response, err error) func(*http.Request) (*http.Response, error) {
	return func(req *http.Request) (*http.Response, error) {
		if resp != nil && resp.Request == nil {
			resp.Request = req
		}
		return resp, err
	}
}

// Direct is the upstream's bare way: one request on u.Transport, with the
// gateway's credential for it and nothing around it (no executor: no
// retries, breaker, bulkhead or deadline).
func (u *Upstream) Direct() HTTP { return HTTP{URL: u.URL, Next: u.Transport} }
