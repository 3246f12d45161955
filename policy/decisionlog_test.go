package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// logLines decodes every line of a decision log, failing on any line that
// is not one JSON object.
func logLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for line := range strings.Lines(log) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("decision log line is not a JSON object: %v\n%s", err, line)
		}
		recs = append(recs, rec)
	}
	return recs
}

func TestDecisionLogRecord(t *testing.T) {
	var log bytes.Buffer
	at := time.Date(2025, 6, 18, 12, 0, 0, 123, time.UTC)
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log, Now: func() time.Time { return at }})
	ctx := WithRequestID(context.Background(), "req-7")
	d := e.Decide(ctx, toolCall("rm", nil))
	recs := logLines(t, log.String())
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	want := map[string]any{
		"labels":      map[string]any{"app": "ctxgate"},
		"decision_id": d.ID,
		"path":        "ctxgate/authz/allow",
		"input": map[string]any{
			"principal": map[string]any{"id": "api_key:ci", "kind": "api_key", "name": "ci", "scopes": []any{}, "groups": []any{}},
			"route":     "docs", "upstream": "docs", "method": "tools/call", "phase": "request",
			"tool":     map[string]any{"name": "rm"},
			"protocol": map[string]any{"version": "2025-06-18", "era": "legacy"},
			"source":   map[string]any{"ip": "192.0.2.1"},
		},
		"result":     map[string]any{"allow": false, "reason": `tool "rm" is not allowed`},
		"timestamp":  "2025-06-18T12:00:00.000000123Z",
		"revision":   e.Revision(),
		"metrics":    map[string]any{"timer_rego_query_eval_ns": 0.0},
		"principal":  "api_key:ci",
		"request_id": "req-7",
	}
	if diff := cmp.Diff(want, recs[0]); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
}

func TestDecisionLogFailure(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log})
	e.Decide(context.Background(), toolCall("conflict", nil))
	recs := logLines(t, log.String())
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1", len(recs))
	}
	res, _ := recs[0]["result"].(map[string]any)
	errText, _ := recs[0]["error"].(string)
	if res["failure"] != FailureError || res["allow"] != false || !strings.Contains(errText, "conflict") {
		t.Errorf("record of a conflict: result %v, error %q", res, errText)
	}
}

func TestDecisionLogMask(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log, Mask: []string{
		"tool.arguments.password",
		"tool.arguments.nested.token",
		"principal.claims.email",
		"source.ip",      // outside the maps: the slower way
		"params.missing", // absent: nothing to mask
	}})
	in := toolCall("echo", map[string]any{"password": "hunter2", "nested": map[string]any{"token": "t0k", "keep": "k"}, "q": "x"})
	in.Principal.Claims = map[string]any{"email": "a@example.com", "sub": "a"}
	before := deepCopy(t, in)
	e.Decide(context.Background(), in)
	if diff := cmp.Diff(before, in); diff != "" {
		t.Errorf("Decide modified the caller's Input (-before +after):\n%s", diff)
	}
	noIP := toolCall("echo", map[string]any{"password": "hunter2"})
	noIP.Source.IP = ""
	e.Decide(context.Background(), noIP)
	recs := logLines(t, log.String())
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	wantArgs := map[string]any{"password": "***", "nested": map[string]any{"token": "***", "keep": "k"}, "q": "x"}
	input := recs[0]["input"].(map[string]any)
	tool := input["tool"].(map[string]any)
	if diff := cmp.Diff(wantArgs, tool["arguments"]); diff != "" {
		t.Errorf("masked arguments (-want +got):\n%s", diff)
	}
	principal := input["principal"].(map[string]any)
	if diff := cmp.Diff(map[string]any{"email": "***", "sub": "a"}, principal["claims"]); diff != "" {
		t.Errorf("masked claims (-want +got):\n%s", diff)
	}
	if ip := input["source"].(map[string]any)["ip"]; ip != "***" {
		t.Errorf("source.ip = %v, want ***", ip)
	}
	if strings.Contains(log.String(), "hunter2") || strings.Contains(log.String(), "t0k") || strings.Contains(log.String(), "192.0.2.1") {
		t.Errorf("a masked value is in the log:\n%s", log.String())
	}
	// Second record: the fast path (source.ip empty is still present and masked).
	if args := recs[1]["input"].(map[string]any)["tool"].(map[string]any)["arguments"]; !cmp.Equal(args, map[string]any{"password": "***"}) {
		t.Errorf("second record arguments = %v", args)
	}
}

func TestDecisionLogMaskPrincipalID(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log, Mask: []string{"principal.id"}})
	e.Decide(context.Background(), toolCall("echo", nil))
	if strings.Contains(log.String(), "api_key:ci") {
		t.Errorf("the masked principal id is in the log:\n%s", log.String())
	}
}

// TestDecisionLogLines: N decisions are exactly N lines, whatever the
// arguments contain, also when decisions run concurrently.
func TestDecisionLogLines(t *testing.T) {
	var log lockedBuffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log})
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			args := map[string]any{"q": "x\r\n{\"forged\":1}\n\u2028", "i": i}
			e.Decide(context.Background(), toolCall("echo", args))
		})
	}
	wg.Wait()
	recs := logLines(t, log.String())
	if len(recs) != n || strings.Count(log.String(), "\n") != n {
		t.Fatalf("%d records, %d newlines; want %d", len(recs), strings.Count(log.String(), "\n"), n)
	}
	for _, rec := range recs {
		if _, forged := rec["forged"]; forged || rec["path"] != "ctxgate/authz/allow" {
			t.Errorf("unexpected record %v", rec)
		}
	}
}

func TestDecisionLogVisible(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, testFiles()), DecisionLog: &log})
	e.Visible(context.Background(), &Input{Method: "tools/list", Phase: PhaseListItem, Tool: &Tool{Name: "hidden_x"}})
	recs := logLines(t, log.String())
	if len(recs) != 1 || recs[0]["path"] != "ctxgate/authz/visible" || !cmp.Equal(recs[0]["result"], map[string]any{"visible": false}) {
		t.Errorf("records %v, want one visible record with result {visible: false}", recs)
	}
}

func TestNoDecisionLog(t *testing.T) {
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	if d := e.Decide(context.Background(), toolCall("echo", nil)); !d.Allow || d.ID == "" {
		t.Errorf("Decide without a decision log = %+v", d)
	}
}

func TestRequestID(t *testing.T) {
	if got := RequestID(context.Background()); got != "" {
		t.Errorf("RequestID of a bare context = %q", got)
	}
	if got := RequestID(WithRequestID(context.Background(), "r1")); got != "r1" {
		t.Errorf("RequestID = %q, want r1", got)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func deepCopy(t *testing.T, in *Input) *Input {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Input
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return &out
}
