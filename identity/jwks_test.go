package identity

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func jwkJSON(t testing.TB, k jose.JSONWebKey) string {
	t.Helper()
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseJWKS(t *testing.T) {
	keys := testSigningKeys()
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa1, ec1 := jwkJSON(t, keys.rsa1.jwk()), jwkJSON(t, keys.ec1.jwk())
	oct := jwkJSON(t, jose.JSONWebKey{Key: []byte("0123456789abcdef0123456789abcdef"), KeyID: "hmac", Algorithm: "HS256"})
	weak := jwkJSON(t, jose.JSONWebKey{Key: &small.PublicKey, KeyID: "weak", Algorithm: "RS256"})
	enc := jwkJSON(t, jose.JSONWebKey{Key: keys.rsa2.priv.Public(), KeyID: "enc", Use: "enc"})
	private := jwkJSON(t, jose.JSONWebKey{Key: keys.rsa2.priv, KeyID: "rsa-2", Algorithm: "RS256"})
	tests := []struct {
		name        string
		body        string
		wantKids    []string // nil: an error, no set
		wantSkipped []string // substrings of the skipped-keys error
	}{
		{name: "RSA and EC", body: `{"keys":[` + rsa1 + `,` + ec1 + `]}`, wantKids: []string{"rsa-1", "ec-1"}},
		{name: "empty set", body: `{"keys":[]}`, wantKids: []string{}},
		{name: "symmetric key skipped", body: `{"keys":[` + oct + `,` + rsa1 + `]}`, wantKids: []string{"rsa-1"}, wantSkipped: []string{`keys[0] (kid "hmac"): symmetric`}},
		{name: "RSA under 2048 bits skipped", body: `{"keys":[` + weak + `,` + ec1 + `]}`, wantKids: []string{"ec-1"}, wantSkipped: []string{"1024 bits"}},
		{name: "encryption key skipped", body: `{"keys":[` + enc + `,` + ec1 + `]}`, wantKids: []string{"ec-1"}, wantSkipped: []string{`use "enc"`}},
		{name: "unknown kty skipped", body: `{"keys":[{"kty":"XYZ","kid":"x"},` + ec1 + `]}`, wantKids: []string{"ec-1"}, wantSkipped: []string{"keys[0]"}},
		{name: "published private key: public half only", body: `{"keys":[` + private + `]}`, wantKids: []string{"rsa-2"}},
		{name: "only unusable keys", body: `{"keys":[` + oct + `]}`, wantSkipped: []string{"symmetric"}},
		{name: "no keys member", body: `{"kty":"RSA"}`, wantSkipped: []string{`no "keys" array`}},
		{name: "not JSON", body: `<html>`, wantSkipped: []string{"not a JWK set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseJWKS([]byte(tt.body))
			if (got == nil) != (tt.wantKids == nil) {
				t.Fatalf("parseJWKS = %v, %v; want kids %v", got, err, tt.wantKids)
			}
			if tt.wantKids != nil {
				var kids []string
				for _, k := range got {
					kids = append(kids, k.KeyID)
					if !k.IsPublic() {
						t.Errorf("key %q is not public", k.KeyID)
					}
				}
				if diff := cmp.Diff(tt.wantKids, kids, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("kids (-want +got):\n%s", diff)
				}
			}
			if len(tt.wantSkipped) == 0 && err != nil {
				t.Errorf("unexpected error: %v", err)
			}
			for _, want := range tt.wantSkipped {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

func TestJWKSGenerationChangesOnlyOnRemoval(t *testing.T) {
	keys := testSigningKeys()
	ks := newKeySet(context.Background(), "https://idp.example", []jose.SignatureAlgorithm{jose.RS256}, OIDCOptions{}.withDefaults())
	renamed := keys.rsa1.jwk()
	renamed.KeyID = "rsa-1-renamed"
	steps := []struct {
		name    string
		install []jose.JSONWebKey
		wantGen uint64
	}{
		{name: "first set", install: []jose.JSONWebKey{keys.rsa1.jwk()}, wantGen: 0},
		{name: "key added", install: []jose.JSONWebKey{keys.rsa1.jwk(), keys.rsa2.jwk()}, wantGen: 0},
		{name: "same set again", install: []jose.JSONWebKey{keys.rsa2.jwk(), keys.rsa1.jwk()}, wantGen: 0},
		{name: "key removed", install: []jose.JSONWebKey{keys.rsa2.jwk()}, wantGen: 1},
		{name: "same key under another kid", install: []jose.JSONWebKey{renamed}, wantGen: 2},
		{name: "every key removed", install: []jose.JSONWebKey{}, wantGen: 3},
	}
	for _, s := range steps {
		ks.install(s.install)
		if got := ks.generation(); got != s.wantGen {
			t.Errorf("%s: generation %d, want %d", s.name, got, s.wantGen)
		}
	}
	if ks.ready() {
		t.Error("ready with an empty key set")
	}
}

// metadataServer serves a discovery document (with the issuer filled in
// for %s) and a JWKS body, each with a status.
type metadataServer struct {
	srv                     *httptest.Server
	discovery, jwks         string
	discoveryCode, jwksCode int
	jwksHits                atomic.Int64
}

func newMetadataServer(t *testing.T, tls bool) *metadataServer {
	m := &metadataServer{discoveryCode: http.StatusOK, jwksCode: http.StatusOK}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			w.WriteHeader(m.discoveryCode)
			w.Write([]byte(strings.ReplaceAll(m.discovery, "ISSUER", m.srv.URL)))
		case "/jwks":
			m.jwksHits.Add(1)
			w.WriteHeader(m.jwksCode)
			w.Write([]byte(m.jwks))
		default:
			http.NotFound(w, r)
		}
	})
	if tls {
		m.srv = httptest.NewTLSServer(h)
	} else {
		m.srv = httptest.NewServer(h)
	}
	t.Cleanup(m.srv.Close)
	return m
}

func (m *metadataServer) keySet() *keySet {
	opts := OIDCOptions{Client: m.srv.Client()}.withDefaults()
	return newKeySet(context.Background(), m.srv.URL, []jose.SignatureAlgorithm{jose.RS256, jose.ES256}, opts)
}

func TestJWKSLoad(t *testing.T) {
	keys := testSigningKeys()
	goodDiscovery := `{"issuer":"ISSUER","jwks_uri":"ISSUER/jwks"}`
	goodJWKS := `{"keys":[` + jwkJSON(t, keys.rsa1.jwk()) + `]}`
	tests := []struct {
		name          string
		tls           bool
		discovery     string
		discoveryCode int
		jwks          string
		jwksCode      int
		wantErr       string
		wantJWKSHits  int64
	}{
		{name: "ok", discovery: goodDiscovery, jwks: goodJWKS, wantJWKSHits: 1},
		{name: "ok over TLS", tls: true, discovery: goodDiscovery, jwks: goodJWKS, wantJWKSHits: 1},
		{name: "discovery status", discovery: goodDiscovery, discoveryCode: http.StatusNotFound, wantErr: "status 404"},
		{name: "discovery not JSON", discovery: `<html>`, wantErr: "discovery"},
		{name: "issuer with a trailing slash", discovery: `{"issuer":"ISSUER/","jwks_uri":"ISSUER/jwks"}`, wantErr: "does not match"},
		{name: "no jwks_uri", discovery: `{"issuer":"ISSUER"}`, wantErr: "jwks_uri"},
		{name: "relative jwks_uri", discovery: `{"issuer":"ISSUER","jwks_uri":"/jwks"}`, wantErr: "not an absolute"},
		{name: "http jwks_uri for an https issuer", tls: true, discovery: `{"issuer":"ISSUER","jwks_uri":"http://127.0.0.1:1/jwks"}`, wantErr: "must use https"},
		{name: "jwks status", discovery: goodDiscovery, jwks: goodJWKS, jwksCode: http.StatusInternalServerError, wantErr: "status 500", wantJWKSHits: 1},
		{name: "jwks too large", discovery: goodDiscovery, jwks: `{"keys":[],"pad":"` + strings.Repeat("x", maxMetadataBytes) + `"}`, wantErr: "larger than", wantJWKSHits: 1},
		{name: "jwks not a set", discovery: goodDiscovery, jwks: `[]`, wantErr: "not a JWK set", wantJWKSHits: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMetadataServer(t, tt.tls)
			m.discovery, m.jwks = tt.discovery, tt.jwks
			if tt.discoveryCode != 0 {
				m.discoveryCode = tt.discoveryCode
			}
			if tt.jwksCode != 0 {
				m.jwksCode = tt.jwksCode
			}
			ks := m.keySet()
			err := ks.refresh(t.Context(), true)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !ks.ready() {
					t.Error("not ready after a successful load")
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("load = %v, want %q", err, tt.wantErr)
				}
				if ks.ready() {
					t.Error("ready after a failed first load")
				}
			}
			if got := m.jwksHits.Load(); got != tt.wantJWKSHits {
				t.Errorf("JWKS requests = %d, want %d", got, tt.wantJWKSHits)
			}
		})
	}
}

// A later fetch that fails, or whose keys are all unusable, keeps the keys
// already trusted; one that succeeds with an empty set drops them all.
func TestJWKSRefreshKeepsKeysUnlessTheSetSaysOtherwise(t *testing.T) {
	keys := testSigningKeys()
	m := newMetadataServer(t, false)
	m.discovery = `{"issuer":"ISSUER","jwks_uri":"ISSUER/jwks"}`
	m.jwks = `{"keys":[` + jwkJSON(t, keys.rsa1.jwk()) + `]}`
	ks := m.keySet()
	if err := ks.refresh(t.Context(), true); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name      string
		jwks      string
		code      int
		wantErr   bool
		wantReady bool
	}{
		{name: "IdP error", jwks: "oops", code: http.StatusBadGateway, wantErr: true, wantReady: true},
		{name: "HTML with 200", jwks: "<html>", code: http.StatusOK, wantErr: true, wantReady: true},
		{name: "only a symmetric key", jwks: `{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`, code: http.StatusOK, wantErr: true, wantReady: true},
		{name: "empty set", jwks: `{"keys":[]}`, code: http.StatusOK, wantReady: false},
	}
	for _, s := range steps {
		m.jwks, m.jwksCode = s.jwks, s.code
		err := ks.refresh(t.Context(), true)
		if (err != nil) != s.wantErr {
			t.Errorf("%s: refresh = %v, want error %v", s.name, err, s.wantErr)
		}
		if got := ks.ready(); got != s.wantReady {
			t.Errorf("%s: ready = %v, want %v", s.name, got, s.wantReady)
		}
	}
}

