package gateway_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// POST /admin/invalidate: a context source names what changed (an
// upstream, a method, a resource or a URI prefix, a tool) and exactly that
// is dropped; a body that names nothing, too much or what does not exist
// is refused and drops nothing.
func TestAdminInvalidate(t *testing.T) {
	_, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	requests := map[string][2]string{
		"tools/list":  {"tools/list", `{}`},
		"read a":      {"resources/read", `{"uri":"file:///a"}`},
		"read docs/b": {"resources/read", `{"uri":"file:///docs/b"}`},
		"call search": {"tools/call", `{"name":"search","arguments":{}}`},
	}
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantMiss   []string
	}{
		{name: "upstream", body: `{"upstream":"up"}`, wantStatus: 200, wantMiss: []string{"tools/list", "read a", "read docs/b", "call search"}},
		{name: "method", body: `{"upstream":"up","method":"tools/list"}`, wantStatus: 200, wantMiss: []string{"tools/list"}},
		{name: "method of every upstream", body: `{"method":"tools/list"}`, wantStatus: 200, wantMiss: []string{"tools/list"}},
		{name: "resource", body: `{"upstream":"up","uri":"file:///a"}`, wantStatus: 200, wantMiss: []string{"read a"}},
		{name: "prefix", body: `{"upstream":"up","uri_prefix":"file:///docs/"}`, wantStatus: 200, wantMiss: []string{"read docs/b"}},
		{name: "tool", body: `{"upstream":"up","tool":"search"}`, wantStatus: 200, wantMiss: []string{"call search"}},
		{name: "all", body: `{"all":true}`, wantStatus: 200, wantMiss: []string{"tools/list", "read a", "read docs/b", "call search"}},
		{name: "nothing named", body: `{}`, wantStatus: 400},
		{name: "all with more", body: `{"all":true,"upstream":"up"}`, wantStatus: 400},
		{name: "two narrowings", body: `{"upstream":"up","uri":"file:///a","tool":"search"}`, wantStatus: 400},
		{name: "unknown upstream", body: `{"upstream":"nope"}`, wantStatus: 400},
		{name: "unknown method", body: `{"upstream":"up","method":"tools/lsit"}`, wantStatus: 400},
		{name: "unknown member", body: `{"upstream":"up","uri_prefx":"file:///"}`, wantStatus: 400},
		{name: "two objects", body: `{"upstream":"up"}{"all":true}`, wantStatus: 400},
		{name: "not JSON", body: `upstream=up`, wantStatus: 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, r := range requests {
				alice.call(t, r[0], r[1])
			}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, g.admin+"/admin/invalidate", strings.NewReader(tt.body))
			req.Header.Set("X-Ctxgate-Admin", "1")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d %v, want %d", resp.StatusCode, doc, tt.wantStatus)
			}
			if tt.wantStatus != 200 && doc["error"] == nil {
				t.Errorf("refusal without an error message: %v", doc)
			}
			for name, r := range requests {
				want := "hit"
				if slices.Contains(tt.wantMiss, name) {
					want = "miss"
				}
				if a := alice.call(t, r[0], r[1]); a.cache != want {
					t.Errorf("%s after the invalidation: %q, want %q", name, a.cache, want)
				}
			}
		})
	}
}
