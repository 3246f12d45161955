package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// /admin/cache: stats, and purges by upstream, method and everything.
func TestCacheAdmin(t *testing.T) {
	_, g := startCaching(t)
	alice := g.connect(t, "alice-key", `{}`)
	admin := func(method, query string, header http.Header) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), method, g.admin+"/admin/cache"+query, nil)
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&doc)
		return resp.StatusCode, doc
	}
	tests := []struct {
		name, method, query string
		// crossSite leaves out X-Ctxgate-Admin, as a cross-site form or
		// text/plain POST would.
		crossSite  bool
		wantStatus int
		wantMiss   []string
	}{
		{name: "POST without X-Ctxgate-Admin", method: http.MethodPost, crossSite: true, wantStatus: 403},
		{name: "DELETE without X-Ctxgate-Admin", method: http.MethodDelete, crossSite: true, wantStatus: 403},
		{name: "stats", method: http.MethodGet, wantStatus: 200},
		{name: "unknown upstream", method: http.MethodDelete, query: "?upstream=nope", wantStatus: 400},
		{name: "unknown method", method: http.MethodDelete, query: "?method=tools/lsit", wantStatus: 400},
		{name: "one method", method: http.MethodPost, query: "?upstream=up&method=tools/list", wantStatus: 200, wantMiss: []string{"tools/list"}},
		{name: "one upstream", method: http.MethodDelete, query: "?upstream=up", wantStatus: 200, wantMiss: []string{"tools/list", "resources/list"}},
		{name: "everything", method: http.MethodDelete, wantStatus: 200, wantMiss: []string{"tools/list", "resources/list"}},
		{name: "PUT", method: http.MethodPut, wantStatus: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			alice.call(t, "tools/list", `{}`)
			alice.call(t, "resources/list", `{}`)
			header := http.Header{"X-Ctxgate-Admin": {"1"}}
			if tt.crossSite {
				header = http.Header{"Content-Type": {"text/plain"}}
			}
			status, doc := admin(tt.method, tt.query, header)
			if status != tt.wantStatus {
				t.Fatalf("status %d %v, want %d", status, doc, tt.wantStatus)
			}
			for _, m := range []string{"tools/list", "resources/list"} {
				want := "hit"
				if strings.Contains(strings.Join(tt.wantMiss, " "), m) {
					want = "miss"
				}
				if a := alice.call(t, m, `{}`); a.cache != want {
					t.Errorf("%s after purge: %q, want %q", m, a.cache, want)
				}
			}
		})
	}
	if _, doc := admin(http.MethodGet, "", nil); doc["hits"] == nil || doc["max_bytes"] != float64(4<<20) {
		t.Errorf("stats document %v", doc)
	}
}
