package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestFederatedMemberRecovery: a member down at initialize is not in the
// session (its calls 503 -31070 with Retry-After, not unknown tool); once
// it is back and its retry is due (1s on the injected clock), a request
// of the session retries it in the background and it joins: its tools
// are listed fresh and callable on the same session, and DELETE ends its
// session too.
func TestFederatedMemberRecovery(t *testing.T) {
	hooksB := &memberHooks{}
	a, b := sdkServer(t, "search"), sdkServerHooked(t, hooksB, "other")
	hooksB.fail.Store(true)
	clock := &testClock{start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, retry: {max_attempts: 1}}
  - {name: b, url: %q, retry: {max_attempts: 1}, circuit_breaker: {failure_threshold: 1000}}
routes: [{path: /mcp, upstreams: [a, b], member_timeout: 2s}]
`, a.URL, b.URL), gateway.Options{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/mcp"
	init := rpc(t, http.MethodPost, url, "", initializeBody, nil)
	if got := string(init.Result["_meta"]); got != `{"io.ctxgate/partial":{"missing":["b"]}}` {
		t.Fatalf("initialize with b down: HTTP %d, _meta %s", init.status, got)
	}
	const callB = `{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"b__other","arguments":{}}}`
	resp := send(t, http.MethodPost, url, init.session, callB, nil)
	var answer struct {
		Error struct{ Code int64 } `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	if resp.StatusCode != http.StatusServiceUnavailable || answer.Error.Code != -31070 || resp.Header.Get("Retry-After") != "1" {
		t.Errorf("tools/call b__other while b is retried: HTTP %d, code %d, Retry-After %q; want 503 -31070, 1", resp.StatusCode, answer.Error.Code, resp.Header.Get("Retry-After"))
	}
	tools := func() ([]string, string) {
		t.Helper()
		got := rpc(t, http.MethodPost, url, init.session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
		var list []struct{ Name string }
		_ = json.Unmarshal(got.Result["tools"], &list)
		var names []string
		for _, tool := range list {
			names = append(names, tool.Name)
		}
		return names, string(got.Result["_meta"])
	}
	hooksB.fail.Store(false)
	// Not due yet: b is back, but nothing retries it before 1s.
	if names, _ := tools(); slices.Contains(names, "b__other") {
		t.Errorf("b joined before its retry was due: %v", names)
	}
	clock.Add(time.Second)
	waitUntil(t, "b to join the session", func() bool {
		names, meta := tools() // each request of the session may start the retry
		return slices.Contains(names, "b__other") && meta == ""
	})
	if call := rpc(t, http.MethodPost, url, init.session, callB, nil); call.status != http.StatusOK || call.Error != nil || len(call.Result["content"]) == 0 {
		t.Errorf("tools/call b__other after b joined: HTTP %d, %+v", call.status, call.Error)
	}
	if del := send(t, http.MethodDelete, url, init.session, "", nil); del.StatusCode != http.StatusNoContent || hooksB.deletes.Load() != 1 {
		t.Errorf("DELETE: %s; b was sent %d DELETEs, want 1", del.Status, hooksB.deletes.Load())
	}
}
