package upstream_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// TestRedirectsNotFollowed: neither an upstream nor its token endpoint can
// send the gateway elsewhere with a 3xx (SSRF): the upstream's 307 comes
// back as it is, and a token endpoint's 302 fails the token fetch. The
// redirect target receives nothing.
func TestRedirectsNotFollowed(t *testing.T) {
	var target seen
	elsewhere := httptest.NewServer(target.handler(func(w http.ResponseWriter) {}))
	defer elsewhere.Close()
	redirect := func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/internal", http.StatusTemporaryRedirect)
	}
	up := httptest.NewServer(http.HandlerFunc(redirect))
	defer up.Close()
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/token", http.StatusFound)
	}))
	defer idp.Close()
	plain := httptest.NewServer(http.HandlerFunc(redirect))
	defer plain.Close()

	pool, err := upstream.NewPool([]config.Upstream{
		{Name: "plain", URL: plain.URL, MaxIdleConns: 1},
		{Name: "oauth", URL: up.URL, MaxIdleConns: 1, Credentials: &config.Credentials{
			OAuth2ClientCredentials: &config.OAuth2ClientCredentials{TokenURL: idp.URL + "/token", ClientID: "gw", ClientSecret: "s"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, plain.URL, strings.NewReader("{}"))
	resp, err := pool.Get("plain").Transport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("upstream 307: transport returned %s, want the 307 itself", resp.Status)
	}
	req, _ = http.NewRequestWithContext(t.Context(), http.MethodPost, up.URL, strings.NewReader("{}"))
	if resp, err := pool.Get("oauth").Transport.RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Errorf("token endpoint 302: request sent (%s), want the token fetch to fail", resp.Status)
	}
	if n := target.count(); n != 0 {
		t.Errorf("the redirect target received %d requests, want 0", n)
	}
}
