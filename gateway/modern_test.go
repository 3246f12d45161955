package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
)

// modernUpstream answers like a stateless 2026-07-28 server (or, with
// legacy, like a server that only knows initialize) and records every
// request except the gateway's own server/discover probe.
type modernUpstream struct {
	legacy bool
	mu     sync.Mutex
	got    []recordedRequest
}

type recordedRequest struct {
	header http.Header
	body   string
}

func (u *modernUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	if strings.Contains(string(body), `"ctxgate-discover"`) {
		versions := `["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"]`
		if u.legacy {
			versions = `["2025-11-25","2025-06-18"]`
		}
		fmt.Fprintf(w, `{"jsonrpc":"2.0","id":"ctxgate-discover","result":{"supportedVersions":%s,"capabilities":{}}}`, versions)
		return
	}
	u.mu.Lock()
	u.got = append(u.got, recordedRequest{header: r.Header.Clone(), body: string(body)})
	u.mu.Unlock()
	if strings.Contains(string(body), `"server/discover"`) {
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":7,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up","version":"1"}},"supportedVersions":["2026-07-28","2025-11-25","2024-10-07"],"capabilities":{"tools":{}},"x-unknown":{"kept":true}}}`)
		return
	}
	fmt.Fprint(w, `{"jsonrpc":"2.0","id":7,"result":{"content":[],"x-unknown":1}}`)
}

// startModern starts a modernUpstream and a gateway in front of it.
func startModern(t *testing.T, legacy bool) (*modernUpstream, *httptest.Server) {
	t.Helper()
	up := &modernUpstream{legacy: legacy}
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	return up, newGateway(t, srv.URL)
}

// answerProbe answers the gateway's server/discover probe as a server that
// serves only 2026-07-28.
func answerProbe(w http.ResponseWriter, body []byte) bool {
	if !strings.Contains(string(body), `"ctxgate-discover"`) {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"jsonrpc":"2.0","id":"ctxgate-discover","result":{"supportedVersions":["2026-07-28"],"capabilities":{}}}`)
	return true
}

func (u *modernUpstream) requests() []recordedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]recordedRequest(nil), u.got...)
}

const modernMeta = `"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"x-client":{"b":2,"a":1}}`

func modernCall(method, params string) string {
	if params != "" {
		params += ","
	}
	return fmt.Sprintf(`{"jsonrpc":"2.0","id":7,"method":%q,"params":{%s%s}}`, method, params, modernMeta)
}

func modernHeader(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h[kv[i]] = append(h[kv[i]], kv[i+1]) // as given: tests choose the spelling
	}
	return h
}

