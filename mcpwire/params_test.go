package mcpwire

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// checkParams is ReadParams' verdict alone.
func checkParams(req *jsonrpc.Request) error {
	_, err := ReadParams(req)
	return err
}

func request(method, params string) *jsonrpc.Request {
	r := &jsonrpc.Request{Method: method}
	if params != "" {
		r.Params = json.RawMessage(params)
	}
	return r
}

var acceptedParams = []struct{ name, method, params string }{
	{"tools/call", "tools/call", `{"name":"test_simple_text","arguments":{"message":"x","Message":1}}`},
	{"tools/call without arguments", "tools/call", `{"name":"echo"}`},
	{"tools/call arguments null", "tools/call", `{"name":"echo","arguments":null}`},
	{"tools/call federated name", "tools/call", `{"name":"git__search","arguments":{}}`},
	{"tools/call with _meta", "tools/call", `{"name":"get-sum","arguments":{"a":1,"b":2},"_meta":{"progressToken":7,"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}`},
	{"an inner space in a name", "prompts/get", `{"name":"my prompt","arguments":{"a":"b"}}`},
	{"resources/read", "resources/read", `{"uri":"test://static/resource/1"}`},
	{"resources/read file URI", "resources/read", `{"uri":"file:///home/user/My%20Notes.md"}`},
	{"resources/read federated URI", "resources/read", `{"uri":"docs+file:///guide.md"}`},
	{"resources/read urn", "resources/read", `{"uri":"urn:isbn:0451450523"}`},
	{"resources/subscribe", "resources/subscribe", `{"uri":"demo://resource/static/document/architecture.md"}`},
	{"completion on a template", "completion/complete", `{"ref":{"type":"ref/resource","uri":"file:///{path}"},"argument":{"name":"path","value":"a"}}`},
	{"completion on a prompt", "completion/complete", `{"ref":{"type":"ref/prompt","name":"complex_prompt"},"argument":{"name":"temperature","value":"1"},"context":{"arguments":{"style":"x"}}}`},
	{"a list without params", "tools/list", ``},
	{"a list with params null", "tools/list", `null`},
	{"a list with a cursor", "resources/list", `{"cursor":"abc"}`},
	{"logging/setLevel", "logging/setLevel", `{"level":"debug"}`},
	{"an extension member", "tools/list", `{"x-ext":{"Name":1}}`},
	{"an unknown method", "x/y", `{"URI":1,"name":[]}`},
	{"initialize with empty params", "initialize", `{}`},
	{"tasks/get", "tasks/get", `{"taskId":"t1"}`},
	{"notifications/progress", "notifications/progress", `{"progressToken":"p","progress":1,"total":2}`},
	{"a multi round-trip retry", "tools/call", `{"name":"echo","inputResponses":{"a":{}},"requestState":"opaque"}`},
}

