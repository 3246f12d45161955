package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// TestPrincipalNeverLogsToken: however a principal reaches a log line or
// JSON, its raw access token does not.
func TestPrincipalNeverLogsToken(t *testing.T) {
	p := &Principal{ID: "oidc:i#alice", Kind: "oidc", AccessToken: "eyJ.secret.token"}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "principal", p, "caller", callerOf(p))
	b, _ := json.Marshal(p)
	buf.Write(b)
	if strings.Contains(buf.String(), "secret") {
		t.Errorf("the access token was written: %s", buf.String())
	}
	if c := callerOf(p); c.AccessToken != p.AccessToken {
		t.Error("an oidc principal's caller lacks its verified token")
	}
	if c := callerOf(&Principal{ID: "api_key:ci", Kind: "api_key", AccessToken: "x"}); c.AccessToken != "" {
		t.Error("a non-oidc principal's caller carries a token to exchange")
	}
}

func TestCredentialError(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantInMsg  string
		challenge  bool
	}{
		{name: "no token", err: &upstream.CredentialError{Upstream: "crm", Reason: upstream.ReasonNoToken}, wantStatus: http.StatusForbidden, wantInMsg: "called as the signed-in user"},
		{name: "refused", err: &upstream.CredentialError{Upstream: "crm", Reason: upstream.ReasonRefused, Code: "invalid_grant"}, wantStatus: http.StatusUnauthorized, wantInMsg: "sign in again", challenge: true},
		{name: "failed", err: fmt.Errorf("attempt: %w", &upstream.CredentialError{Upstream: "crm", Reason: upstream.ReasonFailed, Code: "invalid_client"}), wantStatus: http.StatusBadGateway, wantInMsg: "nothing was sent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := credentialError(tt.err, `Bearer error="invalid_token"`)
			if e.Status != tt.wantStatus || e.Code != CodeUpstreamCredential || !strings.Contains(e.Message, tt.wantInMsg) {
				t.Errorf("got %d %d %q", e.Status, e.Code, e.Message)
			}
			if strings.Contains(e.Message, "invalid_") {
				t.Errorf("the client message carries the token service's error: %q", e.Message)
			}
			if got := e.Header.Get("Www-Authenticate") != ""; got != tt.challenge {
				t.Errorf("challenge present = %v, want %v", got, tt.challenge)
			}
			if !errors.Is(e, upstream.ErrCredential) {
				t.Error("the cause is lost for the log")
			}
		})
	}
}

func TestDeclaresURLElicitation(t *testing.T) {
	tests := []struct {
		params string
		modern bool
		want   bool
	}{
		{params: `{"capabilities":{"elicitation":{"url":{}}}}`, want: true},
		{params: `{"capabilities":{"elicitation":{"form":{}}}}`},
		{params: `{"capabilities":{"elicitation":{"url":null}}}`},
		{params: `{"capabilities":{}}`},
		{params: `not json`},
		{params: `{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}}`, modern: true, want: true},
		{params: `{"capabilities":{"elicitation":{"url":{}}}}`, modern: true},
	}
	for _, tt := range tests {
		if got := urlElicitation(tt.params, tt.modern); got != tt.want {
			t.Errorf("declaresURLElicitation(%s, modern %v) = %v, want %v", tt.params, tt.modern, got, tt.want)
		}
	}
}

// urlElicitation is declaresURLElicitation of the capabilities a request
// declares, as its params check kept them: initialize's, or a modern
// request's _meta.
func urlElicitation(params string, modern bool) bool {
	method := "initialize"
	if modern {
		method = "tools/list"
	}
	p, err := mcpwire.ReadParams(&jsonrpc.Request{Method: method, Params: json.RawMessage(params)})
	if err != nil {
		return false
	}
	if modern {
		return declaresURLElicitation(p.MetaCapabilities)
	}
	return declaresURLElicitation(p.Capabilities)
}

// FuzzDeclaresURLElicitation: client-supplied params never panic.
func FuzzDeclaresURLElicitation(f *testing.F) {
	f.Add([]byte(`{"capabilities":{"elicitation":{"url":{}}}}`), false)
	f.Add([]byte(`{"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}}}`), true)
	f.Fuzz(func(t *testing.T, params []byte, modern bool) {
		_ = urlElicitation(string(params), modern)
		_ = declaresURLElicitation(params)
	})
}