type wireError struct {
	ID    any `json:"id"`
	Error struct {
		Code    int64           `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	} `json:"error"`
}

// TestModernRejections: every modern request the gateway must refuse is
// refused with the spec's status and code, and nothing reaches the
// upstream.
func TestModernRejections(t *testing.T) {
	call := modernCall("tools/call", `"name":"echo","arguments":{}`)
	tests := []struct {
		name       string
		httpMethod string
		header     http.Header
		body       string
		wantStatus int
		wantCode   int64
		wantData   string
	}{
		{name: "missing Mcp-Method", header: modernHeader("Mcp-Protocol-Version", "2026-07-28"),
			body: modernCall("tools/list", ""), wantStatus: 400, wantCode: -32020},
		{name: "Mcp-Method mismatch", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "prompts/list"),
			body: modernCall("tools/list", ""), wantStatus: 400, wantCode: -32020},
		{name: "Mcp-Method value is case-sensitive", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "TOOLS/LIST"),
			body: modernCall("tools/list", ""), wantStatus: 400, wantCode: -32020},
		{name: "two Mcp-Method headers", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list", "Mcp-Method", "tools/list"),
			body: modernCall("tools/list", ""), wantStatus: 400, wantCode: -32020},
		{name: "missing Mcp-Name", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call"),
			body: call, wantStatus: 400, wantCode: -32020},
		{name: "Mcp-Name mismatch", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "other"),
			body: call, wantStatus: 400, wantCode: -32020},
		{name: "Mcp-Name base64 of another name", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "=?base64?b3RoZXI=?="),
			body: call, wantStatus: 400, wantCode: -32020},
		{name: "Mcp-Name invalid base64", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "=?base64?ZWNo*?="),
			body: call, wantStatus: 400, wantCode: -32020},
		{name: "resources/read Mcp-Name is the uri", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "resources/read", "Mcp-Name", "file:///b"),
			body: modernCall("resources/read", `"uri":"file:///a"`), wantStatus: 400, wantCode: -32020},
		{name: "version header missing", header: modernHeader("Mcp-Method", "tools/list"),
			body: modernCall("tools/list", ""), wantStatus: 400, wantCode: -32020},
		{name: "version header differs from _meta", header: modernHeader("Mcp-Protocol-Version", "2025-11-25", "Mcp-Method", "tools/list"),
			body: modernCall("tools/list", ""), wantStatus: 400, wantCode: -32020},
		{name: "_meta without protocolVersion", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"),
			body: `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}}`, wantStatus: 400, wantCode: -32602},
		{name: "_meta without clientCapabilities", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"),
			body: `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}`, wantStatus: 400, wantCode: -32602},
		{name: "unsupported version", header: modernHeader("Mcp-Protocol-Version", "v999", "Mcp-Method", "tools/list"),
			body: strings.Replace(modernCall("tools/list", ""), `"2026-07-28"`, `"v999"`, 1), wantStatus: 400, wantCode: -32022,
			wantData: `{"supported":["2026-07-28","2025-11-25","2025-06-18","2025-03-26","2024-11-05"],"requested":"v999"}`},
		{name: "removed method initialize", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "initialize"),
			body: modernCall("initialize", ""), wantStatus: 404, wantCode: -32601},
		{name: "removed method ping", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "ping"),
			body: modernCall("ping", ""), wantStatus: 404, wantCode: -32601},
		{name: "removed method resources/subscribe", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "resources/subscribe"),
			body: modernCall("resources/subscribe", `"uri":"x"`), wantStatus: 404, wantCode: -32601},
		// Removed is answered first, whatever the params (the conformance
		// suite sends them without params.uri or params.level).
		{name: "removed method logging/setLevel without level", header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "logging/setLevel"),
			body: modernCall("logging/setLevel", ""), wantStatus: 404, wantCode: -32601},
		{name: "GET", httpMethod: http.MethodGet, header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Accept", "text/event-stream"),
			wantStatus: 405, wantCode: -32600},
		{name: "DELETE", httpMethod: http.MethodDelete, header: modernHeader("Mcp-Protocol-Version", "2026-07-28"),
			wantStatus: 405, wantCode: -32600},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, gw := startModern(t, false)
			method := tt.httpMethod
			if method == "" {
				method = http.MethodPost
			}
			resp := send(t, method, gw.URL+"/mcp/up", "", tt.body, tt.header)
			body, _ := io.ReadAll(resp.Body)
			var got wireError
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("answer is not JSON-RPC: %v: %s", err, body)
			}
			if resp.StatusCode != tt.wantStatus || got.Error.Code != tt.wantCode {
				t.Errorf("got %d %d (%s), want %d %d", resp.StatusCode, got.Error.Code, got.Error.Message, tt.wantStatus, tt.wantCode)
			}
			if method == http.MethodPost && got.ID != float64(7) {
				t.Errorf("error id = %v, want 7", got.ID)
			}
			if tt.wantData != "" && string(got.Error.Data) != tt.wantData {
				t.Errorf("error data = %s, want %s", got.Error.Data, tt.wantData)
			}
			if method != http.MethodPost && resp.Header.Get("Allow") != "POST" {
				t.Errorf("Allow = %q, want POST", resp.Header.Get("Allow"))
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("%d requests reached the upstream, want none", n)
			}
		})
	}
}

// TestModernForward: accepted modern requests are relayed without a
// session, byte for byte, with the mirrored and unknown Mcp-* headers.
func TestModernForward(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		body   string
	}{
		{name: "tools/call, lower-case header names",
			header: modernHeader("mcp-protocol-version", "2026-07-28", "mcp-method", "tools/call", "mcp-name", "echo", "Mcp-Param-Region", "eu"),
			body:   modernCall("tools/call", `"name":"echo","arguments":{"region":"eu"},"inputResponses":{"a":{"action":"accept"}},"requestState":"opaque"`)},
		{name: "tools/call, base64 name",
			header: modernHeader("MCP-PROTOCOL-VERSION", "2026-07-28", "MCP-METHOD", "tools/call", "Mcp-Name", "=?base64?5pel5pys?="),
			body:   modernCall("tools/call", `"name":"日本","arguments":{}`)},
		{name: "prompts/get",
			header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "prompts/get", "Mcp-Name", "p"),
			body:   modernCall("prompts/get", `"name":"p"`)},
		{name: "tools/list",
			header: modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"),
			body:   modernCall("tools/list", `"cursor":"c1"`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, gw := startModern(t, false)
			resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", tt.body, tt.header)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Mcp-Session-Id") != "" {
				t.Fatalf("got %s (session %q): %s", resp.Status, resp.Header.Get("Mcp-Session-Id"), body)
			}
			got := up.requests()
			if len(got) != 1 {
				t.Fatalf("upstream got %d requests, want 1", len(got))
			}
			if diff := cmp.Diff(tt.body, got[0].body); diff != "" {
				t.Errorf("forwarded body differs (-sent +forwarded):\n%s", diff)
			}
			for name, vs := range tt.header {
				if diff := cmp.Diff(vs, got[0].header.Values(name)); diff != "" {
					t.Errorf("header %s (-sent +forwarded):\n%s", name, diff)
				}
			}
			if s := got[0].header.Get("Mcp-Session-Id"); s != "" {
				t.Errorf("upstream got Mcp-Session-Id %q on a modern request", s)
			}
		})
	}
}

// TestModernDiscover: the gateway's route advertises only the revisions it
// relays; everything else in the result, unknown members and _meta, is
// relayed exactly.
func TestModernDiscover(t *testing.T) {
	up := &modernUpstream{}
	srv := httptest.NewServer(up)
	defer srv.Close()
	gw := newGatewayWithPolicy(t, srv.URL)
	resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", modernCall("server/discover", ""),
		modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "server/discover"))
	body, _ := io.ReadAll(resp.Body)
	want := `{"jsonrpc":"2.0","id":7,"result":{"_meta":{"io.modelcontextprotocol/serverInfo":{"name":"up","version":"1"}},"supportedVersions":["2026-07-28","2025-11-25"],"capabilities":{"tools":{}},"x-unknown":{"kept":true}}}`
	if diff := cmp.Diff(want, string(bytes.TrimSpace(body))); diff != "" {
		t.Errorf("discover result (-want +got):\n%s", diff)
	}
}

// TestModernLegacyUpstream: without bridging, a modern request for an
// upstream that speaks only the legacy era is refused the way such a server
// refuses it, listing the legacy revisions, so a client falls back to
// initialize; nothing is forwarded.
func TestModernLegacyUpstream(t *testing.T) {
	up, gw := startModern(t, true)
	resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", modernCall("tools/list", ""),
		modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"))
	body, _ := io.ReadAll(resp.Body)
	var got wireError
	_ = json.Unmarshal(body, &got)
	if resp.StatusCode != 400 || got.Error.Code != -32022 || string(got.Error.Data) != `{"supported":["2025-11-25","2025-06-18"],"requested":"2026-07-28"}` {
		t.Errorf("got %d %s", resp.StatusCode, body)
	}
	if n := len(up.requests()); n != 0 {
		t.Errorf("%d requests reached the upstream, want none", n)
	}
}

// modernPolicy allows every modern-era client request (so a request the
// policy saw as legacy is denied) and every input request but elicitation.
const modernPolicy = `package ctxgate.authz

