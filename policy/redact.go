package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/go-json-experiment/json/jsontext"
)

// DefaultReplacement replaces redacted values when a Redaction sets none.
const DefaultReplacement = "[REDACTED]"

// textPaths are where a result carries text for a reader: tools/call
// content (and embedded resources), resources/read contents, prompts/get
// messages. Every string under structuredContent is text too.
// The name, title and description of a resource_link (content[*]), of an
// embedded resource and of resources/read contents reach the model as
// text too (issue 14, finding 5), and so does every string under a _meta
// member, at any depth.
var textPaths = mustParsePaths(
	"content[*].text",
	"content[*].name",
	"content[*].title",
	"content[*].description",
	"content[*].resource.text",
	"contents[*].text",
	"messages[*].content.text",
	"messages[*].content.name",
	"messages[*].content.title",
	"messages[*].content.description",
	"messages[*].content.resource.text",
)

// Redact applies redaction instructions to a result (raw JSON) and returns
// the new result. A Path redaction replaces the value at that path,
// whatever its type, by the Replacement string; paths that match nothing
// are ignored. A Pattern redaction replaces every match in every text
// string of the result (content[*].text, content[*].resource.text,
// contents[*].text, messages[*].content.text, the name, title and
// description of content items (resource_link), every string in
// structuredContent and under the _meta of the result, its content items,
// messages and list items); the replacement may use $1-style group references as
// regexp.ReplaceAllString does. An empty Replacement is DefaultReplacement.
//
// Member names in paths (and the text locations) match case-insensitively,
// as a client decoding with Go's encoding/json would read them.
//
// With no redactions (nil or empty rs) the result is returned as is. Otherwise members keep
// their order and numbers their exact text. An invalid path or pattern, or
// a result that is not valid JSON (or has duplicate member names), is an
// error: the caller must not send the result.
func Redact(result []byte, rs []Redaction) ([]byte, error) {
	out, _, err := RedactResult(result, rs)
	return out, err
}

// RedactResult is Redact, and also counts the redactions made: values a
// path replaced plus strings a pattern changed. The gateway logs the count.
func RedactResult(result []byte, rs []Redaction) ([]byte, int, error) {
	if len(rs) == 0 {
		return result, 0, nil
	}
	r, err := compileRedactions(rs)
	if err != nil {
		return nil, 0, err
	}
	return r.run(result)
}

// RedactText applies the pattern redactions of rs to every string of a
// JSON value, at any depth, and returns the new value and how many strings
// changed. Path redactions address a result and are not applied. It is for
// what is not a result but reaches the client all the same: a JSON-RPC
// error's message and data, a notification's params (log messages,
// progress messages), a server-to-client request's params. Errors are as
// for Redact.
func RedactText(value []byte, rs []Redaction) ([]byte, int, error) {
	if len(rs) == 0 {
		return value, 0, nil
	}
	r, err := compileRedactions(rs)
	if err != nil {
		return nil, 0, err
	}
	if !r.anyText {
		return value, 0, nil
	}
	r.paths, r.allText = nil, true
	return r.run(value)
}

func (r *redactor) run(value []byte) ([]byte, int, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(value))
	var out bytes.Buffer
	out.Grow(len(value))
	enc := jsontext.NewEncoder(&out)
	if err := r.value(dec, enc, make([]pathElem, 0, 8)); err != nil {
		return nil, 0, fmt.Errorf("redact result: %w", err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, 0, fmt.Errorf("redact result: %w", cmpOr(err, errors.New("data after the result")))
	}
	return bytes.TrimSuffix(out.Bytes(), []byte{'\n'}), r.changed, nil
}

// redactor is a compiled list of redactions.
type redactor struct {
	paths    []redactPath
	patterns []*regexp.Regexp
	patRepls []string
	anyText  bool // patterns exist: text strings must be visited
	// allText: every string is text (RedactText), not only textPaths.
	allText bool
	// changed counts the values replaced and the strings patterns changed.
	changed int
	// keys match member names at any depth; keyRepls their replacements.
	keys     []*regexp.Regexp
	keyRepls []string
	anyDepth bool // a ".." path or a key: every value must be visited
}

type redactPath struct {
	segs        []pathSeg
	replacement string
	// anyDepth: the path began with ".." and matches a suffix of a
	// position, at any depth.
	anyDepth bool
}

