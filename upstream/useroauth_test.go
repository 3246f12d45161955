package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/ctxgate/ctxgate/config"
)

func testStore(t *testing.T, keys ...string) *GrantStore {
	t.Helper()
	if len(keys) == 0 {
		keys = []string{"grant-key-0123456789abcdefghijklmnopq"}
	}
	s, err := NewGrantStore(&config.Grants{Dir: filepath.Join(t.TempDir(), "grants"), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestGrantStore: grants are sealed, bound to their principal and
// upstream, and open under any configured key (rotation).
func TestGrantStore(t *testing.T) {
	s := testStore(t)
	tok := &oauth2.Token{AccessToken: "at-alice", RefreshToken: "rt-alice", Expiry: time.Unix(2e9, 0).UTC()}
	if err := s.Put("oidc:i#alice", "calendar", tok); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("oidc:i#alice", "calendar")
	if err != nil || got.RefreshToken != "rt-alice" || !got.Expiry.Equal(tok.Expiry) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	files, _ := filepath.Glob(filepath.Join(s.dir, "*"))
	raw, _ := os.ReadFile(files[0])
	if len(files) != 1 || strings.Contains(string(raw), "rt-alice") || strings.Contains(files[0], "alice") {
		t.Errorf("the stored grant is readable: %v %q", files, raw)
	}
	if fi, _ := os.Stat(s.dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("grants dir mode %v, want 0700", fi.Mode().Perm())
	}

	t.Run("another principal", func(t *testing.T) {
		if _, err := s.Get("oidc:i#bob", "calendar"); !errors.Is(err, ErrNoGrant) {
			t.Errorf("bob's grant: %v, want ErrNoGrant", err)
		}
		// alice's file copied under bob's name does not open.
		if err := os.WriteFile(s.path("oidc:i#bob", "calendar"), raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get("oidc:i#bob", "calendar"); err == nil {
			t.Error("a grant copied to another principal opened")
		}
	})
	t.Run("key rotation", func(t *testing.T) {
		rotated := &GrantStore{dir: s.dir}
		fresh := testStore(t, "new-grant-key-0123456789abcdefghijklm")
		rotated.keys = append(fresh.keys, s.keys...)
		if got, err := rotated.Get("oidc:i#alice", "calendar"); err != nil || got.AccessToken != "at-alice" {
			t.Errorf("old grant under the rotated keys: %v", err)
		}
		if _, err := fresh.Get("oidc:i#alice", "calendar"); err == nil {
			t.Error("opened without the key that sealed it")
		}
	})
	t.Run("delete", func(t *testing.T) {
		for _, want := range []bool{true, false} {
			if had, err := s.Delete("oidc:i#alice", "calendar"); had != want || err != nil {
				t.Errorf("Delete = %v, %v; want %v", had, err, want)
			}
		}
	})
}

// fakeProvider is a token endpoint for the connector's tests: it redeems
// code "good" only with verifier-bound PKCE, and refreshes "rt-*".
func fakeProvider(t *testing.T) (*httptest.Server, *[]url.Values) {
	var forms []url.Values
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		forms = append(forms, r.PostForm)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.PostForm.Get("grant_type") == "authorization_code" && r.PostForm.Get("code") == "good" && r.PostForm.Get("code_verifier") != "":
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-1", "refresh_token": "rt-1", "token_type": "Bearer", "expires_in": 3600})
		case r.PostForm.Get("grant_type") == "refresh_token" && r.PostForm.Get("refresh_token") == "rt-1":
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-2", "refresh_token": "rt-2", "token_type": "Bearer", "expires_in": 3600})
		default:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &forms
}

// TestConnector: links are single-use and bound to their principal; the
// state is single-use and bound to the browser; grants are refreshed on
// expiry and the rotated refresh token kept; a refused refresh forgets the
// grant.
func TestConnector(t *testing.T) {
	idp, forms := fakeProvider(t)
	now := time.Now()
	c, err := newConnector("calendar", &config.UserOAuth{
		AuthorizationEndpoint: "https://idp.example/auth", TokenEndpoint: idp.URL, ClientID: "cal", ClientSecret: "s",
		Scopes: []string{"calendar.read"}, RedirectURL: "https://gw.example/oauth/callback", Resource: "https://cal.example/mcp",
	}, testStore(t))
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return now }
	alice := &Caller{ID: "oidc:i#alice", Kind: "oidc"}
	ctx := context.Background()

	_, _, err = c.token(ctx, alice)
	ce, ok := errors.AsType[*CredentialError](err)
	if !ok || ce.Reason != ReasonNotConnected || ce.Link == "" {
		t.Fatalf("before connecting: %v", err)
	}
	if p, ok := c.LinkPrincipal(ce.Link); !ok || p != alice.ID {
		t.Fatalf("link names %q, want alice", p)
	}
	authURL, err := c.Begin(ce.Link, "browser-1")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(authURL)
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("resource") != "https://cal.example/mcp" || q.Get("redirect_uri") != "https://gw.example/oauth/callback" {
		t.Errorf("authorization URL %s lacks PKCE S256, resource or redirect_uri", authURL)
	}
	if _, err := c.Begin(ce.Link, "browser-2"); !errors.Is(err, ErrConnectLink) {
		t.Errorf("a spent link began again: %v", err)
	}
	state := q.Get("state")
	if _, err := c.Complete(ctx, state, "good", "browser-2"); !errors.Is(err, ErrConnectState) {
		t.Errorf("another browser completed the flow: %v", err)
	}
	// The failed attempt spent the state: the real browser must start over.
	if _, err := c.Complete(ctx, state, "good", "browser-1"); !errors.Is(err, ErrConnectState) {
		t.Errorf("a spent state completed: %v", err)
	}

	_, _, err = c.token(ctx, alice)
	ce, _ = errors.AsType[*CredentialError](err)
	authURL, _ = c.Begin(ce.Link, "browser-1")
	u, _ = url.Parse(authURL)
	principal, err := c.Complete(ctx, u.Query().Get("state"), "good", "browser-1")
	if err != nil || principal != alice.ID {
		t.Fatalf("Complete = %q, %v", principal, err)
	}
	if v := (*forms)[len(*forms)-1]; v.Get("code_verifier") == "" || v.Get("resource") != "https://cal.example/mcp" {
		t.Errorf("code redeemed without the PKCE verifier or resource: %v", v)
	}
	if tok, d, err := c.token(ctx, alice); err != nil || tok != "at-1" || d.Mode != "user_oauth" {
		t.Fatalf("after connecting: %q %v", tok, err)
	}
	if _, _, err := c.token(ctx, &Caller{ID: "oidc:i#bob", Kind: "oidc"}); !errors.Is(err, ErrCredential) {
		t.Errorf("bob used alice's grant: %v", err)
	}
	if _, _, err := c.token(ctx, &Caller{ID: "anonymous", Kind: "anonymous"}); err == nil {
		t.Error("an anonymous caller may connect an account everyone would share")
	}

	c.mu.Lock()
	c.live[alice.ID].Expiry = time.Unix(1, 0) // long past: x/oauth2 judges expiry by its own clock
	c.mu.Unlock()
	if tok, _, err := c.token(ctx, alice); err != nil || tok != "at-2" {
		t.Fatalf("after expiry: %q %v, want the refreshed at-2", tok, err)
	}
	if stored, _ := c.store.Get(alice.ID, "calendar"); stored.RefreshToken != "rt-2" {
		t.Errorf("stored refresh token %q, want the rotated rt-2", stored.RefreshToken)
	}

	c.mu.Lock()
	c.live[alice.ID].Expiry = time.Unix(1, 0) // long past: x/oauth2 judges expiry by its own clock
	c.live[alice.ID].RefreshToken = "revoked"
	c.mu.Unlock()
	if _, _, err := c.token(ctx, alice); !errors.As(err, &ce) || ce.Reason != ReasonNotConnected {
		t.Errorf("a refused refresh: %v, want not connected", err)
	}
	if _, err := c.store.Get(alice.ID, "calendar"); !errors.Is(err, ErrNoGrant) {
		t.Errorf("a refused grant is kept: %v", err)
	}

	t.Run("links expire", func(t *testing.T) {
		_, _, err := c.token(ctx, alice)
		ce, _ := errors.AsType[*CredentialError](err)
		now = now.Add(connectTTL)
		if _, err := c.Begin(ce.Link, "b"); !errors.Is(err, ErrConnectLink) {
			t.Errorf("an expired link began: %v", err)
		}
	})
}
