package upstream_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/upstream"
)

// received is what the test server received of one request.
type received struct {
	Method, Session, Body string
	Seeker                bool
}

func TestHTTPTransport(t *testing.T) {
	got := make(chan received, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- received{Method: r.Method, Session: r.Header.Get("Mcp-Session-Id"), Body: string(body)}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	var sawSeeker bool
	next := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		_, sawSeeker = req.Body.(io.Seeker)
		return http.DefaultTransport.RoundTrip(req)
	})
	tr := upstream.HTTP{URL: u, Next: next}
	h := http.Header{"Mcp-Session-Id": {"s1"}}
	ctx := context.Background()
	tests := []struct {
		name string
		call func() (*http.Response, error)
		want received
	}{
		{"send", func() (*http.Response, error) {
			return tr.Send(ctx, upstream.Message{Body: []byte(`{"jsonrpc":"2.0","method":"ping","id":1}`), Header: h})
		}, received{Method: "POST", Session: "s1", Body: `{"jsonrpc":"2.0","method":"ping","id":1}`}},
		{"open", func() (*http.Response, error) { return tr.Open(ctx, h) }, received{Method: "GET", Session: "s1"}},
		{"end", func() (*http.Response, error) { return tr.End(ctx, h) }, received{Method: "DELETE", Session: "s1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.call()
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			s := <-got
			s.Seeker = sawSeeker
			if diff := cmp.Diff(tt.want, s); diff != "" {
				t.Errorf("upstream saw (-want +got):\n%s", diff)
			}
		})
	}
}

// recorder is a Transport that records which call it got.
type recorder struct{ calls []string }

func (r *recorder) Send(_ context.Context, m upstream.Message) (*http.Response, error) {
	r.calls = append(r.calls, "send "+string(m.Body)+" "+m.Header.Get("Mcp-Session-Id"))
	return &http.Response{StatusCode: http.StatusAccepted, Body: http.NoBody}, nil
}

func (r *recorder) Open(_ context.Context, h http.Header) (*http.Response, error) {
	r.calls = append(r.calls, "open "+h.Get("Mcp-Session-Id"))
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
}

func (r *recorder) End(_ context.Context, h http.Header) (*http.Response, error) {
	r.calls = append(r.calls, "end "+h.Get("Mcp-Session-Id"))
	return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody}, nil
}

func TestRoundTripperCarriesHTTPOnATransport(t *testing.T) {
	rec := &recorder{}
	rt := upstream.RoundTripper(rec)
	for _, method := range []string{"POST", "GET", "DELETE"} {
		var body io.Reader
		if method == "POST" {
			body = strings.NewReader(`{"m":1}`)
		}
		req := httptest.NewRequest(method, "http://upstream.test/mcp", body)
		req.Header.Set("Mcp-Session-Id", "s")
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		resp.Body.Close()
	}
	want := []string{`send {"m":1} s`, "open s", "end s"}
	if diff := cmp.Diff(want, rec.calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if _, err := rt.RoundTrip(httptest.NewRequest("PUT", "http://upstream.test/mcp", nil)); err == nil {
		t.Error("PUT was carried; want an error")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
