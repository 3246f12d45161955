package policy

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// fullInput sets every field, with the nil slices inputValue turns into
// empty arrays left non-nil, so that its JSON is the reference document.
func fullInput() *Input {
	return &Input{
		Principal: Principal{
			ID: "oidc:https://idp#alice", Kind: "oidc", Issuer: "https://idp", Subject: "alice", Name: "n",
			Scopes: []string{"mcp"}, Groups: []string{"eng"},
			Claims:     map[string]any{"roles": []any{"dev"}, "n": 1.5, "nested": map[string]any{"ok": true, "nil": nil}},
			Cert:       &Cert{Subject: "CN=alice", URIs: []string{"spiffe://x/alice"}, DNSNames: []string{}, SHA256: "ab"},
			Attributes: map[string]string{"team": "payments", "tier": "gold"},
		},
		Route: "r", Upstream: "u", Method: "tools/call", Phase: PhaseRequest,
		Tool:     &Tool{Name: "t", Arguments: map[string]any{"a": "b"}, Annotations: map[string]any{"readOnlyHint": true}, Description: "d", Pin: "pinned"},
		Resource: &Resource{URI: "file:///x", URITemplate: "file:///{x}", Name: "x", MIMEType: "text/plain"},
		Prompt:   &Prompt{Name: "p", Arguments: map[string]any{"k": "v"}},
		Params:   map[string]any{"level": "info"},
		Result:   map[string]any{"content": []any{map[string]any{"type": "text", "text": "hi"}}},
		Protocol: Protocol{Version: "2025-06-18", Era: "legacy"},
		Source:   Source{IP: "192.0.2.1", UserAgent: "ua"},
	}
}

// jsonValue is the input document by way of encoding/json: the reference.
func jsonValue(t *testing.T, in *Input) ast.Value {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var x any
	if err := util.UnmarshalJSON(b, &x); err != nil {
		t.Fatal(err)
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestInputValue(t *testing.T) {
	minimal := &Input{Principal: Principal{ID: "anonymous", Kind: "anonymous"}, Method: "ping", Phase: PhaseRequest}
	minimalJSON := *minimal
	minimalJSON.Principal.Scopes, minimalJSON.Principal.Groups = []string{}, []string{}
	nilCert := fullInput()
	nilCert.Principal.Cert.DNSNames = nil
	tests := []struct {
		name string
		in   *Input
		want *Input // encoded with encoding/json as the reference
	}{
		{name: "every field", in: fullInput(), want: fullInput()},
		{name: "omitted fields and nil slices", in: minimal, want: &minimalJSON},
		{name: "nil cert names", in: nilCert, want: fullInput()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := inputValue(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if want := jsonValue(t, tt.want); got.Compare(want) != 0 {
				t.Errorf("inputValue:\n got %v\nwant %v", got, want)
			}
			// The decision log encodes documentOf(in): the same document.
			if want := jsonValue(t, documentOf(tt.in)); got.Compare(want) != 0 {
				t.Errorf("documentOf encodes to\n%v\nnot\n%v", want, got)
			}
		})
	}
}

func TestInputValueError(t *testing.T) {
	in := toolCall("echo", map[string]any{"bad": make(chan int)})
	if _, err := inputValue(in); err == nil {
		t.Fatal("inputValue: no error for a channel argument")
	}
	e := mustNew(t, Options{Dir: writeDir(t, testFiles())})
	got := e.Decide(context.Background(), in)
	if diff := cmp.Diff(Decision{Failure: FailureError}, got, cmp.FilterPath(func(p cmp.Path) bool {
		return p.Last().String() == ".Revision" || p.Last().String() == ".ID"
	}, cmp.Ignore())); diff != "" {
		t.Errorf("Decide (-want +got):\n%s", diff)
	}
}
