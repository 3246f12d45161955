package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"

	"github.com/ctxgate/ctxgate/gateway"
)

// TestToolPinsShared: two replicas on one Redis keep one set of pins. The
// first replica to list a tool pins it; a rug pull that the second replica
// sees first is quarantined there too (without Redis it would pin the new
// definition on sight); an approval on the second applies on the first;
// an approval Redis cannot store is refused, never made on one replica.
func TestToolPinsShared(t *testing.T) {
	m := miniredis.RunT(t)
	up := &obsUpstream{}
	v1, v2 := echoV1, echoV2
	up.tools.Store(&v1)
	opts := obsOptions{upstreamConfig: ", pin_tools: {mode: record}", redis: m}
	inStep := func(g *obsGateway) {
		t.Helper()
		waitUntil(t, "the replica in step with Redis", func() bool {
			_, body := g.adminGet(t, "/metrics", true)
			return strings.Contains(body, "ctxgate_cache_fanout_in_step 1")
		})
	}
	g1 := startObsGatewayWith(t, opts, up)
	inStep(g1)
	c1 := &obsClient{g: g1}
	c1.initialize(t)
	if got := listedTools(t, c1); strings.Join(got, ",") != "echo" {
		t.Fatalf("replica 1, first sight: %v, want echo pinned and listed", got)
	}

	// The rug pull, then a replica that has never seen the tool.
	up.tools.Store(&v2)
	g2 := startObsGatewayWith(t, opts, up)
	inStep(g2)
	c2 := &obsClient{g: g2}
	c2.initialize(t)
	if got := listedTools(t, c2); len(got) != 0 {
		t.Errorf("replica 2 first sees the changed tool: %v, want it quarantined (replica 1 pinned the reviewed one)", got)
	}
	if code := callCode(t, c2); code != gateway.CodeToolQuarantined {
		t.Errorf("replica 2 call: code %d, want %d", code, gateway.CodeToolQuarantined)
	}
	if got := listedTools(t, c1); len(got) != 0 {
		t.Errorf("replica 1 after the change: %v, want echo quarantined", got)
	}

	if status, body := g2.adminPost(t, "/admin/pins/approve?upstream=up&tool=echo"); status != http.StatusOK {
		t.Fatalf("approve on replica 2: %d %s", status, body)
	}
	waitUntil(t, "replica 1 to apply replica 2's approval", func() bool {
		return strings.Join(listedTools(t, c1), ",") == "echo"
	})
	if code := callCode(t, c1); code != 0 {
		t.Errorf("replica 1 call after the approval: code %d, want none", code)
	}

	m.Close()
	if status, body := g1.adminPost(t, "/admin/pins/approve?upstream=up&tool=echo"); status != http.StatusServiceUnavailable || !strings.Contains(body, "Redis") {
		t.Errorf("approve with Redis gone: %d %s, want 503 naming Redis", status, body)
	}
}

// TestFederatedToolPins: a pinning member's changed tool is left out of a
// federated route's merged tools/list, as on the member's own route.
func TestFederatedToolPins(t *testing.T) {
	up := &obsUpstream{}
	v1, v2 := echoV1, echoV2
	up.tools.Store(&v1)
	upSrv := httptest.NewServer(up)
	t.Cleanup(upSrv.Close)
	other := sdkServer(t, "search")
	srv, err := startGatewayYAML(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
auth: {anonymous: true}
policy: {dir: unused-the-test-passes-no-engine}
upstreams:
  - {name: a, url: %q, pin_tools: {mode: record}}
  - {name: b, url: %q}
routes: [{path: /mcp, upstreams: [a, b], prefix: always, member_timeout: 2s}]
`, upSrv.URL, other.URL), gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	init := rpc(t, http.MethodPost, srv.URL+"/mcp", "", initializeBody, nil)
	if init.status != http.StatusOK {
		t.Fatalf("initialize: %d", init.status)
	}
	names := func() string {
		t.Helper()
		a := rpc(t, http.MethodPost, srv.URL+"/mcp", init.session, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`, nil)
		var list struct{ Tools []struct{ Name string } }
		_ = json.Unmarshal(a.Result["tools"], &list.Tools)
		var out []string
		for _, tool := range list.Tools {
			out = append(out, tool.Name)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	if got := names(); got != "a__echo,b__search" {
		t.Fatalf("first list: %s, want a__echo,b__search", got)
	}
	up.tools.Store(&v2)
	if got := names(); got != "b__search" {
		t.Errorf("after the rug pull: %s, want a__echo left out (quarantined)", got)
	}
}
