package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// userToken signs a test user in at the provider (password grant) and
// returns their access token for resource.
func (i *idp) userToken(t *testing.T, client, secret, user, password, resource string) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {user}, "password": {password}, "resource": {resource}}
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, i.TokenEndpoint, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(client, secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.AccessToken == "" {
		t.Fatalf("token for %s: %s %s", user, resp.Status, raw)
	}
	return body.AccessToken
}

// exchanges reads how many token exchanges the provider made, by subject.
func (i *idp) exchanges(t *testing.T) map[string]int {
	t.Helper()
	resp, err := http.Get(i.Issuer + "/test/exchanges")
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

func (i *idp) revoke(t *testing.T, token string) {
	t.Helper()
	resp, err := http.PostForm(i.Issuer+"/test/revoke", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("revoke: %s", resp.Status)
	}
}

func writeSecret(t *testing.T, value string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTokenExchange: with the real OpenID provider, alice's and bob's own
// tokens are exchanged (RFC 8693) for upstream tokens naming them, for the
// upstream's audience, with the gateway as act; once per user while valid.
// The client's token never reaches the upstream; a revoked token, a wrong
// gateway secret and a principal with no token are refused with nothing
// sent.
func TestTokenExchange(t *testing.T) {
	keyFile, jwk := assertionKey(t)
	provider := startOIDCProvider(t, `{
		"clients":[
			{"client_id":"tool","client_secret":"tool-secret","grant_types":["password"]},
			{"client_id":"ctxgate","client_secret":"ctxgate-secret","scopes":["crm.read"],
			 "grant_types":["client_credentials","urn:ietf:params:oauth:grant-type:token-exchange"]},
			{"client_id":"ctxgate-key","token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[`+jwk+`]},
			 "scopes":["crm.read"],"grant_types":["urn:ietf:params:oauth:grant-type:token-exchange"]}],
		"resources":{"https://short-lived.gateway.test":{"ttl":1},"*":{}},
		"users":{"alice":"alice-pw","bob":"bob-pw","carol":"carol-pw","dave":"dave-pw"}}`)
	everything := startEverything(t)
	rec, unused := startRecorder(t, everything), startRecorder(t, everything)
	decisions := filepath.Join(t.TempDir(), "decisions.jsonl")
	exchange := func(secretFile, resource string) string {
		return fmt.Sprintf(`{token_exchange: {token_url: %q, client_id: ctxgate, client_secret_file: %q,
        audience: "https://crm.internal", resource: %q, scopes: [crm.read]}}`, provider.TokenEndpoint, secretFile, resource)
	}
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: %q}
auth:
  # The route URLs are always accepted too; this audience's tokens live 1s.
  oidc: [{issuer: %q, token_type: at+jwt, clock_skew: 1ms, audiences: ["https://short-lived.gateway.test"]}]
  api_keys: [{name: ci, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]
upstreams:
  - {name: crm, url: %q, identity_headers: true, credentials: %s}
  - {name: crmbad, url: %q, credentials: %s}
  - name: crmkey
    url: %q
    credentials:
      token_exchange: {token_url: %q, client_id: ctxgate-key, client_assertion: {key_file: %q, key_id: gw-1},
        audience: "https://crm.internal", resource: %q, scopes: [crm.read]}
`, allowAllPolicy, decisions, provider.Issuer, rec.URL, exchange(writeSecret(t, "ctxgate-secret"), rec.URL),
		unused.URL, exchange(writeSecret(t, "not-the-secret"), unused.URL),
		rec.URL, provider.TokenEndpoint, keyFile, rec.URL))
	route := gw.URL + "/mcp/crm"
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

	for _, user := range []string{"alice", "bob"} {
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e-" + user, Version: "1"}, nil).Connect(ctx(t), &mcp.StreamableClientTransport{
			Endpoint: route, HTTPClient: &http.Client{Transport: &bearer{token: own[user], base: http.DefaultTransport}},
		}, nil)
		if err != nil {
			t.Fatalf("%s connects: %v\n%s", user, err, gw.stderr.String())
		}
		if _, err := cs.ListTools(ctx(t), nil); err != nil {
			t.Fatalf("%s tools/list: %v", user, err)
		}
		if err := cs.Ping(ctx(t), nil); err != nil {
			t.Fatalf("%s ping: %v", user, err)
		}
		cs.Close()
	}

	reqs := rec.requests()
	if len(reqs) < 4 {
		t.Fatalf("upstream saw %d requests", len(reqs))
	}
	subs := map[string]bool{}
	for i, r := range reqs {
		sent := strings.TrimPrefix(r.header.Get("Authorization"), "Bearer ")
		for user, tok := range own {
			if strings.Contains(r.header.Get("Authorization"), tok) {
				t.Fatalf("upstream request %d carried %s's own token", i, user)
			}
		}
		c := claims(t, sent)
		act, _ := c["act"].(map[string]any)
		principal := r.header.Get("X-Ctxgate-Principal")
		if c["aud"] != "https://crm.internal" || act["sub"] != "ctxgate" || c["client_id"] != "ctxgate" {
			t.Errorf("upstream request %d: token aud %v act %v client %v, want the upstream's audience and act {sub: ctxgate}", i, c["aud"], c["act"], c["client_id"])
		}
		if principal != "" && principal != "oidc:"+provider.Issuer+"#"+c["sub"].(string) {
			t.Errorf("upstream request %d for %s carried a token for sub %v", i, principal, c["sub"])
		}
		subs[c["sub"].(string)] = true
	}
	if !subs["alice"] || !subs["bob"] || len(subs) != 2 {
		t.Errorf("upstream tokens named %v, want alice and bob", subs)
	}
	if got := provider.exchanges(t); got["alice"] != 1 || got["bob"] != 1 {
		t.Errorf("provider exchanges %v, want one per user while the token is valid", got)
	}

	t.Run("act is in the access record and the decision log", func(t *testing.T) {
		waitFor(t, "an access record with the delegation", readyDeadline, func() bool {
			for _, rec := range logRecords(gw.stderr.String()) {
				if rec["msg"] == "request" && strings.Contains(fmt.Sprint(rec["delegation"]), "act:map[sub:ctxgate]") {
					return true
				}
			}
			return false
		})
		data, _ := os.ReadFile(decisions)
		found := false
		for _, rec := range logRecords(string(data)) {
			d, _ := rec["delegation"].(map[string]any)
			act, _ := d["act"].(map[string]any)
			found = found || act["sub"] == "ctxgate" && d["upstream"] == "crm"
		}
		if !found {
			t.Errorf("no decision record carries the delegation:\n%s", data)
		}
		if strings.Contains(gw.stderr.String()+string(data), own["alice"]) {
			t.Error("alice's token was logged")
		}
	})

	refusal := func(t *testing.T, c *rpc, r *recorder, wantStatus int) rpcError {
		t.Helper()
		before := r.count()
		resp := c.post(t, initializeBody)
		e := decodeError(t, resp)
		if resp.StatusCode != wantStatus || e.Error.Code != -31040 {
			t.Errorf("%s code %d %q, want %d and -31040", resp.Status, e.Error.Code, e.Error.Message, wantStatus)
		}
		if n := r.count() - before; n != 0 {
			t.Errorf("the upstream received %d requests", n)
		}
		return e
	}

	t.Run("a revoked subject token is refused", func(t *testing.T) {
		carol := provider.userToken(t, "tool", "tool-secret", "carol", "carol-pw", route)
		provider.revoke(t, carol)
		e := refusal(t, &rpc{url: route, header: http.Header{"Authorization": {"Bearer " + carol}}}, rec, http.StatusUnauthorized)
		if !strings.Contains(e.Error.Message, "sign in again") {
			t.Errorf("message %q does not tell the user what to do", e.Error.Message)
		}
	})

	t.Run("an expired subject token is refused before any exchange", func(t *testing.T) {
		dave := provider.userToken(t, "tool", "tool-secret", "dave", "dave-pw", "https://short-lived.gateway.test")
		// Polled on the route whose exchange always fails, so nothing
		// reaches an upstream while the token is still valid.
		waitFor(t, "dave's 1s token to expire", readyDeadline, func() bool {
			resp := (&rpc{url: gw.URL + "/mcp/crmbad", header: http.Header{"Authorization": {"Bearer " + dave}}}).post(t, initializeBody)
			return decodeError(t, resp).Error.Code == -31001
		})
		before, exchanged := rec.count(), provider.exchanges(t)["dave"]
		resp := (&rpc{url: route, header: http.Header{"Authorization": {"Bearer " + dave}}}).post(t, initializeBody)
		e := decodeError(t, resp)
		if resp.StatusCode != http.StatusUnauthorized || e.Error.Code != -31001 || !strings.Contains(resp.Header.Get("Www-Authenticate"), `error="invalid_token"`) {
			t.Errorf("expired token: %s %d %q", resp.Status, e.Error.Code, e.Error.Message)
		}
		if rec.count() != before || provider.exchanges(t)["dave"] != exchanged {
			t.Error("an expired token was exchanged or reached the upstream")
		}
	})

	t.Run("a wrong gateway secret: clear error, upstream receives nothing", func(t *testing.T) {
		e := refusal(t, &rpc{url: gw.URL + "/mcp/crmbad", header: http.Header{"Authorization": {"Bearer " + provider.userToken(t, "tool", "tool-secret", "alice", "alice-pw", gw.URL+"/mcp/crmbad")}}}, unused, http.StatusBadGateway)
		if strings.Contains(e.Error.Message, "invalid_client") || strings.Contains(e.Error.Message, "authentication failed") {
			t.Errorf("the client was told the token service's error: %q", e.Error.Message)
		}
		// The access record is written as the response ends: wait for it.
		waitFor(t, "the access record with the token service's error code", readyDeadline, func() bool {
			return strings.Contains(gw.stderr.String(), "token service error invalid_client")
		})
		if strings.Contains(gw.stderr.String(), "client authentication failed") {
			t.Error("the gateway log carries the token service's error_description")
		}
	})

	t.Run("the gateway authenticates with a private_key_jwt assertion", func(t *testing.T) {
		keyRoute := gw.URL + "/mcp/crmkey"
		c := &rpc{url: keyRoute, header: http.Header{"Authorization": {"Bearer " + provider.userToken(t, "tool", "tool-secret", "bob", "bob-pw", keyRoute)}}}
		before := rec.count()
		c.initialize(t)
		reqs := rec.requests()[before:]
		if len(reqs) == 0 {
			t.Fatal("nothing reached the upstream")
		}
		got := claims(t, strings.TrimPrefix(reqs[0].header.Get("Authorization"), "Bearer "))
		act, _ := got["act"].(map[string]any)
		if got["sub"] != "bob" || got["client_id"] != "ctxgate-key" || act["sub"] != "ctxgate-key" {
			t.Errorf("token exchanged with the assertion: sub %v client %v act %v", got["sub"], got["client_id"], got["act"])
		}
	})

	t.Run("an API key has no token to exchange", func(t *testing.T) {
		e := refusal(t, &rpc{url: route, header: http.Header{"Authorization": {"Bearer test"}}}, rec, http.StatusForbidden)
		if !strings.Contains(e.Error.Message, "signed-in user") {
			t.Errorf("message %q does not say why", e.Error.Message)
		}
	})
}

// assertionKey writes a P-256 private key (PEM) for the gateway's
// private_key_jwt and returns its file and its public JWK (kid gw-1).
func assertionKey(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	path := filepath.Join(t.TempDir(), "assertion.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	jwk, err := jose.JSONWebKey{Key: &key.PublicKey, KeyID: "gw-1", Algorithm: "ES256", Use: "sig"}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return path, string(jwk)
}