// VerifySignature parses the token itself when it is called without the
// verifier's parsed JWS (as go-oidc's own callers would).
func TestJWKSVerifySignatureParsesWhenNeeded(t *testing.T) {
	keys := testSigningKeys()
	ks := newKeySet(context.Background(), "https://idp.example", []jose.SignatureAlgorithm{jose.RS256}, OIDCOptions{}.withDefaults())
	ks.install([]jose.JSONWebKey{keys.rsa1.jwk()})
	ks.unknownKid.SetBurst(0) // no re-fetch: there is no IdP here
	tests := []struct {
		name    string
		token   string
		wantErr string
	}{
		{name: "valid", token: signJWT(t, jose.RS256, keys.rsa1.priv, "rsa-1", "", []byte(`{"a":1}`))},
		{name: "algorithm not allowed", token: signJWT(t, jose.ES256, keys.ec1.priv, "rsa-1", "", []byte(`{"a":1}`)), wantErr: "malformed jws"},
		{name: "JSON serialization", token: `{"payload":"e30","signatures":[]}`, wantErr: "malformed jws"},
		{name: "unknown kid", token: signJWT(t, jose.RS256, keys.rsa1.priv, "nope", "", []byte(`{"a":1}`)), wantErr: "not in the issuer's key set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload, err := ks.VerifySignature(t.Context(), tt.token)
			if tt.wantErr == "" {
				if err != nil || string(payload) != `{"a":1}` {
					t.Fatalf("VerifySignature = %q, %v", payload, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("VerifySignature = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// Close stops the background loop while it is retrying (it would hang
// otherwise) and cancels every fetch: none is sent after it returns.
func TestJWKSCloseStopsBackgroundFetches(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{
		opts:   OIDCOptions{RetryMin: time.Millisecond, RetryMax: time.Millisecond},
		before: func(p *testIdP) { p.down.Store(true) },
		noWait: true,
	})
	deadline := time.Now().Add(10 * time.Second)
	for f.idp.discoveries.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("background loop did not retry")
		}
		time.Sleep(time.Millisecond)
	}
	f.v.Close()
	after := f.idp.discoveries.Load()
	f.idp.down.Store(false)
	if err := f.v.Refresh(t.Context()); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("refresh after Close = %v, want context canceled", err)
	}
	if got := f.idp.discoveries.Load(); got != after {
		t.Errorf("%d discovery requests after Close", got-after)
	}
	f.v.Close() // a second Close is harmless
}

// testIdP is an in-process issuer serving discovery and a JWKS that the
// test can swap, counting requests.
type testIdP struct {
	srv *httptest.Server
	// discoveryIssuer, when set, is the issuer the discovery document
	// claims (a mismatch).
	discoveryIssuer string

	mu          sync.Mutex
	keys        []jose.JSONWebKey
	down        atomic.Bool // answer 503 to everything
	discoveries atomic.Int64
	fetches     atomic.Int64 // JWKS requests, answered or not
}

func newTestIdP(t testing.TB, keys ...signingKey) *testIdP {
	p := &testIdP{}
	p.setKeys(keys...)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.discoveries.Add(1)
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		iss := p.issuer()
		if p.discoveryIssuer != "" {
			iss = p.discoveryIssuer
		}
		json.NewEncoder(w).Encode(map[string]string{"issuer": iss, "jwks_uri": p.issuer() + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		set := jose.JSONWebKeySet{Keys: p.keys}
		p.mu.Unlock()
		json.NewEncoder(w).Encode(set)
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testIdP) issuer() string { return p.srv.URL }

func (p *testIdP) setKeys(keys ...signingKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = nil
	for _, k := range keys {
		p.keys = append(p.keys, k.jwk())
	}
}

func TestOIDCUnknownKidFlood(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	const flood, valid = 200, 50
	random := make([]string, flood)
	for i := range random {
		random[i] = mintJWT(t, f.keys.rsa1, rand.Text(), "at+jwt", f.claims(nil))
	}
	good := make([]string, valid)
	for i := range good {
		good[i] = f.token(t, nil) // distinct, so none is served from the cache
	}
	before := f.idp.fetches.Load()

	var wg sync.WaitGroup
	start := make(chan struct{})
	floodErrs, validErrs := make([]error, flood), make([]error, valid)
	for i, tok := range random {
		wg.Go(func() {
			<-start
			_, floodErrs[i] = f.v.Verify(t.Context(), tok, oidcTestRouteA)
		})
	}
	for i, tok := range good {
		wg.Go(func() {
			<-start
			_, validErrs[i] = f.v.Verify(t.Context(), tok, oidcTestRouteA)
		})
	}
	close(start)
	wg.Wait()

	for i, err := range floodErrs {
		if err == nil || !strings.Contains(err.Error(), "not in the issuer's key set") {
			t.Fatalf("random-kid token %d: %v, want unknown key id", i, err)
		}
	}
	for i, err := range validErrs {
		if err != nil {
			t.Errorf("valid token %d during the flood: %v", i, err)
		}
	}
	if got := f.idp.fetches.Load() - before; got != 1 {
		t.Errorf("%d random-kid tokens caused %d JWKS fetches, want 1", flood, got)
	}

	// The limit is per period: once it has passed, one more re-fetch.
	f.clock.advance(unknownKidRefetchEvery + time.Second)
	for range 20 {
		f.v.Verify(t.Context(), mintJWT(t, f.keys.rsa1, rand.Text(), "at+jwt", f.claims(nil)), oidcTestRouteA)
	}
	if got := f.idp.fetches.Load() - before; got != 2 {
		t.Errorf("JWKS fetches after the period passed = %d, want 2", got)
	}
}

// TestOIDCUnknownKidStarvation: random-kid tokens spend the one re-fetch
// per period, and then the issuer rotates in a new key. A token signed
// with it is not told invalid_token (the client would throw it away) but
// "not yet" with a Retry-After up to the next allowed re-fetch; once that
// re-fetch has run, whoever triggered it, the token is accepted. A random
// kid that a fetch begun after it appeared did not have is refused outright
// and costs no re-fetch (a negative cache), and the memory of such kids is
// bounded.
func TestOIDCUnknownKidStarvation(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{publish: []signingKey{testSigningKeys().rsa1}})
	ctx := t.Context()
	random := func() string { return mintJWT(t, f.keys.rsa1, rand.Text(), "at+jwt", f.claims(nil)) }
	before := f.idp.fetches.Load()
	first := random()
	if _, err := f.v.Verify(ctx, first, oidcTestRouteA); err == nil || errors.Is(err, errKeysUnavailable) {
		t.Fatalf("random kid with the budget free: %v; want refused as not in the key set (it was looked for)", err)
	}

	// The issuer rotates; the attacker keeps the budget spent.
	f.idp.setKeys(f.keys.rsa1, f.keys.rsa2)
	rotated := mintJWT(t, f.keys.rsa2, "rsa-2", "at+jwt", f.claims(nil))
	_, err := f.v.Verify(ctx, rotated, oidcTestRouteA)
	var ku *keysUnavailableError
	if !errors.As(err, &ku) || ku.retryAfter <= 0 || ku.retryAfter > unknownKidRefetchEvery {
		t.Fatalf("new key's token with the budget spent: %v; want keys unavailable with a Retry-After up to %s", err, unknownKidRefetchEvery)
	}
	for range 50 {
		f.v.Verify(ctx, random(), oidcTestRouteA)
	}
	if _, err := f.v.Verify(ctx, first, oidcTestRouteA); err == nil || errors.Is(err, errKeysUnavailable) {
		t.Errorf("a random kid looked for already: %v; want refused outright", err)
	}
	if got := f.idp.fetches.Load() - before; got != 1 {
		t.Errorf("JWKS fetches = %d, want 1 (the budget)", got)
	}

	// The period passes; an attacker's token comes first and spends the
	// budget again, which fetches the new key for everyone.
	f.clock.advance(unknownKidRefetchEvery)
	f.v.Verify(ctx, random(), oidcTestRouteA)
	if _, err := f.v.Verify(ctx, rotated, oidcTestRouteA); err != nil {
		t.Errorf("new key's token after the next re-fetch: %v", err)
	}
	if got := f.idp.fetches.Load() - before; got != 2 {
		t.Errorf("JWKS fetches = %d, want 2", got)
	}

	ks := f.v.issuers[f.idp.issuer()].keys
	for range 3 * maxUnknownKids {
		f.v.Verify(ctx, random(), oidcTestRouteA)
	}
	ks.mu.RLock()
	remembered := len(ks.unknown)
	ks.mu.RUnlock()
	if remembered > maxUnknownKids {
		t.Errorf("%d unknown kids remembered, want at most %d", remembered, maxUnknownKids)
	}
	long := mintJWT(t, f.keys.rsa1, strings.Repeat("k", maxKidBytes+1), "at+jwt", f.claims(nil))
	f.clock.advance(unknownKidRefetchEvery)
	fetches := f.idp.fetches.Load()
	if _, err := f.v.Verify(ctx, long, oidcTestRouteA); err == nil || errors.Is(err, errKeysUnavailable) {
		t.Errorf("overlong kid: %v; want refused", err)
	}
	if got := f.idp.fetches.Load(); got != fetches {
		t.Errorf("an overlong kid caused %d JWKS fetches, want 0", got-fetches)
	}
}

// TestJWKSRefreshInterval: the background refresh follows a JWKS's
// Cache-Control max-age when it asks for less than jwks_refresh, never
// below a minute.
func TestJWKSRefreshInterval(t *testing.T) {
	tests := []struct {
		cacheControl []string
		want         time.Duration
	}{
		{want: 5 * time.Minute},
		{cacheControl: []string{"public, max-age=120"}, want: 2 * time.Minute},
		{cacheControl: []string{"max-age=1"}, want: time.Minute},
		{cacheControl: []string{"max-age=0"}, want: time.Minute},
		{cacheControl: []string{"max-age=86400"}, want: 5 * time.Minute},
		{cacheControl: []string{"no-store"}, want: 5 * time.Minute},
		{cacheControl: []string{"max-age=abc"}, want: 5 * time.Minute},
		{cacheControl: []string{"max-age=-5"}, want: 5 * time.Minute},
		{cacheControl: []string{"private", "Max-Age=\"90\""}, want: 90 * time.Second},
	}
	for _, tt := range tests {
		if got := refreshAfter(5*time.Minute, maxAge(tt.cacheControl)); got != tt.want {
			t.Errorf("Cache-Control %q: refresh after %s, want %s", tt.cacheControl, got, tt.want)
		}
	}
}

func TestOIDCKeyRotationAndRemoval(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{publish: []signingKey{testSigningKeys().rsa1}})
	ctx := t.Context()
	old := f.token(t, nil)
	if _, err := f.v.Verify(ctx, old, oidcTestRouteA); err != nil {
		t.Fatal(err)
	}

	// Rotation: the issuer publishes rsa-2 and starts signing with it.
	f.idp.setKeys(f.keys.rsa1, f.keys.rsa2)
	before := f.idp.fetches.Load()
	rotated := mintJWT(t, f.keys.rsa2, "rsa-2", "at+jwt", f.claims(nil))
	if _, err := f.v.Verify(ctx, rotated, oidcTestRouteA); err != nil {
		t.Fatalf("token signed by the new key: %v", err)
	}
	if got := f.idp.fetches.Load() - before; got != 1 {
		t.Errorf("JWKS fetches for the new kid = %d, want 1", got)
	}

	// Removal: rsa-1 is withdrawn. Until the next refresh the gateway
	// still trusts it; after, neither the cached token nor a fresh one
	// signed by it passes.
	f.idp.setKeys(f.keys.rsa2)
	if _, err := f.v.Verify(ctx, old, oidcTestRouteA); err != nil {
		t.Fatalf("before the refresh: %v", err)
	}
	if err := f.v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	before = f.idp.fetches.Load()
	tests := []struct {
		name    string
		token   string
		wantErr string
	}{
		{name: "cached token of the removed key", token: old, wantErr: "not in the issuer's key set"},
		{name: "fresh token of the removed key", token: f.token(t, nil), wantErr: "not in the issuer's key set"},
		{name: "token of the new key", token: rotated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.v.Verify(ctx, tt.token, oidcTestRouteA)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("verify = %v, want %q", err, tt.wantErr)
			}
		})
	}
	// The rotation used this period's re-fetch: the removed kid costs none.
	if got := f.idp.fetches.Load() - before; got != 0 {
		t.Errorf("JWKS fetches for the removed kid = %d, want 0", got)
	}
}

func TestOIDCJWKSOutageKeepsKeys(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{})
	ctx := t.Context()
	f.idp.down.Store(true)
	if err := f.v.Refresh(ctx); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("refresh during the outage = %v, want a 503 error", err)
	}
	if !f.v.Ready() {
		t.Error("not ready during an outage although keys are cached")
	}
	// Fresh tokens, so they are verified with the cached keys, not
	// served from the token cache.
	for _, tok := range []string{f.token(t, nil), mintJWT(t, f.keys.ec1, "ec-1", "at+jwt", f.claims(nil))} {
		if _, err := f.v.Verify(ctx, tok, oidcTestRouteA); err != nil {
			t.Errorf("verify during the JWKS outage: %v", err)
		}
	}
}

