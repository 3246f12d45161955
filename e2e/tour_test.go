package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoTour runs `ctxgate demo tour` and checks its transcript tells
// the story: a tool hidden from one principal, a denial with its reason,
// redactions (for everyone and by attribute), a cache hit, the modern
// era, a stale answer once the sample server is stopped, the open circuit
// breaker, and recovery. The tour checks each step itself too (exit 1).
func TestDemoTour(t *testing.T) {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(c, bins.ctxgate, "demo", "tour").CombinedOutput()
	transcript := string(out)
	if err != nil {
		t.Fatalf("demo tour: %v\n%s", err, transcript)
	}
	for _, want := range []string{
		"→ alice POST /mcp/project  tools/list {}",
		"← 200  Ctxgate-Cache: miss  tools: list_files, read_file, search",
		"← 200  Ctxgate-Cache: miss  tools: list_files, read_file\n",
		"⚖ visible  api_key:bob    tools/list  →  3 item(s), hidden: search",
		"← 200  error -32602: tool not found or not permitted",
		"← 200  error -32602: the demo policy keeps .env files private",
		"⚖ allow    api_key:bob    tools/call read_file  →  deny: the demo policy keeps .env files private",
		"access key id is [REDACTED]",
		"Maintainer: [email]",
		"← 200  Ctxgate-Cache: hit  text: # Sample project",
		"(2026-07-28, stateless)",
		"← 200 sample server stopped",
		"Ctxgate-Cache: stale; age=600",
		"← 503  error -31013: upstream unavailable: circuit breaker open",
		"← 200 sample server started",
		"/status (upstreams, policy, cache, last decisions)",
	} {
		if !strings.Contains(transcript, want) {
			t.Errorf("tour transcript lacks %q", want)
		}
	}
	if strings.Contains(transcript, "✗") || strings.Contains(transcript, "AKIAIOSFODNN7EXAMPLE") {
		t.Error("a tour step failed, or the key id leaked")
	}
	if n := len(regexp.MustCompile(`(?m)^── \d+\. `).FindAllString(transcript, -1)); n != 12 {
		t.Errorf("%d steps, want 12", n)
	}
	if t.Failed() {
		t.Logf("transcript:\n%s", transcript)
	}
}
