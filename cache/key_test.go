package cache

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestCacheable(t *testing.T) {
	tools := []string{"search_docs"}
	tests := []struct {
		name   string
		method string
		isCall bool
		params string
		want   error
	}{
		{name: "tools/list", method: "tools/list", isCall: true, want: nil},
		{name: "tools/list page", method: "tools/list", isCall: true, params: `{"cursor":"2"}`, want: nil},
		{name: "prompts/list", method: "prompts/list", isCall: true, params: `{}`, want: nil},
		{name: "resources/list", method: "resources/list", isCall: true, params: `null`, want: nil},
		{name: "resources/templates/list", method: "resources/templates/list", isCall: true, want: nil},
		{name: "resources/read", method: "resources/read", isCall: true, params: `{"uri":"file:///a"}`, want: nil},
		{name: "server/discover", method: "server/discover", isCall: true, want: nil},
		{name: "listed tool", method: "tools/call", isCall: true, params: `{"name":"search_docs","arguments":{"q":"x"}}`, want: nil},
		{name: "unlisted tool", method: "tools/call", isCall: true, params: `{"name":"delete_file"}`, want: ErrTool},
		{name: "tool without name", method: "tools/call", isCall: true, params: `{}`, want: ErrTool},
		{name: "prompts/get", method: "prompts/get", isCall: true, want: ErrMethod},
		{name: "initialize", method: "initialize", isCall: true, want: ErrMethod},
		{name: "subscribe", method: "resources/subscribe", isCall: true, params: `{"uri":"a"}`, want: ErrMethod},
		{name: "subscriptions/listen stream", method: "subscriptions/listen", isCall: true, want: ErrMethod},
		{name: "sampling (server-to-client)", method: "sampling/createMessage", isCall: true, want: ErrMethod},
		{name: "notification", method: "notifications/tools/list_changed", isCall: false, want: ErrNotification},
		{name: "list without id", method: "tools/list", isCall: false, want: ErrNotification},
		{name: "inputResponses", method: "resources/read", isCall: true, params: `{"uri":"a","inputResponses":{}}`, want: ErrMultiRoundTrip},
		{name: "requestState", method: "tools/list", isCall: true, params: `{"requestState":"x"}`, want: ErrMultiRoundTrip},
		{name: "params an array", method: "tools/list", isCall: true, params: `[1]`, want: ErrParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Cacheable(tt.method, tt.isCall, json.RawMessage(tt.params), tools); !errors.Is(got, tt.want) {
				t.Errorf("Cacheable(%s, %s) = %v, want %v", tt.method, tt.params, got, tt.want)
			}
		})
	}
}

func TestStorable(t *testing.T) {
	ttl := int64(5000)
	tests := []struct {
		name      string
		result    string
		rpcError  bool
		want      error
		wantHints Hints
	}{
		{name: "list", result: `{"tools":[]}`},
		{name: "ttl and public", result: `{"tools":[],"ttlMs":5000,"cacheScope":"public"}`, wantHints: Hints{TTLMs: &ttl, Public: true}},
		{name: "private scope", result: `{"tools":[],"cacheScope":"private"}`},
		{name: "unknown scope is private", result: `{"tools":[],"cacheScope":"PUBLIC"}`},
		{name: "negative ttl ignored", result: `{"ttlMs":-1}`},
		{name: "error", rpcError: true, want: ErrError},
		{name: "isError", result: `{"content":[],"isError":true}`, want: ErrToolError},
		{name: "input_required", result: `{"resultType":"input_required","inputRequests":{}}`, want: ErrMultiRoundTrip},
		{name: "requestState", result: `{"requestState":"abc"}`, want: ErrMultiRoundTrip},
		{name: "inputResponses", result: `{"inputResponses":{}}`, want: ErrMultiRoundTrip},
		{name: "not an object", result: `[]`, want: ErrParams},
		{name: "no result", want: ErrParams},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := Storable(json.RawMessage(tt.result), tt.rpcError)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Storable = %v, want %v", err, tt.want)
			}
			if (h.TTLMs == nil) != (tt.wantHints.TTLMs == nil) || h.TTLMs != nil && *h.TTLMs != *tt.wantHints.TTLMs || h.Public != tt.wantHints.Public {
				t.Errorf("hints = %+v, want %+v", h, tt.wantHints)
			}
		})
	}
}

