package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// commandHelp is each command's --help text. A request for help is an
// answer, not an error: it goes to stdout and exits 0, so `ctxgate serve
// --help | less` works and scripts can tell help from a mistake.
var commandHelp = map[string]string{
	"serve": `usage: ctxgate serve --config FILE

Run the gateway with the configuration FILE (YAML; config/example.yaml shows
every key). The configuration is checked as by ` + "`ctxgate check`" + ` first.
`,
	"check": `usage: ctxgate check --config FILE [--probe]

Check a configuration without serving: every key and value, the policy
(loaded and compiled exactly as serve does, with the rules the gateway reads)
and every file the configuration names (secrets, certificates, CAs, CRLs, pin
files). Every problem is listed at once; exit 1 if there is any.

  --probe   also contact each upstream and each OIDC issuer's discovery
            document and report whether they answer
`,
	"demo": `usage: ctxgate demo [--listen ADDR] [--dir DIR] [--quiet-log]
       ctxgate demo tour [--log FILE]

demo runs the gateway in front of a built-in sample MCP server with two demo
API keys and a demo policy; it prints where everything is.
demo tour starts a demo of its own on free ports and walks a scripted client
through what the gateway does (a hidden tool, denials, redactions, a cache
hit, the 2026-07-28 era, a stale answer and the circuit breaker while the
sample server is stopped), printing each request, its answer and the
decision-log lines it caused; it exits 1 if a step did not show its point.

  --listen ADDR   gateway address (default 127.0.0.1:8080; port 0 picks one)
  --dir DIR       directory the sample server describes (default: a built-in
                  sample project)
  --quiet-log     discard the gateway's own log (the decision log is a file)
  --log FILE      (tour) write the gateway's own log to FILE
`,
	"hash-key": `usage: ctxgate hash-key < KEYFILE
       printf %s "$KEY" | ctxgate hash-key

Read an API key (or admin token) on standard input and print its SHA-256,
for auth.api_keys[].sha256 or admin.token_sha256.
`,
	"policy": `usage: ctxgate policy test [-v] [DIR]
       ctxgate policy eval --config FILE --input FILE
       ctxgate policy build [-o FILE] [--revision REV] [--signing-key PEM --key-id ID] [DIR]
       ctxgate policy init DIR

  test   run the Rego tests (*_test.rego) of a policy directory (default: policies)
  eval   what-if: decide one input document and explain which rules decided
  build  write an OPA bundle of a policy directory, optionally signed
  init   write a minimal, commented policy and its tests into DIR (new or empty)
`,
	"version": `usage: ctxgate version

Print the version, the VCS revision and build time the binary was built from.
`,
	"help": `usage: ctxgate help [COMMAND]
`,
}

// wantsHelp reports whether args (a command's arguments) ask for help:
// -h, -help or --help before any "--".
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// cmdHelp prints the overview, or one command's help.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return 0
	}
	text, ok := commandHelp[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ctxgate help: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	fmt.Fprint(stdout, text)
	return 0
}

// buildVersion is the version set with -ldflags "-X main.version=...",
// else the module version from the build information (a `go install
// ...@v1.2.3` build), else "dev".
func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// versionLine is what `ctxgate version` prints: the version and, when the
// Go toolchain recorded them (a build inside a git checkout), the revision,
// its time and whether the tree had uncommitted changes.
func versionLine() string {
	line := "ctxgate " + buildVersion()
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return line
	}
	vcs := map[string]string{}
	for _, s := range bi.Settings {
		if k, ok := strings.CutPrefix(s.Key, "vcs."); ok {
			vcs[k] = s.Value
		}
	}
	if vcs["revision"] == "" {
		return line
	}
	var extra []string
	extra = append(extra, "revision "+vcs["revision"])
	if vcs["time"] != "" {
		extra = append(extra, vcs["time"])
	}
	if vcs["modified"] == "true" {
		extra = append(extra, "modified")
	}
	return line + " (" + strings.Join(extra, ", ") + ")"
}
