package e2e

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var revisionRE = regexp.MustCompile(`revision [0-9a-f]{12}\b`)

var updateCheck = flag.Bool("update-check", false, "rewrite testdata/check/*.want from the current output")

// TestCheckGolden runs `ctxgate check` on each testdata/check/NAME.yaml (from
// that directory, so relative paths stay relative in the output) and
// compares its exit code, stdout and stderr with NAME.want. Each bad file
// holds a problem serve would only find at start-up (or several at once),
// so a check that stops early or skips the policy and files fails here.
func TestCheckGolden(t *testing.T) {
	dir := filepath.Join("testdata", "check")
	configs, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(configs) == 0 {
		t.Fatalf("no configurations in %s: %v", dir, err)
	}
	for _, path := range configs {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bins.ctxgate, "check", "--config", name+".yaml")
			cmd.Dir = dir
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("exit %d\n-- stdout --\n%s-- stderr --\n%s", code, stdout.String(), stderr.String())
			// The shipped policy's revision changes with every edit of it.
			got = revisionRE.ReplaceAllString(got, "revision REVISION")
			want := filepath.Join(dir, name+".want")
			if *updateCheck {
				if err := os.WriteFile(want, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			b, err := os.ReadFile(want)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(b), got); diff != "" {
				t.Errorf("check %s differs from %s (-want +got); if intended: go test ./e2e -run TestCheckGolden -update-check\n%s", name, want, diff)
			}
		})
	}
}

// TestCheckProbe: check --probe contacts each upstream: a live one is
// reported reachable with what answered, a dead one is a problem.
func TestCheckProbe(t *testing.T) {
	live := startEverything(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/mcp"
	ln.Close() // nothing listens there any more: connection refused
	policyDir, _ := filepath.Abs(filepath.Join("..", "policies"))
	cfg := filepath.Join(t.TempDir(), "ctxgate.yaml")
	body := fmt.Sprintf("auth: {anonymous: true}\npolicy: {dir: %q}\nupstreams:\n  - {name: live, url: %q}\n  - {name: dead, url: %q}\n", policyDir, live, dead)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bins.ctxgate, "check", "--probe", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Errorf("check --probe with a dead upstream exited 0:\n%s", out)
	}
	for _, want := range []string{
		"probe upstreams[0] (live, " + live + "): reachable: ",
		"upstreams[1] (dead, " + dead + "): unreachable: ",
		"connection refused",
		"configuration has 1 problem(s)",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("check --probe output lacks %q:\n%s", want, out)
		}
	}
}
