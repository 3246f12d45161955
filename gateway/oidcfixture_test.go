package gateway

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/identity"
)

// The OIDC fixture of the gateway-level tests (oidc_gateway_test.go): a
// real issuer on port 0 and a real identity.OIDCVerifier on an injected
// clock. identity's own tests have the fuller one (identity/oidc_test.go);
// test helpers cannot be shared across packages without exporting them.

const oidcTestAudience = "https://gw.example"

// signingKey is a test issuer's private key and how it is published.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

func (k signingKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

type oidcTestKeys struct {
	rsa1, attacker signingKey
}

// testSigningKeys are generated once: RSA key generation is slow.
var testSigningKeys = sync.OnceValue(func() oidcTestKeys {
	newRSA := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	return oidcTestKeys{
		rsa1:     signingKey{kid: "rsa-1", alg: jose.RS256, priv: newRSA()},
		attacker: signingKey{kid: "rsa-1", alg: jose.RS256, priv: newRSA()},
	}
})

// mintJWT signs claims with key; typ "" leaves typ out.
func mintJWT(t testing.TB, key signingKey, kid, typ string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return signJWT(t, key.alg, key.priv, kid, typ, payload)
}

func signJWT(t testing.TB, alg jose.SignatureAlgorithm, priv any, kid, typ string, payload []byte) string {
	t.Helper()
	opts := &jose.SignerOptions{}
	if typ != "" {
		opts.WithType(jose.ContentType(typ))
	}
	if kid != "" {
		priv = jose.JSONWebKey{Key: priv, KeyID: kid}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	s, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsignedJWT builds a token by hand, e.g. with alg none.
func unsignedJWT(t testing.TB, header, claims map[string]any) string {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "."
}

// oidcClock is the injected clock; tests move it by hand.
type oidcClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *oidcClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// testIdP is an in-process issuer serving discovery and a JWKS.
type testIdP struct {
	srv  *httptest.Server
	keys []jose.JSONWebKey
	down atomic.Bool // answer 503 to everything
}

func newTestIdP(t testing.TB, keys ...signingKey) *testIdP {
	p := &testIdP{}
	for _, k := range keys {
		p.keys = append(p.keys, k.jwk())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: p.keys})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

type oidcFixture struct {
	idp   *testIdP
	clock *oidcClock
	v     *identity.OIDCVerifier
	keys  oidcTestKeys
}

type fixtureOptions struct {
	opts   identity.OIDCOptions // Now and Client are set by the fixture
	before func(*testIdP)       // runs before the verifier starts
	noWait bool                 // do not wait for the keys
}

// newOIDCFixture starts an issuer publishing rsa1 and a verifier trusting
// it for at+jwt tokens, as config.applyDefaults leaves an issuer.
func newOIDCFixture(t testing.TB, fo fixtureOptions) *oidcFixture {
	t.Helper()
	keys := testSigningKeys()
	f := &oidcFixture{idp: newTestIdP(t, keys.rsa1), clock: &oidcClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, keys: keys}
	if fo.before != nil {
		fo.before(f.idp)
	}
	cfg := config.OIDCIssuer{
		Issuer:      f.idp.srv.URL,
		Audiences:   []string{oidcTestAudience},
		Algorithms:  append([]string(nil), config.DefaultAlgorithms...),
		ClockSkew:   config.DefaultClockSkew,
		TokenType:   "at+jwt",
		JWKSRefresh: config.DefaultJWKSRefresh,
		Claims:      config.ClaimMapping{Subject: "sub", Scopes: []string{"scope", "scp"}, Groups: []string{"groups", "roles"}},
	}
	opts := fo.opts
	opts.Now, opts.Client = f.clock.now, f.idp.srv.Client()
	v, err := identity.NewOIDCVerifier([]config.OIDCIssuer{cfg}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	f.v = v
	if !fo.noWait {
		// Readiness polling with a deadline: the first fetch runs in the
		// background.
		deadline := time.Now().Add(10 * time.Second)
		for !v.Ready() {
			if time.Now().After(deadline) {
				t.Fatal("oidc verifier not ready after 10s")
			}
			time.Sleep(time.Millisecond)
		}
	}
	return f
}

// claims returns valid claims for the fixture's issuer, with extra claims
// set (or removed, when nil).
func (f *oidcFixture) claims(extra map[string]any) map[string]any {
	now := f.clock.now()
	c := map[string]any{
		"iss": f.idp.srv.URL, "sub": "user-1", "aud": oidcTestAudience,
		"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "jti": rand.Text(),
		"scope": "mcp:read mcp:write",
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// token is a valid at+jwt signed by rsa-1, with extra claims.
func (f *oidcFixture) token(t testing.TB, extra map[string]any) string {
	return mintJWT(t, f.keys.rsa1, "rsa-1", "at+jwt", f.claims(extra))
}
