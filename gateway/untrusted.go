package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// An upstream is not trusted: it may be compromised, or simply careless
// with what its tools say. This file holds what the gateway does about it
// beyond list filtering and redaction:
//   - a redirect is never followed (the upstream transport does not follow
//     them) and never relayed either: a 3xx is 502, so its Location can
//     neither send the gateway nor steer the client somewhere else;
//   - a response whose id matches no request of the exchange, or answers one
//     a second time, is dropped and logged: it could otherwise stand in for
//     the answer to another client's request;
//   - text a model reads from a tools/list result (tool title and
//     description, and every title and description in its schemas and
//     annotations) is neutralised: terminal escapes, control characters,
//     bidirectional overrides and invisible characters are removed, so a
//     tool description cannot hide instructions from the person reviewing
//     it while a model still reads them (the "tool poisoning" attack);
//   - the same for the other text an upstream puts before a model
//     (neutraliseResult): the server's instructions (initialize), every
//     title and description of prompts/list, resources/list and
//     resources/templates/list items, and the text, name, title and
//     description of a tools/call result's content items.

var errUpstreamRedirect = errors.New("upstream answered with a redirect, which the gateway never follows or relays")

// refuseRedirect turns an upstream 3xx into a failure (502).
func refuseRedirect(resp *http.Response) error {
	if resp.StatusCode < 300 || resp.StatusCode > 399 {
		return nil
	}
	_ = resp.Body.Close()
	return fmt.Errorf("%w (%d)", errUpstreamRedirect, resp.StatusCode)
}

// claimResponse reports whether an upstream response may be relayed: its id
// must be that of a request of this exchange not yet answered. Exchanges
// without requests (a GET stream) are not checked here.
func (fwd *forward) claimResponse(id jsonrpc.ID) bool {
	if fwd.exchanges == nil {
		return true
	}
	ex := fwd.exchanges[idKey(id)]
	if ex == nil || ex.answered {
		return false
	}
	ex.answered = true
	return true
}

// dropStrayResponse logs a response claimResponse refused.
func (s *Server) dropStrayResponse(ctx context.Context, fwd *forward, id jsonrpc.ID) {
	loggerOf(ctx, s.log).Warn("upstream response dropped: its id matches no unanswered request of this exchange",
		"upstream", fwd.route.upstream.Name, "response_id", clip(fmt.Sprint(id.Raw()), 64))
}

// neutraliseToolText logs which of the tools kept needed their text
// neutralised (screenToolPage did it): an operator should know an
// upstream sends such text.
func (s *Server) neutraliseToolText(ctx context.Context, fwd *forward, kept []toolItem) {
	var changed []string
	for _, it := range kept {
		if it.neutralised {
			changed = append(changed, it.Name)
		}
	}
	if len(changed) > 0 {
		loggerOf(ctx, s.log).Warn("tool text neutralised: escape, control, bidi or invisible characters removed",
			"upstream", fwd.route.upstream.Name, "tools", changed)
	}
}

// neutraliseResult neutralises the text of a result a model reads (see
// the file note), and logs it: an operator should know an upstream sends
// such text.
func (s *Server) neutraliseResult(ctx context.Context, fwd *forward, method string, result []byte) []byte {
	out, changed := neutraliseResultText(method, result)
	if changed {
		loggerOf(ctx, s.log).Warn("upstream text neutralised: escape, control, bidi or invisible characters removed",
			"upstream", fwd.route.upstream.Name, "rpc_method", method)
	}
	return out
}

// resultListMembers are the members of list results whose items'
// titles and descriptions are neutralised (tools have their own pass).
var resultListMembers = map[string]string{"prompts/list": "prompts", "resources/list": "resources", "resources/templates/list": "resourceTemplates"}

// neutraliseResultText is neutraliseResult without the log. It walks the
// result's tokens once (no tree: a tool result can be large) and rewrites
// only the strings at text positions; members keep their order and
// numbers their exact text. A result it cannot read is returned as it is
// (the strict decoder vouched for it).
func neutraliseResultText(method string, result []byte) ([]byte, bool) {
	isText := resultTextAt(method)
	if isText == nil || !mayNeedNeutralising(result) {
		return result, false
	}
	dec := jsontext.NewDecoder(bytes.NewReader(result))
	var out bytes.Buffer
	out.Grow(len(result))
	enc := jsontext.NewEncoder(&out, jsontext.EscapeForHTML(false))
	var names []string // the member name at each depth (arrays: unused)
	changed := false
	for {
		tok, err := dec.ReadToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return result, false
		}
		depth := dec.StackDepth()
		kind, length := dec.StackIndex(depth)
		switch {
		case kind == '{' && length%2 == 1: // a member name
			for len(names) < depth {
				names = append(names, "")
			}
			names[depth-1] = tok.String()
		case tok.Kind() == '"' && isText(valuePath(names, dec)):
			if clean := neutralise(tok.String()); clean != tok.String() {
				tok, changed = jsontext.String(clean), true
			}
		}
		if err := enc.WriteToken(tok); err != nil {
			return result, false
		}
	}
	if !changed {
		return result, false
	}
	return bytes.TrimSuffix(out.Bytes(), []byte{'\n'}), true
}

