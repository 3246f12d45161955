package gateway_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"testing"
	"testing/fstest"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
)

// groupPolicy decides on what an API key's configuration says of its
// holder: read_file for the ops group, search for the payments team.
const groupPolicy = `package ctxgate.authz

default allow := false

allow if input.method in {"initialize", "tools/list", "notifications/initialized"}
allow if {
	input.tool.name == "read_file"
	"ops" in input.principal.groups
}
allow if {
	input.tool.name == "search"
	input.principal.attributes.team == "payments"
}

default visible := true
`

type bearer struct {
	key  string
	base http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.key)
	return b.base.RoundTrip(r)
}

func hashKey(k string) string {
	sum := sha256.Sum256([]byte(k))
	return hex.EncodeToString(sum[:])
}

// TestAPIKeyGroupsDecide: auth.api_keys[].groups and attributes reach
// input.principal, so a policy can decide by them without an IdP.
func TestAPIKeyGroupsDecide(t *testing.T) {
	upstreamURL, _ := countingProject(t)
	engine, err := policy.New(policy.Options{FS: fstest.MapFS{"authz.rego": {Data: []byte(groupPolicy)}}, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Close() })
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
auth:
  api_keys:
    - {name: alice, sha256: %s, groups: [ops]}
    - {name: bob, sha256: %s, attributes: {team: payments}}
policy: {dir: unused}
upstreams: [{name: up, url: %q}]
`, hashKey("alice-key"), hashKey("bob-key"), upstreamURL), gateway.Options{Policy: engine})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key, tool string
		allowed   bool
	}{
		{key: "alice-key", tool: "read_file", allowed: true},
		{key: "alice-key", tool: "search", allowed: false},
		{key: "bob-key", tool: "read_file", allowed: false},
		{key: "bob-key", tool: "search", allowed: true},
	}
	for _, tt := range tests {
		t.Run(tt.key+" "+tt.tool, func(t *testing.T) {
			client := &http.Client{Transport: bearer{tt.key, http.DefaultTransport}}
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(t.Context(), &mcp.StreamableClientTransport{Endpoint: srv.URL + "/mcp/up", HTTPClient: client}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			_, err = cs.CallTool(t.Context(), &mcp.CallToolParams{Name: tt.tool, Arguments: map[string]any{"path": "hello.txt", "query": "hello"}})
			if got := err == nil; got != tt.allowed {
				t.Errorf("allowed = %v (%v), want %v", got, err, tt.allowed)
			}
		})
	}
}