var refusedParams = []struct{ name, method, params, want string }{
	{"lone URI", "resources/read", `{"URI":"secret://db/password"}`, `case variant`},
	{"lone Arguments", "tools/call", `{"name":"echo","Arguments":{}}`, `case variant`},
	{"lone Name", "tools/call", `{"Name":"echo"}`, `case variant`},
	{"long s folds to s", "tools/call", `{"name":"echo","argumentſ":{}}`, `case variant`},
	{"Kelvin sign folds to k", "tasks/get", `{"tas\u212aId":"t"}`, `case variant`},
	{"_Meta", "tools/list", `{"_Meta":{}}`, `case variant`},
	{"_meta.ProgressToken", "tools/list", `{"_meta":{"ProgressToken":1}}`, `case variant`},
	{"Cursor", "tools/list", `{"Cursor":"c"}`, `case variant`},
	{"Level", "logging/setLevel", `{"Level":"debug"}`, `case variant`},
	{"ref.URI", "completion/complete", `{"ref":{"type":"ref/resource","URI":"secret://x"},"argument":{"name":"a","value":""}}`, `case variant`},
	{"Argument", "completion/complete", `{"ref":{"type":"ref/prompt","name":"p"},"Argument":{"name":"a","value":""}}`, `case variant`},
	{"_meta on an unknown method", "x/y", `{"_META":{}}`, `case variant`},
	// The cache reads these exactly to never store a multi round-trip.
	{"InputResponses", "tools/call", `{"name":"echo","InputResponses":{}}`, `case variant`},
	{"requeststate", "resources/read", `{"uri":"test://x","requeststate":"s"}`, `case variant`},
	{"uri an array", "resources/read", `{"uri":["secret://x"]}`, `must be a string, not an array`},
	{"uri a number", "resources/read", `{"uri":1}`, `must be a string`},
	{"uri null", "resources/read", `{"uri":null}`, `must be a string, not null`},
	{"name an object", "tools/call", `{"name":{"a":1}}`, `must be a string`},
	{"arguments a string", "tools/call", `{"name":"echo","arguments":"x"}`, `must be an object`},
	{"arguments an array", "prompts/get", `{"name":"p","arguments":["x"]}`, `must be an object`},
	{"cursor a number", "tools/list", `{"cursor":1}`, `must be a string`},
	{"progressToken a boolean", "tools/list", `{"_meta":{"progressToken":true}}`, `must be a string or a number`},
	{"_meta an array", "tools/list", `{"_meta":[]}`, `must be an object`},
	{"params an array", "tools/list", `[1]`, `must be an object`},
	{"params a string", "ping", `"x"`, `must be an object`},
	{"params null where uri is required", "resources/read", `null`, `params.uri is required`},
	{"no params where name is required", "tools/call", ``, `params.name is required`},
	{"name missing", "tools/call", `{"arguments":{}}`, `params.name is required`},
	{"uri leading space", "resources/read", `{"uri":" secret://db"}`, `whitespace`},
	{"uri leading tab", "resources/read", `{"uri":"\tsecret://db"}`, `whitespace`},
	{"uri NUL", "resources/read", `{"uri":"\u0000secret://db"}`, `control character`},
	{"uri DEL", "resources/read", `{"uri":"secret://db\u007f"}`, `control character`},
	{"uri C1", "resources/read", `{"uri":"secret://d\u0085b"}`, `control character`},
	{"uri inner tab", "resources/read", `{"uri":"sec\tret://db"}`, `control character`},
	{"uri no-break space", "resources/read", `{"uri":"secret://d\u00a0b"}`, `whitespace`},
	{"uri bidi override", "resources/read", `{"uri":"test://\u202ex"}`, `format character`},
	{"uri BOM", "resources/read", `{"uri":"\ufeffsecret://db"}`, `format character`},
	{"uri percent scheme", "resources/read", `{"uri":"%73ecret://db"}`, `not a URI scheme`},
	{"uri upper-case scheme", "resources/read", `{"uri":"Secret://db"}`, `lower case`},
	{"uri no scheme", "resources/read", `{"uri":"//db/password"}`, `absolute URI`},
	{"uri relative with a colon", "resources/read", `{"uri":"//db:5432/x"}`, `not a URI scheme`},
	{"uri no colon", "resources/read", `{"uri":"secret"}`, `absolute URI`},
	{"uri empty", "resources/subscribe", `{"uri":""}`, `absolute URI`},
	{"uri scheme starting with a digit", "resources/read", `{"uri":"1x://db"}`, `not a URI scheme`},
	{"uri backslash", "resources/read", `{"uri":"file:\\\\host\\share"}`, `must not contain "\"`},
	{"uri bad percent", "resources/read", `{"uri":"secret://db/%zz"}`, `percent-encoding`},
	{"uri truncated percent", "resources/read", `{"uri":"secret://db/%2"}`, `percent-encoding`},
	{"federated uri with a space", "resources/read", `{"uri":"docs+ secret://db"}`, `not a URI scheme`},
	{"federated uri percent-encoded", "resources/read", `{"uri":"docs+%73ecret://db"}`, `not a URI scheme`},
	{"name empty", "tools/call", `{"name":""}`, `must not be empty`},
	{"name trailing space", "tools/call", `{"name":"echo "}`, `whitespace`},
	{"name newline", "prompts/get", `{"name":"p\n"}`, `whitespace`},
	{"name inner tab", "tools/call", `{"name":"ec\tho"}`, `control character`},
	{"name zero-width space", "tools/call", `{"name":"ec\u200bho"}`, `format character`},
	{"name line separator", "tools/call", `{"name":"ec\u2028ho"}`, `whitespace`},
	{"completion ref.uri", "completion/complete", `{"ref":{"type":"ref/resource","uri":" secret://x"}}`, `whitespace`},
	{"completion ref.name", "completion/complete", `{"ref":{"type":"ref/prompt","name":"p\u0000"}}`, `control character`},
}

func TestCheckParams(t *testing.T) {
	for _, tt := range acceptedParams {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if err := checkParams(request(tt.method, tt.params)); err != nil {
				t.Errorf("CheckParams(%s %s) = %v, want nil", tt.method, tt.params, err)
			}
		})
	}
	for _, tt := range refusedParams {
		t.Run("refuses "+tt.name, func(t *testing.T) {
			err := checkParams(request(tt.method, tt.params))
			if !errors.Is(err, ErrInvalidParams) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CheckParams(%s %s) = %v, want ErrInvalidParams containing %q", tt.method, tt.params, err, tt.want)
			}
		})
	}
}

