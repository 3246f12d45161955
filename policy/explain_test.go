package policy

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

const explainedPolicy = `package ctxgate.authz

default allow := false

allow if {
	print("tool", input.tool.name)
	input.tool.name in data.tools.allowed
}

reason := "not allowed" if not allow

redact contains {"pattern": "secret"} if allow

slow if {
	some i in numbers.range(1, 100000)
	some j in numbers.range(1, 100000)
	i == j + 1000000
}

allow if {
	input.tool.name == "slow"
	slow
}

visible if {
	trace("visibility by name")
	input.tool.name != "hidden"
}
`

func TestExplain(t *testing.T) {
	files := map[string]string{"authz.rego": explainedPolicy, "data.json": `{"tools": {"allowed": ["echo"]}}`}
	tests := []struct {
		name      string
		in        *Input
		want      Decision // Revision and ID not compared
		wantLines []string // each must be a line, in this order
	}{
		{
			name: "allowed",
			in:   toolCall("echo", nil),
			want: Decision{Allow: true, Redact: []Redaction{{Pattern: "secret"}}},
			wantLines: []string{
				"print: authz.rego:6: tool echo",
				"rule: authz.rego:5: allow if",
				"allow = true",
				`redact pattern "secret" -> "[REDACTED]"`,
			},
		},
		{
			name: "denied by the default",
			in:   toolCall("rm", nil),
			want: Decision{Reason: "not allowed"},
			wantLines: []string{
				"rule: authz.rego:3: default allow := false",
				`rule: authz.rego:10: reason := "not allowed" if not allow`,
				"allow = false",
				`reason = "not allowed"`,
			},
		},
		{
			name:      "list item",
			in:        &Input{Method: "tools/list", Phase: PhaseListItem, Tool: &Tool{Name: "hidden"}},
			want:      Decision{},
			wantLines: []string{"note: authz.rego:26: visibility by name", "visible = false"},
		},
		{
			name:      "timeout",
			in:        toolCall("slow", nil),
			want:      Decision{Failure: FailureTimeout},
			wantLines: []string{},
		},
	}
	// Only the timeout case runs under a short timeout: the others must not
	// depend on how loaded the machine is.
	e := mustNew(t, Options{Dir: writeDir(t, files)})
	short := mustNew(t, Options{Dir: writeDir(t, files), Timeout: 50 * time.Millisecond})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := e
			if tt.want.Failure == FailureTimeout {
				e = short
			}
			d, lines, err := e.Explain(context.Background(), tt.in)
			if (err != nil) != (tt.want.Failure != "") {
				t.Errorf("Explain error %v, want failure %q", err, tt.want.Failure)
			}
			if d.Allow != tt.want.Allow || d.Reason != tt.want.Reason || d.Failure != tt.want.Failure || len(d.Redact) != len(tt.want.Redact) || d.Revision != e.Revision() {
				t.Errorf("Explain decision %+v, want %+v", d, tt.want)
			}
			at := 0
			for _, want := range tt.wantLines {
				i := slices.Index(lines[at:], want)
				if i < 0 {
					t.Fatalf("explanation lacks %q (in order):\n%s", want, strings.Join(lines, "\n"))
				}
				at += i + 1
			}
			if tt.want.Failure != "" && !strings.HasPrefix(lines[len(lines)-1], "failure: "+tt.want.Failure) {
				t.Errorf("last line %q, want the failure", lines[len(lines)-1])
			}
		})
	}
}
