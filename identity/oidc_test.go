package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

const (
	oidcTestAudience = "https://gw.example"
	oidcTestRouteA   = "https://gw.example/mcp/a"
	oidcTestRouteB   = "https://gw.example/mcp/b"
)

// signingKey is a test issuer's private key and how it is published.
type signingKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

// jwk is the key as an issuer publishes it in its JWKS.
func (k signingKey) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.priv.Public(), KeyID: k.kid, Algorithm: string(k.alg), Use: "sig"}
}

type oidcTestKeys struct {
	rsa1, rsa2, ec1, attacker signingKey
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
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return oidcTestKeys{
		rsa1:     signingKey{kid: "rsa-1", alg: jose.RS256, priv: newRSA()},
		rsa2:     signingKey{kid: "rsa-2", alg: jose.RS256, priv: newRSA()},
		ec1:      signingKey{kid: "ec-1", alg: jose.ES256, priv: ec},
		attacker: signingKey{kid: "rsa-1", alg: jose.RS256, priv: newRSA()},
	}
})

// mintJWT signs claims with key. kid "" leaves the kid header out; typ ""
// leaves typ out.
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

// embeddedJWKToken is signed by key and carries its public key in the jwk
// header, which a verifier must never trust.
func embeddedJWKToken(t testing.TB, key signingKey, kid string, payload []byte) string {
	t.Helper()
	opts := (&jose.SignerOptions{EmbedJWK: true}).WithType("at+jwt").WithHeader("kid", kid)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: key.alg, Key: key.priv}, opts)
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
	if !strings.Contains(string(mustDecodeSegment(t, s)), `"jwk"`) {
		t.Fatal("no jwk header")
	}
	return s
}