// valuePath is the path of the string just read: the member names of the
// enclosing objects, "[]" for array elements.
func valuePath(names []string, dec *jsontext.Decoder) []string {
	depth := dec.StackDepth()
	p := make([]string, 0, depth)
	for i := 1; i <= depth; i++ {
		if kind, _ := dec.StackIndex(i); kind == '[' {
			p = append(p, "[]")
		} else if i-1 < len(names) {
			p = append(p, names[i-1])
		}
	}
	return p
}

// resultTextAt is, for a method whose result text is neutralised, the
// test of a string's path; nil for other methods. Names match
// case-insensitively, as Go's encoding/json would read them.
func resultTextAt(method string) func(path []string) bool {
	at := func(p []string, i int, name string) bool { return len(p) > i && strings.EqualFold(p[i], name) }
	last := func(p []string) string { return p[len(p)-1] }
	switch method {
	case "initialize":
		return func(p []string) bool {
			return len(p) == 1 && at(p, 0, "instructions") || len(p) > 1 && at(p, 0, "serverInfo") && isTextKey(last(p))
		}
	case "tools/call":
		return func(p []string) bool {
			if len(p) != 3 || !at(p, 0, "content") || p[1] != "[]" {
				return false
			}
			k := last(p)
			return isTextKey(k) || strings.EqualFold(k, "text") || strings.EqualFold(k, "name")
		}
	}
	member, ok := resultListMembers[method]
	if !ok {
		return nil
	}
	return func(p []string) bool { return len(p) > 1 && at(p, 0, member) && isTextKey(last(p)) }
}

// mayNeedNeutralising is a cheap test of raw JSON: only an escape that
// stands for a character neutralise removes (\u..., and \b, \f, \r: C0
// controls), or such a character raw, can need the full pass. Eight bytes
// at a time while none of them can start one (a tool result can be large).
func mayNeedNeutralising(b []byte) bool {
	for i := 0; i < len(b); {
		if i+8 <= len(b) && !maySpecial(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
			continue
		}
		c := b[i]
		switch {
		case c == '\\':
			if i+1 < len(b) && strings.IndexByte("ubfr", b[i+1]) >= 0 {
				return true
			}
			i += 2 // an escaped backslash is not the start of another escape
		case c == 0x7f || c < 0x20 && c != '\t' && c != '\n' && c != '\r':
			// DEL is valid raw in a JSON string (the C0 controls are not;
			// tab, newline and CR between tokens are JSON whitespace).
			return true
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if invisible(r) {
				return true
			}
			i += size
		}
	}
	return false
}

// maySpecial reports whether one of the eight bytes of x is non-ASCII, a
// control, DEL or a backslash: one mayNeedNeutralising must look at. (The
// tests for a byte below n and for a zero byte are exact once no byte has
// its high bit set.)
func maySpecial(x uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	if x&highs != 0 {
		return true
	}
	hasZero := func(y uint64) bool { return (y-ones)&^y&highs != 0 }
	return (x-0x20*ones)&^x&highs != 0 || hasZero(x^0x7f*ones) || hasZero(x^'\\'*ones)
}

// isTextKey reports the members whose string values a client shows to
// people or models. Case-insensitively: Go's encoding/json would read
// "Description" as the description (the CVE-2026-27896 class).
func isTextKey(k string) bool {
	return strings.EqualFold(k, "title") || strings.EqualFold(k, "description")
}

// neutraliseTools returns a tools/list result with the text of every tool
// neutralised (see neutralise), and the names of the tools that changed.
// A result it cannot read is returned as it is: the strict decoder has
// already vouched for it, and the policy filter reads it next. The
// gateway neutralises item by item (screenToolPage, neutraliseItem); this
// is the same for a whole page.
func neutraliseTools(result []byte) ([]byte, []string) {
	if !mayNeedNeutralising(result) {
		return result, nil
	}
	var page map[string]json.RawMessage
	if json.Unmarshal(result, &page) != nil {
		return result, nil
	}
	var tools []json.RawMessage
	if json.Unmarshal(page["tools"], &tools) != nil {
		return result, nil
	}
	var changed []string
	for i, raw := range tools {
		out, ok := neutraliseItem(jsontext.Value(raw))
		if !ok {
			continue
		}
		tools[i] = json.RawMessage(out)
		var tool struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &tool)
		changed = append(changed, tool.Name)
	}
	if len(changed) == 0 {
		return result, nil
	}
	var err error
	if page["tools"], err = marshalPlain(tools); err != nil {
		return result, nil
	}
	out, err := marshalPlain(page)
	if err != nil {
		return result, nil
	}
	return out, changed
}

