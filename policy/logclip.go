package policy

import (
	"encoding/json"
	"fmt"
	"slices"
	"unicode/utf8"
)

// What the decision log records of one input, at most: a record is a
// line an operator reads and a log pipeline ships, not a copy of the
// request. Longer strings, longer arrays, larger objects and deeper
// documents are cut, each cut marked with what was left out, so a 1 MB
// argument costs a short line, not a 1 MB one (and not the memory to
// encode it).
const (
	logMaxString  = 1024 // bytes of one string or number
	logMaxItems   = 64   // elements of one array, members of one object
	logMaxValues  = 4096 // values of one document
	truncatedName = "…truncated"
)

// logClipper cuts one document; budget is the values it may still keep.
type logClipper struct{ budget int }

// clipString cuts s at a rune boundary, with a marker naming its size.
func clipString(s string) string {
	if len(s) <= logMaxString {
		return s
	}
	cut := logMaxString
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…[truncated: %d bytes]", len(s))
}

// value returns v cut to the limits, and whether anything was cut; v
// itself when not (the input is never modified: its maps are the policy
// input's own).
func (c *logClipper) value(v any) (any, bool) {
	c.budget--
	if c.budget < 0 {
		return "…[truncated: document too large]", true
	}
	switch v := v.(type) {
	case string:
		s := clipString(v)
		return s, len(s) != len(v)
	case json.Number:
		if len(v) > logMaxString {
			return fmt.Sprintf("…[truncated number: %d digits]", len(v)), true
		}
	case []any:
		return c.array(v)
	case map[string]any:
		return c.object(v)
	}
	return v, false
}

func (c *logClipper) array(a []any) (any, bool) {
	keep := min(len(a), logMaxItems)
	var out []any
	for i := range keep {
		v, cut := c.value(a[i])
		if cut && out == nil {
			out = make([]any, i, keep+1)
			copy(out, a[:i])
		}
		if out != nil {
			out = append(out, v)
		}
	}
	if keep == len(a) && out == nil {
		return a, false
	}
	if out == nil {
		out = slices.Clone(a[:keep])
	}
	if keep < len(a) {
		out = append(out, fmt.Sprintf("…[truncated: %d items]", len(a)))
	}
	return out, true
}

func (c *logClipper) object(m map[string]any) (any, bool) {
	var buf [16]string             // most maps of an input are small: no allocation
	keys := sortedKeys(buf[:0], m) // the members kept are the same on every run
	keep := keys[:min(len(keys), logMaxItems)]
	var out map[string]any
	for i, k := range keep {
		v, cut := c.value(m[k])
		ck := clipString(k)
		if (cut || ck != k) && out == nil {
			out = make(map[string]any, len(keep)+1)
			for _, prev := range keep[:i] {
				out[prev] = m[prev]
			}
		}
		if out != nil {
			out[ck] = v
		}
	}
	if len(keep) == len(keys) && out == nil {
		return m, false
	}
	if out == nil {
		out = make(map[string]any, len(keep)+1)
		for _, k := range keep {
			out[k] = m[k]
		}
	}
	if len(keep) < len(keys) {
		out[truncatedName] = fmt.Sprintf("%d members", len(keys))
	}
	return out, true
}

// clipMap is value for a map of the input document; nil stays nil.
func (c *logClipper) clipMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out, _ := c.object(m)
	return out.(map[string]any)
}

// clippedInput returns doc (a documentOf copy) with its free-form parts
// cut to the limits; the maps it points to are copied where cut, never
// modified.
func clippedInput(doc *Input) *Input {
	c := &logClipper{budget: logMaxValues}
	doc.Principal.Claims = c.clipMap(doc.Principal.Claims)
	if doc.Tool != nil {
		t := *doc.Tool
		t.Name, t.Description = clipString(t.Name), clipString(t.Description)
		t.Arguments, t.Annotations = c.clipMap(t.Arguments), c.clipMap(t.Annotations)
		doc.Tool = &t
	}
	if doc.Prompt != nil {
		p := *doc.Prompt
		p.Name, p.Arguments = clipString(p.Name), c.clipMap(p.Arguments)
		doc.Prompt = &p
	}
	if doc.Skill != nil {
		sk := *doc.Skill
		sk.URI, sk.Name, sk.Description = clipString(sk.URI), clipString(sk.Name), clipString(sk.Description)
		doc.Skill = &sk
	}
	if doc.Resource != nil {
		r := *doc.Resource
		r.URI, r.URITemplate, r.Name = clipString(r.URI), clipString(r.URITemplate), clipString(r.Name)
		doc.Resource = &r
	}
	doc.Params, doc.Result = c.clipMap(doc.Params), c.clipMap(doc.Result)
	doc.Method, doc.Source.UserAgent = clipString(doc.Method), clipString(doc.Source.UserAgent)
	return doc
}

// clippedDocument is clippedInput for a generic document.
func clippedDocument(doc any) any {
	c := &logClipper{budget: logMaxValues}
	out, _ := c.value(doc)
	return out
}