func TestKey(t *testing.T) {
	base := Request{Upstream: "docs", Method: "tools/list", Params: json.RawMessage(`{"cursor":"a","x":{"b":1,"a":2}}`), Era: "legacy", Version: "2025-11-25", Capabilities: "c1"}
	key := func(r Request) string {
		t.Helper()
		k, err := Key(r)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	with := func(f func(*Request)) Request { r := base; f(&r); return r }
	same := []struct {
		name string
		r    Request
	}{
		{name: "member order", r: with(func(r *Request) { r.Params = json.RawMessage(`{"x":{"a":2,"b":1},"cursor":"a"}`) })},
		{name: "whitespace", r: with(func(r *Request) { r.Params = json.RawMessage(" {\"cursor\" : \"a\", \"x\":{\"b\":1,\"a\":2}} ") })},
		{name: "_meta ignored", r: with(func(r *Request) {
			r.Params = json.RawMessage(`{"_meta":{"progressToken":7},"cursor":"a","x":{"b":1,"a":2}}`)
		})},
		{name: "number spelling", r: with(func(r *Request) { r.Params = json.RawMessage(`{"cursor":"a","x":{"b":1.0,"a":2e0}}`) })},
	}
	for _, tt := range same {
		t.Run("same/"+tt.name, func(t *testing.T) {
			if key(tt.r) != key(base) {
				t.Errorf("%s changed the key", tt.name)
			}
		})
	}
	different := []struct {
		name string
		r    Request
	}{
		{name: "upstream", r: with(func(r *Request) { r.Upstream = "git" })},
		{name: "method", r: with(func(r *Request) { r.Method = "prompts/list" })},
		{name: "page", r: with(func(r *Request) { r.Params = json.RawMessage(`{"cursor":"b","x":{"b":1,"a":2}}`) })},
		{name: "nested _meta is a param", r: with(func(r *Request) {
			r.Params = json.RawMessage(`{"cursor":"a","x":{"b":1,"a":2,"_meta":1}}`)
		})},
		{name: "era", r: with(func(r *Request) { r.Era = "modern" })},
		{name: "version", r: with(func(r *Request) { r.Version = "2025-06-18" })},
		{name: "capabilities", r: with(func(r *Request) { r.Capabilities = "c2" })},
		{name: "principal", r: with(func(r *Request) { r.Principal = "api_key:a" })},
		{name: "field shift", r: with(func(r *Request) { r.Upstream, r.Method = "docstools", "/list" })},
	}
	for _, tt := range different {
		t.Run("different/"+tt.name, func(t *testing.T) {
			if key(tt.r) == key(base) {
				t.Errorf("%s did not change the key", tt.name)
			}
		})
	}
	t.Run("absent, null and empty params", func(t *testing.T) {
		r := with(func(r *Request) { r.Params = nil })
		for _, p := range []string{`null`, `{}`, `{"_meta":{}}`} {
			if key(with(func(r *Request) { r.Params = json.RawMessage(p) })) != key(r) {
				t.Errorf("params %s differ from absent params", p)
			}
		}
	})
}

// FuzzKey: Key never panics; when it succeeds it is deterministic, 64 hex
// digits, independent of a top-level _meta, and never equal to the same
// request's key for another principal.
func FuzzKey(f *testing.F) {
	for _, s := range []string{`{}`, `{"cursor":"x"}`, `{"uri":"file:///a","_meta":{"a":1}}`, `null`, `[]`, `{"a":1e400}`, `{"a":"\ud800"}`, ``} {
		f.Add("docs", "tools/list", s, "alice")
	}
	f.Fuzz(func(t *testing.T, upstream, method, params, principal string) {
		r := Request{Upstream: upstream, Method: method, Params: json.RawMessage(params), Era: "legacy", Principal: principal}
		k1, err := Key(r)
		if err != nil {
			return
		}
		k2, _ := Key(r)
		if k1 != k2 || len(k1) != 64 {
			t.Fatalf("key not deterministic or malformed: %q %q", k1, k2)
		}
		other := r
		other.Principal = principal + "x"
		if k3, _ := Key(other); k3 == k1 {
			t.Fatal("two principals share a key")
		}
		var p map[string]json.RawMessage
		if json.Unmarshal([]byte(params), &p) == nil && p != nil {
			p["_meta"] = json.RawMessage(`{"progressToken":"t"}`)
			withMeta, _ := json.Marshal(p)
			r.Params = withMeta
			if k4, err := Key(r); err != nil || k4 != k1 {
				t.Fatalf("_meta changed the key: %v", err)
			}
		}
	})
}

func TestCapabilityDigest(t *testing.T) {
	d := func(s string) string { return CapabilityDigest(json.RawMessage(s)) }
	if d(`{"roots":{"listChanged":true},"sampling":{}}`) != d(` {"sampling":{},"roots":{"listChanged":true}}`) {
		t.Error("member order changed the digest")
	}
	if d(``) != d(`{}`) {
		t.Error("absent capabilities differ from {}")
	}
	if d(`{"roots":{}}`) == d(`{}`) || d(`{"elicitation":{}}`) == d(`{"sampling":{}}`) {
		t.Error("different capabilities share a digest")
	}
}
