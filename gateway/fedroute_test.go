package gateway_test

import (
	"net/http"
	"testing"

	"github.com/ctxgate/ctxgate/config"
)

// TestFederatedMemberSessionEnded: once a member forgets its session (a
// restart), every method that reaches it answers 404 -31003 (initialize
// again), as a list does: whether the member says so with a bare 404 (the
// Go SDK) or a 400 for no request (the TypeScript SDK).
func TestFederatedMemberSessionEnded(t *testing.T) {
	bodies := []struct{ name, body string }{
		{"tools/list", `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`},
		{"tools/call", `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"a__search","arguments":{}}}`},
		{"prompts/get", `{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"a__greet"}}`},
		{"resources/read", `{"jsonrpc":"2.0","id":5,"method":"resources/read","params":{"uri":"a+file:///x"}}`},
		{"resources/subscribe", `{"jsonrpc":"2.0","id":6,"method":"resources/subscribe","params":{"uri":"a+file:///x"}}`},
		{"logging/setLevel", `{"jsonrpc":"2.0","id":7,"method":"logging/setLevel","params":{"level":"info"}}`},
		{"a notification", `{"jsonrpc":"2.0","method":"notifications/roots/list_changed"}`},
	}
	for _, style := range []struct {
		name string
		set  func(*memberHooks)
	}{
		{"404", func(h *memberHooks) { h.forget.Store(true) }},
		{"400 for no request", func(h *memberHooks) { h.forget400.Store(true) }},
	} {
		t.Run(style.name, func(t *testing.T) {
			hooks := &memberHooks{}
			a, b := sdkServerHooked(t, hooks, "search"), sdkServer(t, "other")
			srv, err := newFederatedGateway(t, a.URL, b.URL, config.PrefixAlways)
			if err != nil {
				t.Fatal(err)
			}
			url := srv.URL + "/mcp"
			init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
			if call := rpc(t, http.MethodPost, url, init.session, bodies[1].body, nil); call.status != http.StatusOK || call.Error != nil {
				t.Fatalf("tools/call before the member forgot: HTTP %d, %+v", call.status, call.Error)
			}
			style.set(hooks)
			for _, tt := range bodies {
				got := rpc(t, http.MethodPost, url, init.session, tt.body, nil)
				code := int64(0)
				if got.Error != nil {
					code = got.Error.Code
				}
				if got.status != http.StatusNotFound || code != -31003 {
					t.Errorf("%s: HTTP %d, code %d; want 404 -31003", tt.name, got.status, code)
				}
			}
			if ping := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"b__other","arguments":{}}}`, nil); ping.status != http.StatusOK || ping.Error != nil {
				t.Errorf("tools/call of the other member: HTTP %d, %+v; want its result", ping.status, ping.Error)
			}
		})
	}
}
