package gateway_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

// TestFederatedModernAllLegacy: a modern request on a federated route
// whose members all speak only the legacy era is answered exactly as on a
// single legacy member's route: 400 -32022 listing the revisions served
// (a client then initializes), not 502 or an empty partial answer.
func TestFederatedModernAllLegacy(t *testing.T) {
	a, b := httptest.NewServer(&modernUpstream{legacy: true}), httptest.NewServer(&modernUpstream{legacy: true})
	t.Cleanup(a.Close)
	t.Cleanup(b.Close)
	srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"jsonrpc":"2.0","id":7,"error":{"code":-32022,"message":"protocol version \"2026-07-28\" is not supported","data":{"supported":["2025-11-25","2025-06-18"],"requested":"2026-07-28"}}}`
	tests := []struct {
		method, params, name string
	}{
		{method: "server/discover"},
		{method: "tools/list"},
		{method: "tools/call", params: `"name":"a__x","arguments":{}`, name: "a__x"},
		{method: "subscriptions/listen", params: `"notifications":{"toolsListChanged":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			h := modernHeader("Mcp-Protocol-Version", "2026-07-28", "Mcp-Method", tt.method)
			if tt.name != "" {
				h.Set("Mcp-Name", tt.name)
			}
			for _, path := range []string{"/mcp", "/mcp/a"} {
				resp := send(t, http.MethodPost, srv.URL+path, "", modernCall(tt.method, tt.params), h)
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusBadRequest {
					t.Errorf("%s: HTTP %d, want 400", path, resp.StatusCode)
				}
				if diff := cmp.Diff(want, string(bytes.TrimSpace(body))); diff != "" {
					t.Errorf("%s: answer (-want +got):\n%s", path, diff)
				}
			}
		})
	}
}
