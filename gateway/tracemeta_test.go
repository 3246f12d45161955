package gateway

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/trace"
)

func TestWithTraceMeta(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	state, _ := trace.ParseTraceState("vendor=opaque")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, TraceState: state,
	}))
	const meta = `"_meta":{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"vendor=opaque"}`
	tests := []struct {
		name   string
		ctx    context.Context
		body   string
		want   string
		wantOK bool
	}{
		{
			name: "params gain _meta; every other member keeps its bytes",
			ctx:  ctx,
			body: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"n": 1.50, "s":"\u00e9"}}}`,
			want: `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x","arguments":{"n": 1.50, "s":"\u00e9"},` + meta + `}}`, wantOK: true,
		},
		{
			name: "no params: created",
			ctx:  ctx,
			body: `{"jsonrpc":"2.0","id":"a","method":"tools/list"}`,
			want: `{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{` + meta + `}}`, wantOK: true,
		},
		{
			name: "the client's trace keys, in any case, are replaced; its other _meta kept",
			ctx:  ctx,
			body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"progressToken":3,"TraceParent":"00-forged","tracestate":"x=y"}}}`,
			want: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":{"progressToken":3,"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"vendor=opaque"}}}`, wantOK: true,
		},
		{
			name: "_meta in another case: left alone",
			ctx:  ctx,
			body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_Meta":{}}}`,
			want: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_Meta":{}}}`,
		},
		{
			name: "params as an array: left alone",
			ctx:  ctx,
			body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}`,
			want: `{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}`,
		},
		{
			name: "_meta not an object: left alone",
			ctx:  ctx,
			body: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":null}}`,
			want: `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"_meta":null}}`,
		},
		{
			name: "no trace context: left alone",
			ctx:  context.Background(),
			body: `{"jsonrpc":"2.0","id":1,"method":"ping"}`,
			want: `{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := withTraceMeta(tt.ctx, []byte(tt.body))
			if ok != tt.wantOK {
				t.Errorf("ok = %t, want %t", ok, tt.wantOK)
			}
			if diff := cmp.Diff(tt.want, string(got)); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
			if _, err := decodeMessage(got); err != nil {
				t.Errorf("the result fails the strict decode: %v", err)
			}
		})
	}
}

func FuzzWithTraceMeta(f *testing.F) {
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"a":1}}}`)
	f.Add(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid}))
	f.Fuzz(func(t *testing.T, body string) {
		if _, err := decodeMessage([]byte(body)); err != nil {
			return // only bodies that passed the strict decode are rewritten
		}
		out, ok := withTraceMeta(ctx, []byte(body))
		if !ok {
			if string(out) != body {
				t.Fatalf("not rewritten, yet changed: %q -> %q", body, out)
			}
			return
		}
		if _, err := decodeMessage(out); err != nil {
			t.Fatalf("rewritten %q fails the strict decode: %v", out, err)
		}
	})
}
