package mcpwire

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// TestDecodeRPC: DecodeRPC reads what the SDK's decoder reads, and refuses
// what could be read two ways.
func TestDecodeRPC(t *testing.T) {
	id := func(v any) jsonrpc.ID { i, _ := jsonrpc.MakeID(v); return i }
	tests := []struct {
		name    string
		data    string
		want    jsonrpc.Message
		wantErr bool
	}{
		{name: "request", data: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}`,
			want: &jsonrpc.Request{ID: id(float64(7)), Method: "tools/call", Params: json.RawMessage(`{"name":"x"}`)}},
		{name: "notification", data: `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			want: &jsonrpc.Request{Method: "notifications/initialized"}},
		{name: "string id, extension member tolerated", data: `{"jsonrpc":"2.0","id":"a","result":{"tools":[]},"x-trace":1}`,
			want: &jsonrpc.Response{ID: id("a"), Result: json.RawMessage(`{"tools":[]}`)}},
		{name: "error response", data: `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}`,
			want: &jsonrpc.Response{ID: id(float64(1)), Error: &jsonrpc.Error{Code: -32602, Message: "no"}}},
		{name: "duplicate result", data: `{"jsonrpc":"2.0","id":1,"result":{"a":1},"result":{"a":2}}`, wantErr: true},
		{name: "case-variant result", data: `{"jsonrpc":"2.0","id":1,"result":{},"Result":{"secret":1}}`, wantErr: true},
		{name: "invalid UTF-8", data: "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"t\":\"\xff\"}}", wantErr: true},
		{name: "fractional id", data: `{"jsonrpc":"2.0","id":1.5,"result":{}}`, wantErr: true},
		{name: "object id", data: `{"jsonrpc":"2.0","id":{},"result":{}}`, wantErr: true},
		{name: "wrong version", data: `{"jsonrpc":"1.0","id":1,"result":{}}`, wantErr: true},
		{name: "response without id", data: `{"jsonrpc":"2.0","result":{}}`, wantErr: true},
		{name: "non-string method", data: `{"jsonrpc":"2.0","id":1,"method":7}`, wantErr: true},
		{name: "not JSON", data: `{"jsonrpc":`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRPC([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("DecodeRPC err = %v, want error %t", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b jsonrpc.ID) bool { return a == b })); diff != "" {
				t.Errorf("DecodeRPC (-want +got):\n%s", diff)
			}
			// The SDK's own decoder reads the same message.
			sdk, err := jsonrpc.DecodeMessage([]byte(tt.data))
			if err != nil {
				t.Fatalf("jsonrpc.DecodeMessage: %v", err)
			}
			if diff := cmp.Diff(sdk, got, cmp.Comparer(func(a, b jsonrpc.ID) bool { return a == b })); diff != "" {
				t.Errorf("DecodeRPC differs from the SDK (-sdk +ours):\n%s", diff)
			}
		})
	}
}

// FuzzDecodeRPC: whatever DecodeRPC accepts, the SDK's decoder reads the
// same way.
func FuzzDecodeRPC(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}`,
		`{"jsonrpc":"2.0","id":"a","result":{"tools":[]}}`,
		`{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no","data":[1]}}`,
		`{"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeRPC(data)
		if err != nil {
			return
		}
		sdk, err := jsonrpc.DecodeMessage(data)
		if err != nil {
			t.Fatalf("DecodeRPC accepted what the SDK refuses (%v): %q", err, data)
		}
		if diff := cmp.Diff(sdk, got, cmp.Comparer(func(a, b jsonrpc.ID) bool { return a == b })); diff != "" {
			t.Errorf("DecodeRPC differs from the SDK on %q (-sdk +ours):\n%s", data, diff)
		}
	})
}
