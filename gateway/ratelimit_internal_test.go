package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestRateLimitedError: every era gets 429 with Retry-After in whole
// seconds; the modern era gets the draft rate-limited error (-32023,
// data.retryAfterMs), the legacy eras ctxgate's -31015 without data.
func TestRateLimitedError(t *testing.T) {
	type shape struct {
		Status     int
		Code       int64
		Data       string
		RetryAfter string
	}
	tests := []struct {
		era  string
		wait time.Duration
		want shape
	}{
		{era: eraModern, wait: 1500 * time.Millisecond, want: shape{http.StatusTooManyRequests, -32023, `{"retryAfterMs":1500}`, "2"}},
		{era: eraModern, wait: 0, want: shape{http.StatusTooManyRequests, -32023, `{"retryAfterMs":1}`, "1"}},
		{era: eraLegacy, wait: 1500 * time.Millisecond, want: shape{http.StatusTooManyRequests, -31015, "", "2"}},
		{era: "", wait: 10 * time.Second, want: shape{http.StatusTooManyRequests, -31015, "", "10"}},
	}
	for _, tt := range tests {
		e := rateLimitedError(tt.era, tt.wait)
		got := shape{e.Status, e.Code, string(e.Data), e.Header.Get("Retry-After")}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("era %q, wait %s (-want +got):\n%s", tt.era, tt.wait, diff)
		}
	}
}
