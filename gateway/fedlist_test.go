package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestFederatedStaleBound: a failing member's last good page is listed and
// marked stale while it is younger than member_stale_for, and left out
// (missing, with the reason) once older; on the injected clock.
func TestFederatedStaleBound(t *testing.T) {
	hooks := &memberHooks{}
	a, b := sdkServerHooked(t, hooks, "search"), sdkServer(t, "other")
	clock := &testClock{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 2s, member_stale_for: 1m}]
`, a.URL, b.URL), gateway.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if init.status != http.StatusOK {
		t.Fatalf("initialize: HTTP %d", init.status)
	}
	list := func() (names []string, meta string) {
		t.Helper()
		got := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
		if got.status != http.StatusOK || got.Error != nil {
			t.Fatalf("tools/list: HTTP %d, %+v", got.status, got.Error)
		}
		var tools []struct{ Name string }
		_ = json.Unmarshal(got.Result["tools"], &tools)
		for _, tool := range tools {
			names = append(names, tool.Name)
		}
		return names, string(got.Result["_meta"])
	}
	both, alone := []string{"a__search", "b__other"}, []string{"b__other"}
	steps := []struct {
		name     string
		fail     bool
		advance  time.Duration
		want     []string
		wantMeta string
	}{
		{name: "both up", want: both},
		{name: "a fails: its last good page, stale", fail: true, want: both, wantMeta: `{"io.ctxgate/partial":{"staleAgeMs":{"a":0}}}`},
		{name: "at the bound: still stale", fail: true, advance: time.Minute, want: both, wantMeta: `{"io.ctxgate/partial":{"staleAgeMs":{"a":60000}}}`},
		{name: "past the bound: a missing", fail: true, advance: time.Millisecond, want: alone,
			wantMeta: `{"io.ctxgate/partial":{"missing":["a"],"reasons":{"a":"last good page older than member_stale_for"}}}`},
		{name: "a back: fresh again", want: both},
	}
	for _, st := range steps {
		hooks.fail.Store(st.fail)
		clock.Add(st.advance)
		names, meta := list()
		if diff := cmp.Diff(st.want, names); diff != "" {
			t.Errorf("%s: tools (-want +got):\n%s", st.name, diff)
		}
		if meta != st.wantMeta && !(meta == "" && st.wantMeta == "") {
			t.Errorf("%s: _meta %s, want %s", st.name, meta, st.wantMeta)
		}
	}
}
