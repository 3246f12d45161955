package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/ctxgate/ctxgate/config"
)

// FuzzNeutraliseTools: a tools/list result from an upstream, whatever it
// holds, comes out as JSON when it went in as JSON, without the characters
// neutralise removes in any tool title or description, and neutralising
// twice changes nothing more.
func FuzzNeutraliseTools(f *testing.F) {
	f.Add(`{"tools":[{"name":"a","description":"x\u001b[31mred\u001b[0m\u202e","inputSchema":{"type":"object","properties":{"p":{"description":"\u0007y"}}}}]}`)
	f.Add(`{"tools":[{"name":"a","title":"\udb40\udc41t","annotations":{"title":"\u0085"}}],"nextCursor":"c"}`)
	f.Add(`{"tools":[{"name":"a","description":"\u001b]8;;http://x\u0007link\u001b]8;;\u0007"}]}`)
	f.Add(`{"tools":"not a list"}`)
	f.Add(`{"tools":[{"name":"a","inputSchema":{"maximum":1e400,"description":"\u001b"}}]}`)
	f.Add(`{"tools":[{"name":"a","Description":"\u001b[8mx","TITLE":"\u202e","outputSchema":{"description":"\u200b"}}]}`)
	f.Add(`{"tools":[{"name":"a","_meta":{"title":"\u0007"},"icons":[{"src":"x","title":"\u2066"}]}]}`)
	f.Fuzz(func(t *testing.T, result string) {
		if exactListMember([]byte(result), "tools") != nil {
			return // withheld before neutralising (filterResponse)
		}
		out, _ := neutraliseTools([]byte(result))
		if json.Valid([]byte(result)) && !json.Valid(out) {
			t.Fatalf("neutralised %q into invalid JSON %q", result, out)
		}
		again, changed := neutraliseTools(out)
		if len(changed) > 0 || string(again) != string(out) {
			t.Fatalf("second pass changed %v: %q -> %q", changed, out, again)
		}
		var page struct {
			Tools []struct{ Title, Description string }
		}
		if json.Unmarshal(out, &page) != nil {
			return
		}
		for _, tool := range page.Tools {
			if needsNeutralising(tool.Title) || needsNeutralising(tool.Description) {
				t.Fatalf("tool text left unneutralised: %q %q", tool.Title, tool.Description)
			}
		}
	})
}

// FuzzNeutraliseResult: whatever result an upstream sends for the methods
// whose text is neutralised beside tools/list (initialize instructions,
// prompt and resource lists, tool results), it comes out as valid JSON
// when it went in as valid JSON, and a second pass changes nothing more.
func FuzzNeutraliseResult(f *testing.F) {
	methods := []string{"initialize", "tools/call", "prompts/list", "resources/list", "resources/templates/list"}
	f.Add(uint8(0), `{"protocolVersion":"2025-11-25","instructions":"Be nice.\u001b[8mhidden\u001b[0m\u202e","serverInfo":{"name":"s","title":"\u200bS"}}`)
	f.Add(uint8(1), `{"content":[{"type":"text","text":"done\u001b]0;x\u0007"},{"type":"resource_link","uri":"file:///a","name":"\u2066a","description":"\udb40\udc41"}],"structuredContent":{"n":1e400}}`)
	f.Add(uint8(2), `{"prompts":[{"name":"p","description":"\u0085d","arguments":[{"name":"a","description":"\u001bX"}]}]}`)
	f.Add(uint8(3), `{"resources":[{"uri":"file:///a","name":"a","title":"\u061ct","description":"ok"}],"nextCursor":"c"}`)
	f.Add(uint8(4), `{"resourceTemplates":[{"uriTemplate":"file:///{p}","name":"t","description":"\u202a"}]}`)
	f.Add(uint8(1), `{"content":"not a list"}`)
	f.Fuzz(func(t *testing.T, m uint8, result string) {
		method := methods[int(m)%len(methods)]
		out, _ := neutraliseResultText(method, []byte(result))
		if json.Valid([]byte(result)) && !json.Valid(out) {
			t.Fatalf("%s: neutralised %q into invalid JSON %q", method, result, out)
		}
		again, changed := neutraliseResultText(method, out)
		if changed || string(again) != string(out) {
			t.Fatalf("%s: second pass changed %q -> %q", method, out, again)
		}
		var r struct {
			Instructions string
			Content      []struct{ Text, Name, Title, Description string }
		}
		// Only a result the upstream decoder accepts reaches the neutraliser
		// (mcpwire.DecodeRPC refuses duplicate names and invalid UTF-8
		// anywhere in the message); of others, the checks above suffice.
		if json.Unmarshal(out, &r) != nil || !json.Valid([]byte(result)) || !jsontext.Value(result).IsValid() {
			return
		}
		left := method == "initialize" && needsNeutralising(r.Instructions)
		for _, c := range r.Content {
			left = left || method == "tools/call" && (needsNeutralising(c.Text) || needsNeutralising(c.Name) || needsNeutralising(c.Title) || needsNeutralising(c.Description))
		}
		if left {
			t.Fatalf("%s: text left unneutralised in %q", method, out)
		}
	})
}

