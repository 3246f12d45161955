package gateway

import "testing"

// TestExactListMember: a list result whose items member is a case variant
// ("tooLs", which Go's encoding/json reads as "tools") is refused, so no
// reader that uses the exact name can be bypassed.
func TestExactListMember(t *testing.T) {
	tests := []struct {
		result  string
		wantErr bool
	}{
		{`{"tools":[{"name":"a"}],"nextCursor":"c"}`, false},
		{`{"nextCursor":"c","tools":[]}`, false},
		{`{"tooLs":[{"name":"a","description":"\b"}]}`, true},
		{`{"tools":[],"Tools":[{"name":"hidden"}]}`, true},
		{`{"toolsx":[]}`, false},
		{`[1]`, false},
	}
	for _, tt := range tests {
		if err := exactListMember([]byte(tt.result), "tools"); (err != nil) != tt.wantErr {
			t.Errorf("exactListMember(%s) = %v, want error %t", tt.result, err, tt.wantErr)
		}
	}
}
