package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// wireError is the JSON-RPC error response as a client decodes it. ID is
// raw so that null, 1 and "1" stay distinct.
type wireError struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Error   struct {
		Code    int64  `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func mustDecode(t *testing.T, body string) *mcpwire.Message {
	t.Helper()
	m, err := decodeMessage([]byte(body))
	if err != nil {
		t.Fatalf("decodeMessage(%q): %v", body, err)
	}
	return m
}

func TestWriteError(t *testing.T) {
	internal := errors.New("dial tcp 10.0.0.7:9000: secret-upstream-detail")
	tests := []struct {
		name       string
		st         *requestState // nil: no state in the context
		err        error
		wantStatus int
		wantID     string // raw JSON
		wantCode   int64
		wantMsg    string
		wantHeader http.Header // extra headers that must be present
	}{
		{
			name:       "integer id from the decoded message",
			st:         &requestState{msg: mustDecode(t, `{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"x"}}`)},
			err:        newError(http.StatusNotFound, CodeSessionNotFound, "session not found", internal),
			wantStatus: http.StatusNotFound, wantID: `42`, wantCode: CodeSessionNotFound, wantMsg: "session not found",
		},
		{
			name:       "string id from the decoded message",
			st:         &requestState{msg: mustDecode(t, `{"jsonrpc":"2.0","id":"req-1","method":"ping"}`)},
			err:        badRequest("bad", nil),
			wantStatus: http.StatusBadRequest, wantID: `"req-1"`, wantCode: CodeInvalidRequest, wantMsg: "bad",
		},
		{
			name:       "notification has a null id",
			st:         &requestState{msg: mustDecode(t, `{"jsonrpc":"2.0","method":"notifications/initialized"}`)},
			err:        badRequest("bad", nil),
			wantStatus: http.StatusBadRequest, wantID: `null`, wantCode: CodeInvalidRequest, wantMsg: "bad",
		},
		{
			name:       "unknown id is null",
			st:         &requestState{},
			err:        newError(http.StatusBadRequest, CodeParseError, "parse error", nil),
			wantStatus: http.StatusBadRequest, wantID: `null`, wantCode: CodeParseError, wantMsg: "parse error",
		},
		{
			name:       "no request state",
			st:         nil,
			err:        badRequest("bad", nil),
			wantStatus: http.StatusBadRequest, wantID: `null`, wantCode: CodeInvalidRequest, wantMsg: "bad",
		},
		{
			name:       "rejected id used when the message was not decoded",
			st:         &requestState{rejectedID: mcpwire.PeekID([]byte(`{"jsonrpc":"2.0","id":9,"method":"x","params":{"a":1,"a":2}}`))},
			err:        badRequest("invalid JSON-RPC message", nil),
			wantStatus: http.StatusBadRequest, wantID: `9`, wantCode: CodeInvalidRequest, wantMsg: "invalid JSON-RPC message",
		},
		{
			name:       "rejected string id",
			st:         &requestState{rejectedID: "abc"},
			err:        badRequest("invalid JSON-RPC message", nil),
			wantStatus: http.StatusBadRequest, wantID: `"abc"`, wantCode: CodeInvalidRequest, wantMsg: "invalid JSON-RPC message",
		},
		{
			name:       "decoded message wins over a rejected id",
			st:         &requestState{msg: mustDecode(t, `{"jsonrpc":"2.0","id":1,"method":"ping"}`), rejectedID: int64(2)},
			err:        badRequest("bad", nil),
			wantStatus: http.StatusBadRequest, wantID: `1`, wantCode: CodeInvalidRequest, wantMsg: "bad",
		},
		{
			name: "extra headers are copied",
			st:   &requestState{},
			err: &Error{
				Status: http.StatusUnauthorized, Code: CodeUnauthenticated, Message: "authentication required",
				Header: http.Header{"Www-Authenticate": {`Bearer realm="ctxgate"`}},
			},
			wantStatus: http.StatusUnauthorized, wantID: `null`, wantCode: CodeUnauthenticated, wantMsg: "authentication required",
			wantHeader: http.Header{"Www-Authenticate": {`Bearer realm="ctxgate"`}},
		},
		{
			name:       "wrapped *Error keeps its status",
			st:         &requestState{},
			err:        fmt.Errorf("route /mcp/a: %w", newError(http.StatusGatewayTimeout, CodeUpstreamTimeout, "upstream timed out", internal)),
			wantStatus: http.StatusGatewayTimeout, wantID: `null`, wantCode: CodeUpstreamTimeout, wantMsg: "upstream timed out",
		},
		{
			name:       "plain error is an internal error",
			st:         &requestState{msg: mustDecode(t, `{"jsonrpc":"2.0","id":5,"method":"ping"}`)},
			err:        internal,
			wantStatus: http.StatusInternalServerError, wantID: `5`, wantCode: CodeInternalError, wantMsg: "internal gateway error",
		},
		{
			name:       "context.Canceled with a live request is answered",
			st:         &requestState{},
			err:        fmt.Errorf("upstream: %w", context.Canceled),
			wantStatus: http.StatusInternalServerError, wantID: `null`, wantCode: CodeInternalError, wantMsg: "internal gateway error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
			if tt.st != nil {
				r = r.WithContext(context.WithValue(r.Context(), stateKey{}, tt.st))
			}
			w := httptest.NewRecorder()
			writeError(w, r, tt.err)

			if w.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", w.Code, tt.wantStatus)
			}
			h := w.Result().Header
			for name, want := range map[string]string{
				"Content-Type":           "application/json",
				"Content-Length":         strconv.Itoa(w.Body.Len()),
				"X-Content-Type-Options": "nosniff",
			} {
				if got := h.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			for name, want := range tt.wantHeader {
				if diff := cmp.Diff(want, h.Values(name)); diff != "" {
					t.Errorf("header %s mismatch (-want +got):\n%s", name, diff)
				}
			}
			var got wireError
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q is not JSON: %v", w.Body, err)
			}
			var want wireError
			want.JSONRPC, want.ID = "2.0", json.RawMessage(tt.wantID)
			want.Error.Code, want.Error.Message = tt.wantCode, tt.wantMsg
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("body mismatch (-want +got):\n%s\nbody: %s", diff, w.Body)
			}
			if strings.Contains(w.Body.String(), "secret-upstream-detail") {
				t.Errorf("body %s shows the internal cause", w.Body)
			}
			if tt.st != nil {
				if tt.st.err == nil {
					t.Fatal("st.err not recorded")
				}
				if tt.st.err.Status != tt.wantStatus || tt.st.err.Code != tt.wantCode {
					t.Errorf("st.err = %d/%d, want %d/%d", tt.st.err.Status, tt.st.err.Code, tt.wantStatus, tt.wantCode)
				}
				if !errors.Is(tt.st.err, tt.err) && !errors.Is(tt.err, tt.st.err) {
					t.Errorf("st.err = %v, want it to carry the cause %v for the log", tt.st.err, tt.err)
				}
			}
		})
	}
}

func TestWriteErrorBodyHasExactlyTheJSONRPCMembers(t *testing.T) {
	r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
	w := httptest.NewRecorder()
	writeError(w, r, badRequest("bad", errors.New("cause")))
	var body map[string]json.RawMessage
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", w.Body, err)
	}
	var errMembers map[string]json.RawMessage
	if err := json.Unmarshal(body["error"], &errMembers); err != nil {
		t.Fatalf("error member %q is not an object: %v", body["error"], err)
	}
	keys := func(m map[string]json.RawMessage) map[string]bool {
		out := map[string]bool{}
		for k := range m {
			out[k] = true
		}
		return out
	}
	if diff := cmp.Diff(map[string]bool{"jsonrpc": true, "id": true, "error": true}, keys(body)); diff != "" {
		t.Errorf("response members mismatch (-want +got):\n%s", diff)
	}
	// No "data" member: the internal cause never travels.
	if diff := cmp.Diff(map[string]bool{"code": true, "message": true}, keys(errMembers)); diff != "" {
		t.Errorf("error members mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteErrorInternalCauseRecorded(t *testing.T) {
	cause := errors.New("nil map write in handler")
	st := &requestState{}
	r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil)
	r = r.WithContext(context.WithValue(r.Context(), stateKey{}, st))
	writeError(httptest.NewRecorder(), r, cause)
	if st.err == nil || !errors.Is(st.err, cause) {
		t.Fatalf("st.err = %v, want a 500 wrapping %v", st.err, cause)
	}
	if !strings.Contains(st.err.Error(), cause.Error()) {
		t.Errorf("st.err.Error() = %q, want the internal detail for the log", st.err.Error())
	}
}

func TestWriteErrorClientGone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	st := &requestState{}
	r := httptest.NewRequest(http.MethodPost, "/mcp/a", nil).WithContext(context.WithValue(ctx, stateKey{}, st))
	cancel()
	w := httptest.NewRecorder()
	writeError(w, r, fmt.Errorf("client went away: %w", context.Canceled))
	if w.Body.Len() != 0 || w.Header().Get("Content-Type") != "" {
		t.Errorf("wrote %q (headers %v) to a client that went away, want nothing", w.Body, w.Header())
	}
	if st.err == nil {
		t.Error("st.err not recorded for a client that went away; the access log would miss it")
	}
}
