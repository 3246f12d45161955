package identity

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

const (
	testKeyCI  = "ctxgate-test-key-ci-0123456789"
	testKeyDev = "ctxgate-test-key-dev-9876543210"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func testAuth(anonymous bool, header string) config.Auth {
	return config.Auth{
		Anonymous:    anonymous,
		APIKeyHeader: header,
		APIKeys: []config.APIKey{
			{Name: "ci", SHA256: sha256Hex(testKeyCI)},
			{Name: "dev", SHA256: strings.ToUpper(sha256Hex(testKeyDev))},
		},
	}
}

func TestNewAuthenticatorRejectsBadHash(t *testing.T) {
	tests := []struct {
		name string
		hash string
	}{
		{name: "not hex", hash: strings.Repeat("z", 64)},
		{name: "too short", hash: sha256Hex("k")[:62]},
		{name: "too long", hash: sha256Hex("k") + "00"},
		{name: "empty", hash: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config.Auth{APIKeyHeader: "authorization", APIKeys: []config.APIKey{{Name: "k", SHA256: tt.hash}}}
			if _, err := NewAuthenticator(cfg); err == nil {
				t.Errorf("NewAuthenticator(sha256 %q) succeeded, want an error", tt.hash)
			}
		})
	}
}

const testResource = "https://mcp.example.com/mcp/a"

// fakeTokens is a TokenVerifier that accepts one token.
type fakeTokens struct {
	token    string
	p        *Principal
	resource string // the resource the last call asked for
}

func (f *fakeTokens) Verify(_ context.Context, token, resource string) (*Principal, error) {
	f.resource = resource
	if token != f.token {
		return nil, errors.New("signature invalid")
	}
	return f.p, nil
}

// fakeCerts is a CertIdentifier that names every chain by its leaf's CN,
// and refuses a leaf without one.
type fakeCerts struct{}

func (fakeCerts) Identify(chain []*x509.Certificate) (*Principal, error) {
	cn := chain[0].Subject.CommonName
	if cn == "" {
		return nil, errors.New("no name in certificate")
	}
	return &Principal{ID: "mtls:cn:" + cn, Kind: "mtls"}, nil
}

func verifiedTLS(cn string) *tls.ConnectionState {
	leaf := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	return &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf}}}
}

