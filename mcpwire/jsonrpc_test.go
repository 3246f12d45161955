package mcpwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// nestedArray returns a request whose params nest arrays so that the whole
// message is depth levels deep (the envelope object is level 1).
func nestedArray(depth int) string {
	return `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":` +
		strings.Repeat("[", depth-2) + "1" + strings.Repeat("]", depth-2) + `}}`
}

// nestedObject is nestedArray with objects.
func nestedObject(depth int) string {
	return `{"jsonrpc":"2.0","id":1,"method":"x","params":` +
		strings.Repeat(`{"a":`, depth-1) + "1" + strings.Repeat("}", depth-1) + `}`
}

// acceptedMessages are valid messages; the fuzz target seeds from them.
var acceptedMessages = []struct {
	name       string
	in         string
	wantMethod string
	wantID     any // jsonrpc.ID.Raw(): int64, string or nil
	wantCall   bool
	wantResp   bool
	wantErrRes bool // a response carrying an error
}{
	{
		name:       "request with integer id",
		in:         `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":1}}}`,
		wantMethod: "tools/call", wantID: int64(1), wantCall: true,
	},
	{
		name:       "request with string id",
		in:         `{"jsonrpc":"2.0","id":"abc-1","method":"ping"}`,
		wantMethod: "ping", wantID: "abc-1", wantCall: true,
	},
	{
		name:       "request with negative id and surrounding whitespace",
		in:         " \r\n\t{\"jsonrpc\":\"2.0\",\"id\":-7,\"method\":\"ping\"}\n",
		wantMethod: "ping", wantID: int64(-7), wantCall: true,
	},
	{
		name:       "request with largest exact integer id",
		in:         `{"jsonrpc":"2.0","id":9007199254740992,"method":"ping"}`,
		wantMethod: "ping", wantID: int64(1 << 53), wantCall: true,
	},
	{
		name:       "notification",
		in:         `{"jsonrpc":"2.0","method":"notifications/initialized"}`,
		wantMethod: "notifications/initialized", wantID: nil, wantCall: false,
	},
	{
		name:     "response with result",
		in:       `{"jsonrpc":"2.0","id":3,"result":{"content":[]}}`,
		wantID:   int64(3),
		wantResp: true,
	},
	{
		name:       "response with error and string id",
		in:         `{"jsonrpc":"2.0","id":"r-9","error":{"code":-32601,"message":"no such method"}}`,
		wantID:     "r-9",
		wantResp:   true,
		wantErrRes: true,
	},
	{
		name:       "same name in different objects",
		in:         `{"jsonrpc":"2.0","id":1,"method":"x","params":{"name":"a","arguments":{"name":"b","NAME2":[{"name":1},{"name":2}]}}}`,
		wantMethod: "x", wantID: int64(1), wantCall: true,
	},
	{
		name:       "nesting exactly MaxDepth objects",
		in:         nestedObject(MaxDepth),
		wantMethod: "x", wantID: int64(1), wantCall: true,
	},
	{
		name:       "nesting exactly MaxDepth arrays",
		in:         nestedArray(MaxDepth),
		wantMethod: "x", wantID: int64(1), wantCall: true,
	},
}

func TestDecodeMessageAccepts(t *testing.T) {
	for _, tt := range acceptedMessages {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			m, err := Decode(in)
			if err != nil {
				t.Fatalf("Decode(%q) = %v, want success", tt.in, err)
			}
			if !bytes.Equal(m.Raw, in) {
				t.Errorf("Raw = %q, want exactly the input %q", m.Raw, in)
			}
			if got := m.Method(); got != tt.wantMethod {
				t.Errorf("Method() = %q, want %q", got, tt.wantMethod)
			}
			if diff := cmp.Diff(tt.wantID, m.ID().Raw()); diff != "" {
				t.Errorf("ID().Raw() mismatch (-want +got):\n%s", diff)
			}
			if got := m.IsCall(); got != tt.wantCall {
				t.Errorf("IsCall() = %v, want %v", got, tt.wantCall)
			}
			resp, isResp := m.Msg.(*jsonrpc.Response)
			if isResp != tt.wantResp {
				t.Fatalf("Msg is %T, want response: %v", m.Msg, tt.wantResp)
			}
			if isResp {
				if m.Request() != nil {
					t.Errorf("Request() = %v for a response, want nil", m.Request())
				}
				if got := resp.Error != nil; got != tt.wantErrRes {
					t.Errorf("response error = %v, want an error: %v", resp.Error, tt.wantErrRes)
				}
			}
		})
	}
}

