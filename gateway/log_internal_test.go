package gateway

import (
	"strings"
	"testing"
)

func TestLogClip(t *testing.T) {
	tests := []struct{ in, want string }{
		{"tools/call", "tools/call"},
		{strings.Repeat("a", 300), strings.Repeat("a", 256) + "…[truncated: 300 bytes]"},
		// Cut at a rune boundary: "é" is two bytes.
		{"a" + strings.Repeat("é", 200), "a" + strings.Repeat("é", 127) + "…[truncated: 401 bytes]"},
	}
	for _, tt := range tests {
		if got := logClip(tt.in, 256); got != tt.want {
			t.Errorf("logClip(%.20q...) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
