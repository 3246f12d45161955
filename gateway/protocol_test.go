package gateway

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// wantHTTPError checks that err is an *Error with the given status and
// JSON-RPC code, or nil when status is 0.
func wantHTTPError(t *testing.T, err error, status int, code int64) {
	t.Helper()
	if status == 0 {
		if err != nil {
			t.Errorf("err = %v, want nil", err)
		}
		return
	}
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("err = %v (%T), want a %d *Error", err, err, status)
	}
	if e.Status != status || e.Code != code {
		t.Errorf("err = %d/%d (%v), want %d/%d", e.Status, e.Code, e, status, code)
	}
}

func TestRequestVersion(t *testing.T) {
	tests := []struct {
		name       string
		header     []string // MCP-Protocol-Version values
		session    *sessionClaims
		want       string
		wantStatus int
	}{
		{name: "header", header: []string{"2025-06-18"}, want: "2025-06-18"},
		{name: "header matches the session", header: []string{"2025-06-18"}, session: &sessionClaims{Version: "2025-06-18"}, want: "2025-06-18"},
		// A 2025-11-25 session asking for 2025-03-26 would get batches back.
		{name: "header differs from the session", header: []string{"2025-03-26"}, session: &sessionClaims{Version: "2025-11-25"}, wantStatus: http.StatusBadRequest},
		{name: "session fallback", session: &sessionClaims{Version: "2025-06-18"}, want: "2025-06-18"},
		{name: "session without version: default", session: &sessionClaims{}, want: mcpwire.DefaultVersion},
		{name: "no header, no session: default", want: "2025-03-26"},
		{name: "every supported version", header: []string{"2025-03-26"}, want: "2025-03-26"},
		{name: "unsupported", header: []string{"2024-10-07"}, wantStatus: http.StatusBadRequest},
		{name: "unsupported future", header: []string{"2099-01-01"}, wantStatus: http.StatusBadRequest},
		{name: "empty header", header: []string{""}, session: &sessionClaims{Version: "2025-06-18"}, wantStatus: http.StatusBadRequest},
		{name: "padded", header: []string{" 2025-06-18"}, wantStatus: http.StatusBadRequest},
		{name: "two headers, same value", header: []string{"2025-06-18", "2025-06-18"}, wantStatus: http.StatusBadRequest},
		{name: "two headers, different values", header: []string{"2025-06-18", "2025-11-25"}, wantStatus: http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			for _, v := range tt.header {
				r.Header.Add("Mcp-Protocol-Version", v)
			}
			got, err := requestVersion(r, tt.session)
			wantHTTPError(t, err, tt.wantStatus, CodeInvalidRequest)
			if got != tt.want {
				t.Errorf("requestVersion = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRequestVersionQuotesHostileValue(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
	r.Header["Mcp-Protocol-Version"] = []string{"evil\"\x1b[31m" + strings.Repeat("x", 200)}
	_, err := requestVersion(r, nil)
	e, ok := errors.AsType[*Error](err)
	if !ok {
		t.Fatalf("requestVersion = %v, want an *Error", err)
	}
	if strings.ContainsAny(e.Message, "\x1b") || strings.Contains(e.Message, strings.Repeat("x", 65)) {
		t.Errorf("public message %q echoes the raw or whole value", e.Message)
	}
	if !strings.Contains(e.Message, "2025-06-18") {
		t.Errorf("public message %q does not list the supported versions", e.Message)
	}
}

func TestCheckAccept(t *testing.T) {
	both := []string{"application/json", "text/event-stream"}
	tests := []struct {
		name       string
		accept     []string // Accept header values
		want       []string
		wantStatus int
	}{
		{name: "both types", accept: []string{"application/json, text/event-stream"}, want: both},
		{name: "both types in two headers", accept: []string{"application/json", "text/event-stream"}, want: both},
		{name: "with parameters and odd spacing", accept: []string{"application/json;q=0.9 ,  text/event-stream; q=1"}, want: both},
		{name: "upper case", accept: []string{"Application/JSON, TEXT/Event-Stream"}, want: both},
		{name: "wildcard */*", accept: []string{"*/*"}, want: both},
		{name: "application/* and the SSE type", accept: []string{"application/*, text/event-stream"}, want: both},
		{name: "application/* and text/*", accept: []string{"application/*, text/*"}, want: both},
		{name: "application/* alone misses SSE", accept: []string{"application/*"}, want: both, wantStatus: http.StatusNotAcceptable},
		{name: "JSON only", accept: []string{"application/json"}, want: both, wantStatus: http.StatusNotAcceptable},
		{name: "SSE only", accept: []string{"text/event-stream"}, want: both, wantStatus: http.StatusNotAcceptable},
		{name: "no Accept", want: both, wantStatus: http.StatusNotAcceptable},
		{name: "garbage", accept: []string{"json; sse"}, want: both, wantStatus: http.StatusNotAcceptable},
		{name: "similar type", accept: []string{"application/json-seq, text/event-stream"}, want: both, wantStatus: http.StatusNotAcceptable},
		{name: "GET stream: SSE", accept: []string{"text/event-stream"}, want: []string{"text/event-stream"}},
		{name: "GET stream: text/*", accept: []string{"text/*"}, want: []string{"text/event-stream"}},
		{name: "GET stream: JSON only", accept: []string{"application/json"}, want: []string{"text/event-stream"}, wantStatus: http.StatusNotAcceptable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			for _, v := range tt.accept {
				r.Header.Add("Accept", v)
			}
			wantHTTPError(t, checkAccept(r, tt.want...), tt.wantStatus, CodeInvalidRequest)
		})
	}
}

func TestCheckContentType(t *testing.T) {
	tests := []struct {
		name        string
		contentType []string
		wantStatus  int
	}{
		{name: "application/json", contentType: []string{"application/json"}},
		{name: "with charset", contentType: []string{"application/json; charset=utf-8"}},
		{name: "upper case", contentType: []string{"Application/JSON;Charset=UTF-8"}},
		{name: "text/plain", contentType: []string{"text/plain"}, wantStatus: http.StatusUnsupportedMediaType},
		{name: "form", contentType: []string{"application/x-www-form-urlencoded"}, wantStatus: http.StatusUnsupportedMediaType},
		{name: "JSON suffix type", contentType: []string{"application/vnd.api+json"}, wantStatus: http.StatusUnsupportedMediaType},
		{name: "missing", wantStatus: http.StatusUnsupportedMediaType},
		{name: "empty", contentType: []string{""}, wantStatus: http.StatusUnsupportedMediaType},
		{name: "malformed parameters", contentType: []string{"application/json; charset"}, wantStatus: http.StatusUnsupportedMediaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			for _, v := range tt.contentType {
				r.Header.Add("Content-Type", v)
			}
			wantHTTPError(t, checkContentType(r), tt.wantStatus, CodeInvalidRequest)
		})
	}
}
