package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelpExitsZero: every command's --help is an answer on stdout with
// exit 0, from the real binary.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"}, {"help", "serve"}, {"serve", "--help"}, {"check", "--help"}, {"demo", "--help"},
		{"demo", "tour", "--help"}, {"hash-key", "--help"}, {"policy", "--help"}, {"policy", "test", "--help"},
		{"policy", "eval", "--help"}, {"policy", "init", "--help"}, {"version", "--help"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			cmd := exec.Command(bins.ctxgate, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("exit: %v\nstderr: %s", err, stderr.String())
			}
			if !strings.HasPrefix(string(out), "usage: ctxgate") || stderr.Len() != 0 {
				t.Errorf("stdout %q, stderr %q: want usage on stdout only", out, stderr.String())
			}
		})
	}
}

// TestVersionRevision: a binary built from a git checkout reports the
// revision it was built from. The module is copied into a fresh git
// repository (a worktree's .git file is not recognised by go build's VCS
// stamping, and GOFLAGS may say -buildvcs=false), committed, and built
// there with -buildvcs=true, as `go install` from a clone builds it.
func TestVersionRevision(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("git is required")
		}
		t.Skip("git is not installed")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	repo := t.TempDir()
	for _, f := range strings.Split(strings.TrimSpace(string(files)), "\n") {
		if strings.HasPrefix(f, "e2e/") {
			continue // the tests and their tools are not part of the binary
		}
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue // listed but deleted in the working tree
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(repo, f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "-c", "commit.gpgsign=false"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", "-A")
	git("commit", "-q", "-m", "version test")
	head := git("rev-parse", "HEAD")
	bin := filepath.Join(t.TempDir(), "ctxgate")
	build := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".")
	build.Dir = repo
	build.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "revision " + head; !strings.HasPrefix(string(out), "ctxgate ") || !strings.Contains(string(out), want) || strings.Contains(string(out), "modified") {
		t.Errorf("version = %q, want it to name %s, unmodified", out, want)
	}
}
