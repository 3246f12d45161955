package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// browser is the test's browser step: an HTTP client with a cookie jar
// that follows a connect URL through the provider's sign-in. rewrite, when
// set, changes the request to the provider's authorization endpoint (an
// attacker tampering with state or the PKCE challenge).
type browser struct {
	t       *testing.T
	client  *http.Client
	rewrite func(*url.URL)
	authURL string
}

func newBrowser(t *testing.T, authURL string, rewrite func(*url.URL)) *browser {
	jar, _ := cookiejar.New(nil)
	b := &browser{t: t, rewrite: rewrite, authURL: authURL}
	b.client = &http.Client{Jar: jar, Transport: b}
	return b
}

func (b *browser) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.rewrite != nil && strings.HasPrefix(r.URL.String(), b.authURL+"?") {
		r = r.Clone(r.Context())
		b.rewrite(r.URL)
	}
	return http.DefaultTransport.RoundTrip(r)
}

var formAction = regexp.MustCompile(`<form method="post" action="([^"]+)"`)

// connect follows link as user: the gateway's confirm page, the provider's
// sign-in form, and back to the gateway's callback. It returns the last
// page's status and text.
func (b *browser) connect(link, user, password string) (int, string) {
	t := b.t
	t.Helper()
	resp, err := b.client.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, string(page)
	}
	u, _ := url.Parse(link)
	resp, err = b.client.PostForm(link, url.Values{"link": {u.Query().Get("link")}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	m := formAction.FindStringSubmatch(string(page))
	if resp.StatusCode != http.StatusOK || m == nil {
		return resp.StatusCode, string(page)
	}
	login, _ := resp.Request.URL.Parse(m[1])
	resp, err = b.client.PostForm(login.String(), url.Values{"username": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ = io.ReadAll(resp.Body)
	return resp.StatusCode, string(page)
}

func (i *idp) grantCounts(t *testing.T) map[string]int {
	t.Helper()
	resp, err := http.Get(i.Issuer + "/test/grant-counts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]int{}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// connectLink is the connect URL of a -32042 or -31041 answer.
var connectLinkRE = regexp.MustCompile(`https?://[^ ]+/oauth/connect/calendar\?link=[A-Za-z0-9_-]+`)

// TestUserOAuth: a user connects their own account at a third-party
// upstream from inside their MCP client: the Go SDK client gets the URL
// elicitation (-32042), the browser step signs in at the real provider
// (authorization code + PKCE), the grant is stored sealed, used and
// refreshed; another principal cannot use it; state and PKCE tampering,
// a replayed link and a callback from another browser are refused; the
// user and the operator can revoke it.
func TestUserOAuth(t *testing.T) {
	provider := startOIDCProvider(t, `{
		"clients":[
			{"client_id":"tool","client_secret":"tool-secret","grant_types":["password"]},
			{"client_id":"calendar-app","client_secret":"calendar-secret","scopes":["calendar.read"],
			 "grant_types":["authorization_code","refresh_token"],
			 "redirect_uris":["http://127.0.0.1/oauth/callback"],"application_type":"native"}],
		"resources":{"https://calendar.test/mcp":{"ttl":5},"*":{}},
		"users":{"alice":"alice-pw","bob":"bob-pw"}}`)
	rec := startRecorder(t, startEverything(t))
	grants := t.TempDir()
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth:
  oidc: [{issuer: %q, token_type: at+jwt}]
upstreams:
  - name: calendar
    url: %q
    identity_headers: true
    credentials:
      user_oauth:
        authorization_endpoint: %q
        token_endpoint: %q
        client_id: calendar-app
        client_secret_file: %q
        scopes: [calendar.read]
        resource: "https://calendar.test/mcp"
grants: {dir: %q, keys: ["e2e-grant-key-0123456789abcdefghijkl"]}
`, provider.Issuer, rec.URL, provider.Issuer+"/auth", provider.TokenEndpoint, writeSecret(t, "calendar-secret"), grants))
	route := gw.URL + "/mcp/calendar"
	waitFor(t, "the gateway to load the issuer's keys", readyDeadline, func() bool {
		resp, err := http.Get(gw.Admin + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var detail struct {
			OIDCKeysLoaded bool `json:"oidc_keys_loaded"`
		}
		return json.NewDecoder(resp.Body).Decode(&detail) == nil && detail.OIDCKeysLoaded
	})
	own := map[string]string{
		"alice": provider.userToken(t, "tool", "tool-secret", "alice", "alice-pw", route),
		"bob":   provider.userToken(t, "tool", "tool-secret", "bob", "bob-pw", route),
	}
	sdkClient := func(user string) (*mcp.ClientSession, error) {
		c := mcp.NewClient(&mcp.Implementation{Name: "e2e-" + user, Version: "1"}, &mcp.ClientOptions{
			Capabilities: &mcp.ClientCapabilities{Elicitation: &mcp.ElicitationCapabilities{URL: &mcp.URLElicitationCapabilities{}}},
			ElicitationHandler: func(ctx context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
				return &mcp.ElicitResult{Action: "accept"}, nil
			},
		})
		return c.Connect(ctx(t), &mcp.StreamableClientTransport{
			Endpoint: route, HTTPClient: &http.Client{Transport: &bearer{token: own[user], base: http.DefaultTransport}},
		}, nil)
	}

	// 1. Not connected: the SDK client is told to visit the connect page.
	_, err := sdkClient("alice")
	var rpcErr *jsonrpc.Error
	if !errors.As(err, &rpcErr) || rpcErr.Code != -32042 {
		t.Fatalf("connect before the account is linked: %v, want URLElicitationRequiredError -32042\n%s", err, gw.stderr.String())
	}
	var data struct {
		Elicitations []struct {
			Mode, ElicitationID, URL, Message string
		} `json:"elicitations"`
	}
	if err := json.Unmarshal(rpcErr.Data, &data); err != nil || len(data.Elicitations) != 1 || data.Elicitations[0].Mode != "url" {
		t.Fatalf("-32042 data = %s", rpcErr.Data)
	}
	link := data.Elicitations[0].URL
	if !strings.HasPrefix(link, gw.URL+"/oauth/connect/calendar?link=") {
		t.Fatalf("elicitation URL %q is not the gateway's connect page", link)
	}
	if rec.count() != 0 {
		t.Fatalf("the upstream received %d requests before the user connected", rec.count())
	}
	waitFor(t, "the access record of the -32042 answer", readyDeadline, func() bool {
		return strings.Contains(gw.stderr.String(), `"rpc_error":-32042`)
	})
	if strings.Contains(gw.stderr.String(), data.Elicitations[0].ElicitationID) {
		t.Error("the single-use connect link was written to the log")
	}

	// 2. The browser step: alice confirms and signs in at the provider.
	status, page := newBrowser(t, provider.Issuer+"/auth", nil).connect(link, "alice", "alice-pw")
	if status != http.StatusOK || !strings.Contains(page, "connected") {
		t.Fatalf("browser step: %d %s\n%s", status, page, gw.stderr.String())
	}
	files, _ := filepath.Glob(filepath.Join(grants, "*.grant"))
	if len(files) != 1 {
		t.Fatalf("%d grant files, want 1", len(files))
	}
	sealed, _ := os.ReadFile(files[0])
	if strings.Contains(string(sealed), "alice") || strings.Contains(string(sealed), "eyJ") || strings.Contains(filepath.Base(files[0]), "alice") {
		t.Error("the stored grant is readable without the key")
	}

	t.Run("the link is single-use", func(t *testing.T) {
		if status, _ := newBrowser(t, provider.Issuer+"/auth", nil).connect(link, "bob", "bob-pw"); status != http.StatusBadRequest {
			t.Errorf("a spent link answered %d, want 400", status)
		}
	})

	// 3. Used and refreshed: the upstream sees alice's own calendar token.
	cs, err := sdkClient("alice")
	if err != nil {
		t.Fatalf("connect after linking: %v\n%s", err, gw.stderr.String())
	}
	if _, err := cs.ListTools(ctx(t), nil); err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	cs.Close()
	for i, r := range rec.requests() {
		sent := strings.TrimPrefix(r.header.Get("Authorization"), "Bearer ")
		if sent == own["alice"] || sent == "" {
			t.Fatalf("upstream request %d carried %q, want alice's calendar token", i, sent)
		}
		c := claims(t, sent)
		if c["sub"] != "alice" || c["aud"] != "https://calendar.test/mcp" || c["client_id"] != "calendar-app" {
			t.Errorf("upstream request %d: token sub %v aud %v client %v", i, c["sub"], c["aud"], c["client_id"])
		}
	}
	// The provider's tokens live 5s, inside x/oauth2's 10s expiry margin:
	// every use after the code exchange is a refresh.
	if n := provider.grantCounts(t)["refresh_token"]; n == 0 {
		t.Error("the grant was never refreshed")
	}
	if resealed, _ := os.ReadFile(files[0]); string(resealed) == string(sealed) {
		t.Error("the refreshed grant was not stored")
	}

	bobLink := func(t *testing.T) string {
		t.Helper()
		resp := (&rpc{url: route, header: http.Header{"Authorization": {"Bearer " + own["bob"]}}}).post(t, initializeBody)
		e := decodeError(t, resp)
		link := connectLinkRE.FindString(e.Error.Message)
		if resp.StatusCode != http.StatusOK || e.Error.Code != -31041 || link == "" {
			t.Fatalf("bob without elicitation capability: %s %d %q, want -31041 with the connect URL", resp.Status, e.Error.Code, e.Error.Message)
		}
		return link
	}
	t.Run("another principal cannot use the grant", func(t *testing.T) {
		before := rec.count()
		bobLink(t)
		if rec.count() != before {
			t.Error("bob's request reached the upstream")
		}
	})
	bobFiles := func() int { f, _ := filepath.Glob(filepath.Join(grants, "*.grant")); return len(f) - 1 }

	t.Run("a cross-site page cannot skip the confirmation", func(t *testing.T) {
		link := bobLink(t)
		u, _ := url.Parse(link)
		req, _ := http.NewRequest(http.MethodPost, link, strings.NewReader(url.Values{"link": {u.Query().Get("link")}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "https://evil.example")
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("cross-site POST to the connect page: %s, want 403", resp.Status)
		}
	})
	t.Run("tampered state is refused", func(t *testing.T) {
		b := newBrowser(t, provider.Issuer+"/auth", func(u *url.URL) {
			q := u.Query()
			q.Set("state", q.Get("state")+"x")
			u.RawQuery = q.Encode()
		})
		if status, page := b.connect(bobLink(t), "bob", "bob-pw"); status != http.StatusBadRequest || bobFiles() != 0 {
			t.Errorf("tampered state: %d %s, %d grants for bob", status, page, bobFiles())
		}
	})
	t.Run("tampered PKCE challenge is refused", func(t *testing.T) {
		b := newBrowser(t, provider.Issuer+"/auth", func(u *url.URL) {
			q := u.Query()
			q.Set("code_challenge", "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM") // an attacker's verifier
			u.RawQuery = q.Encode()
		})
		if status, page := b.connect(bobLink(t), "bob", "bob-pw"); status != http.StatusBadRequest || bobFiles() != 0 {
			t.Errorf("tampered PKCE: %d %s, %d grants for bob", status, page, bobFiles())
		}
		waitFor(t, "the provider's refusal in the gateway log", readyDeadline, func() bool {
			return strings.Contains(gw.stderr.String(), "token service error invalid_grant")
		})
	})
	t.Run("a callback in another browser is refused", func(t *testing.T) {
		var callback string
		b := newBrowser(t, provider.Issuer+"/auth", nil)
		b.client.CheckRedirect = func(r *http.Request, _ []*http.Request) error {
			if r.URL.Path == "/oauth/callback" {
				callback = r.URL.String()
				return http.ErrUseLastResponse
			}
			return nil
		}
		b.connect(bobLink(t), "bob", "bob-pw")
		if callback == "" {
			t.Fatal("the provider never redirected to the callback")
		}
		resp, err := http.Get(callback) // no cookie: not the browser that started
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || bobFiles() != 0 {
			t.Errorf("callback without the browser's cookie: %s, %d grants for bob", resp.Status, bobFiles())
		}
	})

	t.Run("bob connects; the operator revokes", func(t *testing.T) {
		if status, page := newBrowser(t, provider.Issuer+"/auth", nil).connect(bobLink(t), "bob", "bob-pw"); status != http.StatusOK {
			t.Fatalf("bob's browser step: %d %s", status, page)
		}
		c := &rpc{url: route, header: http.Header{"Authorization": {"Bearer " + own["bob"]}}}
		c.initialize(t)
		principal := url.PathEscape("oidc:" + provider.Issuer + "#bob")
		for i, want := range []int{http.StatusOK, http.StatusNotFound} {
			req, _ := http.NewRequest(http.MethodDelete, gw.Admin+"/admin/grants/"+principal+"/calendar", nil)
			req.Header.Set("X-Ctxgate-Admin", "1") // the admin listener's CSRF defence
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("DELETE %d: %s, want %d", i, resp.Status, want)
			}
		}
		bobLink(t) // connect required again
	})

	t.Run("alice disconnects", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, gw.URL+"/oauth/disconnect/calendar", nil)
		req.Header.Set("Authorization", "Bearer "+own["alice"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"disconnected":true`) {
			t.Fatalf("disconnect: %s %s", resp.Status, body)
		}
		if _, err := sdkClient("alice"); !errors.As(err, &rpcErr) || rpcErr.Code != -32042 {
			t.Errorf("after disconnect: %v, want -32042 again", err)
		}
		if f, _ := filepath.Glob(filepath.Join(grants, "*.grant")); len(f) != 0 {
			t.Errorf("%d grant files left", len(f))
		}
	})
}
