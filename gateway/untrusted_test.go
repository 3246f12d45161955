package gateway_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestAmbiguousUpstreamAnswerWithheld: an upstream answer that parsers
// could read two ways (a case-variant "Result" beside "result") is not
// relayed: what the policy filtered must be what the client reads.
func TestAmbiguousUpstreamAnswerWithheld(t *testing.T) {
	g := startObsGateway(t, obsOptions{})
	c := &obsClient{g: g}
	c.initialize(t)
	resp, body := c.post(t, `{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"smuggle","arguments":{}}}`)
	var answer struct {
		ID    int `json:"id"`
		Error struct {
			Code int64 `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	if resp.StatusCode != http.StatusBadGateway || answer.ID != 9 || answer.Error.Code != gateway.CodeUpstreamUnavailable || strings.Contains(body, "unfiltered") {
		t.Errorf("ambiguous upstream answer: %s %s; want 502 with error %d for id 9, nothing relayed", resp.Status, body, gateway.CodeUpstreamUnavailable)
	}
}
