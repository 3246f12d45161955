package policy

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// shippedPackages are the packages of the shipped policies (default and
// examples) in ../policies.
var shippedPackages = []string{"ctxgate.authz", "ctxgate.examples.teams", "ctxgate.examples.spiffe"}

// shippedPolicyInputs are principals and requests (without principal,
// route, protocol and source) whose cross product reaches every rule
// family of the shipped policies.
func shippedPolicyInputs() ([]Principal, []Input) {
	principals := []Principal{
		{ID: "anonymous", Kind: "anonymous", Scopes: []string{}, Groups: []string{}},
		{ID: "oidc:https://idp#alice", Kind: "oidc", Issuer: "https://idp", Subject: "alice", Scopes: []string{"mcp"}, Groups: []string{"eng"}},
		{ID: "oidc:https://idp#root", Kind: "oidc", Issuer: "https://idp", Subject: "root", Scopes: []string{}, Groups: []string{"mcp-admin", "platform"}},
		{ID: "oidc:https://idp#vault", Kind: "oidc", Issuer: "https://idp", Subject: "vault", Scopes: []string{}, Groups: []string{"mcp-secrets"}},
		{ID: "mtls:spiffe://example.org/ns/ci/sa/runner", Kind: "mtls", Scopes: []string{}, Groups: []string{},
			Cert: &Cert{Subject: "CN=runner", URIs: []string{"spiffe://example.org/ns/ci/sa/runner"}}},
		{ID: "api_key:ci", Kind: "api_key", Name: "ci", Scopes: []string{}, Groups: []string{}},
	}
	readOnly := map[string]any{"readOnlyHint": true}
	destructive := map[string]any{"destructiveHint": true}
	requests := []Input{
		{Method: "initialize", Phase: PhaseRequest, Params: map[string]any{"protocolVersion": "2025-11-25"}},
		{Method: "tools/list", Phase: PhaseRequest},
		{Method: "tools/call", Phase: PhaseRequest, Tool: &Tool{Name: "search", Arguments: map[string]any{"q": "x"}, Annotations: readOnly}},
		{Method: "tools/call", Phase: PhaseRequest, Tool: &Tool{Name: "read_file", Arguments: map[string]any{"path": "../etc/passwd"}, Annotations: readOnly}},
		{Method: "tools/call", Phase: PhaseRequest, Tool: &Tool{Name: "delete_file", Arguments: map[string]any{"path": "a"}, Annotations: destructive}},
		{Method: "tools/call", Phase: PhaseRequest, Tool: &Tool{Name: "unknown_annotations"}},
		{Method: "tools/call", Phase: PhaseRequest, Tool: &Tool{Name: "run_query", Arguments: map[string]any{"readonly": true}, Annotations: readOnly}},
		{Method: "tools/call", Phase: PhaseRequest, Tool: &Tool{Name: "run_query", Arguments: map[string]any{}, Annotations: readOnly}},
		{Method: "tools/call", Phase: PhaseRequest},
		{Method: "resources/read", Phase: PhaseRequest, Resource: &Resource{URI: "file:///README.md"}},
		{Method: "resources/read", Phase: PhaseRequest, Resource: &Resource{URI: "SECRET://db/password"}},
		{Method: "prompts/get", Phase: PhaseRequest, Prompt: &Prompt{Name: "review"}},
		{Method: "completion/complete", Phase: PhaseRequest, Params: map[string]any{"ref": map[string]any{"type": "ref/resource", "uri": "secret://x/{id}"}}},
		{Method: "notifications/initialized", Phase: PhaseRequest},
		{Method: "sampling/createMessage", Phase: PhaseResponse, Params: map[string]any{"maxTokens": 10}},
		{Method: "tools/call", Phase: PhaseResponse},
		{Method: "no/such/method", Phase: PhaseRequest},
		{Method: "tools/list", Phase: PhaseListItem, Tool: &Tool{Name: "search", Annotations: readOnly}},
		{Method: "tools/list", Phase: PhaseListItem, Tool: &Tool{Name: "delete_file", Annotations: destructive}},
		{Method: "resources/list", Phase: PhaseListItem, Resource: &Resource{URI: "secret://db/password"}},
		{Method: "prompts/list", Phase: PhaseListItem, Prompt: &Prompt{Name: "review"}},
	}
	return principals, requests
}

// TestPartialEvaluationAgrees checks the load-time optimization against
// the policy as written: every decision of the shipped policies (default
// and examples), made with partially evaluated rules, equals the full
// evaluation Explain performs, over a cross product of principals and
// requests that reaches every rule family.
func TestPartialEvaluationAgrees(t *testing.T) {
	principals, requests := shippedPolicyInputs()
	for _, pkg := range shippedPackages {
		e := mustNew(t, Options{Dir: "../policies", Package: pkg})
		if set := e.set.Load(); len(set.unoptimized) > 0 {
			t.Errorf("%s: rules %v were not partially evaluated", pkg, set.unoptimized)
		}
		ctx := context.Background()
		allowed := 0
		for _, p := range principals {
			for _, req := range requests {
				in := req
				in.Principal, in.Route, in.Upstream = p, "docs", "docs"
				in.Protocol, in.Source = Protocol{Version: "2025-11-25", Era: "legacy"}, Source{IP: "192.0.2.1"}
				name := fmt.Sprintf("%s/%s/%s/%s", pkg, p.ID, in.Phase, in.Method)
				full, _, err := e.Explain(ctx, &in)
				if err != nil {
					t.Fatalf("%s: Explain: %v", name, err)
				}
				var got Decision
				if in.Phase == PhaseListItem {
					got.Allow = e.Visible(ctx, &in)
				} else {
					got = e.Decide(ctx, &in)
				}
				// Decide reads reason only for denies and redact only for
				// allows: compare what each answer uses.
				if full.Allow {
					full.Reason = ""
					allowed++
				} else {
					full.Redact = nil
				}
				if diff := cmp.Diff(full, got, cmpopts.IgnoreFields(Decision{}, "Revision", "ID"), cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s (tool %v): partial (+) and full (-) evaluation differ:\n%s", name, in.Tool, diff)
				}
			}
		}
		// A comparison of nothing but denies would prove little.
		if total := len(principals) * len(requests); allowed == 0 || allowed == total {
			t.Errorf("%s: %d of %d decisions allowed: the inputs do not exercise the policy", pkg, allowed, total)
		}
	}
}

// TestNoInlining: the default policy's path arguments, read by three
// argument_violations rules, are kept as a rule by partial evaluation
// (evaluated once per decision), and so is argument_violations, which
// several allow rules count.
func TestNoInlining(t *testing.T) {
	e := mustNew(t, Options{Dir: "../policies"})
	set := e.set.Load()
	c, err := compile(context.Background(), set.store, set.modules, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"data.ctxgate.authz.argument_violations", "data.ctxgate.authz.path_argument_values"}
	if diff := cmp.Diff(want, noInlining(c, set.pkg)); diff != "" {
		t.Errorf("noInlining (-want +got):\n%s", diff)
	}
}
