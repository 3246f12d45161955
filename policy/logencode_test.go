package policy

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAppendRecordAgrees: the hand-written encoder makes the document
// encoding/json makes of a record, for every shape of input and result.
func TestAppendRecordAgrees(t *testing.T) {
	minimal := &Input{Principal: Principal{ID: "anonymous", Kind: "anonymous"}, Method: "ping", Phase: PhaseRequest,
		Resource: &Resource{}, Prompt: &Prompt{Name: "p"}}
	odd := documentOf(fullInput())
	odd.Tool.Arguments = map[string]any{
		"line": "a\r\nforged\u2028record", "html": "<b>&</b>", "bad": "\xff\xfe", "tiny": 1e-7, "huge": 1e21,
		"neg": math.Copysign(0, -1), "int": 123456789.0, "frac": 0.1, "num": json.Number("12.50"), "list": []any{nil, false, []any{}},
		"empty": map[string]any{}, "strs": []string{"a"}, "smap": map[string]string{"k": "v"}, "nan": math.NaN(),
	}
	odd.Resource = &Resource{URITemplate: "file:///{x}"}
	tests := []struct {
		name string
		rec  record
	}{
		{name: "a full input, a decision with redactions", rec: record{Input: documentOf(fullInput()), Result: decideResult{Allow: true,
			Redact: []Redaction{{Path: "a.b"}, {Pattern: "x+", Replacement: "y"}, {Key: "(?i)k"}}}}},
		{name: "a minimal input, a failed decision", rec: record{Input: documentOf(minimal), Result: decideResult{Reason: "no", Failure: FailureError},
			Error: "boom\n"}},
		{name: "odd values", rec: record{Input: odd, Result: visibleResult{Visible: true}, MemoHit: true}},
		{name: "a generic document", rec: record{Input: map[string]any{"principal": map[string]any{"id": "***"}, "n": 2.0}, Result: visibleResult{Failure: FailureTimeout}}},
		{name: "a list", rec: record{Input: nil, Result: listResult{Total: 3, Removed: []string{"a", "b"}, Failures: 1}}},
		{name: "a list with nothing removed", rec: record{Result: listResult{Total: 3, Removed: []string{}}}},
		{name: "a delegation", rec: record{Delegation: struct {
			Upstream string `json:"upstream"`
			Act      any    `json:"act"`
		}{"u", map[string]any{"sub": "gw"}}, RequestID: "r"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.rec
			rec.Labels, rec.DecisionID, rec.Path, rec.Timestamp, rec.Revision, rec.Principal = appLabels, "id", "ctxgate/authz/allow", "2026-01-01T00:00:00Z", "rev", "p"
			rec.Metrics = map[string]int64{"timer_rego_query_eval_ns": 42}
			got := appendRecord(nil, &rec)
			if bytes.ContainsAny(got, "\r\n") {
				t.Errorf("record holds a raw line break: %s", got)
			}
			ref := rec
			if in, ok := ref.Input.(*Input); ok && in != nil {
				c := *in
				if c.Tool != nil {
					tool := *c.Tool
					tool.Arguments = withoutNaN(tool.Arguments)
					c.Tool = &tool
				}
				ref.Input = &c
			}
			want, err := json.Marshal(&ref)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, got)
			}
			if err := json.Unmarshal(want, &w); err != nil {
				t.Fatal(err)
			}
			if m, ok := g.(map[string]any)["input"].(map[string]any); ok {
				if tool, ok := m["tool"].(map[string]any); ok {
					if args, ok := tool["arguments"].(map[string]any); ok && args["nan"] == nil {
						delete(args, "nan") // encoding/json refuses NaN; the log writes null
					}
				}
			}
			if diff := cmp.Diff(w, g); diff != "" {
				t.Errorf("appendRecord (+) and encoding/json (-) differ:\n%s\n%s", diff, got)
			}
		})
	}
}

func withoutNaN(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		if f, ok := v.(float64); ok && math.IsNaN(f) {
			continue
		}
		out[k] = v
	}
	return out
}

func TestAppendFloatAsEncodingJSON(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 0.1, 1e-6, 1e-7, 123456789, 1e20, 1e21, 1.5e300, -2.5e-9, math.MaxFloat64, math.SmallestNonzeroFloat64} {
		want, _ := json.Marshal(f)
		if got := appendFloat(nil, f); string(got) != string(want) {
			t.Errorf("appendFloat(%v) = %s, want %s", f, got, want)
		}
	}
}