// TestNeutraliseResultText: only the text a model reads changes; other
// strings, member order and numbers' text are kept.
func TestNeutraliseResultText(t *testing.T) {
	tests := []struct{ method, in, want string }{
		{"initialize", `{"protocolVersion":"2025-11-25","instructions":"a\u001b[8mb\u001b[0m","serverInfo":{"name":"x\u200b","title":"T\u202e"},"n":1e400}`,
			`{"protocolVersion":"2025-11-25","instructions":"ab","serverInfo":{"name":"x\u200b","title":"T"},"n":1e400}`},
		{"tools/call", `{"content":[{"type":"text","text":"ok\u0007 <b>"},{"type":"resource_link","uri":"file:///\u200b","name":"n\u2066"}],"structuredContent":{"text":"\u0007"}}`,
			`{"content":[{"type":"text","text":"ok <b>"},{"type":"resource_link","uri":"file:///\u200b","name":"n"}],"structuredContent":{"text":"\u0007"}}`},
		{"prompts/list", `{"prompts":[{"name":"p\u200b","description":"d\u200b","arguments":[{"name":"a","description":"\u001bXy"}]}]}`,
			`{"prompts":[{"name":"p\u200b","description":"d","arguments":[{"name":"a","description":"y"}]}]}`},
		{"resources/read", `{"contents":[{"uri":"a","text":"\u001b[31m"}]}`, `{"contents":[{"uri":"a","text":"\u001b[31m"}]}`},
	}
	for _, tt := range tests {
		got, _ := neutraliseResultText(tt.method, []byte(tt.in))
		if !jsonEqualText(t, got, tt.want) {
			t.Errorf("%s:\n got %s\nwant %s", tt.method, got, tt.want)
		}
	}
}

// jsonEqualText compares two JSON texts after decoding their escapes
// (jsontext writes some characters raw that the test spells escaped).
func jsonEqualText(t *testing.T, got []byte, want string) bool {
	t.Helper()
	decode := func(b []byte) (any, error) {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v)
	}
	g, err1 := decode(got)
	w, err2 := decode([]byte(want))
	return err1 == nil && err2 == nil && reflect.DeepEqual(g, w)
}

