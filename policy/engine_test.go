package policy

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// testPolicy is the policy most tests decide with. data.tools.allowed comes
// from a data file.
const testPolicy = `package ctxgate.authz

default allow := false

allow if {
	input.method == "tools/call"
	input.tool.name in data.tools.allowed
	not input.tool.arguments.path
}

allow if {
	input.method == "tools/call"
	input.tool.name in data.tools.allowed
	startswith(input.tool.arguments.path, "/workspace/")
}

allow if input.phase == "response"

# A complete rule with two values for one input: a conflict at run time.
allow if input.tool.name == "conflict"

allow := false if input.tool.name == "conflict"

# Loops until the deadline. The bounds depend on input, so partial
# evaluation at load cannot fold the loop in.
allow if {
	input.tool.name == "slow"
	some i in numbers.range(1, count(input.tool.name) * 25000)
	some j in numbers.range(1, count(input.tool.name) * 25000)
	i == j + 1000000
}

allow if input.tool.name == data.teams.platform.tool

reason := sprintf("tool %q is not allowed", [input.tool.name]) if {
	input.tool
	not input.tool.name in data.tools.allowed
}

redact contains {"path": "structuredContent.ssn"} if input.phase == "response"

redact contains {"pattern": ` + "`\\d{3}-\\d{2}-\\d{4}`" + `, "replacement": "XXX"} if input.phase == "response"

visible if {
	input.method == "tools/list"
	not startswith(input.tool.name, "hidden")
	not input.tool.annotations.internal
	not internal_description
}

internal_description if contains(input.tool.description, "INTERNAL")

visible if {
	input.method == "prompts/list"
	not startswith(input.prompt.name, "hidden")
}

visible if {
	input.method == "resources/list"
	not contains(input.resource.uri, "secret")
	not secret_mime_type
}

secret_mime_type if input.resource.mimeType == "application/x-secret"

visible if {
	input.method == "resources/templates/list"
	not contains(input.resource.uriTemplate, "secret")
}
`

// testFiles is a policy directory: the policy, a data file at the root and
// one in a subdirectory (loaded at data.teams).
func testFiles() map[string]string {
	return map[string]string{
		"authz.rego":      testPolicy,
		"data.json":       `{"tools": {"allowed": ["echo", "search"]}}`,
		"teams/data.yaml": "platform:\n  tool: deploy\n",
		"README.md":       "not a policy: ignored",
		".hidden.rego":    "this is not rego, and hidden files are skipped",
		"authz_test.rego": "package ctxgate.authz_test\n\nthis does not parse: tests are not loaded by the engine\n",
	}
}

// writeDir writes files (path -> content) under a new temporary directory.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, files)
	return dir
}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		writeFile(t, dir, name, content)
	}
}

func mustNew(t *testing.T, opts Options) *Engine {
	t.Helper()
	// Tests never inherit the production evaluation timeout (100 ms): a
	// loaded CI machine can exceed it and turn an allow into a timeout
	// deny. A test that is about timeouts sets its own.
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	e, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(e.Close)
	return e
}

func toolCall(name string, args map[string]any) *Input {
	return &Input{
		Principal: Principal{ID: "api_key:ci", Kind: "api_key", Name: "ci"},
		Route:     "docs", Upstream: "docs", Method: "tools/call", Phase: PhaseRequest,
		Tool:     &Tool{Name: name, Arguments: args},
		Protocol: Protocol{Version: "2025-06-18", Era: "legacy"},
		Source:   Source{IP: "192.0.2.1"},
	}
}

