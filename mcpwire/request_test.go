package mcpwire

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// TestReadParamsKeeps: the check keeps, exactly as sent, every member the
// gateway reads, and nothing of the members it does not.
func TestReadParamsKeeps(t *testing.T) {
	tests := []struct {
		name, method, params string
		want                 Params
		named                string
	}{
		{
			name:   "tools/call",
			method: "tools/call",
			params: `{"name":"echo","arguments": {"a": [1, 2]},"_meta":{"progressToken":1,"io.ctxgate/idempotency-key":"k1"}}`,
			want: Params{Name: "echo", Arguments: []byte(`{"a": [1, 2]}`), Meta: []byte(`{"progressToken":1,"io.ctxgate/idempotency-key":"k1"}`),
				IdempotencyKey: "k1", HasIdempotencyKey: true},
			named: "echo",
		},
		{
			name:   "arguments null, escaped name",
			method: "tools/call",
			params: `{"name":"ech\u006f","arguments":null}`,
			want:   Params{Name: "echo", Arguments: []byte(`null`)},
			named:  "echo",
		},
		{
			name:   "modern _meta",
			method: "prompts/get",
			params: `{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}},"name":"p"}`,
			want: Params{Name: "p", Meta: []byte(`{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"elicitation":{}}}`),
				MetaVersion: "2026-07-28", MetaCapabilities: []byte(`{"elicitation":{}}`)},
			named: "p",
		},
		{
			name:   "idempotency key null is present",
			method: "tools/call",
			params: `{"name":"x","_meta":{"io.ctxgate/idempotency-key":null}}`,
			want:   Params{Name: "x", Meta: []byte(`{"io.ctxgate/idempotency-key":null}`), HasIdempotencyKey: true},
			named:  "x",
		},
		{
			name:   "resources/read",
			method: "resources/read",
			params: `{"uri":"test://a"}`,
			want:   Params{URI: "test://a"},
			named:  "test://a",
		},
		{
			name:   "a list's cursor",
			method: "tools/list",
			params: `{"cursor":"c2"}`,
			want:   Params{Cursor: "c2"},
		},
		{
			name:   "initialize",
			method: "initialize",
			params: `{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{"url":{}}},"clientInfo":{"name":"c","version":"1"}}`,
			want:   Params{ProtocolVersion: "2025-11-25", Capabilities: []byte(`{"elicitation":{"url":{}}}`)},
		},
		{
			name:   "a name inside completion's ref is not the request's",
			method: "completion/complete",
			params: `{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"v"}}`,
			want:   Params{},
		},
		{
			name:   "an unknown method keeps only _meta",
			method: "x/y",
			params: `{"name":"n","uri":"u","_meta":{}}`,
			want:   Params{Meta: []byte(`{}`)},
		},
		{name: "no params", method: "tools/list", want: Params{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := &jsonrpc.Request{Method: tt.method}
			if tt.params != "" {
				req.Params = json.RawMessage(tt.params)
			}
			got, err := ReadParams(req)
			if err != nil {
				t.Fatalf("ReadParams: %v", err)
			}
			if diff := cmp.Diff(tt.want, *got, cmpopts.IgnoreUnexported(Params{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ReadParams (-want +got):\n%s", diff)
			}
			if got.Named() != tt.named {
				t.Errorf("Named() = %q, want %q", got.Named(), tt.named)
			}
		})
	}
}

// TestCheckParamsKeepsOnTheRequest: what Message.CheckParams keeps is what
// ParamsOf and Params find; params that fail keep nothing.
func TestCheckParamsKeepsOnTheRequest(t *testing.T) {
	msg, err := Decode([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Params() != nil {
		t.Fatal("Params before CheckParams")
	}
	if err := msg.CheckParams(); err != nil {
		t.Fatal(err)
	}
	if p := msg.Params(); p == nil || p != ParamsOf(msg.Request()) || p.Name != "echo" {
		t.Errorf("Params() = %+v, ParamsOf = %+v; want the one kept, naming echo", p, ParamsOf(msg.Request()))
	}
	bad, err := Decode([]byte(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.CheckParams(); err == nil || bad.Params() != nil || ParamsOf(bad.Request()) != nil {
		t.Errorf("failed params: CheckParams = %v, Params() = %+v; want an error and nothing kept", err, bad.Params())
	}
}

func TestTargetOf(t *testing.T) {
	for method, want := range map[string]Target{
		"tools/call":          {Kind: "tool", Member: "name", Mirrored: true},
		"prompts/get":         {Kind: "prompt", Member: "name", Mirrored: true},
		"resources/read":      {Kind: "resource", Member: "uri", Mirrored: true},
		"resources/subscribe": {Kind: "resource", Member: "uri"},
	} {
		if got, ok := TargetOf(method); !ok || got != want {
			t.Errorf("TargetOf(%q) = %+v, %v; want %+v", method, got, ok, want)
		}
	}
	if _, ok := TargetOf("tools/list"); ok {
		t.Error("tools/list names a target")
	}
}
