package policy

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/go-json-experiment/json/jsontext"
)

func TestRedact(t *testing.T) {
	const toolResult = `{"content":[{"type":"text","text":"ssn 123-45-6789 ok"},{"type":"text","text":"call 555-12-3456","annotations":{"note":"123-45-6789"}},` +
		`{"type":"resource","resource":{"uri":"file:///a","text":"id 111-22-3333"}}],` +
		`"structuredContent":{"ssn":"123-45-6789","n":12345678901234567890,"deep":{"list":["999-88-7777",{"x":"000-11-2222"}]}},` +
		`"isError":false,"_meta":{"id":"123-45-6789"}}`
	tests := []struct {
		name   string
		result string
		rs     []Redaction
		want   string
	}{
		{
			name:   "path to a string, default replacement",
			result: `{"structuredContent":{"ssn":"123-45-6789","name":"a"}}`,
			rs:     []Redaction{{Path: "structuredContent.ssn"}},
			want:   `{"structuredContent":{"ssn":"[REDACTED]","name":"a"}}`,
		},
		{
			name:   "a member name anywhere (..ssn), any type, case-insensitive",
			result: `{"structuredContent":{"ssn":"1","people":[{"name":"a","SSN":2},{"name":"b","x":{"ssn":{"v":3}}}]},"content":[{"type":"text","text":"ssn"}]}`,
			rs:     []Redaction{{Path: "..ssn"}},
			want:   `{"structuredContent":{"ssn":"[REDACTED]","people":[{"name":"a","SSN":"[REDACTED]"},{"name":"b","x":{"ssn":"[REDACTED]"}}]},"content":[{"type":"text","text":"ssn"}]}`,
		},
		{
			name:   "a path suffix anywhere (..card.number)",
			result: `{"a":{"card":{"number":"4111","name":"x"}},"number":"keep","b":[{"card":{"number":"5500"}}]}`,
			rs:     []Redaction{{Path: "..card.number", Replacement: "****"}},
			want:   `{"a":{"card":{"number":"****","name":"x"}},"number":"keep","b":[{"card":{"number":"****"}}]}`,
		},
		{
			name:   "a pattern on member names (key)",
			result: `{"structuredContent":{"user":"a","api_key":"k1","nested":{"Password":"p","passwords_count":3}}}`,
			rs:     []Redaction{{Key: `(?i)^(password|api_?key)$`}},
			want:   `{"structuredContent":{"user":"a","api_key":"[REDACTED]","nested":{"Password":"[REDACTED]","passwords_count":3}}}`,
		},
		{
			name:   "path to an object and a number",
			result: `{"structuredContent":{"card":{"n":"4111","cvv":123},"total":10.50}}`,
			rs:     []Redaction{{Path: "structuredContent.card", Replacement: "gone"}, {Path: "structuredContent.total"}},
			want:   `{"structuredContent":{"card":"gone","total":"[REDACTED]"}}`,
		},
		{
			name:   "path with [*]",
			result: `{"content":[{"type":"text","text":"a"},{"type":"image","data":"xx"},{"type":"text","text":"b"}]}`,
			rs:     []Redaction{{Path: "content[*].text", Replacement: "-"}},
			want:   `{"content":[{"type":"text","text":"-"},{"type":"image","data":"xx"},{"type":"text","text":"-"}]}`,
		},
		{
			name:   "path with an index and nested wildcards",
			result: `{"a":[[1,2],[3,4]],"b":[{"c":1},{"c":2}]}`,
			rs:     []Redaction{{Path: "a[*][1]", Replacement: "x"}, {Path: "b[1].c", Replacement: "y"}},
			want:   `{"a":[[1,"x"],[3,"x"]],"b":[{"c":1},{"c":"y"}]}`,
		},
		{
			name:   "path that matches nothing",
			result: `{"content":[]}`,
			rs:     []Redaction{{Path: "structuredContent.ssn"}, {Path: "content[*].text"}},
			want:   `{"content":[]}`,
		},
		{
			name:   "pattern in every text, not elsewhere",
			result: toolResult,
			rs:     []Redaction{{Pattern: `\d{3}-\d{2}-\d{4}`, Replacement: "XXX"}},
			want: `{"content":[{"type":"text","text":"ssn XXX ok"},{"type":"text","text":"call XXX","annotations":{"note":"123-45-6789"}},` +
				`{"type":"resource","resource":{"uri":"file:///a","text":"id XXX"}}],` +
				`"structuredContent":{"ssn":"XXX","n":12345678901234567890,"deep":{"list":["XXX",{"x":"XXX"}]}},` +
				`"isError":false,"_meta":{"id":"XXX"}}`,
		},
		{
			// Issue 14, finding 5: channels a model reads beside the text.
			name: "resource_link text and _meta",
			result: `{"content":[{"type":"resource_link","uri":"file:///k","name":"key AKIAABCDEFGHIJKLMNOP","title":"AKIAABCDEFGHIJKLMNOP","description":"see AKIAABCDEFGHIJKLMNOP",` +
				`"_meta":{"note":["AKIAABCDEFGHIJKLMNOP"]}}],"_meta":{"trace":{"k":"AKIAABCDEFGHIJKLMNOP"}},"other":"AKIAABCDEFGHIJKLMNOP"}`,
			rs: []Redaction{{Pattern: `AKIA[0-9A-Z]{16}`, Replacement: "K"}},
			want: `{"content":[{"type":"resource_link","uri":"file:///k","name":"key K","title":"K","description":"see K",` +
				`"_meta":{"note":["K"]}}],"_meta":{"trace":{"k":"K"}},"other":"AKIAABCDEFGHIJKLMNOP"}`,
		},
		{
			name:   "list items' _meta",
			result: `{"tools":[{"name":"AKIAABCDEFGHIJKLMNOP","_meta":{"k":"AKIAABCDEFGHIJKLMNOP"}}],"resources":[{"_meta":{"a":["AKIAABCDEFGHIJKLMNOP"]}}]}`,
			rs:     []Redaction{{Pattern: `AKIA[0-9A-Z]{16}`, Replacement: "K"}},
			want:   `{"tools":[{"name":"AKIAABCDEFGHIJKLMNOP","_meta":{"k":"K"}}],"resources":[{"_meta":{"a":["K"]}}]}`,
		},
		{
			name:   "pattern with a group reference, default replacement",
			result: `{"contents":[{"uri":"file:///a","text":"card 4111111111111111 and key sk-abc"}]}`,
			rs:     []Redaction{{Pattern: `\d{12}(\d{4})`, Replacement: "************$1"}, {Pattern: `sk-[a-z]+`}},
			want:   `{"contents":[{"uri":"file:///a","text":"card ************1111 and key [REDACTED]"}]}`,
		},
		{
			name:   "prompt messages",
			result: `{"messages":[{"role":"user","content":{"type":"text","text":"my ssn is 123-45-6789"}}]}`,
			rs:     []Redaction{{Pattern: `\d{3}-\d{2}-\d{4}`}},
			want:   `{"messages":[{"role":"user","content":{"type":"text","text":"my ssn is [REDACTED]"}}]}`,
		},
		{
			name:   "path and pattern together",
			result: `{"content":[{"type":"text","text":"123-45-6789"}],"structuredContent":{"ssn":"123-45-6789"}}`,
			rs:     []Redaction{{Path: "structuredContent.ssn", Replacement: "P"}, {Pattern: `\d+`, Replacement: "#"}},
			want:   `{"content":[{"type":"text","text":"#-#-#"}],"structuredContent":{"ssn":"P"}}`,
		},
		{
			name:   "escaped names and strings",
			result: `{"structuredContent":{"s\u0073n":"1\u00e9"}}`,
			rs:     []Redaction{{Path: "structuredContent.ssn"}},
			want:   `{"structuredContent":{"ssn":"[REDACTED]"}}`,
		},
		{
			name:   "case variants of names are redacted too",
			result: `{"structuredContent":{"ssn":"1","SSN":"2"},"StructuredContent":{"x":"123-45-6789"}}`,
			rs:     []Redaction{{Path: "structuredContent.ssn"}, {Pattern: `\d{3}-\d{2}-\d{4}`}},
			want:   `{"structuredContent":{"ssn":"[REDACTED]","SSN":"[REDACTED]"},"StructuredContent":{"x":"[REDACTED]"}}`,
		},
		{
			name:   "no redactions: unchanged",
			result: ` {"a" : 1} `,
			want:   ` {"a" : 1} `,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Redact([]byte(tt.result), tt.rs)
			if err != nil {
				t.Fatalf("Redact: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Redact =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

// TestRedactText: RedactText applies patterns to every string of a value
// (an error's message and data, a notification's params) and counts them;
// path redactions do not apply.
func TestRedactText(t *testing.T) {
	rs := []Redaction{{Pattern: `AKIA[0-9A-Z]{16}`}, {Path: "message"}}
	in := `{"code":-32000,"message":"key AKIAABCDEFGHIJKLMNOP leaked","data":{"env":["AWS=AKIAABCDEFGHIJKLMNOP"],"n":1}}`
	got, n, err := RedactText([]byte(in), rs)
	want := `{"code":-32000,"message":"key [REDACTED] leaked","data":{"env":["AWS=[REDACTED]"],"n":1}}`
	if err != nil || string(got) != want || n != 2 {
		t.Errorf("RedactText = %s, %d, %v; want %s, 2", got, n, err, want)
	}
	if got, n, err := RedactText([]byte(in), []Redaction{{Path: "message"}}); err != nil || string(got) != in || n != 0 {
		t.Errorf("RedactText with a path only = %s, %d, %v; want the value unchanged", got, n, err)
	}
	if _, n, err := RedactResult([]byte(`{"structuredContent":{"a":"x","b":"AKIAABCDEFGHIJKLMNOP"}}`), []Redaction{{Path: "structuredContent.a"}, {Pattern: `AKIA[0-9A-Z]{16}`}}); err != nil || n != 2 {
		t.Errorf("RedactResult counted %d (%v); want 2", n, err)
	}
}

func TestRedactErrors(t *testing.T) {
	tests := []struct {
		name   string
		result string
		rs     []Redaction
		match  string
	}{
		{name: "invalid pattern", result: `{}`, rs: []Redaction{{Pattern: `(`}}, match: "redact[0]: pattern"},
		{name: "both path and pattern", result: `{}`, rs: []Redaction{{Path: "a", Pattern: "b"}}, match: "exactly one"},
		{name: "neither", result: `{}`, rs: []Redaction{{Replacement: "x"}}, match: "exactly one"},
		{name: "key and path", result: `{}`, rs: []Redaction{{Path: "a", Key: "b"}}, match: "exactly one"},
		{name: "invalid key pattern", result: `{}`, rs: []Redaction{{Key: `(`}}, match: "redact[0]: key"},
		{name: "nothing after ..", result: `{}`, rs: []Redaction{{Path: ".."}}, match: "empty member name"},
		{name: "empty path segment", result: `{}`, rs: []Redaction{{Path: "a..b"}}, match: "empty member name"},
		{name: "bad index", result: `{}`, rs: []Redaction{{Path: "a[x]"}}, match: "neither * nor a number"},
		{name: "unclosed bracket", result: `{}`, rs: []Redaction{{Path: "a[*"}}, match: "want [*] or [N]"},
		{name: "junk after bracket", result: `{}`, rs: []Redaction{{Path: "a[*]b"}}, match: "want [*] or [N]"},
		{name: "invalid JSON", result: `{"a":`, rs: []Redaction{{Path: "a"}}, match: "redact result"},
		{name: "duplicate names", result: `{"a":1,"a":2}`, rs: []Redaction{{Path: "a"}}, match: "duplicate"},
		{name: "trailing data", result: `{} {}`, rs: []Redaction{{Path: "a"}}, match: "redact result"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Redact([]byte(tt.result), tt.rs)
			if err == nil || !strings.Contains(err.Error(), tt.match) {
				t.Errorf("Redact = %s, %v; want an error containing %q", got, err, tt.match)
			}
		})
	}
}

func TestPatternCacheBound(t *testing.T) {
	c := &patternCache{m: map[string]*regexp.Regexp{}}
	for i := range patternCacheMax + 10 {
		if _, err := c.get("a" + strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.m) > patternCacheMax {
		t.Errorf("pattern cache holds %d, over its bound %d", len(c.m), patternCacheMax)
	}
	a, _ := c.get("x+")
	b, _ := c.get("x+")
	if a != b {
		t.Error("the same pattern compiled twice")
	}
}

func FuzzRedact(f *testing.F) {
	f.Add(`{"content":[{"type":"text","text":"123-45-6789"}],"structuredContent":{"ssn":"1","a":[1,{"b":"123-45-6789"}]}}`)
	f.Add(`{"contents":[{"text":"x"}],"messages":[{"content":{"text":"123-45-6789"}}]}`)
	f.Add(`[1,2]`)
	f.Add(`{"content":[{"type":"resource_link","name":"123-45-6789","_meta":{"a":["123-45-6789"]}}],"_meta":{"x":"123-45-6789"}}`)
	f.Add(`{"code":1,"message":"123-45-6789","data":{"a":[{"b":"123-45-6789"}]}}`)
	rs := []Redaction{{Path: "structuredContent.ssn"}, {Path: "content[*].annotations"}, {Pattern: `\d{3}-\d{2}-\d{4}`}}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Redact([]byte(in), rs)
		if err != nil {
			return
		}
		if !jsontext.Value(out).IsValid() {
			t.Fatalf("Redact(%q) = %q: not valid JSON", in, out)
		}
		if !jsontext.Value(in).IsValid() {
			t.Fatalf("Redact(%q) accepted invalid JSON", in)
		}
		text, _, err := RedactText([]byte(in), rs)
		if err != nil || !jsontext.Value(text).IsValid() || stringValueMatches(text, regexp.MustCompile(`\d{3}-\d{2}-\d{4}`)) {
			t.Fatalf("RedactText(%q) = %q, %v: want valid JSON without a match in a string", in, text, err)
		}
	})
}

// stringValueMatches reports whether re matches a string value (not a
// member name) of a JSON value.
func stringValueMatches(v []byte, re *regexp.Regexp) bool {
	dec := jsontext.NewDecoder(strings.NewReader(string(v)))
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			return false
		}
		kind, length := dec.StackIndex(dec.StackDepth())
		isName := kind == '{' && length%2 == 1
		if tok.Kind() == '"' && !isName && re.MatchString(tok.String()) {
			return true
		}
	}
}