// rejectedMessages are messages Decode must refuse. wantIs is the
// sentinel the error must match; nil means it must match neither ErrMalformed
// nor ErrBatch (an invalid request, not a parse error).
var rejectedMessages = []struct {
	name   string
	in     string
	wantIs error
}{
	{name: "duplicate top-level key", in: `{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}`},
	{name: "duplicate id", in: `{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}`},
	{name: "duplicate key deep in params", in: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm","arguments":{"x":"safe","x":"evil"}}}`},
	{name: "duplicate key in array element", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":[{"k":1},{"k":1,"k":2}]}}`},
	{name: "case-variant keys in params", in: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","NAME":"b"}}`},
	{name: "case-variant method at top level", in: `{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}`},
	{name: "Kelvin sign folds to k", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"k":1,"\u212a":2}}`},
	{name: "escaped duplicate key", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,"\u0061":2}}`},
	{name: "unknown envelope member", in: `{"jsonrpc":"2.0","id":1,"method":"ping","extra":true}`},
	{name: "case-variant envelope member alone", in: `{"jsonrpc":"2.0","id":1,"Method":"ping"}`},
	{name: "case-variant id alone", in: `{"jsonrpc":"2.0","ID":1,"method":"ping"}`},
	{name: "fractional id", in: `{"jsonrpc":"2.0","id":1.5,"method":"ping"}`},
	{name: "integral float id", in: `{"jsonrpc":"2.0","id":1.0,"method":"ping"}`},
	{name: "exponent id", in: `{"jsonrpc":"2.0","id":1e3,"method":"ping"}`},
	{name: "id just above 2^53 (a float64 would change it)", in: `{"jsonrpc":"2.0","id":9007199254740993,"method":"ping"}`},
	{name: "case variant by Unicode folding (U+017F folds to s)", in: `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":1},"argumentſ":{"a":2}}}`},
	{name: "case variant by Kelvin sign", in: `{"jsonrpc":"2.0","id":1,"method":"x","params":{"k":1,"K":2}}`},
	{name: "second message after the first", in: `{"jsonrpc":"2.0","id":1,"method":"ping"}{"jsonrpc":"2.0","id":2,"method":"tools/call"}`, wantIs: ErrMalformed},
	{name: "scalar after the message", in: `{"jsonrpc":"2.0","id":1,"method":"ping"} 3`, wantIs: ErrMalformed},
	{name: "value after a batch", in: `[{"jsonrpc":"2.0","id":1,"method":"ping"}] [1]`, wantIs: ErrMalformed},
	{name: "id beyond 2^53", in: `{"jsonrpc":"2.0","id":9007199254740994,"method":"ping"}`},
	{name: "null id", in: `{"jsonrpc":"2.0","id":null,"method":"ping"}`},
	{name: "boolean id", in: `{"jsonrpc":"2.0","id":true,"method":"ping"}`},
	{name: "object id", in: `{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}`},
	{name: "array id", in: `{"jsonrpc":"2.0","id":[1],"method":"ping"}`},
	{name: "empty method", in: `{"jsonrpc":"2.0","id":1,"method":""}`},
	{name: "wrong version", in: `{"jsonrpc":"1.0","id":1,"method":"ping"}`},
	{name: "missing version", in: `{"id":1,"method":"ping"}`},
	{name: "response without id", in: `{"jsonrpc":"2.0","result":{}}`},
	{name: "empty object", in: `{}`},
	{name: "nesting deeper than MaxDepth objects", in: nestedObject(MaxDepth + 1)},
	{name: "nesting deeper than MaxDepth arrays", in: nestedArray(MaxDepth + 1)},
	{name: "top-level string", in: `"x"`},
	{name: "top-level number", in: `3`},
	{name: "top-level null", in: `null`},
	{name: "batch", in: `[{"jsonrpc":"2.0","id":1,"method":"ping"}]`, wantIs: ErrBatch},
	{name: "empty batch", in: ` []`, wantIs: ErrBatch},
	{name: "invalid JSON", in: `{"jsonrpc":"2.0","id":1,"method":`, wantIs: ErrMalformed},
	{name: "trailing comma", in: `{"jsonrpc":"2.0","id":1,"method":"ping",}`, wantIs: ErrMalformed},
	{name: "single quotes", in: `{'jsonrpc':'2.0'}`, wantIs: ErrMalformed},
	{name: "invalid UTF-8", in: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffing\"}", wantIs: ErrMalformed},
	{name: "invalid UTF-8 in a key", in: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"\xc3\":1}}", wantIs: ErrMalformed},
	{name: "empty body", in: ``, wantIs: ErrMalformed},
	{name: "whitespace only", in: " \n\t ", wantIs: ErrMalformed},
	{name: "invalid batch JSON", in: `[{"jsonrpc":"2.0"`, wantIs: ErrMalformed},
	{name: "duplicate key inside a batch", in: `[{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}]`},
}

func TestDecodeMessageRejects(t *testing.T) {
	for _, tt := range rejectedMessages {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Decode([]byte(tt.in))
			if err == nil {
				t.Fatalf("Decode(%q) = %+v, want an error", tt.in, m)
			}
			if m != nil {
				t.Errorf("Decode(%q) returned a message with its error", tt.in)
			}
			if tt.wantIs != nil {
				if !errors.Is(err, tt.wantIs) {
					t.Errorf("Decode(%q) = %v, want errors.Is %v", tt.in, err, tt.wantIs)
				}
				return
			}
			// An invalid message is not a parse error, and not a batch.
			if errors.Is(err, ErrMalformed) || errors.Is(err, ErrBatch) {
				t.Errorf("Decode(%q) = %v, want an invalid-request error (not ErrMalformed or ErrBatch)", tt.in, err)
			}
		})
	}
}

