package policy

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

const testedPolicy = `package ctxgate.authz

default allow := false

allow if input.tool.name in data.tools.allowed
`

func TestRunTests(t *testing.T) {
	tests := []struct {
		name        string
		files       map[string]string
		verbose     bool
		wantPassed  int
		wantFailed  int
		wantOutput  []string // substrings
		wantMissing []string
	}{
		{
			name: "passing",
			files: map[string]string{
				"authz.rego": testedPolicy,
				"data.json":  `{"tools": {"allowed": ["echo"]}}`,
				"authz_test.rego": `package ctxgate.authz_test

import data.ctxgate.authz

test_echo_allowed if authz.allow with input as {"tool": {"name": "echo"}}

test_rm_denied if not authz.allow with input as {"tool": {"name": "rm"}}
`,
			},
			wantPassed: 2,
			wantOutput: []string{"PASS: 2/2"},
			// Quiet unless verbose: no per-test lines.
			wantMissing: []string{"test_echo_allowed"},
		},
		{
			name: "passing, verbose",
			files: map[string]string{
				"authz.rego": testedPolicy,
				"data.json":  `{"tools": {"allowed": ["echo"]}}`,
				"authz_test.rego": `package ctxgate.authz_test

import data.ctxgate.authz

test_echo_allowed if authz.allow with input as {"tool": {"name": "echo"}}
`,
			},
			verbose:    true,
			wantPassed: 1,
			wantOutput: []string{"data.ctxgate.authz_test.test_echo_allowed: PASS", "PASS: 1/1"},
		},
		{
			name: "failing, with a print",
			files: map[string]string{
				"authz.rego": testedPolicy,
				"data.json":  `{"tools": {"allowed": ["echo"]}}`,
				"sub/authz_test.rego": `package ctxgate.authz_test

import data.ctxgate.authz

test_echo_allowed if authz.allow with input as {"tool": {"name": "echo"}}

test_rm_allowed if {
	print("checking rm")
	authz.allow with input as {"tool": {"name": "rm"}}
}
`,
			},
			verbose:    true,
			wantPassed: 1,
			wantFailed: 1,
			wantOutput: []string{"data.ctxgate.authz_test.test_rm_allowed: FAIL", "checking rm", "PASS: 1/2", "FAIL: 1/2"},
		},
		{
			name: "an error counts as a failure",
			files: map[string]string{
				"authz.rego": "package ctxgate.authz\n\nx := 1 if input.a\n\nx := 2 if input.a\n",
				"authz_test.rego": `package ctxgate.authz_test

test_conflict if data.ctxgate.authz.x with input as {"a": true}
`,
			},
			wantFailed: 1,
			wantOutput: []string{"ERROR: 1/1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			passed, failed, err := RunTests(context.Background(), writeDir(t, tt.files), &out, tt.verbose)
			if err != nil {
				t.Fatalf("RunTests: %v\n%s", err, out.String())
			}
			if passed != tt.wantPassed || failed != tt.wantFailed {
				t.Errorf("RunTests = %d passed, %d failed; want %d, %d\n%s", passed, failed, tt.wantPassed, tt.wantFailed, out.String())
			}
			for _, s := range tt.wantOutput {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
			for _, s := range tt.wantMissing {
				if strings.Contains(out.String(), s) {
					t.Errorf("output has %q:\n%s", s, out.String())
				}
			}
		})
	}
}

func TestRunTestsErrors(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		match string
	}{
		{name: "no tests", files: map[string]string{"authz.rego": testedPolicy}, match: "no tests found"},
		{name: "syntax error", files: map[string]string{"authz.rego": testedPolicy, "a_test.rego": "package x\n\ntest_a if {\n"}, match: "load policy tests"},
		{name: "compile error", files: map[string]string{"authz.rego": testedPolicy, "a_test.rego": "package x\n\ntest_a if nope(1)\n"}, match: "undefined function"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			_, _, err := RunTests(context.Background(), writeDir(t, tt.files), &out, false)
			if err == nil || !strings.Contains(err.Error(), tt.match) {
				t.Errorf("RunTests: %v, want an error containing %q\n%s", err, tt.match, out.String())
			}
		})
	}
}

// TestABACPolicy runs the tests of the benchmark policy: the benchmarks
// measure a policy that decides what it claims to.
func TestABACPolicy(t *testing.T) {
	var out bytes.Buffer
	passed, failed, err := RunTests(context.Background(), "testdata/abac", &out, false)
	if err != nil || failed != 0 || passed == 0 {
		t.Fatalf("RunTests(testdata/abac) = %d passed, %d failed, %v\n%s", passed, failed, err, out.String())
	}
}