func compileRedactions(rs []Redaction) (*redactor, error) {
	r := &redactor{}
	for i, rd := range rs {
		repl := cmpOr(rd.Replacement, DefaultReplacement)
		switch {
		case btoi(rd.Path != "")+btoi(rd.Pattern != "")+btoi(rd.Key != "") != 1:
			return nil, fmt.Errorf("redact[%d]: set exactly one of path, pattern and key", i)
		case rd.Key != "":
			re, err := patterns.get(rd.Key)
			if err != nil {
				return nil, fmt.Errorf("redact[%d]: key %q: %w", i, rd.Key, err)
			}
			r.keys, r.keyRepls, r.anyDepth = append(r.keys, re), append(r.keyRepls, repl), true
		case rd.Path != "":
			p, anyDepth := strings.CutPrefix(rd.Path, "..")
			segs, err := parsePath(p)
			if err != nil {
				return nil, fmt.Errorf("redact[%d]: %w", i, err)
			}
			r.paths = append(r.paths, redactPath{segs, repl, anyDepth})
			r.anyDepth = r.anyDepth || anyDepth
		default:
			re, err := patterns.get(rd.Pattern)
			if err != nil {
				return nil, fmt.Errorf("redact[%d]: pattern %q: %w", i, rd.Pattern, err)
			}
			r.patterns = append(r.patterns, re)
			r.patRepls = append(r.patRepls, repl)
			r.anyText = true
		}
	}
	return r, nil
}

// pathSeg is one step of a path: a member name, an array index, or [*].
type pathSeg struct {
	name  string
	index int // -1: any element ([*]); -2: a member name
}

// pathElem is one step of the position in the document being copied.
type pathElem struct {
	name  string
	index int // -2 for a member
}

func mustParsePaths(ps ...string) [][]pathSeg {
	out := make([][]pathSeg, len(ps))
	for i, p := range ps {
		segs, err := parsePath(p)
		if err != nil {
			panic(err)
		}
		out[i] = segs
	}
	return out
}

// parsePath parses a dotted path with [*] and [N] steps:
// "structuredContent.ssn", "content[*].text", "items[0]".
func parsePath(p string) ([]pathSeg, error) {
	var segs []pathSeg
	for part := range strings.SplitSeq(p, ".") {
		name, rest, bracket := strings.Cut(part, "[")
		if name == "" {
			return nil, fmt.Errorf("path %q: empty member name", p)
		}
		segs = append(segs, pathSeg{name: name, index: -2})
		if !bracket {
			continue
		}
		for rest = "[" + rest; rest != ""; {
			idx, tail, ok := strings.Cut(rest[1:], "]")
			if rest[0] != '[' || !ok {
				return nil, fmt.Errorf("path %q: want [*] or [N] after %q", p, name)
			}
			n := -1
			if idx != "*" {
				var err error
				if n, err = strconv.Atoi(idx); err != nil || n < 0 {
					return nil, fmt.Errorf("path %q: index %q is neither * nor a number", p, idx)
				}
			}
			segs = append(segs, pathSeg{index: n})
			rest = tail
		}
	}
	return segs, nil
}

// matches reports whether path (len(segs) long) matches segs.
func matches(segs []pathSeg, path []pathElem) bool {
	if len(segs) != len(path) {
		return false
	}
	return prefixMatches(segs, path)
}

// prefixMatches reports whether path matches the first len(path) segs.
func prefixMatches(segs []pathSeg, path []pathElem) bool {
	if len(path) > len(segs) {
		return false
	}
	for i, e := range path {
		s := segs[i]
		switch {
		// Names match case-insensitively: a client decoding with Go's
		// encoding/json would read "SSN" as "ssn".
		case s.index == -2 && (e.index != -2 || !strings.EqualFold(e.name, s.name)):
			return false
		case s.index >= 0 && e.index != s.index:
			return false
		case s.index == -1 && e.index < 0:
			return false
		}
	}
	return true
}

// replacementAt returns the replacement of the first path redaction that
// matches path.
func (r *redactor) replacementAt(path []pathElem) (string, bool) {
	for _, p := range r.paths {
		if p.anyDepth && len(path) >= len(p.segs) && matches(p.segs, path[len(path)-len(p.segs):]) {
			return p.replacement, true
		}
		if !p.anyDepth && matches(p.segs, path) {
			return p.replacement, true
		}
	}
	if n := len(path); n > 0 && path[n-1].index == -2 {
		for i, re := range r.keys {
			if re.MatchString(path[n-1].name) {
				return r.keyRepls[i], true
			}
		}
	}
	return "", false
}

// isText reports whether the string at path is text patterns apply to.
func isText(path []pathElem) bool {
	if inStructuredContent(path) || inMeta(path) {
		return true
	}
	for _, segs := range textPaths {
		if matches(segs, path) {
			return true
		}
	}
	return false
}

