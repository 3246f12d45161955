package gateway

import (
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
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
			if got := encodeHeaderValue(tt.value); got != tt.encoded {
				t.Errorf("encodeHeaderValue(%q) = %q, want %q", tt.value, got, tt.encoded)
			}
			got, ok := decodeHeaderValue(tt.encoded)
			if !ok || got != tt.value {
				t.Errorf("decodeHeaderValue(%q) = %q, %v; want %q", tt.encoded, got, ok, tt.value)
			}
		})
	}
	for _, bad := range []string{"=?base64?5pel5pys?=x", "=?base64?***?=", "=?base64?5pel5pys=?="} {
		if got, ok := decodeHeaderValue(bad); ok && got != bad {
			t.Errorf("decodeHeaderValue(%q) = %q, true; want it refused or literal", bad, got)
		}
	}
}

func TestSetMirroredName(t *testing.T) {
	h := http.Header{"Mcp-Name": {"docs__search"}}
	setMirroredName(h, "search ")
	if diff := cmp.Diff([]string{"=?base64?c2VhcmNoIA==?="}, h.Values("Mcp-Name")); diff != "" {
		t.Errorf("Mcp-Name (-want +got):\n%s", diff)
	}
	h = http.Header{}
	setMirroredName(h, "search")
	if _, ok := h["Mcp-Name"]; ok {
		t.Error("setMirroredName added an Mcp-Name the client did not send")
	}
}

func TestCheckLegacyMcpHeaders(t *testing.T) {
	call := request("tools/call", `{"name":"echo","arguments":{}}`)
	read := request("resources/read", `{"uri":"test://static/resource/1"}`)
	tests := []struct {
		name   string
		header http.Header
		req    *jsonrpc.Request
		ok     bool
	}{
		{"none", http.Header{}, call, true},
		{"matching method and name", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call, true},
		{"matching base64 uri", http.Header{"Mcp-Name": {encodeHeaderValue("test://static/resource/1")}}, read, true},
		{"method contradicts the body", http.Header{"Mcp-Method": {"tools/list"}}, call, false},
		{"name contradicts the body", http.Header{"Mcp-Name": {"test_sampling"}}, call, false},
		{"name on a message that names nothing", http.Header{"Mcp-Name": {"echo"}}, request("tools/list", ""), false},
		{"two methods", http.Header{"Mcp-Method": {"tools/call", "tools/call"}}, call, false},
		{"a parameter header", http.Header{"Mcp-Param-Region": {"eu"}}, call, false},
		{"a method on a GET or a batch", http.Header{"Mcp-Method": {"tools/call"}}, nil, false},
		{"nothing on a GET", http.Header{}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkLegacyMcpHeaders(tt.header, tt.req)
			if (err == nil) != tt.ok {
				t.Errorf("checkLegacyMcpHeaders = %v, want ok %t", err, tt.ok)
			}
			if err != nil {
				wantHTTPError(t, err, http.StatusBadRequest, CodeHeaderMismatch)
			}
		})
	}
}