func TestPeekID(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{name: "duplicate params keys keep the integer id", in: `{"jsonrpc":"2.0","id":7,"method":"x","params":{"a":1,"a":2}}`, want: int64(7)},
		{name: "duplicate params keys keep the string id", in: `{"jsonrpc":"2.0","method":"x","params":{"a":1,"A":2},"id":"s-1"}`, want: "s-1"},
		{name: "escaped string id", in: `{"id":"a\u0062c","x":1,"x":2}`, want: "abc"},
		{name: "unknown member keeps the id", in: `{"jsonrpc":"2.0","id":3,"method":"x","extra":1}`, want: int64(3)},
		{name: "exact-case id wins over a case variant", in: `{"id":1,"ID":2}`, want: int64(1)},
		{name: "duplicate id", in: `{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}`, want: nil},
		{name: "duplicate identical id", in: `{"id":1,"id":1}`, want: nil},
		{name: "case-variant id only", in: `{"jsonrpc":"2.0","ID":1,"method":"x"}`, want: nil},
		{name: "fractional id", in: `{"jsonrpc":"2.0","id":1.5,"method":"x"}`, want: nil},
		{name: "exponent id", in: `{"jsonrpc":"2.0","id":1e3,"method":"x"}`, want: nil},
		{name: "null id", in: `{"jsonrpc":"2.0","id":null,"method":"x"}`, want: nil},
		{name: "boolean id", in: `{"jsonrpc":"2.0","id":false,"method":"x"}`, want: nil},
		{name: "object id", in: `{"jsonrpc":"2.0","id":{},"method":"x"}`, want: nil},
		{name: "no id", in: `{"jsonrpc":"2.0","method":"x"}`, want: nil},
		{name: "batch", in: `[{"jsonrpc":"2.0","id":1,"method":"x"}]`, want: nil},
		{name: "truncated after the id", in: `{"jsonrpc":"2.0","id":1,"method":`, want: nil},
		{name: "not JSON", in: `id=1`, want: nil},
		{name: "empty", in: ``, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, PeekID([]byte(tt.in))); diff != "" {
				t.Errorf("PeekID(%q) mismatch (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// FuzzDecodeMessage checks that Decode never panics and that whatever
// it accepts really is strict: one JSON object that every JSON parser reads
// the same way.
func FuzzDecodeMessage(f *testing.F) {
	for _, tt := range acceptedMessages {
		f.Add([]byte(tt.in))
	}
	for _, tt := range rejectedMessages {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		m, err := Decode(in)
		_ = PeekID(in) // must not panic either
		if err != nil {
			if m != nil {
				t.Fatalf("Decode(%q) returned both a message and %v", in, err)
			}
			return
		}
		if !bytes.Equal(m.Raw, orig) {
			t.Fatalf("Raw = %q, want exactly the input %q", m.Raw, orig)
		}
		if err := CheckStrict(m.Raw); err != nil {
			t.Fatalf("accepted %q, but CheckStrict(Raw) = %v", in, err)
		}
		var v map[string]any
		if err := json.Unmarshal(m.Raw, &v); err != nil {
			t.Fatalf("accepted %q, but encoding/json cannot unmarshal it: %v", in, err)
		}
		if path, ok := caseVariantKeys(v, "$"); ok {
			t.Fatalf("accepted %q with case-variant member names at %s", in, path)
		}
		if m.Request() != nil && m.Method() == "" {
			t.Fatalf("accepted %q: a request with an empty method", in)
		}
		// PeekID must agree with the decoder on every id the error writer
		// could use. Integers beyond 2^53 are left out: the SDK reads ids as
		// float64 (see the report on 2^53+1).
		if id := m.ID().Raw(); id != nil {
			if got := PeekID(in); !cmp.Equal(got, id) && !isNonCanonicalInt(in) && !beyondFloat(got) {
				t.Fatalf("accepted %q with id %#v, but PeekID = %#v", in, id, got)
			}
		}
	})
}

// isNonCanonicalInt reports whether the message's id is an integer written
// in a form (1.0, 1e3) that PeekID deliberately does not read.
func isNonCanonicalInt(in []byte) bool {
	var v struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(in, &v) != nil {
		return false
	}
	return bytes.ContainsAny(v.ID, ".eE")
}

// beyondFloat reports whether v is an integer float64 cannot hold exactly.
func beyondFloat(v any) bool {
	n, ok := v.(int64)
	return ok && (n > 1<<53 || n < -(1<<53))
}

// caseVariantKeys walks a decoded JSON value and reports the first object
// holding two member names that are equal under strings.ToLower.
func caseVariantKeys(v any, path string) (string, bool) {
	switch v := v.(type) {
	case map[string]any:
		seen := map[string]bool{}
		for k, child := range v {
			folded := strings.ToLower(k)
			if seen[folded] {
				return path, true
			}
			seen[folded] = true
			if p, ok := caseVariantKeys(child, path+"."+k); ok {
				return p, true
			}
		}
	case []any:
		for i, child := range v {
			if p, ok := caseVariantKeys(child, path+"["+strconv.Itoa(i)+"]"); ok {
				return p, true
			}
		}
	}
	return "", false
}

func TestDecodeBudget(t *testing.T) {
	msg := `{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":    "abcdefgh"}}`
	values := 11 // {, 4 names, "2.0", 1, "x", {, "a", "abcdefgh"
	tests := []struct {
		name    string
		lim     Limits
		wantErr bool
	}{
		{"no limits", Limits{}, false},
		{"exactly the values", Limits{Values: values}, false},
		{"one value fewer", Limits{Values: values - 1}, true},
		// The longest token is "jsonrpc", "method", "params" or "abcdefgh"
		// (10 bytes with quotes); the spaces before it do not count.
		{"exactly the longest string", Limits{StringBytes: 10}, false},
		{"one byte less", Limits{StringBytes: 9}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeWith([]byte(msg), tt.lim)
			if got := errors.Is(err, ErrOverBudget); got != tt.wantErr {
				t.Errorf("DecodeWith(%+v) = %v, want over budget: %t", tt.lim, err, tt.wantErr)
			}
		})
	}
	long := `{"jsonrpc":"2.0","id":1,"method":"x","params":{"n":` + strings.Repeat("9", 100) + `}}`
	if _, err := DecodeWith([]byte(long), Limits{StringBytes: 99}); !errors.Is(err, ErrOverBudget) {
		t.Errorf("a 100-digit number within a 99-byte limit: %v, want over budget", err)
	}
}
