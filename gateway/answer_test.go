package gateway

import (
	"errors"
	"net/http"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// TestClassifyAnswer: every upstream answer is filtered (stream, JSON),
// relayed without a body, reduced to a filtered error, or withheld; no
// other shape carries upstream bytes to a client (issue 14, finding 4).
func TestClassifyAnswer(t *testing.T) {
	id, err := jsonrpc.MakeID(float64(1))
	if err != nil {
		t.Fatal(err)
	}
	call := []jsonrpc.Message{&jsonrpc.Request{ID: id, Method: "tools/call"}}
	notification := []jsonrpc.Message{&jsonrpc.Request{Method: "notifications/initialized"}}
	const json, sse, text = "application/json", "text/event-stream", "text/plain"
	tests := []struct {
		name        string
		method      string
		status      int
		contentType string
		messages    []jsonrpc.Message
		want        answerKind
		wantErr     error
	}{
		{name: "POST 200 JSON", method: "POST", status: 200, contentType: json + "; charset=utf-8", messages: call, want: answerJSON},
		{name: "POST 200 SSE", method: "POST", status: 200, contentType: sse, messages: call, want: answerStream},
		{name: "POST 200 text", method: "POST", status: 200, contentType: text, messages: call, wantErr: errUnfilterableAnswer},
		{name: "POST 200 no type", method: "POST", status: 200, messages: call, wantErr: errUnfilterableAnswer},
		{name: "POST 201 JSON", method: "POST", status: 201, contentType: json, messages: call, wantErr: errUnfilterableAnswer},
		{name: "POST 203 JSON", method: "POST", status: 203, contentType: json, messages: call, wantErr: errUnfilterableAnswer},
		{name: "POST 206 SSE", method: "POST", status: 206, contentType: sse, messages: call, wantErr: errUnfilterableAnswer},
		{name: "POST 202 to a notification", method: "POST", status: 202, messages: notification, want: answerEmpty},
		{name: "POST 204 to a notification", method: "POST", status: 204, contentType: text, messages: notification, want: answerEmpty},
		{name: "POST 202 to a request", method: "POST", status: 202, messages: call, wantErr: errUnansweredRequests},
		{name: "POST 404", method: "POST", status: 404, contentType: text, messages: call, want: answerError},
		{name: "POST 503", method: "POST", status: 503, contentType: json, messages: call, want: answerError},
		{name: "GET 200 SSE", method: "GET", status: 200, contentType: sse, want: answerStream},
		{name: "GET 200 JSON", method: "GET", status: 200, contentType: json, wantErr: errUnfilterableAnswer},
		{name: "GET 405", method: "GET", status: 405, want: answerError},
		{name: "DELETE 200", method: "DELETE", status: 200, contentType: text, want: answerEmpty},
		{name: "DELETE 204", method: "DELETE", status: 204, want: answerEmpty},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tt.status, Header: http.Header{}, Request: &http.Request{Method: tt.method}}
			if tt.contentType != "" {
				resp.Header.Set("Content-Type", tt.contentType)
			}
			got, err := classifyAnswer(resp, &forward{messages: tt.messages})
			if !errors.Is(err, tt.wantErr) || err == nil && got != tt.want {
				t.Errorf("classifyAnswer = %v, %v; want %v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestOnlyRelayedHeaders: upstream response headers are allow-listed.
func TestOnlyRelayedHeaders(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Content-Type", "Cache-Control", "Retry-After", "Allow", "Strict-Transport-Security", "Alt-Svc",
		"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Location", "Content-Security-Policy", "Set-Cookie",
		"Www-Authenticate", "Mcp-Session-Id", "Content-Encoding", "X-Powered-By", "Link", "Refresh"} {
		h.Set(name, "v")
	}
	onlyRelayedHeaders(h)
	if len(h) != len(relayedResponseHeaders) {
		t.Errorf("headers left: %v; want only %v", h, relayedResponseHeaders)
	}
	for _, name := range relayedResponseHeaders {
		if h.Get(name) != "v" {
			t.Errorf("%s was not kept", name)
		}
	}
}

// TestRefuseEncoded: a body in a content coding the Transport did not
// decode is withheld, not relayed as bytes the gateway never read.
func TestRefuseEncoded(t *testing.T) {
	for _, tt := range []struct {
		encoding string
		refused  bool
	}{{"", false}, {"identity", false}, {" Identity ", false}, {"br", true}, {"gzip", true}, {"x-evil", true}} {
		if err := refuseEncoded(tt.encoding); (err != nil) != tt.refused || tt.refused && !errors.Is(err, errEncodedAnswer) {
			t.Errorf("refuseEncoded(%q) = %v; want refused %v", tt.encoding, err, tt.refused)
		}
	}
}
