package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/upstream"
)

// heard is what the test upstream heard of one request.
type heard struct {
	Method, Body, Session, Version, ContentType, Accept, Principal, UserAgent string
}

// handshakeUpstream answers initialize (opening session unless stateless)
// and accepts everything else, recording each request.
type handshakeUpstream struct {
	stateless bool
	mu        sync.Mutex
	heard     []heard
}

func (u *handshakeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := heard{Method: r.Method, Session: r.Header.Get("Mcp-Session-Id"), Version: r.Header.Get("Mcp-Protocol-Version"),
		ContentType: r.Header.Get("Content-Type"), Accept: r.Header.Get("Accept"),
		Principal: r.Header.Get("X-Ctxgate-Principal"), UserAgent: r.Header.Get("User-Agent")}
	var msg struct {
		Method string `json:"method"`
	}
	_ = json.Unmarshal(body, &msg)
	h.Body = msg.Method
	u.mu.Lock()
	u.heard = append(u.heard, h)
	u.mu.Unlock()
	if msg.Method != "initialize" {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if !u.stateless {
		w.Header().Set("Mcp-Session-Id", "up-1")
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"jsonrpc":"2.0","id":"t","result":{"protocolVersion":"2025-06-18","capabilities":{"resources":{"subscribe":true}}}}`)
}

func TestOpenSession(t *testing.T) {
	const accept = "application/json, text/event-stream"
	p := &Principal{ID: "alice", Kind: "user"}
	tests := []struct {
		name        string
		stateless   bool
		needSession bool
		wantErr     error
		wantSession string
		want        []heard
	}{
		{
			name: "initialize, then notifications/initialized on the new session", wantSession: "up-1",
			want: []heard{
				{Method: "POST", Body: "initialize", Version: "2025-11-25", ContentType: "application/json", Accept: accept, Principal: "alice", UserAgent: "t"},
				{Method: "POST", Body: "notifications/initialized", Session: "up-1", Version: "2025-06-18", ContentType: "application/json", Accept: accept, Principal: "alice", UserAgent: "t"},
			},
		},
		{
			name: "a stateless upstream is confirmed when no session is needed", stateless: true,
			want: []heard{
				{Method: "POST", Body: "initialize", Version: "2025-11-25", ContentType: "application/json", Accept: accept, Principal: "alice", UserAgent: "t"},
				{Method: "POST", Body: "notifications/initialized", Version: "2025-06-18", ContentType: "application/json", Accept: accept, Principal: "alice", UserAgent: "t"},
			},
		},
		{
			name: "a stateless upstream is refused before confirming when a session is needed", stateless: true, needSession: true, wantErr: errNoSession,
			want: []heard{
				{Method: "POST", Body: "initialize", Version: "2025-11-25", ContentType: "application/json", Accept: accept, Principal: "alice", UserAgent: "t"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &handshakeUpstream{stateless: tt.stateless}
			srv := httptest.NewServer(up)
			defer srv.Close()
			u, _ := url.Parse(srv.URL)
			way := upstream.HTTP{URL: u, Next: http.DefaultTransport}
			got, err := openSession(context.Background(), way, handshake{id: "t", params: json.RawMessage(`{}`), needSession: tt.needSession,
				req: upstreamRequest{version: "2025-11-25", as: p, header: http.Header{"User-Agent": {"t"}}}})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err == nil && (got.id != tt.wantSession || got.version != "2025-06-18" || !declaresSubscribe(got.result)) {
				t.Errorf("opened %+v, want session %q at 2025-06-18 declaring subscribe", got, tt.wantSession)
			}
			if diff := cmp.Diff(tt.want, up.heard); diff != "" {
				t.Errorf("upstream heard (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAskUpstreamByMethod(t *testing.T) {
	up := &handshakeUpstream{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	way := upstream.HTTP{URL: u, Next: http.DefaultTransport}
	for _, req := range []upstreamRequest{
		{method: http.MethodGet, session: "s", version: "2025-06-18", header: http.Header{"Accept": {"text/event-stream"}}},
		{method: http.MethodDelete, session: "s", version: "2025-06-18"},
		// Nobody is named unless the caller says who (route.identity).
		{body: []byte(`{"jsonrpc":"2.0","method":"notifications/x"}`), session: "s"},
	} {
		resp, err := askUpstream(context.Background(), way, req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	want := []heard{
		{Method: "GET", Session: "s", Version: "2025-06-18", Accept: "text/event-stream", UserAgent: "Go-http-client/1.1"},
		{Method: "DELETE", Session: "s", Version: "2025-06-18", ContentType: "application/json", Accept: "application/json, text/event-stream", UserAgent: "Go-http-client/1.1"},
		{Method: "POST", Body: "notifications/x", Session: "s", ContentType: "application/json", Accept: "application/json, text/event-stream", UserAgent: "Go-http-client/1.1"},
	}
	if diff := cmp.Diff(want, up.heard); diff != "" {
		t.Errorf("upstream heard (-want +got):\n%s", diff)
	}
}
