package gateway

import (
	"fmt"
	"hash/maphash"
	"strings"
	"testing"

	"github.com/ctxgate/ctxgate/policy"
)

// TestMayNeedNeutralising: the cheap test lets through only JSON in which
// neutralise can find nothing to remove; every escape or raw byte that
// stands for a removed character sends it to the full pass.
func TestMayNeedNeutralising(t *testing.T) {
	tests := []struct {
		name string
		json string
		want bool
	}{
		{name: "plain", json: `{"description":"adds two numbers"}`, want: false},
		{name: "whitespace between tokens", json: "{\r\n\t\"a\": 1\n}", want: false},
		{name: "newline and tab escapes", json: `{"d":"a\nb\tc\"d\\e\/"}`, want: false},
		{name: "an escaped backslash before u", json: `{"d":"C:\\users"}`, want: false},
		{name: "unicode escape", json: `{"d":"\u001b[31m"}`, want: true},
		{name: "backspace escape", json: `{"d":"a\bb"}`, want: true},
		{name: "form feed escape", json: `{"d":"a\fb"}`, want: true},
		{name: "carriage return escape", json: `{"d":"a\rb"}`, want: true},
		{name: "raw DEL", json: "{\"d\":\"a\x7fb\"}", want: true},
		{name: "raw bidi override", json: "{\"d\":\"a\u202eb\"}", want: true},
		{name: "raw non-ASCII text", json: `{"d":"naïve café"}`, want: false},
		{name: "long plain text", json: `{"d":"` + strings.Repeat("abcdefgh", 9) + `"}`, want: false},
		{name: "long text, DEL at the end", json: `{"d":"` + strings.Repeat("abcdefgh", 9) + "\x7f\"}", want: true},
		{name: "long text, escape across eight bytes", json: `{"d":"abcdefg\u202e` + strings.Repeat("abcdefgh", 3) + `"}`, want: true},
		{name: "long text, unit separator", json: `{"d":"abcdefghijklmn` + "\x1f" + `opqrstuvwxyz"}`, want: true},
		{name: "long text, bidi override", json: `{"d":"abcdefghijklmn` + "\u2066" + `opqrstuvwxyz"}`, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mayNeedNeutralising([]byte(tt.json)); got != tt.want {
				t.Errorf("mayNeedNeutralising(%s) = %v, want %v", tt.json, got, tt.want)
			}
		})
	}
}

// TestToolScreens: a page is screened once per bytes and pin mode, its
// items' text neutralised and kept apart from what the upstream sent (the
// pins digest that), and the screens stay within their bound.
func TestToolScreens(t *testing.T) {
	var ts toolScreens
	result := []byte(`{"tools":[{"name":"a","description":"x\u202ey"},{"name":"b"}],"nextCursor":"c"}`)
	p1, err := ts.page(result, false)
	if err != nil {
		t.Fatal(err)
	}
	if p2, _ := ts.page(append([]byte(nil), result...), false); p2 != p1 {
		t.Error("the same bytes were screened twice")
	}
	if p3, _ := ts.page(result, true); p3 == p1 || p3.items[0].pin == nil {
		t.Error("a pinning upstream's page shares the non-pinning one's (no pin digests)")
	}
	if !p1.items[0].neutralised || string(p1.items[0].relayed) != `{"description":"xy","name":"a"}` || string(p1.items[0].Raw) != `{"name":"a","description":"x\u202ey"}` {
		t.Errorf("item a: relayed %s (neutralised %v), raw %s", p1.items[0].relayed, p1.items[0].neutralised, p1.items[0].Raw)
	}
	if p1.items[1].neutralised || string(p1.all) != `{"tools":[{"description":"xy","name":"a"},{"name":"b"}],"nextCursor":"c"}` {
		t.Errorf("page relayed as %s", p1.all)
	}
	if got := string(p1.encodeKept(p1.items[1:])); got != `{"tools":[{"name":"b"}],"nextCursor":"c"}` {
		t.Errorf("page without a: %s", got)
	}
	for i := range maxToolScreens {
		if _, err := ts.page(fmt.Appendf(nil, `{"tools":[{"name":"t%d"}]}`, i), false); err != nil {
			t.Fatal(err)
		}
	}
	if len(ts.pages) != maxToolScreens || len(ts.order) != maxToolScreens {
		t.Errorf("%d pages kept (%d in order), want %d", len(ts.pages), len(ts.order), maxToolScreens)
	}
	if again, _ := ts.page(result, false); again == p1 {
		t.Error("the oldest page was not evicted")
	}
	if _, err := ts.page([]byte(`{"tools":[{"name":"a"},{"name":"a"}]}`), false); err == nil {
		t.Error("a page with two tools of one name was screened")
	}
	// A page found by its hash is used only for the bytes it was
	// screened from: a colliding hash screens the new bytes.
	other, err := screenToolPage([]byte(`{"tools":[{"name":"other"}]}`), false)
	if err != nil {
		t.Fatal(err)
	}
	other.src = []byte(`{"tools":[{"name":"other"}]}`)
	ts.mu.Lock()
	ts.pages[screenKey{hash: maphash.Bytes(ts.seed, result), pins: false}] = other
	ts.mu.Unlock()
	if got, err := ts.page(result, false); err != nil || string(got.src) != string(result) {
		t.Errorf("a colliding page was served for %s: %s (%v)", result, got.src, err)
	}
}

// TestRedactAll: the memo answers what policy.RedactResult answers, for
// each set of redactions apart.
func TestRedactAll(t *testing.T) {
	p, err := screenToolPage([]byte(`{"tools":[{"name":"a","description":"key AKIAABCDEFGHIJKLMNOP"}]}`), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, rs := range [][]policy.Redaction{
		{{Key: "^description$", Replacement: "[hidden]"}},
		{{Key: "^name$"}},
		{{Key: "^description$", Replacement: "[hidden]"}},
	} {
		want, wantN, err := policy.RedactResult(p.all, rs)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			got, n, err := p.redactAll(rs)
			if err != nil || string(got) != string(want) || n != wantN {
				t.Errorf("redactAll(%v) = %s, %d, %v; want %s, %d", rs, got, n, err, want, wantN)
			}
		}
	}
}
