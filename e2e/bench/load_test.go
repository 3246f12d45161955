package main

import (
	"cmp"
	"encoding/json"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestOpenLoopMeasuresFromDueTime: with one worker and answers that take
// longer than the interval, each request starts late, and its latency must
// include the wait since its due time: measuring from the actual send would
// report a flat 25ms and hide the queue (coordinated omission).
func TestOpenLoopMeasuresFromDueTime(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		service time.Duration
		want    []time.Duration
	}{
		{
			name: "fast answers: latency is the service time", workers: 1, service: 5 * time.Millisecond,
			want: []time.Duration{5, 5, 5, 5}, // ms
		},
		{
			name: "slow answers queue behind one worker", workers: 1, service: 25 * time.Millisecond,
			want: []time.Duration{25, 40, 55, 70},
		},
		{
			name: "enough workers: no queue", workers: 4, service: 25 * time.Millisecond,
			want: []time.Duration{25, 25, 25, 25},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				plan := schedule{start: time.Now(), rate: 100, n: 4} // due every 10ms
				lat, r := openLoop(t.Context(), plan, tt.workers, func(int) error {
					time.Sleep(tt.service)
					return nil
				})
				if r.Requests != 4 || r.Errors != 0 {
					t.Fatalf("result %+v, want 4 requests, no errors", r)
				}
				for i, w := range tt.want {
					if lat[i] != w*time.Millisecond {
						t.Errorf("latency[%d] = %v, want %v", i, lat[i], w*time.Millisecond)
					}
				}
			})
		})
	}
}

func TestScheduleDue(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	plan := schedule{start: start, rate: 3, n: 10}
	// 1/3 s does not divide evenly into nanoseconds; due times must not
	// drift by accumulating a rounded interval.
	if got, want := plan.due(3000), start.Add(1000*time.Second); !got.Equal(want) {
		t.Errorf("due(3000) = %v, want %v", got, want)
	}
	if got, want := plan.due(1), start.Add(333333333*time.Nanosecond); !got.Equal(want) {
		t.Errorf("due(1) = %v, want %v", got, want)
	}
}

func TestCheckAnswer(t *testing.T) {
	text, _ := json.Marshal(fixtureText)
	call := `{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":` + string(text) + `}]}}`
	list := `{"jsonrpc":"2.0","id":6,"result":{"tools":[{"name":"a"},{"name":"b"},{"name":"c"},{"name":"d"}]}}`
	read := `{"jsonrpc":"2.0","id":8,"result":{"contents":[{"uri":"` + fixtureResource + `","text":` + string(text) + `}]}}`
	tests := []struct {
		name, contentType, body string
		n                       uint64
		method                  string // "": tools/call
		wantErr                 string
	}{
		{name: "call", contentType: "application/json", body: call, n: 7},
		{name: "call as an event", contentType: "text/event-stream", body: "id: 1\nevent: message\ndata: " + call + "\n\n", n: 7},
		{name: "list", contentType: "application/json", body: list, n: 6, method: "tools/list"},
		{name: "read", contentType: "application/json", body: read, n: 8, method: "resources/read"},
		{name: "read of another resource", contentType: "application/json", body: strings.Replace(read, "readme", "other", 1), n: 8, method: "resources/read", wantErr: "not the fixture's resource"},
		{name: "a call answer to a read", contentType: "application/json", body: strings.Replace(call, `"id":7`, `"id":8`, 1), n: 8, method: "resources/read", wantErr: "not the fixture's resource"},
		{name: "wrong id", contentType: "application/json", body: call, n: 8, wantErr: "answer id 7 to request 8"},
		{name: "error", contentType: "application/json", body: `{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"x"}}`, n: 7, wantErr: "error answer"},
		{name: "redacted text", contentType: "application/json", body: strings.Replace(call, "fixed", "[REDACTED]", 1), n: 7, wantErr: "not the fixture's answer"},
		{name: "tool error", contentType: "application/json", body: strings.Replace(call, `"content"`, `"isError":true,"content"`, 1), n: 7, wantErr: "not the fixture's answer"},
		{name: "filtered list", contentType: "application/json", body: `{"jsonrpc":"2.0","id":6,"result":{"tools":[{"name":"a"}]}}`, n: 6, method: "tools/list", wantErr: "1 tools, want 4"},
		{name: "not JSON", contentType: "application/json", body: "<html>", n: 7, wantErr: "not JSON"},
		{name: "empty stream", contentType: "text/event-stream", body: ": ping\n\n", n: 7, wantErr: "without data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkAnswer(tt.contentType, []byte(tt.body), tt.n, cmp.Or(tt.method, "tools/call"), defaultShape.expected())
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("checkAnswer = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestTokenCycler(t *testing.T) {
	c := &tokenCycler{tokens: []string{"a", "b", "c"}}
	c.next.Store(1) // one used to open a session
	var got []string
	for range 4 {
		got = append(got, c.token())
	}
	if strings.Join(got, "") != "bcab" {
		t.Errorf("tokens handed out: %q, want b c a b", got)
	}
	if n := c.reused(); n != 2 {
		t.Errorf("reused = %d, want 2 (a and b a second time)", n)
	}
	if n := (*tokenCycler)(nil).reused(); n != 0 {
		t.Errorf("nil cycler reused = %d", n)
	}
}