func TestAuthenticate(t *testing.T) {
	ci := &Principal{ID: "api_key:ci", Kind: "api_key", Name: "ci"}
	dev := &Principal{ID: "api_key:dev", Kind: "api_key", Name: "dev"}
	user := &Principal{ID: "oidc:https://idp.example.com#u1", Kind: "oidc", Issuer: "https://idp.example.com", Subject: "u1"}
	const jwt = "aaa.bbb.ccc"
	bearer := func(v string) http.Header { return http.Header{"Authorization": {v}} }
	xkey := func(v ...string) http.Header { return http.Header{"X-Api-Key": v} }
	tests := []struct {
		name   string
		cfg    config.Auth
		tokens bool // an OIDC verifier accepting jwt as user
		certs  bool // an mTLS identifier
		header http.Header
		tls    *tls.ConnectionState
		want   *Principal
		// When want is nil: 400 (ErrDuplicateCredential) or 401
		// (*Failure), and for a 401 whether it is RFC 6750 invalid_token
		// (a bearer was presented).
		wantStatus  int
		wantInvalid bool
	}{
		{name: "anonymous on, no credential", cfg: testAuth(true, "authorization"), want: anonymous},
		{name: "anonymous off, no credential", cfg: testAuth(false, "authorization"), wantStatus: http.StatusUnauthorized},
		{name: "anonymous only, no keys, no credential", cfg: config.Auth{Anonymous: true, APIKeyHeader: "authorization"}, want: anonymous},

		{name: "bearer key", cfg: testAuth(false, "authorization"), header: bearer("Bearer " + testKeyCI), want: ci},
		{name: "bearer second key, upper-case hash", cfg: testAuth(false, "authorization"), header: bearer("Bearer " + testKeyDev), want: dev},
		{name: "bearer scheme case-insensitive", cfg: testAuth(false, "authorization"), header: bearer("bEaReR " + testKeyCI), want: ci},
		{name: "bearer with extra spaces", cfg: testAuth(false, "authorization"), header: bearer("Bearer   " + testKeyCI + " "), want: ci},
		{name: "bearer key with anonymous on", cfg: testAuth(true, "authorization"), header: bearer("Bearer " + testKeyCI), want: ci},
		{name: "wrong bearer key", cfg: testAuth(false, "authorization"), header: bearer("Bearer wrong-key"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "wrong bearer key, anonymous on: no downgrade", cfg: testAuth(true, "authorization"), header: bearer("Bearer wrong-key"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "key with a suffix", cfg: testAuth(false, "authorization"), header: bearer("Bearer " + testKeyCI + "x"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "the hash is not the key", cfg: testAuth(false, "authorization"), header: bearer("Bearer " + sha256Hex(testKeyCI)), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "basic scheme", cfg: testAuth(true, "authorization"), header: bearer("Basic Y2k6c2VjcmV0"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "key without scheme", cfg: testAuth(true, "authorization"), header: bearer(testKeyCI), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "bearer without credential", cfg: testAuth(true, "authorization"), header: bearer("Bearer "), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "bearer alone", cfg: testAuth(true, "authorization"), header: bearer("Bearer"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "empty Authorization, anonymous on: no downgrade", cfg: testAuth(true, "authorization"), header: bearer(""), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "oversized bearer credential", cfg: testAuth(true, "authorization"), header: bearer("Bearer " + strings.Repeat("k", MaxCredentialBytes+1)), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "two Authorization headers", cfg: testAuth(true, "authorization"), header: http.Header{"Authorization": {"Bearer " + testKeyCI, "Bearer " + testKeyCI}}, wantStatus: http.StatusBadRequest},
		{name: "two X-Api-Key headers", cfg: testAuth(true, "x-api-key"), header: xkey(testKeyCI, testKeyCI), wantStatus: http.StatusBadRequest},

		{name: "x-api-key", cfg: testAuth(false, "x-api-key"), header: xkey(testKeyCI), want: ci},
		{name: "wrong x-api-key", cfg: testAuth(false, "x-api-key"), header: xkey("wrong"), wantStatus: http.StatusUnauthorized},
		{name: "empty x-api-key, anonymous on: no downgrade", cfg: testAuth(true, "x-api-key"), header: xkey(""), wantStatus: http.StatusUnauthorized},
		{name: "oversized x-api-key", cfg: testAuth(false, "x-api-key"), header: xkey(strings.Repeat("k", MaxCredentialBytes+1)), wantStatus: http.StatusUnauthorized},
		{name: "bearer key when keys are read from x-api-key", cfg: testAuth(false, "x-api-key"), header: bearer("Bearer " + testKeyCI), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "bearer key when keys are read from x-api-key, anonymous on", cfg: testAuth(true, "x-api-key"), header: bearer("Bearer " + testKeyCI), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "x-api-key when keys are read from authorization, anonymous on", cfg: testAuth(true, "authorization"), header: xkey(testKeyCI), wantStatus: http.StatusUnauthorized},
		{name: "credential with anonymous-only config", cfg: config.Auth{Anonymous: true, APIKeyHeader: "authorization"}, header: bearer("Bearer anything"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "client identity headers are not credentials", cfg: testAuth(false, "authorization"), header: http.Header{"X-Forwarded-User": {"ci"}, "X-Ctxgate-Principal": {"api_key:ci"}}, wantStatus: http.StatusUnauthorized},

		{name: "JWT goes to the token verifier", cfg: testAuth(false, "authorization"), tokens: true, header: bearer("Bearer " + jwt), want: user},
		{name: "bad JWT, anonymous on: no downgrade", cfg: testAuth(true, "authorization"), tokens: true, header: bearer("Bearer x.y.z"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "API key still works next to OIDC", cfg: testAuth(false, "authorization"), tokens: true, header: bearer("Bearer " + testKeyCI), want: ci},
		{name: "JWT without a verifier is not an API key", cfg: testAuth(false, "authorization"), header: bearer("Bearer " + jwt), wantStatus: http.StatusUnauthorized, wantInvalid: true},

		{name: "verified client certificate", cfg: testAuth(false, "authorization"), certs: true, tls: verifiedTLS("agent-1"), want: &Principal{ID: "mtls:cn:agent-1", Kind: "mtls"}},
		{name: "unnamed client certificate, anonymous on: no downgrade", cfg: testAuth(true, "authorization"), certs: true, tls: verifiedTLS(""), wantStatus: http.StatusUnauthorized},
		{name: "bearer wins over a certificate", cfg: testAuth(false, "authorization"), certs: true, tls: verifiedTLS("agent-1"), header: bearer("Bearer " + testKeyCI), want: ci},
		{name: "bad bearer is not rescued by a certificate", cfg: testAuth(false, "authorization"), certs: true, tls: verifiedTLS("agent-1"), header: bearer("Bearer nope"), wantStatus: http.StatusUnauthorized, wantInvalid: true},
		{name: "certificate without mTLS configured", cfg: testAuth(false, "authorization"), tls: verifiedTLS("agent-1"), wantStatus: http.StatusUnauthorized},
		{name: "unverified TLS connection", cfg: testAuth(false, "authorization"), certs: true, tls: &tls.ConnectionState{}, wantStatus: http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuthenticator(tt.cfg)
			if err != nil {
				t.Fatalf("NewAuthenticator: %v", err)
			}
			tokens := &fakeTokens{token: jwt, p: user}
			if tt.tokens {
				a.Tokens = tokens
			}
			if tt.certs {
				a.Certs = fakeCerts{}
			}
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			for k, vs := range tt.header {
				r.Header[k] = vs
			}
			r.TLS = tt.tls
			got, err := a.Authenticate(r, testResource)
			if tt.want != nil {
				if err != nil {
					t.Fatalf("authenticate = %v, want %+v", err, tt.want)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("principal mismatch (-want +got):\n%s", diff)
				}
				if tt.want == user && tokens.resource != testResource {
					t.Errorf("token verified for resource %q, want %q", tokens.resource, testResource)
				}
				return
			}
			if got != nil {
				t.Errorf("authenticate returned principal %+v with its error", got)
			}
			var message string
			switch tt.wantStatus {
			case http.StatusUnauthorized:
				f, ok := errors.AsType[*Failure](err)
				if !ok {
					t.Fatalf("authenticate = %v (%T), want a *Failure (401)", err, err)
				}
				if f.InvalidToken != tt.wantInvalid {
					t.Errorf("InvalidToken = %v, want %v (%v)", f.InvalidToken, tt.wantInvalid, err)
				}
				message = f.Message
			default:
				if !errors.Is(err, ErrDuplicateCredential) {
					t.Fatalf("authenticate = %v, want ErrDuplicateCredential (a %d)", err, tt.wantStatus)
				}
				message = err.Error()
			}
			// The public message never echoes what the client sent.
			for _, vs := range tt.header {
				for _, v := range vs {
					if len(v) > 8 && strings.Contains(message, v) {
						t.Errorf("public message %q echoes the credential", message)
					}
				}
			}
		})
	}
}
