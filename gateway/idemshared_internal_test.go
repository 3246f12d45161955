package gateway

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestStoredAnswer: what the shared ledger keeps replays as the first call
// was answered: a response byte for byte, a gateway error with its status,
// code, message, data and headers (not its internal cause).
func TestStoredAnswer(t *testing.T) {
	withHeader := newError(http.StatusServiceUnavailable, CodeOverloaded, "busy", nil)
	setRetryAfter(withHeader, 3*time.Second)
	withHeader.Data = json.RawMessage(`{"retryAfterMs":3000}`)
	tests := []struct {
		name string
		in   idemAnswer
		want idemAnswer
	}{
		{
			name: "a response",
			in:   idemAnswer{status: 200, contentType: "application/json", body: []byte(`{"jsonrpc":"2.0","id":1,"result":{"x":"\u00e9\n"}}`)},
			want: idemAnswer{status: 200, contentType: "application/json", body: []byte(`{"jsonrpc":"2.0","id":1,"result":{"x":"\u00e9\n"}}`)},
		},
		{
			name: "outcome unknown",
			in:   idemAnswer{gwErr: outcomeUnknown(http.StatusGatewayTimeout, errIdempotencyMismatch)},
			want: idemAnswer{gwErr: &Error{Status: http.StatusGatewayTimeout, Code: CodeOutcomeUnknown, Message: outcomeUnknown(0, nil).Message}},
		},
		{
			name: "an error with headers and data",
			in:   idemAnswer{gwErr: withHeader},
			want: idemAnswer{gwErr: &Error{Status: http.StatusServiceUnavailable, Code: CodeOverloaded, Message: "busy",
				Header: http.Header{"Retry-After": {"3"}}, Data: json.RawMessage(`{"retryAfterMs":3000}`)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAnswer(encodeAnswer(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if got.gwErr != nil {
				got.gwErr.Err = nil // the cause stays in the first call's log
			}
			if diff := cmp.Diff(tt.want, *got, cmp.AllowUnexported(idemAnswer{}, Error{})); diff != "" {
				t.Errorf("replayed answer (-want +got):\n%s", diff)
			}
		})
	}
}