// neutraliseItem returns one tools/list item with its text neutralised
// at any depth (neutraliseTool), and whether it changed. An item with
// nothing to neutralise, or that is not an object, is returned as it is,
// byte for byte; a changed one is encoded again.
func neutraliseItem(raw jsontext.Value) (jsontext.Value, bool) {
	if !mayNeedNeutralising(raw) {
		return raw, false
	}
	var tool map[string]json.RawMessage
	if json.Unmarshal(raw, &tool) != nil || tool == nil || !neutraliseTool(tool) {
		return raw, false
	}
	out, err := marshalPlain(tool)
	if err != nil {
		return raw, false
	}
	return out, true
}

// neutraliseTool rewrites one tool's text members in place, at any depth
// (the schemas and annotations hold titles and descriptions too).
func neutraliseTool(tool map[string]json.RawMessage) bool {
	changed := false
	for k, raw := range tool {
		var s string
		if isTextKey(k) && json.Unmarshal(raw, &s) == nil {
			if clean := neutralise(s); clean != s {
				tool[k], _ = marshalPlain(clean)
				changed = true
			}
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // numbers keep their exact text
		var v any
		if dec.Decode(&v) != nil || !neutraliseTree(v) {
			continue
		}
		if b, err := marshalPlain(v); err == nil {
			tool[k] = b
			changed = true
		}
	}
	return changed
}

// neutraliseTree neutralises, at any depth, the string value of every
// title and description member.
func neutraliseTree(v any) bool {
	changed := false
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if s, ok := child.(string); ok && isTextKey(k) {
				if clean := neutralise(s); clean != s {
					v[k] = clean
					changed = true
				}
				continue
			}
			changed = neutraliseTree(child) || changed
		}
	case []any:
		for _, child := range v {
			changed = neutraliseTree(child) || changed
		}
	}
	return changed
}

// marshalPlain encodes v without escaping <, > and &: the text stays as
// readable as the upstream sent it.
func marshalPlain(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte{'\n'}), nil
}

// neutralise removes from s what a terminal or a reviewer would not show
// as it is, but a model would read: ANSI escape sequences (CSI and OSC,
// whole), C0 controls but tab and newline, DEL and the C1 controls, the
// bidirectional formatting characters (Trojan Source, CVE-2021-42574),
// zero-width and other invisible format characters, and the Unicode tag
// characters (U+E0000..U+E007F, used to smuggle ASCII text invisibly).
func neutralise(s string) string {
	if !needsNeutralising(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if n := escapeSequenceLen(s[i:]); n > 0 {
			i += n
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if !invisible(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func needsNeutralising(s string) bool {
	for _, r := range s {
		if r == 0x1b || invisible(r) {
			return true
		}
	}
	return false
}

// invisible reports the characters neutralise removes (ESC aside).
func invisible(r rune) bool {
	switch {
	case r == '\t' || r == '\n':
		return false
	case r < 0x20, r >= 0x7f && r <= 0x9f: // C0, DEL, C1 (0x9b is a one-byte CSI)
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi
		return true
	case r >= 0x200b && r <= 0x200d, r == 0x2060, r == 0xfeff, r == 0x00ad: // zero-width, soft hyphen
		return true
	case r >= 0xe0000 && r <= 0xe007f: // tags
		return true
	}
	return false
}

// escapeSequenceLen is the length of the ANSI escape sequence at the start
// of s (ESC [ ... final byte; ESC ] ... BEL or ESC \; ESC and one
// character), or 0.
func escapeSequenceLen(s string) int {
	if len(s) < 2 || s[0] != 0x1b {
		return 0
	}
	switch s[1] {
	case '[':
		for i := 2; i < len(s); i++ {
			if s[i] >= 0x40 && s[i] <= 0x7e {
				return i + 1
			}
		}
		return len(s)
	case ']':
		for i := 2; i < len(s); i++ {
			if s[i] == 0x07 {
				return i + 1
			}
			if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\' {
				return i + 2
			}
		}
		return len(s)
	}
	_, size := utf8.DecodeRuneInString(s[1:])
	return 1 + size
}
