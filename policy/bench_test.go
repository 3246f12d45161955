package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// benchEngine loads the ABAC policy of testdata/abac, with the decision
// log on (to io.Discard) as in production.
func benchEngine(b *testing.B) *Engine {
	b.Helper()
	e, err := New(Options{Dir: "testdata/abac", DecisionLog: io.Discard, Mask: []string{"tool.arguments.token"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	return e
}

func benchPrincipal(id string) Principal {
	return Principal{
		ID: "oidc:https://idp.example.com#" + id, Kind: "oidc", Issuer: "https://idp.example.com", Subject: id,
		Scopes: []string{"openid", "mcp"}, Groups: []string{"eng", "sre"},
		Claims: map[string]any{"roles": []any{"developer"}, "email": id + "@example.com", "tenant": "acme"},
	}
}

// userAgents are more distinct values than the decision memo holds: a
// benchmark that sets one per decision measures fresh evaluations (with
// the memo's miss and insertion), never memo hits.
var userAgents = func() []string {
	uas := make([]string, 2*decisionMemoSize)
	for i := range uas {
		uas[i] = "claude-code/1." + strconv.Itoa(i)
	}
	return uas
}()

// benchDecide decides in repeatedly: fresh evaluations unless memo (then
// every decision after the first is a memo hit).
func benchDecide(b *testing.B, e *Engine, in *Input, memo bool) {
	b.Helper()
	ctx := WithRequestID(context.Background(), "req-1")
	if d := e.Decide(ctx, in); !d.Allow {
		b.Fatalf("Decide = %+v, want allow", d)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if !memo {
			i++
			in.Source.UserAgent = userAgents[i%len(userAgents)]
		}
		e.Decide(ctx, in)
	}
}

// BenchmarkDecideToolsCall is one tools/call decision: input conversion,
// evaluation of allow, reason and redact, and the decision log record.
func BenchmarkDecideToolsCall(b *testing.B) {
	benchDecide(b, benchEngine(b), benchInput(), false)
}

// BenchmarkDecideToolsCallMemoHit is BenchmarkDecideToolsCall for an
// input decided before: answered from the memo, logged.
func BenchmarkDecideToolsCallMemoHit(b *testing.B) {
	benchDecide(b, benchEngine(b), benchInput(), true)
}

// BenchmarkDecideToolsCallNoLog is BenchmarkDecideToolsCall without the
// decision log, to show what the record costs.
func BenchmarkDecideToolsCallNoLog(b *testing.B) {
	e, err := New(Options{Dir: "testdata/abac"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	benchDecide(b, e, benchInput(), false)
}

// toolsList returns a tools/list result of n tools of which about half are
// visible to benchPrincipal.
func toolsList(n int) []byte {
	prefixes := []string{"repo", "search", "read", "deploy", "employee", "admin"}
	tools := make([]map[string]any, n)
	for i := range tools {
		p := prefixes[i%len(prefixes)]
		tools[i] = map[string]any{
			"name":        p + "_tool_" + strconv.Itoa(i),
			"description": fmt.Sprintf("Tool %d of the %s family: does something useful with its input.", i, p),
			"annotations": map[string]any{"readOnlyHint": i%3 != 0, "destructiveHint": i%7 == 0},
			"inputSchema": map[string]any{"type": "object", "properties": map[string]any{"path": map[string]any{"type": "string"}}},
		}
	}
	b, _ := json.Marshal(map[string]any{"tools": tools, "nextCursor": "page-2"})
	return b
}

func benchFilterList(b *testing.B, cold bool) {
	e := benchEngine(b)
	list := toolsList(1000)
	base := &Input{
		Principal: benchPrincipal("alice"),
		Route:     "code", Upstream: "code", Method: "tools/list", Phase: PhaseRequest,
		Protocol: Protocol{Version: "2025-06-18", Era: "legacy"},
		Source:   Source{IP: "10.0.0.7", UserAgent: "claude-code/1.0"},
	}
	ctx := context.Background()
	_, removed, err := e.FilterList(ctx, base, list)
	if err != nil || removed == 0 || removed == 1000 {
		b.Fatalf("FilterList removed %d, err %v", removed, err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(list)))
	i := 0
	for b.Loop() {
		if cold {
			// A new principal: nothing is cached for it.
			i++
			base.Principal.ID = "oidc:https://idp.example.com#user" + strconv.Itoa(i)
		}
		if _, _, err := e.FilterList(ctx, base, list); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFilterList1000Cold(b *testing.B) { benchFilterList(b, true) }
func BenchmarkFilterList1000Warm(b *testing.B) { benchFilterList(b, false) }

func benchInput() *Input {
	return &Input{
		Principal: benchPrincipal("alice"),
		Route:     "code", Upstream: "code", Method: "tools/call", Phase: PhaseRequest,
		Tool: &Tool{
			Name:        "repo_read_file",
			Arguments:   map[string]any{"path": "/workspace/src/main.go", "ref": "main", "token": "secret"},
			Annotations: map[string]any{"readOnlyHint": true, "title": "Read a file"},
		},
		Protocol: Protocol{Version: "2025-06-18", Era: "legacy"},
		Source:   Source{IP: "10.0.0.7", UserAgent: "claude-code/1.0"},
	}
}

// BenchmarkInputValue and BenchmarkInputJSONRoundTrip compare building
// the input document directly with a JSON round trip.
func BenchmarkInputValue(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inputValue(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInputJSONRoundTrip(b *testing.B) {
	in := benchInput()
	b.ReportAllocs()
	for b.Loop() {
		bs, _ := json.Marshal(in)
		var x any
		_ = util.UnmarshalJSON(bs, &x)
		if _, err := ast.InterfaceToValue(x); err != nil {
			b.Fatal(err)
		}
	}
}

func shippedEngine(b *testing.B, log io.Writer) (*Engine, *Input) {
	e, err := New(Options{Dir: "../policies", DecisionLog: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	in := benchInput()
	in.Tool.Annotations = map[string]any{"readOnlyHint": true}
	// The shipped policy refuses absolute paths (path_arguments).
	in.Tool.Arguments["path"] = "src/main.go"
	return e, in
}

// BenchmarkDecideShippedPolicy is one tools/call decision with the policy a
// new install starts with (policies/authz.rego), decision log on.
func BenchmarkDecideShippedPolicy(b *testing.B) {
	e, in := shippedEngine(b, io.Discard)
	benchDecide(b, e, in, false)
}

// BenchmarkDecideShippedPolicyMemoHit is BenchmarkDecideShippedPolicy for
// an input decided before, decision log on.
func BenchmarkDecideShippedPolicyMemoHit(b *testing.B) {
	e, in := shippedEngine(b, io.Discard)
	benchDecide(b, e, in, true)
}

// BenchmarkDecideShippedPolicyMemoHitNoLog is the memo hit alone.
func BenchmarkDecideShippedPolicyMemoHitNoLog(b *testing.B) {
	e, in := shippedEngine(b, nil)
	benchDecide(b, e, in, true)
}
