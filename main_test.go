package main

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "auth: {anonymous: true}\npolicy: {dir: policies}\nupstreams: [{name: docs, url: http://127.0.0.1:3001/mcp}]\n")
	bad := write("bad.yaml", "server: {listne: x}\nupstreams: [{name: Docs, url: ftp://x}]\n")
	invalid := write("invalid.yaml", "upstreams: [{name: Docs, url: ftp://x}]\n")
	plain := write("plain.yaml", "auth: {anonymous: true}\npolicy: {dir: policies}\nupstreams: [{name: docs, url: http://10.1.2.3:3001/mcp}]\n")

	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantCode   int
		wantStdout string
		wantStderr []string // substrings
		stdoutHas  []string // substrings, instead of wantStdout
	}{
		{name: "no command", args: nil, wantCode: 2, wantStderr: []string{"usage: ctxgate"}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 2, wantStderr: []string{`unknown command "frobnicate"`}},
		{name: "check valid", args: []string{"check", "--config", good}, wantCode: 0, stdoutHas: []string{"policy: package ctxgate.authz, revision ", good + ": configuration is valid\n"}},
		{name: "check unknown key", args: []string{"check", "--config", bad}, wantCode: 1, wantStderr: []string{"server.listne: line 1: unknown key"}},
		{name: "check reports every problem", args: []string{"check", "--config", invalid}, wantCode: 1, wantStderr: []string{
			"configuration has 4 problem(s)",
			"policy.dir: is required",
			"auth: no authentication method is configured",
			"upstreams[0].name: must be 1-63 characters",
			"upstreams[0].url: scheme must be http or https",
		}},
		{name: "check warns about plain http upstreams", args: []string{"check", "--config", plain}, wantCode: 0, stdoutHas: []string{plain + ": configuration is valid\n"}, wantStderr: []string{
			"ctxgate: warning: upstreams[0].url: plain http:// to a non-loopback host",
		}},
		{name: "check missing file", args: []string{"check", "--config", filepath.Join(dir, "nope.yaml")}, wantCode: 1, wantStderr: []string{"nope.yaml"}},
		{name: "check without --config", args: []string{"check"}, wantCode: 1, wantStderr: []string{"--config FILE is required"}},
		{name: "hash-key", args: []string{"hash-key"}, stdin: "test\n", wantCode: 0, wantStdout: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"},
		{name: "hash-key empty", args: []string{"hash-key"}, stdin: "", wantCode: 1, wantStderr: []string{"write the API key on standard input"}},
		{name: "help", args: []string{"help"}, wantCode: 0, wantStdout: usage},
		{name: "help command", args: []string{"help", "check"}, wantCode: 0, wantStdout: commandHelp["check"]},
		{name: "help unknown command", args: []string{"help", "frobnicate"}, wantCode: 2, wantStderr: []string{`unknown command "frobnicate"`}},
		{name: "--help", args: []string{"--help"}, wantCode: 0, wantStdout: usage},
		{name: "serve --help", args: []string{"serve", "--help"}, wantCode: 0, wantStdout: commandHelp["serve"]},
		{name: "check -h", args: []string{"check", "--config", good, "-h"}, wantCode: 0, wantStdout: commandHelp["check"]},
		{name: "demo --help", args: []string{"demo", "--help"}, wantCode: 0, wantStdout: commandHelp["demo"]},
		{name: "hash-key --help does not hash", args: []string{"hash-key", "--help"}, stdin: "test\n", wantCode: 0, wantStdout: commandHelp["hash-key"]},
		{name: "policy --help", args: []string{"policy", "--help"}, wantCode: 0, wantStdout: commandHelp["policy"]},
		{name: "policy test --help", args: []string{"policy", "test", "--help"}, wantCode: 0, wantStdout: commandHelp["policy"]},
		{name: "version --help", args: []string{"version", "--help"}, wantCode: 0, wantStdout: commandHelp["version"]},
		{name: "help after --", args: []string{"policy", "test", "--", "--help"}, wantCode: 1, wantStderr: []string{"--help"}},
		// go test binaries carry no module version and no VCS stamp; the
		// e2e test TestVersionRevision checks a real build's revision.
		{name: "version", args: []string{"version"}, wantCode: 0, wantStdout: "ctxgate dev\n"},
		{name: "policy without subcommand", args: []string{"policy"}, wantCode: 2, wantStderr: []string{"usage: ctxgate policy"}},
		{name: "policy eval without files", args: []string{"policy", "eval"}, wantCode: 1, wantStderr: []string{"--config FILE and --input FILE are required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.wantCode, stderr.String())
			}
			for _, want := range tt.stdoutHas {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			if tt.stdoutHas == nil && (tt.wantStdout != "" || code == 0) {
				if diff := cmp.Diff(tt.wantStdout, stdout.String()); diff != "" {
					t.Errorf("stdout (-want +got):\n%s", diff)
				}
			}
			for _, want := range tt.wantStderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
				}
			}
		})
	}
}