// metaPaths are the _meta members of a result a client reads; every
// string under one is text. (Not every _meta at any depth: that would
// mean walking every token of every large result.)
var metaPaths = mustParsePaths(
	"_meta",
	"content[*]._meta",
	"content[*].resource._meta",
	"contents[*]._meta",
	"messages[*]._meta",
	"messages[*].content._meta",
	"tools[*]._meta",
	"prompts[*]._meta",
	"resources[*]._meta",
	"resourceTemplates[*]._meta",
)

// inMeta reports whether path is at or under one of metaPaths.
func inMeta(path []pathElem) bool {
	for _, mp := range metaPaths {
		if len(path) >= len(mp) && prefixMatches(mp, path[:len(mp)]) {
			return true
		}
	}
	return false
}

// towardsMeta reports whether a metaPath lies at or below path.
func towardsMeta(path []pathElem) bool {
	for _, mp := range metaPaths {
		if prefixMatches(mp, path) {
			return true
		}
	}
	return false
}

func inStructuredContent(path []pathElem) bool {
	return len(path) > 0 && path[0].index == -2 && strings.EqualFold(path[0].name, "structuredContent")
}

// mayChangeBelow reports whether anything at or below path may be
// redacted; if not, the value is copied as is.
func (r *redactor) mayChangeBelow(path []pathElem) bool {
	if r.anyDepth {
		return true
	}
	for _, p := range r.paths {
		if prefixMatches(p.segs, path) {
			return true
		}
	}
	if !r.anyText {
		return false
	}
	if r.allText || inStructuredContent(path) || inMeta(path) || towardsMeta(path) {
		return true
	}
	for _, segs := range textPaths {
		if prefixMatches(segs, path) {
			return true
		}
	}
	return false
}

// value copies one JSON value from dec to enc, redacting on the way.
func (r *redactor) value(dec *jsontext.Decoder, enc *jsontext.Encoder, path []pathElem) error {
	if repl, ok := r.replacementAt(path); ok {
		if err := dec.SkipValue(); err != nil {
			return err
		}
		r.changed++
		return enc.WriteToken(jsontext.String(repl))
	}
	if !r.mayChangeBelow(path) {
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		return enc.WriteValue(v)
	}
	switch dec.PeekKind() {
	case '{':
		return r.object(dec, enc, path)
	case '[':
		return r.array(dec, enc, path)
	case '"':
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if !r.anyText || !r.allText && !isText(path) {
			return enc.WriteToken(tok)
		}
		s := tok.String()
		for i, re := range r.patterns {
			s = re.ReplaceAllString(s, r.patRepls[i])
		}
		if s != tok.String() {
			r.changed++
		}
		return enc.WriteToken(jsontext.String(s))
	default:
		v, err := dec.ReadValue()
		if err != nil {
			return err
		}
		return enc.WriteValue(v)
	}
}

func (r *redactor) object(dec *jsontext.Decoder, enc *jsontext.Encoder, path []pathElem) error {
	if err := copyToken(dec, enc); err != nil {
		return err
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if name.Kind() != '"' {
			return fmt.Errorf("unexpected %v in object", name.Kind())
		}
		n := name.String()
		if err := enc.WriteToken(jsontext.String(n)); err != nil {
			return err
		}
		if err := r.value(dec, enc, append(path, pathElem{name: n, index: -2})); err != nil {
			return err
		}
	}
	return copyToken(dec, enc)
}

func (r *redactor) array(dec *jsontext.Decoder, enc *jsontext.Encoder, path []pathElem) error {
	if err := copyToken(dec, enc); err != nil {
		return err
	}
	for i := 0; dec.PeekKind() != ']'; i++ {
		if err := r.value(dec, enc, append(path, pathElem{index: i})); err != nil {
			return err
		}
	}
	return copyToken(dec, enc)
}

func copyToken(dec *jsontext.Decoder, enc *jsontext.Encoder) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	return enc.WriteToken(tok)
}

// patternCache keeps compiled patterns by source: policies return the same
// few patterns on every response. It is a memo of a pure function, shared
// by every Engine, and bounded.
type patternCache struct {
	mu sync.Mutex
	m  map[string]*regexp.Regexp
}

const patternCacheMax = 256

var patterns = &patternCache{m: make(map[string]*regexp.Regexp)}

func (c *patternCache) get(p string) (*regexp.Regexp, error) {
	c.mu.Lock()
	re, ok := c.m[p]
	c.mu.Unlock()
	if ok {
		return re, nil
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= patternCacheMax {
		clear(c.m)
	}
	c.m[p] = re
	return re, nil
}
