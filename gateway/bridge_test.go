package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/gateway"
)

// legacyUpstream speaks only the legacy era: initialize opens session
// "legacy-1"; anything else needs that session (404 otherwise), and a
// modern server/discover is refused as a stateful SDK server refuses it.
type legacyUpstream struct {
	mu  sync.Mutex
	got []recordedRequest
	// expire makes the next request with a session answer 404, or
	// expireStatus with expireBody when that is set.
	expire       bool
	expireStatus int
	expireBody   string
	opened       int
}

func (u *legacyUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.got = append(u.got, recordedRequest{header: r.Header.Clone(), body: string(body)})
	w.Header().Set("Content-Type", "application/json")
	switch {
	case strings.Contains(string(body), `"server/discover"`):
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":"ctxgate-discover","error":{"code":-32022,"message":"stateful","data":{"supported":["2025-11-25","2025-06-18"],"requested":"2026-07-28"}}}`)
	case strings.Contains(string(body), `"initialize"`):
		u.opened++
		w.Header().Set("Mcp-Session-Id", fmt.Sprintf("legacy-%d", u.opened))
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":"ctxgate-bridge","result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":true},"logging":{}},"serverInfo":{"name":"old","version":"1"},"instructions":"be kind"}}`)
	case u.expire && u.expireStatus != 0:
		u.expire = false
		w.WriteHeader(u.expireStatus)
		fmt.Fprint(w, u.expireBody)
	case r.Header.Get("Mcp-Session-Id") != fmt.Sprintf("legacy-%d", u.opened) || u.expire:
		u.expire = false
		w.WriteHeader(http.StatusNotFound)
	case strings.Contains(string(body), `"notifications/initialized"`):
		w.WriteHeader(http.StatusAccepted)
	default:
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":7,"result":{"tools":[],"x":1}}`)
	}
}

func (u *legacyUpstream) requests() []recordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recordedRequest(nil), u.got...)
}

// TestBridge: with bridge: true, a modern client is served from a
// legacy-only upstream over one legacy session: discover answered by the
// gateway, requests forwarded on the session without the modern _meta keys,
// a new session after the upstream ends one.
func TestBridge(t *testing.T) {
	up := &legacyUpstream{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	gw := newGatewayOpts(t, srv.URL, gateway.Options{}, ", bridge: true")
	post := func(method, params string) (int, string) {
		h := modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", method)
		resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", modernCall(method, params), h)
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(bytes.TrimSpace(body))
	}

	status, body := post("server/discover", "")
	wantDiscover := `{"jsonrpc":"2.0","id":7,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"old","version":"1"}},"cacheScope":"private","capabilities":{"tools":{}},"instructions":"be kind","resultType":"complete","supportedVersions":["2026-07-28","2025-11-25","2025-06-18"],"ttlMs":0}}`
	if status != http.StatusOK || body != wantDiscover {
		t.Errorf("server/discover: %d\n got %s\nwant %s", status, body, wantDiscover)
	}
	status, body = post("tools/list", `"cursor":"c"`)
	if status != http.StatusOK || body != `{"jsonrpc":"2.0","id":7,"result":{"tools":[],"x":1}}` {
		t.Errorf("tools/list: %d %s", status, body)
	}
	var methods []string
	var last recordedRequest
	for _, r := range up.requests() {
		var m struct {
			Method string `json:"method"`
		}
		_ = json.Unmarshal([]byte(r.body), &m)
		methods = append(methods, m.Method)
		last = r
	}
	if diff := cmp.Diff([]string{"server/discover", "initialize", "notifications/initialized", "tools/list"}, methods); diff != "" {
		t.Errorf("upstream saw (-want +got):\n%s", diff)
	}
	wantBody := `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"cursor":"c","_meta":{"x-client":{"b":2,"a":1}}}}`
	if last.body != wantBody || last.header.Get("Mcp-Session-Id") != "legacy-1" || last.header.Get("Mcp-Protocol-Version") != "2025-11-25" {
		t.Errorf("bridged request: session %q version %q body\n got %s\nwant %s", last.header.Get("Mcp-Session-Id"), last.header.Get("Mcp-Protocol-Version"), last.body, wantBody)
	}

	// The upstream ends the session: that request fails, the next opens a
	// new session.
	up.mu.Lock()
	up.expire = true
	up.mu.Unlock()
	if status, _ = post("tools/list", ""); status != http.StatusBadGateway {
		t.Errorf("request on an ended session: %d, want 502", status)
	}
	if status, body = post("tools/list", ""); status != http.StatusOK {
		t.Errorf("request after the session ended: %d %s", status, body)
	}
	if got := up.requests(); got[len(got)-1].header.Get("Mcp-Session-Id") != "legacy-2" {
		t.Errorf("after the session ended, the request went on session %q, want legacy-2", got[len(got)-1].header.Get("Mcp-Session-Id"))
	}

	// subscriptions/listen cannot be bridged.
	if status, body = post("subscriptions/listen", `"notifications":{}`); status != http.StatusNotFound || !strings.Contains(body, "-32601") {
		t.Errorf("subscriptions/listen: %d %s, want 404 -32601", status, body)
	}
}

// TestBridgeSessionLost400: an upstream that answers a session it lost
// with 400 and a JSON-RPC error for no request (the TypeScript SDK's
// examples) ends the bridged session as a 404 does, so the next request
// opens a new one; a 400 answering the request itself is relayed and the
// session kept.
func TestBridgeSessionLost400(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		wantStatus  int
		wantSession string // the session the request after it goes on
	}{
		{"no valid session", `{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: No valid session ID provided"},"id":null}`, http.StatusBadGateway, "legacy-2"},
		{"no id at all", `{"jsonrpc":"2.0","error":{"code":-32000,"message":"Bad Request: Server not initialized"}}`, http.StatusBadGateway, "legacy-2"},
		{"the request refused", `{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"bad cursor"}}`, http.StatusBadRequest, "legacy-1"},
		{"not JSON", `Bad Request`, http.StatusBadRequest, "legacy-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := &legacyUpstream{}
			srv := httptest.NewServer(up)
			defer srv.Close()
			gw := newGatewayOpts(t, srv.URL, gateway.Options{}, ", bridge: true")
			post := func() (int, string) {
				h := modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list")
				resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", modernCall("tools/list", ""), h)
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(bytes.TrimSpace(body))
			}
			if status, body := post(); status != http.StatusOK {
				t.Fatalf("first request: %d %s", status, body)
			}
			up.mu.Lock()
			up.expire, up.expireStatus, up.expireBody = true, http.StatusBadRequest, tt.body
			up.mu.Unlock()
			if status, body := post(); status != tt.wantStatus {
				t.Errorf("request answered 400 %s: %d %s, want %d", tt.body, status, body, tt.wantStatus)
			}
			if status, body := post(); status != http.StatusOK {
				t.Errorf("request after it: %d %s", status, body)
			}
			got := up.requests()
			if s := got[len(got)-1].header.Get("Mcp-Session-Id"); s != tt.wantSession {
				t.Errorf("the request after it went on session %q, want %s", s, tt.wantSession)
			}
		})
	}
}
