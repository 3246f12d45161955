package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// gatewayWrapper is the --command the suite's client mode runs through
// ctxgate: it starts the real binary in front of the mock server URL the
// suite passes ($1), polls its log for the bound address (with a
// deadline), and runs the Go SDK conformance client against the gateway.
const gatewayWrapper = `#!/bin/sh
dir=$(mktemp -d)
cat > "$dir/ctxgate.yaml" <<YAML
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: off}
auth: {anonymous: true}
upstreams:
  - {name: mock, url: "$1"}
YAML
%q serve --config "$dir/ctxgate.yaml" 2> "$dir/log" &
pid=$!
i=0
while ! grep -q '"ctxgate listening"' "$dir/log"; do
  i=$((i+1)); if [ $i -gt 800 ]; then cat "$dir/log" >&2; kill $pid; exit 1; fi
  sleep 0.025
done
addr=$(grep -o '"public":"[^"]*"' "$dir/log" | head -1 | cut -d'"' -f4)
%q "http://$addr/mcp/mock"
rc=$?
kill $pid
wait $pid 2>/dev/null
rm -rf "$dir"
exit $rc
`

// TestConformanceClientModern runs the suite's client mode
// (--requirements 2026-07-28) with the Go SDK everything-client, directly
// against the suite's mock servers and through ctxgate in front of them:
// every check that passes directly passes through the gateway, except the
// auth/ scenarios. Those test the client's own OAuth dance with the mock
// server's authorization server, which a gateway ends by design: ctxgate
// authenticates clients itself, the upstream authenticates the gateway,
// and an upstream's 401 and WWW-Authenticate are never relayed (no token
// passthrough).
func TestConformanceClientModern(t *testing.T) {
	requireNodeTool(t, conformanceJS)
	wrapper := filepath.Join(t.TempDir(), "through-ctxgate.sh")
	script := fmt.Sprintf(gatewayWrapper, allowAllPolicy, bins.ctxgate, bins.everythingClient)
	if err := os.WriteFile(wrapper, []byte(script), 0o700); err != nil {
		t.Fatal(err)
	}
	direct := runSuite(t, "client", "--command", bins.everythingClient, "--requirements", "2026-07-28")
	via := runSuite(t, "client", "--command", wrapper, "--requirements", "2026-07-28")
	auth := func(id string) bool { return strings.HasPrefix(id, "auth/") }
	requireSamePasses(t, direct, via, auth)
	passedDirect, passedVia := 0, 0
	for id, status := range direct {
		if !auth(id) && status == "SUCCESS" {
			passedDirect++
			if via[id] == "SUCCESS" {
				passedVia++
			}
		}
	}
	t.Logf("conformance client --requirements 2026-07-28 (auth/ scenarios excluded): %d checks pass directly, %d through ctxgate", passedDirect, passedVia)
}
