package identity

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAuthenticateHeaders: whatever the Authorization and X-API-Key
// headers hold, authentication does not panic, and accepts a request only
// for a configured key presented whole (never a prefix, a case variant or
// a key with other bytes around it).
func FuzzAuthenticateHeaders(f *testing.F) {
	for _, seed := range [][2]string{
		{"Bearer " + testKeyCI, ""},
		{"bearer  " + testKeyDev + " ", ""},
		{"Bearer", ""},
		{"Basic " + testKeyCI, ""},
		{"Bearer a.b.c", ""},
		{"Bearer " + strings.Repeat("k", 5000), ""},
		{"", testKeyCI},
		{"Bearer " + testKeyCI + "\x00", ""},
		{"Bearer \u00a0" + testKeyCI, ""},
	} {
		f.Add(seed[0], seed[1])
	}
	a, err := NewAuthenticator(testAuth(false, "authorization"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, authz, xkey string) {
		r := httptest.NewRequest("POST", "/mcp/x", nil)
		if authz != "" {
			r.Header["Authorization"] = []string{authz}
		}
		if xkey != "" {
			r.Header["X-Api-Key"] = []string{xkey}
		}
		p, err := a.Authenticate(r, "http://127.0.0.1/mcp/x")
		if err != nil {
			return
		}
		scheme, cred, _ := strings.Cut(authz, " ")
		cred = strings.TrimSpace(cred)
		if !strings.EqualFold(scheme, "Bearer") || (cred != testKeyCI && cred != testKeyDev) {
			t.Fatalf("accepted Authorization %q, X-API-Key %q as %v", authz, xkey, p)
		}
		if want := map[string]string{testKeyCI: "api_key:ci", testKeyDev: "api_key:dev"}[cred]; p.ID != want {
			t.Fatalf("key %q authenticated as %q, want %q", cred, p.ID, want)
		}
	})
}