// TestDockerfileBuild runs the Dockerfile's own build command (no Docker
// engine is needed for that) and checks what the image relies on: the
// binary is where COPY takes it from, and it is static, since the
// distroless/static base has no libc.
func TestDockerfileBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	run := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .* -o (\S+) \.)$`).FindSubmatch(dockerfile)
	if run == nil {
		t.Fatal("Dockerfile has no `RUN CGO_ENABLED=0 go build ... -o OUT .` line")
	}
	out := string(run[2])
	if !bytes.Contains(dockerfile, []byte("COPY --from=build "+out+" ")) {
		t.Errorf("the final stage does not COPY the built binary %s", out)
	}
	if !regexp.MustCompile(`(?m)^USER (nonroot|[1-9][0-9]*)(:|$)`).Match(dockerfile) {
		t.Error("the image does not run as non-root")
	}
	bin := filepath.Join(t.TempDir(), "ctxgate")
	cmdline := strings.Replace(string(run[1]), out, bin, 1)
	cmdline = strings.ReplaceAll(cmdline, "${VERSION}", "test")
	cmd := exec.Command("sh", "-c", cmdline)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmdline, err, b)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked; the distroless/static image cannot run it", bin)
		}
	}
	version, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.HasPrefix(string(version), "ctxgate test") {
		t.Errorf("built binary `version` = %q, %v", version, err)
	}
}

// TestShippedPolicyTests runs the shipped policy's Rego tests the way a
// policy author does: ctxgate policy test policies/.
func TestShippedPolicyTests(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"policy", "test", "policies"}, strings.NewReader(""), &stdout, &stderr)
	if code != 0 || !regexp.MustCompile(`(?m)^PASS: (\d+)/(\d+)$`).MatchString(stdout.String()) {
		t.Fatalf("ctxgate policy test policies: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	t.Log(strings.TrimSpace(stdout.String()))
}

// TestPolicyEval: the what-if command decides an input with the
// configured policy and says which rules decided.
func TestPolicyEval(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "ctxgate.yaml")
	input := filepath.Join(dir, "input.json")
	abs, _ := filepath.Abs("policies")
	if err := os.WriteFile(cfg, []byte("auth: {anonymous: true}\npolicy: {dir: "+strconv.Quote(abs)+"}\nupstreams: [{name: docs, url: http://127.0.0.1:3001/mcp}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		input     string
		wantAllow bool
	}{
		{name: "anonymous calls a read-only tool", input: `{"principal":{"id":"anonymous","kind":"anonymous","scopes":[],"groups":[]},"route":"docs","upstream":"docs","method":"tools/call","phase":"request","tool":{"name":"search","annotations":{"readOnlyHint":true}},"protocol":{"version":"2025-11-25","era":"legacy"},"source":{"ip":"127.0.0.1"}}`, wantAllow: true},
		{name: "anonymous calls a destructive tool", input: `{"principal":{"id":"anonymous","kind":"anonymous","scopes":[],"groups":[]},"route":"docs","upstream":"docs","method":"tools/call","phase":"request","tool":{"name":"delete_file","annotations":{"destructiveHint":true}},"protocol":{"version":"2025-11-25","era":"legacy"},"source":{"ip":"127.0.0.1"}}`, wantAllow: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(input, []byte(tt.input), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run([]string{"policy", "eval", "--config", cfg, "--input", input}, strings.NewReader(""), &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if want := fmt.Sprintf(`"allow": %v`, tt.wantAllow); !strings.Contains(stdout.String(), want) || !strings.Contains(stdout.String(), "explanation:") {
				t.Errorf("output lacks %s and an explanation:\n%s", want, stdout.String())
			}
		})
	}
}

// TestPolicyInit: policy init writes a policy whose own tests pass and
// that the gateway loads with every rule it reads; it never overwrites.
func TestPolicyInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"policy", "init", dir}, strings.NewReader(""), &stdout, &stderr); code != 0 {
		t.Fatalf("policy init: exit %d: %s", code, stderr.String())
	}
	stdout.Reset()
	if code := run([]string{"policy", "test", dir}, strings.NewReader(""), &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "PASS: ") {
		t.Fatalf("policy test of the written policy: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	cfg := filepath.Join(t.TempDir(), "ctxgate.yaml")
	if err := os.WriteFile(cfg, []byte("auth: {anonymous: true}\npolicy: {dir: "+strconv.Quote(dir)+"}\nupstreams: [{name: docs, url: http://127.0.0.1:3001/mcp}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout.Reset()
	if code := run([]string{"check", "--config", cfg}, strings.NewReader(""), &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "rules allow, visible, reason, redact") {
		t.Fatalf("check with the written policy: exit %d\n%s%s", code, stdout.String(), stderr.String())
	}
	before, _ := os.ReadFile(filepath.Join(dir, "authz.rego"))
	os.WriteFile(filepath.Join(dir, "authz.rego"), []byte("# mine\n"), 0o644)
	stderr.Reset()
	if code := run([]string{"policy", "init", dir}, strings.NewReader(""), &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "exists") {
		t.Errorf("policy init over an existing policy: exit %d: %s", code, stderr.String())
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "authz.rego")); string(after) != "# mine\n" || len(before) == 0 {
		t.Error("policy init overwrote an existing file")
	}
}
