package gateway

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// request is a client request whose params were checked, as readPost
// leaves it.
func request(method, params string) *mcpwire.Message {
	req := &jsonrpc.Request{Method: method}
	if params != "" {
		req.Params = json.RawMessage(params)
	}
	msg := &mcpwire.Message{Msg: req}
	_ = msg.CheckParams()
	return msg
}

func TestCheckLegacyMcpHeaders(t *testing.T) {
	call := request("tools/call", `{"name":"echo","arguments":{}}`)
	read := request("resources/read", `{"uri":"test://static/resource/1"}`)
	tests := []struct {
		name   string
		header http.Header
		req    *mcpwire.Message
		ok     bool
	}{
		{"none", http.Header{}, call, true},
		{"matching method and name", http.Header{"Mcp-Method": {"tools/call"}, "Mcp-Name": {"echo"}}, call, true},
		{"matching base64 uri", http.Header{"Mcp-Name": {mcpwire.EncodeHeaderValue("test://static/resource/1")}}, read, true},
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