func TestOIDCColdStart(t *testing.T) {
	down := func(p *testIdP) { p.down.Store(true) }
	tests := []struct {
		name string
		opts OIDCOptions
		// recover brings the verifier up once the IdP is back.
		recover func(t *testing.T, v *OIDCVerifier)
	}{
		{
			name: "explicit refresh",
			// A long backoff keeps the background loop out of the way.
			opts: OIDCOptions{RetryMin: time.Hour, RetryMax: time.Hour},
			recover: func(t *testing.T, v *OIDCVerifier) {
				if err := v.Refresh(t.Context()); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name:    "background retry",
			opts:    OIDCOptions{RetryMin: time.Millisecond, RetryMax: 10 * time.Millisecond},
			recover: func(t *testing.T, v *OIDCVerifier) { waitOIDCReady(t, v) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newOIDCFixture(t, fixtureOptions{opts: tt.opts, before: down, noWait: true})
			ctx := t.Context()
			tokens := []string{f.token(t, nil), mintJWT(t, f.keys.rsa1, "", "at+jwt", f.claims(nil))}
			if err := f.v.Refresh(ctx); err == nil {
				t.Fatal("refresh succeeded with the IdP down")
			}
			if f.v.Ready() {
				t.Fatal("ready without keys")
			}
			for _, tok := range tokens {
				if _, err := f.v.Verify(ctx, tok, oidcTestRouteA); err == nil {
					t.Fatal("token accepted before any key was fetched")
				}
			}
			f.idp.down.Store(false)
			tt.recover(t, f.v)
			if !f.v.Ready() {
				t.Fatal("not ready after the IdP came up")
			}
			for _, tok := range tokens {
				if _, err := f.v.Verify(ctx, tok, oidcTestRouteA); err != nil {
					t.Errorf("after recovery: %v", err)
				}
			}
		})
	}
}

func TestOIDCDiscoveryIssuerMismatch(t *testing.T) {
	f := newOIDCFixture(t, fixtureOptions{
		opts:   OIDCOptions{RetryMin: time.Hour, RetryMax: time.Hour},
		before: func(p *testIdP) { p.discoveryIssuer = "https://evil.example" },
		noWait: true,
	})
	err := f.v.Refresh(t.Context())
	if err == nil || !strings.Contains(err.Error(), "does not match the configured issuer") {
		t.Fatalf("refresh = %v, want an issuer mismatch", err)
	}
	if f.v.Ready() {
		t.Error("ready with a mismatched discovery document")
	}
	if n := f.idp.fetches.Load(); n != 0 {
		t.Errorf("JWKS fetched %d times from a mismatched discovery document", n)
	}
	if _, err := f.v.Verify(t.Context(), mintJWT(t, f.keys.rsa1, "", "at+jwt", f.claims(nil)), oidcTestRouteA); err == nil {
		t.Error("token accepted")
	}
}

func TestOIDCClientRefusesCrossHostRedirect(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte(`{"keys":[]}`))
	}))
	t.Cleanup(other.Close)
	var home *httptest.Server
	home = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, home.URL+"/final", http.StatusFound)
		case "/other":
			http.Redirect(w, r, other.URL+"/jwks", http.StatusFound)
		default:
			w.Write([]byte("ok"))
		}
	}))
	t.Cleanup(home.Close)
	client := defaultOIDCClient()
	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{name: "same host", path: "/same"},
		{name: "another host", path: "/other", wantErr: "another host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Get(home.URL + tt.path)
			if err == nil {
				resp.Body.Close()
			}
			if (err != nil) != (tt.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("GET %s = %v, want error %q", tt.path, err, tt.wantErr)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the other host was asked %d times", n)
	}
}