// FuzzPinScreen: screening an upstream's tools/list result does not panic;
// in mode record, the same result screened twice hides nothing (a tool is
// pinned as first seen), and the digest ignores member order.
func FuzzPinScreen(f *testing.F) {
	f.Add(`{"tools":[{"name":"a","description":"d","inputSchema":{"type":"object"}}]}`)
	f.Add(`{"tools":[{"name":"a"},{"name":"a","description":"twice"}]}`)
	f.Add(`{"tools":[{"name":1}]}`)
	f.Add(`{"tools":[{"inputSchema":{"b":1,"a":[1.0,1e2]}}]}`)
	f.Add(`{"tools":[{"name":"a","title":"T","outputSchema":{"type":"object"},"icons":[{"src":"x"}],"_meta":{"k":"v"}}]}`)
	f.Add(`{"tools":[{"name":"a","annotations":{"readOnlyHint":false},"Annotations":{"readOnlyHint":true}},{"Name":"delete_file"}]}`)
	f.Fuzz(func(t *testing.T, result string) {
		st, err := newPinStore([]config.Upstream{{Name: "u", PinTools: &config.PinTools{Mode: config.PinRecord}}})
		if err != nil {
			t.Fatal(err)
		}
		set := st.set("u")
		page, err := readToolPage([]byte(result))
		if err != nil {
			return
		}
		first, err := set.screen(context.Background(), page.items)
		if err != nil {
			return
		}
		if again, err := set.screen(context.Background(), page.items); err != nil || len(again.hidden) > 0 || len(first.hidden) > 0 {
			t.Fatalf("record mode, same page again: hidden %v then %v, %v", first.hidden, again.hidden, err)
		}
	})
}

// FuzzReadToolPage: whatever a tools/list result holds, reading it does
// not panic, and every item it keeps reads the same to a case-insensitive
// decoder (Go's encoding/json, as many SDKs) as to the gateway: name,
// description and annotations. The page it relays reads back to the same
// items with nothing more withheld.
func FuzzReadToolPage(f *testing.F) {
	for _, seed := range []string{
		`{"tools":[{"name":"a","description":"d","annotations":{"readOnlyHint":true}}],"nextCursor":"c"}`,
		`{"tools":[{"name":"a","annotations":{"readOnlyHint":false},"Annotations":{"readOnlyHint":true}}]}`,
		`{"tools":[{"name":"a","annotations":{"readOnlyHint":false,"ReadOnlyHint":true}}]}`,
		`{"tools":[{"name":"read"},{"Name":"delete_file","annotations":{"readOnlyHint":true}}]}`,
		`{"tools":[{"name":"a","nAme":"b"}]}`,
		`{"tools":[{"name":"a","DESCRIPTION":"x"}]}`,
		`{"tools":[{"name":"a","annotations":{"readOnlyHInt":true}}]}`,
		`{"tools":[{"name":"a"},{"name":"a"}]}`,
		`{"tools":[1,"x",null,{"name":"ok"}]}`,
		`{"tools":{"name":"a"}}`,
		`{"tools":[{"name":"a","inputSchema":{"properties":{},"Properties":{"x":{}}}}]}`,
		`{"tools":[{"name":"\u017fecret","annotationſ":{}}]}`,
		`{"Tools":[{"name":"a"}]}`,
		`{"tOOls":[{"name":"a"}],"tools":[]}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, result string) {
		page, err := readToolPage([]byte(result))
		if err != nil {
			return
		}
		var loosePage struct{ Tools []json.RawMessage }
		if json.Unmarshal([]byte(result), &loosePage) == nil && page.prefix == nil && len(loosePage.Tools) > 0 {
			t.Fatalf("no tools read in %q, where encoding/json reads %d", result, len(loosePage.Tools))
		}
		for _, item := range page.items {
			var loose struct {
				Name        string
				Description string
				Annotations map[string]any
			}
			if err := json.Unmarshal(item.Raw, &loose); err != nil {
				t.Fatalf("kept item %s that encoding/json cannot read: %v", item.Raw, err)
			}
			if loose.Name != item.Name || loose.Description != item.Description || !reflect.DeepEqual(loose.Annotations, item.Annotations) {
				t.Fatalf("kept item %s reads %+v to encoding/json, %q %q %v to the gateway", item.Raw, loose, item.Name, item.Description, item.Annotations)
			}
		}
		if page.prefix == nil {
			return
		}
		out := page.encode(page.items)
		again, err := readToolPage(out)
		if err != nil || len(again.withheld) > 0 || len(again.items) != len(page.items) {
			t.Fatalf("relayed page %q reads back as %v, %v", out, again, err)
		}
	})
}
