package upstream_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// fakeJWT is an unsigned JWT-shaped token with the given claims: what the
// upstream package reads of an issued token is its payload.
func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"ES256","typ":"at+jwt"}`)) + "." + enc.EncodeToString(b) + ".c2ln"
}

// exchangeIdP is a token endpoint speaking RFC 8693: it exchanges a subject
// token "user:<name>" for a token naming that user, and refuses others.
type exchangeIdP struct {
	*httptest.Server
	seen  seen
	mu    sync.Mutex
	fails map[string]string // subject token -> error code to answer
}

func newExchangeIdP(t *testing.T) *exchangeIdP {
	t.Helper()
	x := &exchangeIdP{fails: map[string]string{}}
	x.Server = httptest.NewServer(x.seen.handler(func(w http.ResponseWriter) {}))
	x.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.seen.handler(func(http.ResponseWriter) {})(w, r)
		w.Header().Set("Content-Type", "application/json")
		if id, secret, _ := r.BasicAuth(); r.PostForm.Get("client_assertion") == "" && (id != "gw" || secret != "gw-secret") {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"secret mismatch for gw"}`))
			return
		}
		if r.PostForm.Get("grant_type") == "client_credentials" {
			_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "gateway-own-token", "token_type": "Bearer", "expires_in": 300})
			return
		}
		subject := r.PostForm.Get("subject_token")
		x.mu.Lock()
		code := x.fails[subject]
		x.mu.Unlock()
		user, ok := strings.CutPrefix(subject, "user:")
		if code != "" || !ok {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"invalid_grant","error_description":"subject token ` + subject + ` is revoked"}`))
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"access_token":      fakeJWT(map[string]any{"sub": user, "aud": r.PostForm.Get("audience"), "act": map[string]any{"sub": "gw"}}),
			"issued_token_type": config.TokenTypeAccessToken,
			"token_type":        "Bearer",
			"expires_in":        300,
		})
	})
	t.Cleanup(x.Close)
	return x
}

func (x *exchangeIdP) fail(subject, code string) {
	x.mu.Lock()
	x.fails[subject] = code
	x.mu.Unlock()
}

func exchangePool(t *testing.T, idp *exchangeIdP, upstreamURL string, edit func(*config.TokenExchange)) *upstream.Upstream {
	t.Helper()
	te := &config.TokenExchange{
		TokenURL: idp.URL + "/token", ClientID: "gw", ClientSecret: "gw-secret",
		Audience: "https://crm.internal", Resource: upstreamURL, Scopes: []string{"crm.read"},
		SubjectTokenType: config.TokenTypeAccessToken, RequestedTokenType: config.TokenTypeAccessToken,
		ExpiryMargin: config.DefaultExpiryMargin,
	}
	if edit != nil {
		edit(te)
	}
	pool, err := upstream.NewPool([]config.Upstream{{Name: "crm", URL: upstreamURL, MaxIdleConns: 4, Credentials: &config.Credentials{TokenExchange: te}}})
	if err != nil {
		t.Fatal(err)
	}
	return pool.Get("crm")
}

func callAs(t *testing.T, up *upstream.Upstream, c *upstream.Caller) error {
	t.Helper()
	ctx := upstream.WithCaller(t.Context(), c)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, up.URL.String(), strings.NewReader("{}"))
	resp, err := up.Transport.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func oidcCaller(name string) *upstream.Caller {
	return &upstream.Caller{ID: "oidc:https://idp#" + name, Kind: "oidc", AccessToken: "user:" + name}
}

// TestTokenExchange: each caller's token is exchanged (RFC 8693) for a
// token naming that caller, once while it is valid, never shared, and the
// caller's own token never reaches the upstream.
func TestTokenExchange(t *testing.T) {
	idp := newExchangeIdP(t)
	var got seen
	srv := httptest.NewServer(got.handler(func(http.ResponseWriter) {}))
	defer srv.Close()
	up := exchangePool(t, idp, srv.URL, nil)

	alice, bob := oidcCaller("alice"), oidcCaller("bob")
	for _, c := range []*upstream.Caller{alice, bob, alice, bob} {
		if err := callAs(t, up, c); err != nil {
			t.Fatal(err)
		}
	}
	if n := idp.seen.count(); n != 2 {
		t.Errorf("token endpoint called %d times, want 2 (one exchange per user while the token is valid)", n)
	}
	form := idp.seen.form[0]
	want := map[string][]string{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":        {"user:alice"},
		"subject_token_type":   {config.TokenTypeAccessToken},
		"requested_token_type": {config.TokenTypeAccessToken},
		"audience":             {"https://crm.internal"},
		"resource":             {srv.URL},
		"scope":                {"crm.read"},
	}
	for k, v := range want {
		if diff := cmp.Diff(v, form[k]); diff != "" {
			t.Errorf("exchange request %s (-want +got):\n%s", k, diff)
		}
	}
	for i, r := range got.reqs {
		authz := r.Header.Get("Authorization")
		if strings.Contains(authz, "user:") {
			t.Fatalf("upstream request %d carried the caller's own token: %q", i, authz)
		}
		wantSub := []string{"alice", "bob"}[i%2]
		claims := decodePayload(t, strings.TrimPrefix(authz, "Bearer "))
		if claims["sub"] != wantSub || claims["aud"] != "https://crm.internal" {
			t.Errorf("upstream request %d: token for sub %v aud %v, want %s and the upstream's audience", i, claims["sub"], claims["aud"], wantSub)
		}
	}
	d := alice.Delegations()
	if len(d) != 1 || d[0].Subject != "alice" || d[0].Act["sub"] != "gw" || d[0].Mode != "token_exchange" {
		t.Errorf("alice's delegation = %+v, want sub alice, act {sub: gw}", d)
	}

	t.Run("a new subject token is exchanged anew", func(t *testing.T) {
		before := idp.seen.count()
		again := oidcCaller("alice")
		again.AccessToken = "user:alice" // same user...
		again.ID = alice.ID
		if err := callAs(t, up, again); err != nil {
			t.Fatal(err)
		}
		fresh := &upstream.Caller{ID: alice.ID, Kind: "oidc", AccessToken: "user:alice2"} // ...after a new login
		if err := callAs(t, up, fresh); err != nil {
			t.Fatal(err)
		}
		if n := idp.seen.count() - before; n != 1 {
			t.Errorf("%d exchanges, want 1: the same token is cached, a new one exchanged", n)
		}
	})

	t.Run("concurrent requests share one exchange", func(t *testing.T) {
		before := idp.seen.count()
		carol := oidcCaller("carol")
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				if err := callAs(t, up, carol); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := idp.seen.count() - before; n != 1 {
			t.Errorf("%d exchanges for one caller's concurrent requests, want 1", n)
		}
	})
}

func decodePayload(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", token)
	}
	b, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTokenExchangeRefusals: every failure is a *CredentialError, with the
// token service's error code and never its description, and nothing
// reaches the upstream.
func TestTokenExchangeRefusals(t *testing.T) {
	idp := newExchangeIdP(t)
	idp.fail("user:mallory", "invalid_grant")
	var got seen
	srv := httptest.NewServer(got.handler(func(http.ResponseWriter) {}))
	defer srv.Close()

	tests := []struct {
		name       string
		edit       func(*config.TokenExchange)
		caller     *upstream.Caller
		wantReason string
		wantCode   string
	}{
		{name: "revoked subject token", caller: oidcCaller("mallory"), wantReason: upstream.ReasonRefused, wantCode: "invalid_grant"},
		{name: "wrong client secret", edit: func(te *config.TokenExchange) { te.ClientSecret = "wrong" }, caller: oidcCaller("alice"), wantReason: upstream.ReasonFailed, wantCode: "invalid_client"},
		{name: "api key principal", caller: &upstream.Caller{ID: "api_key:ci", Kind: "api_key"}, wantReason: upstream.ReasonNoToken},
		{name: "anonymous", caller: &upstream.Caller{ID: "anonymous", Kind: "anonymous"}, wantReason: upstream.ReasonNoToken},
		{name: "no caller at all", wantReason: upstream.ReasonNoToken},
		{name: "token service down", edit: func(te *config.TokenExchange) { te.TokenURL = "http://127.0.0.1:1/token" }, caller: oidcCaller("alice"), wantReason: upstream.ReasonFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := exchangePool(t, idp, srv.URL, tt.edit)
			before := got.count()
			err := callAs(t, up, tt.caller)
			ce, ok := errors.AsType[*upstream.CredentialError](err)
			if !ok || !errors.Is(err, upstream.ErrCredential) {
				t.Fatalf("error = %v, want a *CredentialError", err)
			}
			if ce.Reason != tt.wantReason || ce.Code != tt.wantCode {
				t.Errorf("reason %q code %q, want %q %q", ce.Reason, ce.Code, tt.wantReason, tt.wantCode)
			}
			if strings.Contains(err.Error(), "revoked") || strings.Contains(err.Error(), "mismatch") {
				t.Errorf("error carries the token service's description: %v", err)
			}
			if _, err := up.Prepare(upstream.WithCaller(t.Context(), tt.caller)); !errors.Is(err, upstream.ErrCredential) {
				t.Errorf("Prepare = %v, want the same refusal", err)
			}
			if n := got.count() - before; n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
		})
	}
}

// TestTokenExchangeFallback: with fallback client_credentials a caller with
// no token reaches the upstream with the gateway's own token, naming no one.
func TestTokenExchangeFallback(t *testing.T) {
	idp := newExchangeIdP(t)
	var got seen
	srv := httptest.NewServer(got.handler(func(http.ResponseWriter) {}))
	defer srv.Close()
	up := exchangePool(t, idp, srv.URL, func(te *config.TokenExchange) { te.Fallback = config.FallbackClientCredentials })
	ci := &upstream.Caller{ID: "api_key:ci", Kind: "api_key"}
	if err := callAs(t, up, ci); err != nil {
		t.Fatal(err)
	}
	if err := callAs(t, up, oidcCaller("alice")); err != nil {
		t.Fatal(err)
	}
	if a := got.reqs[0].Header.Get("Authorization"); a != "Bearer gateway-own-token" {
		t.Errorf("fallback Authorization = %q, want the gateway's client credentials token", a)
	}
	if claims := decodePayload(t, strings.TrimPrefix(got.reqs[1].Header.Get("Authorization"), "Bearer ")); claims["sub"] != "alice" {
		t.Errorf("an oidc caller still gets an exchanged token; got sub %v", claims["sub"])
	}
	if d := ci.Delegations(); len(d) != 1 || d[0].Mode != "client_credentials" {
		t.Errorf("fallback delegation = %+v, want mode client_credentials", d)
	}
}

// TestTokenExchangeClientAssertion: with client_assertion the gateway signs
// a fresh private_key_jwt for every request (RFC 7523) and sends no secret.
func TestTokenExchangeClientAssertion(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	idp := newExchangeIdP(t)
	var got seen
	srv := httptest.NewServer(got.handler(func(http.ResponseWriter) {}))
	defer srv.Close()
	up := exchangePool(t, idp, srv.URL, func(te *config.TokenExchange) {
		te.ClientSecret = ""
		te.ClientAssertion = &config.ClientAssertion{KeyFile: keyFile, KeyID: "gw-1", Audience: idp.URL + "/token"}
	})
	for _, c := range []*upstream.Caller{oidcCaller("alice"), oidcCaller("bob")} {
		if err := callAs(t, up, c); err != nil {
			t.Fatal(err)
		}
	}
	jtis := map[string]bool{}
	for i, f := range idp.seen.form {
		form := url.Values(f)
		if form.Get("client_secret") != "" || idp.seen.reqs[i].Header.Get("Authorization") != "" {
			t.Errorf("request %d sent a client secret", i)
		}
		if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" || form.Get("client_id") != "gw" {
			t.Errorf("request %d: client_assertion_type %q client_id %q", i, form.Get("client_assertion_type"), form.Get("client_id"))
		}
		tok, err := jwt.ParseSigned(form.Get("client_assertion"), []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var claims jwt.Claims
		if err := tok.Claims(&key.PublicKey, &claims); err != nil {
			t.Fatalf("assertion signature: %v", err)
		}
		if err := claims.Validate(jwt.Expected{Issuer: "gw", Subject: "gw", AnyAudience: jwt.Audience{idp.URL + "/token"}}); err != nil {
			t.Errorf("assertion claims: %v", err)
		}
		if tok.Headers[0].KeyID != "gw-1" || jtis[claims.ID] || claims.ID == "" {
			t.Errorf("assertion kid %q jti %q (repeated: %v)", tok.Headers[0].KeyID, claims.ID, jtis[claims.ID])
		}
		jtis[claims.ID] = true
	}
}

// TestCallerNeverLogsToken: a Caller in a log line or a %v shows its id only.
func TestCallerNeverLogsToken(t *testing.T) {
	c := oidcCaller("alice")
	var b strings.Builder
	for _, s := range []string{c.String(), c.LogValue().String()} {
		b.WriteString(s)
	}
	if strings.Contains(b.String(), "user:alice") {
		t.Errorf("the access token shows in %q", b.String())
	}
}
