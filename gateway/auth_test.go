package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/identity"
	"github.com/ctxgate/ctxgate/upstream"
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

const testResource = "https://mcp.example.com/mcp/a"

// fakeTokens is an identity.TokenVerifier that accepts one token.
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

func TestAuthenticateMiddleware(t *testing.T) {
	a, err := identity.NewAuthenticator(testAuth(false, "authorization"))
	if err != nil {
		t.Fatal(err)
	}
	a.Tokens = &fakeTokens{token: "aaa.bbb.ccc", p: &Principal{ID: "oidc:i#u", Kind: "oidc", Scopes: []string{"mcp:read"}}}
	s := &Server{auth: a, metrics: NewMetrics(), tracer: noop.NewTracerProvider().Tracer("")}
	rt := &route{
		upstream:    &upstream.Upstream{Name: "a"},
		path:        "/mcp/a",
		resource:    testResource,
		metadataURL: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/a",
	}
	scoped := *rt
	scoped.requiredScopes = []string{"mcp:read", "mcp:write"}
	readOnly := *rt
	readOnly.requiredScopes = []string{"mcp:read"}
	const meta = `Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp/a"`
	tests := []struct {
		name          string
		rt            *route
		authz         string
		twice         bool // send Authorization twice
		wantStatus    int
		wantCode      int64
		wantChallenge string
		wantNext      *Principal // the principal next sees; nil: next not called
		wantReason    string     // the failure counted; "" for none
	}{
		{
			name: "valid key reaches next with its principal", rt: rt, authz: "Bearer " + testKeyCI,
			wantStatus: http.StatusNoContent, wantNext: &Principal{ID: "api_key:ci", Kind: "api_key", Name: "ci"},
		},
		{
			name: "no credential: challenge without an error", rt: rt,
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthenticated, wantChallenge: meta, wantReason: identity.ReasonMissing,
		},
		{
			name: "bad key: invalid_token", rt: rt, authz: "Bearer nope",
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthenticated, wantChallenge: meta + `, error="invalid_token"`, wantReason: identity.ReasonUnknownKey,
		},
		{
			name: "scoped route, no credential: the challenge names the scopes", rt: &scoped,
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthenticated, wantChallenge: meta + `, scope="mcp:read mcp:write"`,
			wantReason: identity.ReasonMissing,
		},
		{
			name: "scoped route, API key cannot carry scopes", rt: &scoped, authz: "Bearer " + testKeyCI,
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthenticated, wantChallenge: meta + `, scope="mcp:read mcp:write"`,
			wantReason: reasonInsufficientScope,
		},
		{
			name: "scoped route, token lacking a scope: step-up", rt: &scoped, authz: "Bearer aaa.bbb.ccc",
			wantStatus: http.StatusForbidden, wantCode: CodeInsufficientScope, wantChallenge: meta + `, scope="mcp:read mcp:write", error="insufficient_scope"`,
			wantReason: reasonInsufficientScope,
		},
		{
			name: "malformed Authorization", rt: rt, authz: "Basic dXNlcjpwdw==",
			wantStatus: http.StatusUnauthorized, wantCode: CodeUnauthenticated, wantChallenge: meta + `, error="invalid_token"`,
			wantReason: identity.ReasonMalformed,
		},
		{
			name: "two Authorization headers: a bad request, no challenge", rt: rt, authz: "Bearer " + testKeyCI, twice: true,
			wantStatus: http.StatusBadRequest, wantCode: CodeInvalidRequest, wantReason: identity.ReasonDuplicate,
		},
		{
			name: "scoped route, token with every scope", rt: &readOnly, authz: "Bearer aaa.bbb.ccc",
			wantStatus: http.StatusNoContent, wantNext: &Principal{ID: "oidc:i#u", Kind: "oidc", Scopes: []string{"mcp:read"}, AccessToken: "aaa.bbb.ccc"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen *Principal
			next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				p, err := principalOf(r.Context())
				if err != nil {
					t.Errorf("principalOf in next: %v", err)
				}
				seen = p
				w.WriteHeader(http.StatusNoContent)
			})
			st := &requestState{}
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
			if tt.authz != "" {
				r.Header.Set("Authorization", tt.authz)
			}
			if tt.twice {
				r.Header.Add("Authorization", tt.authz)
			}
			w := httptest.NewRecorder()
			s.metrics.authFailures.Reset()
			s.authenticate(tt.rt)(next).ServeHTTP(w, r)
			var reasons []string
			if tt.wantReason != "" {
				reasons = []string{tt.wantReason}
			}
			if diff := cmp.Diff(reasons, failureReasons(t, s.metrics)); diff != "" {
				t.Errorf("authentication failures counted (-want +got):\n%s", diff)
			}
			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if diff := cmp.Diff(tt.wantNext, seen); diff != "" {
				t.Errorf("principal seen by next mismatch (-want +got):\n%s", diff)
			}
			if tt.wantNext != nil {
				return
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.wantChallenge {
				t.Errorf("WWW-Authenticate = %q, want %q", got, tt.wantChallenge)
			}
			if st.err == nil || st.err.Code != tt.wantCode {
				t.Errorf("recorded error = %v, want code %d", st.err, tt.wantCode)
			}
		})
	}
}

func TestPrincipalOfFailsClosed(t *testing.T) {
	if p, err := principalOf(context.Background()); err == nil {
		t.Errorf("principalOf(no state) = %+v, want an error", p)
	}
	ctx := context.WithValue(context.Background(), stateKey{}, &requestState{})
	if p, err := principalOf(ctx); err == nil {
		t.Errorf("principalOf(state without principal) = %+v, want an error", p)
	}
}

// failureReasons lists the reasons counted in
// ctxgate_authentication_failures_total, one entry per count.
func failureReasons(t *testing.T, m *Metrics) []string {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		if f.GetName() != "ctxgate_authentication_failures_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				for i := 0; l.GetName() == "reason" && i < int(metric.GetCounter().GetValue()); i++ {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	return out
}
