package main

import (
	"os"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{
			name: "plain",
			stat: "1234 (ctxgate) S 1 1234 1234 0 -1 4194560 1530 0 0 0 250 37 0 0 20 0 8 0 12345 1234567 890 18446744073709551615",
			want: 287 * 10 * time.Millisecond,
		},
		{
			name: "command with spaces and parentheses",
			stat: "77 (nginx: (worker) x) R 1 77 77 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1",
			want: 70 * time.Millisecond,
		},
		{name: "no command", stat: "1234 ctxgate S 1", wantErr: true},
		{name: "truncated", stat: "1 (a) S 1 1 1 0 -1 0 0 0 0 0 5", wantErr: true},
		{name: "not a number", stat: "1 (a) S 1 1 1 0 -1 0 0 0 0 0 x 4 0", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStat([]byte(tt.stat))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestCPUTimeSelf reads this process's own stat file, which must parse.
func TestCPUTimeSelf(t *testing.T) {
	if _, err := cpuTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}
