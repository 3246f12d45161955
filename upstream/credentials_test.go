package upstream_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// seen records the requests a test upstream or token endpoint received.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
	form []map[string][]string
}

func (s *seen) handler(respond func(w http.ResponseWriter)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Clone(r.Context()))
		s.form = append(s.form, r.PostForm)
		s.mu.Unlock()
		respond(w)
	}
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

func get(t *testing.T, up *upstream.Upstream) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, up.URL.String(), strings.NewReader("{}"))
	resp, err := up.Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func TestHeaderCredential(t *testing.T) {
	var got seen
	srv := httptest.NewServer(got.handler(func(w http.ResponseWriter) {}))
	defer srv.Close()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("upstream-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := upstream.NewPool([]config.Upstream{{Name: "a", URL: srv.URL, MaxIdleConns: 4, Credentials: &config.Credentials{
		Header: &config.HeaderCredential{Name: "x-api-key", ValueFile: keyFile},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	get(t, pool.Get("a"))
	if v := got.reqs[0].Header.Get("X-Api-Key"); v != "upstream-key" {
		t.Errorf("upstream got X-API-Key %q, want the file's value without its newline", v)
	}
}

func TestCredentialStartupErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		creds *config.Credentials
		want  string
	}{
		{name: "missing header file", creds: &config.Credentials{Header: &config.HeaderCredential{Name: "X", ValueFile: "/nonexistent/key"}}, want: "upstreams[0].credentials.header.value_file: read secret"},
		{name: "empty header file", creds: &config.Credentials{Header: &config.HeaderCredential{Name: "X", ValueFile: empty}}, want: "is empty"},
		{name: "missing client secret file", creds: &config.Credentials{OAuth2ClientCredentials: &config.OAuth2ClientCredentials{TokenURL: "http://127.0.0.1:1/token", ClientID: "gw", ClientSecretFile: "/nonexistent/secret"}}, want: "upstreams[0].credentials.oauth2_client_credentials.client_secret_file: read secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := upstream.NewPool([]config.Upstream{{Name: "a", URL: "http://127.0.0.1:1/", Credentials: tt.creds}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewPool error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// TestClientCredentials: the gateway gets a token once with its own client
// credentials (and resource indicator), reuses it, and sends it upstream.
func TestClientCredentials(t *testing.T) {
	var tokenReqs, upstreamReqs seen
	idp := httptest.NewServer(tokenReqs.handler(func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "gateway-token", "token_type": "Bearer", "expires_in": 3600})
	}))
	defer idp.Close()
	up := httptest.NewServer(upstreamReqs.handler(func(w http.ResponseWriter) {}))
	defer up.Close()

	pool, err := upstream.NewPool([]config.Upstream{{Name: "a", URL: up.URL, MaxIdleConns: 4, Credentials: &config.Credentials{
		OAuth2ClientCredentials: &config.OAuth2ClientCredentials{
			TokenURL: idp.URL + "/token", ClientID: "gw", ClientSecret: "gw-secret",
			Scopes: []string{"upstream.read"}, Resource: up.URL,
		},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	get(t, pool.Get("a"))
	get(t, pool.Get("a"))

	if n := tokenReqs.count(); n != 1 {
		t.Errorf("token endpoint called %d times, want 1 (the token is reused until it expires)", n)
	}
	form := tokenReqs.form[0]
	want := map[string][]string{"grant_type": {"client_credentials"}, "scope": {"upstream.read"}, "resource": {up.URL}}
	for k, v := range want {
		if diff := cmp.Diff(v, form[k]); diff != "" {
			t.Errorf("token request %s (-want +got):\n%s", k, diff)
		}
	}
	for i, r := range upstreamReqs.reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer gateway-token" {
			t.Errorf("upstream request %d Authorization = %q, want the gateway's token", i, got)
		}
	}
}
