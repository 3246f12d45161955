package mcpwire

import "testing"

func TestAllowsBatch(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{version: "2025-03-26", want: true},
		{version: "2025-06-18", want: false},
		{version: "2025-11-25", want: false},
		{version: "2024-11-05", want: false}, // batching arrived in 2025-03-26
		{version: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			if got := AllowsBatch(tt.version); got != tt.want {
				t.Errorf("AllowsBatch(%q) = %v, want %v", tt.version, got, tt.want)
			}
		})
	}
}

func TestSupportedVersions(t *testing.T) {
	if !IsSupportedVersion(DefaultVersion) {
		t.Errorf("DefaultVersion %q is not a supported version", DefaultVersion)
	}
	for _, v := range SupportedVersions {
		if !IsSupportedVersion(v) {
			t.Errorf("IsSupportedVersion(%q) = false", v)
		}
	}
}

// TestVersionTable: which revisions the gateway serves, and which it does
// not, by name.
func TestVersionTable(t *testing.T) {
	tests := []struct {
		version string
		want    bool
	}{
		{version: "2024-11-05", want: true},
		{version: "2025-03-26", want: true},
		{version: "2025-06-18", want: true},
		{version: "2025-11-25", want: true},
		{version: "2026-07-28", want: false}, // modern era: ModernVersions
		{version: "2024-10-07", want: false},
		{version: "", want: false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			if got := IsSupportedVersion(tt.version); got != tt.want {
				t.Errorf("IsSupportedVersion(%q) = %v, want %v", tt.version, got, tt.want)
			}
		})
	}
}
