package mcpwire

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestHeaderValueCoding(t *testing.T) {
	tests := []struct {
		name    string
		value   string // as the body has it
		encoded string // as the header carries it
	}{
		{name: "plain ASCII", value: "us-west1", encoded: "us-west1"},
		{name: "non-ASCII", value: "日本", encoded: "=?base64?5pel5pys?="},
		{name: "leading space", value: " us", encoded: "=?base64?IHVz?="},
		{name: "looks encoded", value: "=?base64?x?=", encoded: "=?base64?PT9iYXNlNjQ/eD89?="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := EncodeHeaderValue(tt.value); got != tt.encoded {
				t.Errorf("EncodeHeaderValue(%q) = %q, want %q", tt.value, got, tt.encoded)
			}
			got, ok := DecodeHeaderValue(tt.encoded)
			if !ok || got != tt.value {
				t.Errorf("DecodeHeaderValue(%q) = %q, %v; want %q", tt.encoded, got, ok, tt.value)
			}
		})
	}
	for _, bad := range []string{"=?base64?5pel5pys?=x", "=?base64?***?=", "=?base64?5pel5pys=?="} {
		if got, ok := DecodeHeaderValue(bad); ok && got != bad {
			t.Errorf("DecodeHeaderValue(%q) = %q, true; want it refused or literal", bad, got)
		}
	}
}

func TestSetMirroredName(t *testing.T) {
	h := http.Header{"Mcp-Name": {"docs__search"}}
	SetMirroredName(h, "search ")
	if diff := cmp.Diff([]string{"=?base64?c2VhcmNoIA==?="}, h.Values("Mcp-Name")); diff != "" {
		t.Errorf("Mcp-Name (-want +got):\n%s", diff)
	}
	h = http.Header{}
	SetMirroredName(h, "search")
	if _, ok := h["Mcp-Name"]; ok {
		t.Error("SetMirroredName added an Mcp-Name the client did not send")
	}
}