func TestDecide(t *testing.T) {
	undefinedPolicy := map[string]string{"authz.rego": "package ctxgate.authz\n\nallow if input.method == \"ping\"\n"}
	response := &Input{Principal: Principal{ID: "anonymous", Kind: "anonymous"}, Method: "tools/call", Phase: PhaseResponse}
	tests := []struct {
		name    string
		files   map[string]string // default testFiles()
		timeout time.Duration
		in      *Input
		want    Decision // Revision and ID are not compared
	}{
		{name: "allow", in: toolCall("echo", nil), want: Decision{Allow: true}},
		{name: "allow with a constrained argument", in: toolCall("search", map[string]any{"path": "/workspace/a"}), want: Decision{Allow: true}},
		{name: "deny on an argument", in: toolCall("search", map[string]any{"path": "/etc/passwd"}), want: Decision{}},
		{name: "deny with reason", in: toolCall("rm", nil), want: Decision{Reason: `tool "rm" is not allowed`}},
		// reason is defined for deploy too, but it is only read for denies.
		{name: "data file in a subdirectory is data.teams", in: toolCall("deploy", nil), want: Decision{Allow: true}},
		{name: "redact instructions", in: response, want: Decision{Allow: true, Redact: []Redaction{
			{Path: "structuredContent.ssn"},
			{Pattern: `\d{3}-\d{2}-\d{4}`, Replacement: "XXX"},
		}}},
		{name: "undefined allow denies", files: undefinedPolicy, in: toolCall("echo", nil), want: Decision{Failure: FailureUndefined}},
		{name: "conflict denies", in: toolCall("conflict", nil), want: Decision{Failure: FailureError, Reason: ""}},
		{name: "timeout denies", timeout: time.Millisecond, in: toolCall("slow", nil), want: Decision{Failure: FailureTimeout}},
		{name: "nil input denies", in: nil, want: Decision{Failure: FailureError}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := tt.files
			if files == nil {
				files = testFiles()
			}
			var logs bytes.Buffer
			e := mustNew(t, Options{Dir: writeDir(t, files), Timeout: tt.timeout, Logger: testLogger(&logs)})
			got := e.Decide(context.Background(), tt.in)
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(Decision{}, "Revision", "ID"),
				cmpopts.SortSlices(func(a, b Redaction) bool { return a.Path+a.Pattern < b.Path+b.Pattern })); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
			if got.Revision != e.Revision() || got.ID == "" {
				t.Errorf("Decide: Revision %q (engine %q), ID %q", got.Revision, e.Revision(), got.ID)
			}
			if warned := strings.Contains(logs.String(), "failed closed"); warned != (tt.want.Failure != "") {
				t.Errorf("warning logged = %t, want %t; log:\n%s", warned, tt.want.Failure != "", logs.String())
			}
		})
	}
}

// TestUnoptimizedRule: a rule whose input-independent part cannot be folded
// in within the partial evaluation budget still loads, decides the same,
// and the operator is told.
func TestUnoptimizedRule(t *testing.T) {
	const expensive = `package ctxgate.authz

default allow := false

# Constant, but too costly to compute at load within the budget.
slow_constant if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i == j + 1000000
}

allow if input.tool.name == "echo"

allow if slow_constant
`
	var logs bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": expensive}), PartialEvalBudget: 10 * time.Millisecond, Timeout: 5 * time.Second, Logger: testLogger(&logs)})
	if got := e.Decide(context.Background(), toolCall("echo", nil)); !got.Allow {
		t.Errorf("Decide(echo) = %+v, want allow", got)
	}
	if !strings.Contains(logs.String(), "policy rules not optimized") || !strings.Contains(logs.String(), "rules=[allow]") {
		t.Errorf("no warning naming the unoptimized rule; log:\n%s", logs.String())
	}
}