// FuzzCheckParams: whatever checkParams accepts, a case-insensitive
// decoder (encoding/json, as many upstreams decode) reads the same typed
// members as the exact lookups of the policy input, and every name and URI
// in it is free of what a parser could normalise away.
func FuzzCheckParams(f *testing.F) {
	for _, tt := range acceptedParams {
		f.Add(tt.method, tt.params)
	}
	for _, tt := range refusedParams {
		f.Add(tt.method, tt.params)
	}
	f.Fuzz(func(t *testing.T, method, params string) {
		if !json.Valid([]byte(params)) && params != "" {
			return // the strict decode refuses it before checkParams
		}
		kept, err := ReadParams(request(method, params))
		if err != nil {
			if !errors.Is(err, ErrInvalidParams) {
				t.Fatalf("error %v does not wrap ErrInvalidParams", err)
			}
			return
		}
		var exact map[string]any
		_ = json.Unmarshal([]byte(params), &exact)
		checkKept(t, method, params, kept)
		var generic map[string]any
		d := json.NewDecoder(strings.NewReader(params))
		d.UseNumber()
		if d.Decode(&generic) == nil && !cmp.Equal(generic, DecodeObject([]byte(params))) {
			t.Fatalf("DecodeObject(%s) = %v, encoding/json (UseNumber) reads %v", params, DecodeObject([]byte(params)), generic)
		}
		var folded struct {
			Name      any `json:"name"`
			URI       any `json:"uri"`
			Arguments any `json:"arguments"`
			Cursor    any `json:"cursor"`
		}
		_ = json.Unmarshal([]byte(params), &folded)
		set := methodParams[method]
		for member, got := range map[string]any{"name": folded.Name, "uri": folded.URI, "arguments": folded.Arguments, "cursor": folded.Cursor} {
			if set == nil || set.byName[member].kinds == "" {
				continue
			}
			if want := exact[member]; !jsonEqual(got, want) {
				t.Fatalf("%s %s: encoding/json reads %s as %v, the exact lookup as %v", method, params, member, got, want)
			}
			s, ok := exact[member].(string)
			if ok && (member == "name" || member == "uri") {
				if strings.TrimFunc(s, unicode.IsSpace) != s || strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0 {
					t.Fatalf("%s %s: accepted %s %q", method, params, member, s)
				}
			}
			if ok && member == "uri" {
				scheme, _, _ := strings.Cut(s, ":")
				if scheme == "" || strings.ToLower(scheme) != scheme || strings.ContainsAny(scheme, "% /\\") {
					t.Fatalf("%s %s: accepted uri %q with scheme %q", method, params, s, scheme)
				}
			}
		}
	})
}

// checkKept: what the check kept is what encoding/json reads of the exact
// member names (the members are unambiguous once checked).
func checkKept(t *testing.T, method, params string, kept *Params) {
	t.Helper()
	var exact map[string]json.RawMessage
	_ = json.Unmarshal([]byte(params), &exact)
	str := func(raw json.RawMessage) string { var s string; _ = json.Unmarshal(raw, &s); return s }
	want := Params{}
	if set := methodParams[method]; set != nil {
		for name, m := range set.byName {
			raw, ok := exact[name]
			if !ok || m.keep == fieldNone {
				continue
			}
			want.set(m.keep, jsontext.Value(raw), str(raw))
		}
	}
	if raw, ok := exact["_meta"]; ok {
		want.Meta = jsontext.Value(raw)
		var meta map[string]json.RawMessage
		_ = json.Unmarshal(raw, &meta)
		for name, m := range requestMetaMembers.byName {
			if v, ok := meta[name]; ok {
				want.set(m.keep, jsontext.Value(v), str(v))
			}
		}
	}
	if diff := cmp.Diff(want, *kept, cmpopts.IgnoreUnexported(Params{}), cmp.Comparer(func(a, b jsontext.Value) bool { return string(a) == string(b) })); diff != "" {
		t.Fatalf("%s %s: kept (-encoding/json +kept):\n%s", method, params, diff)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// BenchmarkDecodeCall is the request side's decode of one 1 MB tools/call
// (go test -bench DecodeCall -benchmem): the strict decode with the
// default budget, the params check, then the policy input's arguments.
// B/op is the figure.
func BenchmarkDecodeCall(b *testing.B) {
	call := func(elem string, n int) []byte {
		items := strings.TrimSuffix(strings.Repeat(elem+",", n), ",")
		return []byte(`{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"items":[` + items + `]}}}`)
	}
	lim := Limits{Values: 100_000, StringBytes: 1 << 20}
	for _, bc := range []struct {
		name string
		body []byte
	}{
		{"99000 strings", call(`"abcdefgh"`, 99_000)},
		{"500000 numbers, over the budget", call("1", 500_000)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				msg, err := DecodeWith(bc.body, lim)
				if err == nil && msg.CheckParams() == nil {
					_ = DecodeObject(msg.Params().Arguments)
				}
			}
		})
	}
}