default allow := false

allow if {
	input.phase == "request"
	input.protocol == {"era": "modern", "version": "2026-07-28"}
}

allow if {
	input.phase == "response"
	input.method != "elicitation/create"
}

default visible := true
`

func newGatewayWithPolicy(t *testing.T, upstreamURL string) *httptest.Server {
	t.Helper()
	engine, err := policy.New(policy.Options{FS: fstest.MapFS{"authz.rego": {Data: []byte(modernPolicy)}}, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(engine.Close)
	return newGatewayOpts(t, upstreamURL, gateway.Options{Policy: engine}, "")
}

// TestModernInputRequired: an input_required result is relayed intact when
// the policy allows its input requests, and replaced by the denial when it
// does not. The policy allows only requests it sees as era "modern".
func TestModernInputRequired(t *testing.T) {
	tests := []struct {
		name   string
		result string
		want   string
	}{
		{name: "sampling allowed",
			result: `{"resultType":"input_required","inputRequests":{"s1":{"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}},"requestState":"opaque-1","x":1}`,
			want:   `{"jsonrpc":"2.0","id":7,"result":{"resultType":"input_required","inputRequests":{"s1":{"method":"sampling/createMessage","params":{"messages":[],"maxTokens":5}}},"requestState":"opaque-1","x":1}}`},
		{name: "elicitation denied",
			result: `{"resultType":"input_required","inputRequests":{"e1":{"method":"elicitation/create","params":{"message":"password?","requestedSchema":{"type":"object"}}}},"requestState":"opaque-2"}`,
			want:   `{"jsonrpc":"2.0","id":7,"error":{"code":-31020,"message":"request denied by policy"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "application/json")
				if answerProbe(w, body) {
					return
				}
				fmt.Fprintf(w, `{"jsonrpc":"2.0","id":7,"result":%s}`, tt.result)
			}))
			defer srv.Close()
			gw := newGatewayWithPolicy(t, srv.URL)
			resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", modernCall("tools/call", `"name":"ask","arguments":{}`),
				modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/call", "Mcp-Name", "ask"))
			body, _ := io.ReadAll(resp.Body)
			if diff := cmp.Diff(tt.want, string(bytes.TrimSpace(body))); diff != "" {
				t.Errorf("answer (-want +got):\n%s", diff)
			}
		})
	}
}

// TestModernListenCancel: subscriptions/listen is relayed as a stream, and
// a client that closes it (the modern era's cancellation) closes the
// upstream's stream too.
func TestModernListenCancel(t *testing.T) {
	upstreamDone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if answerProbe(w, body) {
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/subscriptions/acknowledged\",\"params\":{\"_meta\":{\"io.modelcontextprotocol/subscriptionId\":\"7\"}}}\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(upstreamDone)
	}))
	defer srv.Close()
	gw := newGateway(t, srv.URL)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, gw.URL+"/mcp/up", strings.NewReader(modernCall("subscriptions/listen", `"notifications":{"toolsListChanged":true}`)))
	req.Header = modernHeader("Content-Type", "application/json", "Accept", "application/json, text/event-stream",
		"Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "subscriptions/listen")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(first, "notifications/subscriptions/acknowledged") {
		t.Fatalf("first line %q, %v; want the acknowledgement", first, err)
	}
	cancel()
	select {
	case <-upstreamDone:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream's listen stream was still open 20s after the client closed its own")
	}
}

// TestModernProbeFailure: when the upstream cannot say which revisions it
// serves, modern requests are forwarded for it to answer, and the probe is
// not repeated on every request.
func TestModernProbeFailure(t *testing.T) {
	var mu sync.Mutex
	probes, forwarded := 0, 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if strings.Contains(string(body), `"ctxgate-discover"`) {
			probes++
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		forwarded++
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}`)
	}))
	defer srv.Close()
	gw := newGateway(t, srv.URL)
	for range 3 {
		resp := send(t, http.MethodPost, gw.URL+"/mcp/up", "", modernCall("tools/list", ""),
			modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", "tools/list"))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("tools/list: %s, want 200 from the upstream", resp.Status)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if probes != 1 || forwarded != 3 {
		t.Errorf("%d probes and %d forwarded requests, want 1 and 3", probes, forwarded)
	}
}