func TestVisible(t *testing.T) {
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	item := func(name string, ann map[string]any) *Input {
		return &Input{Principal: Principal{ID: "anonymous"}, Method: "tools/list", Phase: PhaseListItem,
			Tool: &Tool{Name: name, Annotations: ann}}
	}
	tests := []struct {
		name string
		in   *Input
		want bool
	}{
		{name: "visible", in: item("echo", nil), want: true},
		{name: "hidden by name", in: item("hidden_admin", nil), want: false},
		{name: "hidden by annotation", in: item("echo", map[string]any{"internal": true}), want: false},
		{name: "undefined hides", in: &Input{Method: "sampling/createMessage", Phase: PhaseListItem}, want: false},
		{name: "nil hides", in: nil, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.Visible(context.Background(), tt.in); got != tt.want {
				t.Errorf("Visible = %t, want %t", got, tt.want)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name  string
		opts  func(t *testing.T) Options
		match string
	}{
		{name: "empty dir", match: "no .rego files", opts: func(t *testing.T) Options { return Options{Dir: t.TempDir()} }},
		{name: "only tests and data", match: "no .rego files", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, map[string]string{"a_test.rego": "package x", "data.json": "{}"})}
		}},
		{name: "missing dir", match: "no such file", opts: func(t *testing.T) Options { return Options{Dir: filepath.Join(t.TempDir(), "nope")} }},
		{name: "syntax error", match: "rego_parse_error", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, map[string]string{"authz.rego": "package ctxgate.authz\n\nallow if {\n"})}
		}},
		{name: "compile error", match: "undefined function", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, map[string]string{"authz.rego": "package ctxgate.authz\n\nallow if nope(1)\n"})}
		}},
		{name: "bad data file", match: "data.json", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, map[string]string{"authz.rego": "package ctxgate.authz\n\nallow := true\n", "data.json": "{"})}
		}},
		{name: "rule over data", match: "conflict", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, map[string]string{
				"authz.rego": "package ctxgate.authz\n\nallow := true\n",
				"data.json":  `{"ctxgate": {"authz": {"allow": false}}}`,
			})}
		}},
		{name: "no allow rule in the package", match: "defines no allow rule", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, testFiles()), Package: "other.pkg"}
		}},
		{name: "bad package", match: "policy package", opts: func(t *testing.T) Options {
			return Options{Dir: writeDir(t, testFiles()), Package: "a b"}
		}},
		{name: "neither Dir nor FS", match: "Dir or FS is required", opts: func(t *testing.T) Options { return Options{} }},
		{name: "both Dir and FS", match: "not both", opts: func(t *testing.T) Options {
			return Options{Dir: t.TempDir(), FS: fstest.MapFS{}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := New(tt.opts(t))
			if err == nil {
				e.Close()
				t.Fatalf("New: no error, want one containing %q", tt.match)
			}
			if !strings.Contains(err.Error(), tt.match) {
				t.Errorf("New: %v, want an error containing %q", err, tt.match)
			}
		})
	}
}

func TestFS(t *testing.T) {
	fsys := fstest.MapFS{}
	for name, content := range testFiles() {
		fsys[name] = &fstest.MapFile{Data: []byte(content)}
	}
	e := mustNew(t, Options{FS: fsys, ReloadInterval: time.Millisecond})
	if d := e.Decide(context.Background(), toolCall("deploy", nil)); !d.Allow {
		t.Errorf("Decide(deploy) = %+v, want allow (data.teams from teams/data.yaml)", d)
	}
	// Same files, same revision, wherever they come from.
	d := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	if e.Revision() != d.Revision() {
		t.Errorf("revision from FS %q != from Dir %q", e.Revision(), d.Revision())
	}
}

func TestStatusClock(t *testing.T) {
	at := time.Date(2025, 6, 18, 12, 0, 0, 0, time.UTC)
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), Now: func() time.Time { return at }})
	want := Status{Ready: true, Source: "dir", Revision: e.Revision(), LoadedAt: at, Memo: true}
	if diff := cmp.Diff(want, e.Status()); diff != "" {
		t.Errorf("Status (-want +got):\n%s", diff)
	}
	if len(e.Revision()) != 12 {
		t.Errorf("Revision %q: want 12 hex digits", e.Revision())
	}
}

// testLogger logs text records to w, for tests that check a warning.
func testLogger(w *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}

func writeFile(tb testing.TB, dir, name, content string) {
	tb.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// TestDecisionReadsWhatItUses: the one decision query evaluates reason
// only for a denied request and redact only for an allowed one, as the
// contract says: a reason that fails to evaluate does not deny an allowed
// request, nor a failing redact a denied one's answer.
func TestDecisionReadsWhatItUses(t *testing.T) {
	e := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": `package ctxgate.authz

default allow := false

allow if input.tool.name == "echo"

# Conflicts (an evaluation error) whenever it is evaluated.
reason := "a" if input.tool.name == "echo"
reason := "b" if input.tool.name == "echo"
reason := "no" if input.tool.name != "echo"

redact := [{"path": "x"}] if input.tool.name == "echo"
redact := [{"path": "y"}] if input.tool.name != "echo"
redact := [{"path": "z"}] if input.tool.name != "echo"
`})})
	ctx := context.Background()
	if d := e.Decide(ctx, toolCall("echo", nil)); !d.Allow || d.Failure != "" || len(d.Redact) != 1 {
		t.Errorf("allowed: %+v, want allow with one redaction and reason not evaluated", d)
	}
	if d := e.Decide(ctx, toolCall("other", nil)); d.Allow || d.Failure != "" || d.Reason != "no" {
		t.Errorf("denied: %+v, want a deny with its reason and redact not evaluated", d)
	}
}
