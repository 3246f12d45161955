#!/usr/bin/env bash
# Runs every ctxgate test on a fresh machine: installs what the tests need
# (Go modules; the MCP conformance suite, the MCP Inspector and Node 22,
# pinned in e2e/node/package-lock.json), checks formatting and vet, runs the
# unit and end-to-end tests, and gives every fuzz target a short run.
#
#   ./test.sh                  everything
#   FUZZTIME=200000x ./test.sh longer fuzz runs (executions per target)
set -euo pipefail
cd "$(dirname "$0")"

need() {
	command -v "$1" >/dev/null || { echo "test.sh: $1 is required: $2" >&2; exit 1; }
}
need go "install Go 1.26 or newer (https://go.dev/dl)"
need npm "install Node.js with npm (it fetches the pinned MCP test tools)"

echo "== installing dependencies"
go mod download
npm ci --prefix e2e/node --no-audit --no-fund --loglevel=error
# nginx and wrk (Debian) for the benchmark harness's tests (e2e/bench), and
# chromium for the status page test (headless), prometheus for promtool (the
# alert rules' tests, deploy/), redis-server for the shared-state e2e tests
# (several replicas on one Redis). In CI they are installed and required;
# elsewhere those tests skip with the command to install them.
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v chromium >/dev/null || ! command -v promtool >/dev/null || ! command -v redis-server >/dev/null; then
	if [ "${CI:-}" = true ]; then
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx wrk chromium prometheus redis-server >/dev/null
	else
		echo "test.sh: nginx, wrk, chromium, promtool or redis-server is missing; their tests will skip (apt-get install -y nginx wrk chromium prometheus redis-server)" >&2
	fi
fi
# Helm for the chart's tests (deploy/), built from the Go module proxy into
# .tools/bin; the tests install it there themselves when it is missing.
helm_version=v3.22.0
# (helm version says only v3.22 in a build without release ldflags; the
# module version in the binary's build info is exact.)
if [ "$(go version -m .tools/bin/helm 2>/dev/null | awk '$1 == "mod" && $2 == "helm.sh/helm/v3" {print $3}')" != "$helm_version" ]; then
	GOBIN="$PWD/.tools/bin" go install "helm.sh/helm/v3/cmd/helm@$helm_version"
fi

echo "== gofmt, go vet, staticcheck"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './e2e/node/*'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change: $unformatted" >&2
	exit 1
fi
# ./... skips testdata: the e2e tests' own servers are named.
fixtures=./e2e/testdata/stdioserver
go vet ./... $fixtures
# staticcheck, pinned (a version the Go module proxy serves; built once, then cached).
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./... $fixtures

echo "== tests"
go test -count=1 ./...
# The race detector over the packages with shared state (the gateway's
# relays, caches, breakers and reloads; the upstream pool; the cache store).
echo "== race detector"
go test -race -count=1 ./gateway/ ./upstream/ ./cache/

# A count, not a duration: Go 1.26's fuzz coordinator can report a spurious
# "context deadline exceeded" failure when a -fuzztime duration ends while a
# worker is busy (golang/go#75804, fixed in Go 1.27); a count has no deadline.
fuzztime="${FUZZTIME:-10000x}"
echo "== fuzz targets ($fuzztime each)"
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
