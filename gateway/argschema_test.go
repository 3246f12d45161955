package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestArgumentValidation: with validate_arguments, a call whose arguments
// the tool's inputSchema rejects is answered -32602 and never forwarded; a
// schema with a remote $ref is never fetched, and its tool is refused.
func TestArgumentValidation(t *testing.T) {
	up := &obsUpstream{}
	tools := `[{"name":"echo","inputSchema":{"type":"object","properties":{"text":{"type":"string","maxLength":5}},"required":["text"],"additionalProperties":false}},
		{"name":"remote","inputSchema":{"$ref":"http://169.254.169.254/schema.json"}}]`
	up.tools.Store(&tools)
	g := startObsGatewayWith(t, obsOptions{upstreamConfig: ", validate_arguments: true"}, up)
	c := &obsClient{g: g}
	c.initialize(t)
	for _, tt := range []struct {
		name, params string
		wantCode     int64
	}{
		{name: "valid", params: `{"name":"echo","arguments":{"text":"hi"}}`},
		{name: "missing required", params: `{"name":"echo","arguments":{}}`, wantCode: gateway.CodeInvalidParams},
		{name: "no arguments", params: `{"name":"echo"}`, wantCode: gateway.CodeInvalidParams},
		{name: "wrong type", params: `{"name":"echo","arguments":{"text":5}}`, wantCode: gateway.CodeInvalidParams},
		{name: "too long", params: `{"name":"echo","arguments":{"text":"toolong"}}`, wantCode: gateway.CodeInvalidParams},
		{name: "extra property", params: `{"name":"echo","arguments":{"text":"hi","cmd":"rm -rf /"}}`, wantCode: gateway.CodeInvalidParams},
		{name: "remote ref", params: `{"name":"remote","arguments":{}}`, wantCode: gateway.CodeInvalidParams},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up.mu.Lock()
			before := len(up.bodies)
			up.mu.Unlock()
			resp, body := c.post(t, `{"jsonrpc":"2.0","id":5,"method":"tools/call","params":`+tt.params+`}`)
			var answer struct{ Error struct{ Code int64 } }
			_ = json.Unmarshal([]byte(body), &answer)
			up.mu.Lock()
			forwarded := len(up.bodies) - before
			up.mu.Unlock()
			if resp.StatusCode != http.StatusOK || answer.Error.Code != tt.wantCode {
				t.Errorf("%s: %s %s; want code %d", tt.params, resp.Status, body, tt.wantCode)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantCode == 0]; forwarded != want {
				t.Errorf("forwarded %d requests, want %d", forwarded, want)
			}
			if tt.wantCode != 0 && !strings.Contains(body, "invalid params") {
				t.Errorf("message %s does not say invalid params", body)
			}
		})
	}
}