func mustDecodeSegment(t testing.TB, token string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(token, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
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

func (c *oidcClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type oidcFixture struct {
	idp   *testIdP
	clock *oidcClock
	v     *OIDCVerifier
	keys  oidcTestKeys
}

type fixtureOptions struct {
	publish []signingKey             // default: rsa1 and ec1
	mutate  func(*config.OIDCIssuer) // adjusts the issuer config
	opts    OIDCOptions              // Now and Client are set by the fixture
	before  func(*testIdP)           // runs before the verifier starts
	noWait  bool                     // do not wait for the keys
}

// testIssuerConfig is an issuer as config.applyDefaults leaves it, with
// token_type at+jwt.
func testIssuerConfig(issuer string) config.OIDCIssuer {
	return config.OIDCIssuer{
		Issuer:      issuer,
		Audiences:   []string{oidcTestAudience},
		Algorithms:  append([]string(nil), config.DefaultAlgorithms...),
		ClockSkew:   config.DefaultClockSkew,
		TokenType:   "at+jwt",
		JWKSRefresh: config.DefaultJWKSRefresh,
		Claims:      config.ClaimMapping{Subject: "sub", Scopes: []string{"scope", "scp"}, Groups: []string{"groups", "roles"}},
	}
}

func newOIDCFixture(t testing.TB, fo fixtureOptions) *oidcFixture {
	t.Helper()
	keys := testSigningKeys()
	if fo.publish == nil {
		fo.publish = []signingKey{keys.rsa1, keys.ec1}
	}
	f := &oidcFixture{idp: newTestIdP(t, fo.publish...), clock: &oidcClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}, keys: keys}
	if fo.before != nil {
		fo.before(f.idp)
	}
	cfg := testIssuerConfig(f.idp.issuer())
	if fo.mutate != nil {
		fo.mutate(&cfg)
	}
	opts := fo.opts
	opts.Now, opts.Client = f.clock.now, f.idp.srv.Client()
	v, err := NewOIDCVerifier([]config.OIDCIssuer{cfg}, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	f.v = v
	if !fo.noWait {
		waitOIDCReady(t, v)
	}
	return f
}

// waitOIDCReady polls until the background fetch has installed the keys.
func waitOIDCReady(t testing.TB, v *OIDCVerifier) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !v.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("oidc verifier not ready after 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// claims returns valid claims for the fixture's issuer, with extra
// claims set (or removed, when nil).
func (f *oidcFixture) claims(extra map[string]any) map[string]any {
	now := f.clock.now()
	c := map[string]any{
		"iss": f.idp.issuer(), "sub": "user-1", "aud": oidcTestAudience,
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

// principal is what verify must return for claims.
func (f *oidcFixture) principal(t testing.TB, claims map[string]any, scopes, groups []string) *Principal {
	t.Helper()
	b, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	var decoded map[string]any
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	aud, ok := claims["aud"].([]string)
	if !ok {
		aud = []string{claims["aud"].(string)}
	}
	iss, sub := claims["iss"].(string), claims["sub"].(string)
	return &Principal{
		ID: "oidc:" + iss + "#" + sub, Kind: "oidc", Issuer: iss, Subject: sub,
		Scopes: scopes, Groups: groups, Claims: decoded, Audience: aud,
		Expiry: time.Unix(claims["exp"].(int64), 0),
	}
}

func checkOIDCResult(t *testing.T, token string, got *Principal, err error, want *Principal, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("verify = %v, want an error containing %q", err, wantErr)
		}
		if got != nil {
			t.Errorf("verify returned a principal with the error: %+v", got)
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("error contains the token: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("principal (-want +got):\n%s", diff)
	}
}

func TestOIDCVerify(t *testing.T) {
	k := testSigningKeys()
	f := newOIDCFixture(t, fixtureOptions{publish: []signingKey{k.rsa1, k.rsa2, k.ec1}})
	now := f.clock.now()
	base := f.claims(nil)
	withClaims := func(extra map[string]any) map[string]any {
		c := f.claims(extra)
		c["jti"] = base["jti"]
		return c
	}
	readWrite := []string{"mcp:read", "mcp:write"}
	rsaPEM, err := x509.MarshalPKIXPublicKey(k.rsa1.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	rsaPublicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPEM})
	payload := func(c map[string]any) []byte { b, _ := json.Marshal(c); return b }
	tampered := func() string {
		tok := mintJWT(t, k.rsa1, "rsa-1", "at+jwt", base)
		parts := strings.Split(tok, ".")
		parts[1] = base64.RawURLEncoding.EncodeToString(payload(withClaims(map[string]any{"sub": "admin"})))
		return strings.Join(parts, ".")
	}

	tests := []struct {
		name     string
		token    string
		resource string // default oidcTestRouteA
		want     *Principal
		wantErr  string
	}{
		{name: "valid RS256 with kid", token: mintJWT(t, k.rsa1, "rsa-1", "at+jwt", base), want: f.principal(t, base, readWrite, nil)},
		{name: "valid RS256 without kid", token: mintJWT(t, k.rsa1, "", "at+jwt", base), want: f.principal(t, base, readWrite, nil)},
		{name: "valid ES256", token: mintJWT(t, k.ec1, "ec-1", "at+jwt", base), want: f.principal(t, base, readWrite, nil)},
		{name: "valid ES256 without kid", token: mintJWT(t, k.ec1, "", "at+jwt", base), want: f.principal(t, base, readWrite, nil)},
		{
			name:    "alg none",
			token:   unsignedJWT(t, map[string]any{"alg": "none", "typ": "at+jwt", "kid": "rsa-1"}, base),
			wantErr: "unexpected signature algorithm",
		},
		{
			// The classic key-confusion attack: HMAC keyed with the
			// issuer's public key, which anyone can fetch.
			name:    "HS256 signed with the RSA public key",
			token:   signJWT(t, jose.HS256, rsaPublicPEM, "rsa-1", "at+jwt", payload(base)),
			wantErr: "unexpected signature algorithm",
		},
		{
			name:    "PS256 not in the allow-list",
			token:   signJWT(t, jose.PS256, k.rsa1.priv, "rsa-1", "at+jwt", payload(base)),
			wantErr: "unexpected signature algorithm",
		},
		{name: "expired beyond clock skew", token: f.token(t, map[string]any{"exp": now.Add(-31 * time.Second).Unix()}), wantErr: "expired"},
		{
			name:  "expired within clock skew",
			token: mintJWT(t, k.rsa1, "rsa-1", "at+jwt", withClaims(map[string]any{"exp": now.Add(-29 * time.Second).Unix()})),
			want:  f.principal(t, withClaims(map[string]any{"exp": now.Add(-29 * time.Second).Unix()}), readWrite, nil),
		},
		{name: "no exp", token: f.token(t, map[string]any{"exp": nil}), wantErr: "no exp"},
		{name: "nbf in the future beyond clock skew", token: f.token(t, map[string]any{"nbf": now.Add(31 * time.Second).Unix()}), wantErr: "not valid before"},
		{
			name:  "nbf in the future within clock skew",
			token: mintJWT(t, k.rsa1, "rsa-1", "at+jwt", withClaims(map[string]any{"nbf": now.Add(29 * time.Second).Unix()})),
			want:  f.principal(t, withClaims(map[string]any{"nbf": now.Add(29 * time.Second).Unix()}), readWrite, nil),
		},
		{name: "nbf not a number", token: f.token(t, map[string]any{"nbf": "soon"}), wantErr: "unmarshal claims"},
		{name: "wrong iss", token: f.token(t, map[string]any{"iss": "https://evil.example"}), wantErr: "not trusted"},
		{name: "no iss", token: f.token(t, map[string]any{"iss": nil}), wantErr: "not trusted"},
		{name: "wrong aud", token: f.token(t, map[string]any{"aud": "https://other.example"}), wantErr: "names neither"},
		{name: "aud of another route", token: f.token(t, map[string]any{"aud": oidcTestRouteB}), wantErr: "names neither"},
		{name: "missing aud", token: f.token(t, map[string]any{"aud": nil}), wantErr: "no aud"},
		{name: "empty aud array", token: f.token(t, map[string]any{"aud": []string{}}), wantErr: "no aud"},
		{
			name:  "aud is the route resource",
			token: mintJWT(t, k.rsa1, "rsa-1", "at+jwt", withClaims(map[string]any{"aud": oidcTestRouteA})),
			want:  f.principal(t, withClaims(map[string]any{"aud": oidcTestRouteA}), readWrite, nil),
		},
		{
			name:  "aud array naming the gateway",
			token: mintJWT(t, k.rsa1, "rsa-1", "at+jwt", withClaims(map[string]any{"aud": []string{"https://other.example", oidcTestAudience}})),
			want:  f.principal(t, withClaims(map[string]any{"aud": []string{"https://other.example", oidcTestAudience}}), readWrite, nil),
		},
		{name: "no sub", token: f.token(t, map[string]any{"sub": nil}), wantErr: `no "sub" claim`},
		{name: "empty sub", token: f.token(t, map[string]any{"sub": ""}), wantErr: `no "sub" claim`},
		{name: "untrusted key with a trusted kid", token: mintJWT(t, k.attacker, "rsa-1", "at+jwt", base), wantErr: "signature does not verify"},
		{name: "kid of one trusted key, signed by another", token: mintJWT(t, k.rsa2, "rsa-1", "at+jwt", base), wantErr: "signature does not verify"},
		{name: "untrusted key embedded as jwk header", token: embeddedJWKToken(t, k.attacker, "rsa-1", payload(base)), wantErr: "signature does not verify"},
		{name: "untrusted key without kid", token: mintJWT(t, k.attacker, "", "at+jwt", base), wantErr: "signature does not verify"},
		{name: "RSA kid with an EC key", token: mintJWT(t, k.ec1, "rsa-1", "at+jwt", base), wantErr: "no trusted key for alg"},
		{name: "tampered payload", token: tampered(), wantErr: "signature does not verify"},
		{name: "ID token (typ JWT) where at+jwt is required", token: mintJWT(t, k.rsa1, "rsa-1", "JWT", base), wantErr: "typ"},
		{name: "no typ where at+jwt is required", token: mintJWT(t, k.rsa1, "rsa-1", "", base), wantErr: "typ"},
		{name: "typ application/at+jwt", token: mintJWT(t, k.rsa1, "rsa-1", "application/at+jwt", base), want: f.principal(t, base, readWrite, nil)},
		{name: "typ in upper case", token: mintJWT(t, k.rsa1, "rsa-1", "AT+JWT", base), want: f.principal(t, base, readWrite, nil)},
		{
			name:    "duplicate claim names",
			token:   signJWT(t, jose.RS256, k.rsa1.priv, "rsa-1", "at+jwt", []byte(`{"iss":"`+f.idp.issuer()+`","sub":"user-1","sub":"admin","aud":"`+oidcTestAudience+`","exp":4102444800}`)),
			wantErr: "duplicate",
		},
		{name: "four segments", token: f.token(t, nil) + ".x", wantErr: errTokenShape.Error()},
		{name: "two segments", token: "aaa.bbb", wantErr: errTokenShape.Error()},
		{name: "not base64", token: "a!a.b!b.c!c", wantErr: "malformed token"},
		{name: "payload not an object", token: signJWT(t, jose.RS256, k.rsa1.priv, "rsa-1", "at+jwt", []byte(`["x"]`)), wantErr: "token claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resource := tt.resource
			if resource == "" {
				resource = oidcTestRouteA
			}
			got, err := f.v.Verify(t.Context(), tt.token, resource)
			checkOIDCResult(t, tt.token, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestOIDCScopesAndGroups(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	tests := []struct {
		name       string
		claims     map[string]any
		wantScopes []string
		wantGroups []string
		wantErr    string
	}{
		{name: "scope string", claims: map[string]any{"scope": "read write  read"}, wantScopes: []string{"read", "write"}},
		{name: "scp array", claims: map[string]any{"scope": nil, "scp": []string{"a", "b", "a"}}, wantScopes: []string{"a", "b"}},
		{name: "scope and scp union in order", claims: map[string]any{"scope": "read write", "scp": []string{"write", "admin"}}, wantScopes: []string{"read", "write", "admin"}},
		{name: "no scopes", claims: map[string]any{"scope": nil}},
		{name: "empty scope string", claims: map[string]any{"scope": ""}},
		{name: "scope not a string", claims: map[string]any{"scope": 7}, wantErr: `claim "scope" is neither`},
		{name: "scp with a non-string", claims: map[string]any{"scope": nil, "scp": []any{"a", 1}}, wantErr: `claim "scp"[1] is not a string`},
		{name: "groups array", claims: map[string]any{"scope": nil, "groups": []string{"eng", "ops"}}, wantGroups: []string{"eng", "ops"}},
		{
			name:       "groups and roles union, a single role as a string",
			claims:     map[string]any{"scope": nil, "groups": []string{"eng", "admin"}, "roles": "admin"},
			wantGroups: []string{"eng", "admin"},
		},
		{name: "a group string is one group", claims: map[string]any{"scope": nil, "groups": "two words"}, wantGroups: []string{"two words"}},
		{name: "groups with a non-string", claims: map[string]any{"scope": nil, "groups": []any{"eng", map[string]any{}}}, wantErr: `claim "groups"[1] is not a string`},
		{name: "groups an object", claims: map[string]any{"scope": nil, "groups": map[string]any{"eng": true}}, wantErr: `claim "groups" is neither`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := f.claims(tt.claims)
			token := mintJWT(t, f.keys.rsa1, "rsa-1", "at+jwt", claims)
			got, err := f.v.Verify(t.Context(), token, oidcTestRouteA)
			var want *Principal
			if tt.wantErr == "" {
				want = f.principal(t, claims, tt.wantScopes, tt.wantGroups)
			}
			checkOIDCResult(t, token, got, err, want, tt.wantErr)
		})
	}
}

func TestOIDCCustomClaimMapping(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{mutate: func(c *config.OIDCIssuer) {
		c.Claims = config.ClaimMapping{Subject: "oid", Scopes: []string{"permissions"}, Groups: []string{"teams"}}
		c.TokenType = ""
	}})
	claims := f.claims(map[string]any{"oid": "object-9", "permissions": []string{"p1"}, "teams": []string{"t1"}, "groups": []string{"ignored"}})
	token := mintJWT(t, f.keys.rsa1, "rsa-1", "JWT", claims)
	got, err := f.v.Verify(t.Context(), token, oidcTestRouteA)
	if err != nil {
		t.Fatal(err)
	}
	want := f.principal(t, claims, []string{"p1"}, []string{"t1"})
	want.ID, want.Subject = "oidc:"+f.idp.issuer()+"#object-9", "object-9"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("principal (-want +got):\n%s", diff)
	}
}

func TestOIDCSeveralIssuers(t *testing.T) {
	keys := testSigningKeys()
	a, b := newTestIdP(t, keys.rsa1), newTestIdP(t, keys.ec1)
	clock := &oidcClock{t: time.Now()}
	client := a.srv.Client()
	v, err := NewOIDCVerifier([]config.OIDCIssuer{testIssuerConfig(a.issuer()), testIssuerConfig(b.issuer())}, OIDCOptions{Client: client, Now: clock.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	waitOIDCReady(t, v)
	claims := func(iss string) map[string]any {
		return map[string]any{"iss": iss, "sub": "u", "aud": oidcTestAudience, "exp": clock.now().Add(time.Hour).Unix()}
	}
	tests := []struct {
		name       string
		token      string
		wantIssuer string
		wantErr    string
	}{
		{name: "issuer A", token: mintJWT(t, keys.rsa1, "rsa-1", "at+jwt", claims(a.issuer())), wantIssuer: a.issuer()},
		{name: "issuer B", token: mintJWT(t, keys.ec1, "ec-1", "at+jwt", claims(b.issuer())), wantIssuer: b.issuer()},
		{name: "iss B signed by A's key", token: mintJWT(t, keys.rsa1, "rsa-1", "at+jwt", claims(b.issuer())), wantErr: "not in the issuer's key set"},
		{name: "iss A signed by B's key without kid", token: mintJWT(t, keys.ec1, "", "at+jwt", claims(a.issuer())), wantErr: "no trusted key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(t.Context(), tt.token, oidcTestRouteA)
			if tt.wantErr != "" {
				checkOIDCResult(t, tt.token, got, err, nil, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Issuer != tt.wantIssuer || got.ID != "oidc:"+tt.wantIssuer+"#u" {
				t.Errorf("principal issuer %q id %q, want issuer %q", got.Issuer, got.ID, tt.wantIssuer)
			}
		})
	}
}

func TestOIDCCache(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	ctx := t.Context()
	exp := f.clock.now().Add(10 * time.Minute)
	token := f.token(t, map[string]any{"aud": oidcTestRouteA, "exp": exp.Unix()})

	first, err := f.v.Verify(ctx, token, oidcTestRouteA)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name     string
		advance  time.Duration
		resource string
		wantErr  string
	}{
		{name: "hit on the same route", resource: oidcTestRouteA},
		{name: "hit refused on another route", resource: oidcTestRouteB, wantErr: "names neither"},
		{name: "hit still valid on its route", resource: oidcTestRouteA},
		{name: "hit after exp within clock skew", advance: 10*time.Minute + 29*time.Second, resource: oidcTestRouteA},
		{name: "hit after exp beyond clock skew", advance: 2 * time.Second, resource: oidcTestRouteA, wantErr: "expired"},
		{name: "expired again once evicted", resource: oidcTestRouteA, wantErr: "expired"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			f.clock.advance(s.advance)
			got, err := f.v.Verify(ctx, token, s.resource)
			if s.wantErr != "" {
				checkOIDCResult(t, token, got, err, nil, s.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// The very same principal: served from the cache, not verified
			// (and built) again.
			if got != first {
				t.Errorf("verify returned a new principal %p, want the cached %p", got, first)
			}
		})
	}
}

func TestOIDCCacheDisabledAndFailuresNotCached(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{opts: OIDCOptions{CacheSize: -1}})
	token := f.token(t, nil)
	p1, err := f.v.Verify(t.Context(), token, oidcTestRouteA)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := f.v.Verify(t.Context(), token, oidcTestRouteA)
	if err != nil {
		t.Fatal(err)
	}
	if p1 == p2 || f.v.cache.size() != 0 {
		t.Errorf("disabled cache served a principal (size %d)", f.v.cache.size())
	}

	g := newOIDCFixture(t, fixtureOptions{})
	bad := mintJWT(t, g.keys.attacker, "rsa-1", "at+jwt", g.claims(nil))
	if _, err := g.v.Verify(t.Context(), bad, oidcTestRouteA); err == nil {
		t.Fatal("attacker token accepted")
	}
	if n := g.v.cache.size(); n != 0 {
		t.Errorf("a refused token was cached (%d entries)", n)
	}
}

func TestOIDCTokenCacheBounded(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	is := &oidcIssuer{keys: &keySet{}}
	entry := func(exp time.Time) cachedToken { return cachedToken{p: &Principal{Expiry: exp}, iss: is} }
	key := func(i int) [32]byte { return [32]byte{byte(i), byte(i >> 8)} }

	c := newTokenCache(10)
	for i := range 5 {
		c.put(key(i), entry(now.Add(-time.Minute)), now) // expired
	}
	for i := 5; i < 10; i++ {
		c.put(key(i), entry(now.Add(time.Hour)), now)
	}
	c.put(key(10), entry(now.Add(time.Hour)), now)
	for i := 5; i <= 10; i++ {
		if _, ok := c.get(key(i)); !ok {
			t.Errorf("live entry %d evicted while expired ones were there", i)
		}
	}
	if got := c.size(); got != 6 {
		t.Errorf("size after evicting the expired = %d, want 6", got)
	}
	for i := 11; i < 100; i++ {
		c.put(key(i), entry(now.Add(time.Hour)), now)
		if c.size() > 10 {
			t.Fatalf("cache grew to %d entries, bound 10", c.size())
		}
	}
	if _, ok := c.get(key(99)); !ok {
		t.Error("the newest entry is missing")
	}
}

func TestOIDCOversizedTokenRejectedBeforeParsing(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	// If it were parsed, its unknown kid would make the gateway re-fetch.
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"at+jwt","kid":"unknown"}`))
	huge := header + "." + strings.Repeat("A", 64<<10) + ".sig"
	tests := []struct {
		name    string
		token   string
		wantErr error
	}{
		{name: "64 KiB", token: huge, wantErr: errTokenTooLong},
		{name: "one byte over 16 KiB", token: huge[:MaxCredentialBytes+1], wantErr: errTokenTooLong},
		{name: "five segments (a JWE)", token: "a.b.c.d.e", wantErr: errTokenShape},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.idp.fetches.Load()
			var err error
			allocs := testing.AllocsPerRun(20, func() {
				_, err = f.v.Verify(t.Context(), tt.token, oidcTestRouteA)
			})
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("verify = %v, want %v", err, tt.wantErr)
			}
			if allocs != 0 {
				t.Errorf("rejection allocated %v times per call: it parsed something", allocs)
			}
			if got := f.idp.fetches.Load() - before; got != 0 {
				t.Errorf("rejected token caused %d JWKS fetches", got)
			}
		})
	}
}

func TestNewOIDCVerifierRejectsConfig(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*config.OIDCIssuer)
		twice   bool
		wantErr string
	}{
		{name: "HS256", mutate: func(c *config.OIDCIssuer) { c.Algorithms = []string{"RS256", "HS256"} }, wantErr: `algorithm "HS256" not allowed`},
		{name: "none", mutate: func(c *config.OIDCIssuer) { c.Algorithms = []string{"none"} }, wantErr: `algorithm "none" not allowed`},
		{name: "no algorithms", mutate: func(c *config.OIDCIssuer) { c.Algorithms = nil }, wantErr: "no algorithms"},
		{name: "zero refresh", mutate: func(c *config.OIDCIssuer) { c.JWKSRefresh = 0 }, wantErr: "jwks_refresh"},
		{name: "negative skew", mutate: func(c *config.OIDCIssuer) { c.ClockSkew = -time.Second }, wantErr: "clock_skew"},
		{name: "no subject claim", mutate: func(c *config.OIDCIssuer) { c.Claims.Subject = "" }, wantErr: "claims.subject"},
		{name: "no issuer", mutate: func(c *config.OIDCIssuer) { c.Issuer = "" }, wantErr: "issuer is empty"},
		{name: "issuer twice", twice: true, wantErr: "configured twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testIssuerConfig("https://idp.example")
			if tt.mutate != nil {
				tt.mutate(&c)
			}
			cfgs := []config.OIDCIssuer{c}
			if tt.twice {
				cfgs = append(cfgs, c)
			}
			v, err := NewOIDCVerifier(cfgs, OIDCOptions{})
			if err == nil {
				v.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewOIDCVerifier = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := NewOIDCVerifier(nil, OIDCOptions{}); err == nil {
		t.Error("no issuers accepted")
	}
}

// FuzzOIDCVerify: no input may panic or be accepted unsigned.
func FuzzOIDCVerify(f *testing.F) {
	fx := newOIDCFixture(f, fixtureOptions{})
	f.Add(fx.token(f, nil))
	f.Add(unsignedJWT(f, map[string]any{"alg": "none"}, fx.claims(nil)))
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, token string) {
		p, err := fx.v.Verify(context.Background(), token, oidcTestRouteA)
		if err == nil && (p == nil || p.Kind != "oidc" || p.Subject == "") {
			t.Fatalf("accepted without a proper principal: %+v", p)
		}
	})
}

func BenchmarkVerifyCold(b *testing.B) {
	f := newOIDCFixture(b, fixtureOptions{opts: OIDCOptions{CacheSize: -1}})
	for _, key := range []signingKey{f.keys.rsa1, f.keys.ec1} {
		b.Run(string(key.alg), func(b *testing.B) {
			token := mintJWT(b, key, key.kid, "at+jwt", f.claims(nil))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.v.Verify(context.Background(), token, oidcTestRouteA); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	f := newOIDCFixture(b, fixtureOptions{})
	token := f.token(b, nil)
	if _, err := f.v.Verify(context.Background(), token, oidcTestRouteA); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.v.Verify(context.Background(), token, oidcTestRouteA); err != nil {
			b.Fatal(err)
		}
	}
}