func FuzzJWKSParse(f *testing.F) {
	keys := testSigningKeys()
	f.Add([]byte(`{"keys":[` + jwkJSON(f, keys.rsa1.jwk()) + `,` + jwkJSON(f, keys.ec1.jwk()) + `]}`))
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"AAAA"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		got, _ := parseJWKS(body)
		for _, k := range got {
			if !k.IsPublic() {
				t.Fatalf("non-public key %q trusted", k.KeyID)
			}
			if _, sym := k.Key.([]byte); sym {
				t.Fatalf("symmetric key %q trusted", k.KeyID)
			}
		}
	})
}

// FuzzJWKSMaxAge: whatever Cache-Control the IdP (or whoever answers for
// it) sends, the next background fetch is between a minute and the
// configured interval.
func FuzzJWKSMaxAge(f *testing.F) {
	for _, s := range []string{"max-age=120", "public, max-age=0", "max-age=99999999999999999999", `max-age="60"`, "no-store", "max-age", "max-age=-1, max-age=30"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cacheControl string) {
		const interval = 5 * time.Minute
		got := refreshAfter(interval, maxAge([]string{cacheControl}))
		if got < minJWKSMaxAge || got > interval {
			t.Fatalf("Cache-Control %q: refresh after %s, want between %s and %s", cacheControl, got, minJWKSMaxAge, interval)
		}
	})
}
