package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"hash"
	"math"
	"slices"
)

// inputDigest is SHA-256 over revision and a canonical encoding of in:
// every field of the Input in a fixed order, every value tagged with its
// type and length-prefixed, map members sorted by name. Two inputs whose
// documents differ in any value (the policy could answer them
// differently) never encode the same, so a digest stands for the whole
// input in the decision memo and the visibility cache. It is computed from
// the Input itself, not from its OPA value, so that a memo hit costs no
// conversion. ok is false when in holds a value the encoding does not know
// (the caller then neither memoizes nor looks up).
func inputDigest(revision string, in *Input) (d [sha256.Size]byte, ok bool) {
	e := digester{h: sha256.New(), ok: true}
	e.str(revision)
	e.input(in)
	if !e.ok {
		return d, false
	}
	e.h.Sum(d[:0])
	return d, true
}

// digester writes the canonical encoding into h; an unknown value clears
// ok.
type digester struct {
	h   hash.Hash
	buf [9]byte
	ok  bool
}

// Type tags of the encoding.
const (
	tagAbsent byte = iota
	tagNull
	tagFalse
	tagTrue
	tagString
	tagNumber // a float64, as its IEEE 754 bits
	tagJSONNumber
	tagArray
	tagObject
	tagPresent // a struct pointer that is set
	tagJSON    // another type, as its JSON text
)

func (e *digester) tag(t byte) { e.buf[0] = t; e.h.Write(e.buf[:1]) }

// tagged writes a tag and a length (or count).
func (e *digester) tagged(t byte, n int) {
	e.buf[0] = t
	binary.BigEndian.PutUint64(e.buf[1:], uint64(n))
	e.h.Write(e.buf[:])
}

func (e *digester) str(s string) {
	e.tagged(tagString, len(s))
	e.h.Write([]byte(s))
}

func (e *digester) strs(ss []string) {
	e.tagged(tagArray, len(ss))
	for _, s := range ss {
		e.str(s)
	}
}

func (e *digester) input(in *Input) {
	p := &in.Principal
	for _, s := range []string{p.ID, p.Kind, p.Issuer, p.Subject, p.Name} {
		e.str(s)
	}
	e.strs(p.Scopes)
	e.strs(p.Groups)
	e.anyMap(p.Claims)
	if c := p.Cert; c != nil {
		e.tag(tagPresent)
		e.str(c.Subject)
		e.strs(c.URIs)
		e.strs(c.DNSNames)
		e.str(c.SHA256)
	} else {
		e.tag(tagAbsent)
	}
	e.strMap(p.Attributes)
	for _, s := range []string{in.Route, in.Upstream, in.Method, in.Phase} {
		e.str(s)
	}
	if t := in.Tool; t != nil {
		e.tag(tagPresent)
		e.str(t.Name)
		e.anyMap(t.Arguments)
		e.anyMap(t.Annotations)
		e.str(t.Description)
		e.str(t.Pin)
	} else {
		e.tag(tagAbsent)
	}
	if r := in.Resource; r != nil {
		e.tag(tagPresent)
		for _, s := range []string{r.URI, r.URITemplate, r.Name, r.MIMEType} {
			e.str(s)
		}
	} else {
		e.tag(tagAbsent)
	}
	if pr := in.Prompt; pr != nil {
		e.tag(tagPresent)
		e.str(pr.Name)
		e.anyMap(pr.Arguments)
	} else {
		e.tag(tagAbsent)
	}
	e.anyMap(in.Params)
	e.anyMap(in.Result)
	for _, s := range []string{in.Protocol.Version, in.Protocol.Era, in.Source.IP, in.Source.UserAgent} {
		e.str(s)
	}
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// anyMap encodes a map the input converts with ast.InterfaceToValue. A nil
// and an empty map are the same document (omitempty): both absent.
func (e *digester) anyMap(m map[string]any) {
	if len(m) == 0 {
		e.tag(tagAbsent)
		return
	}
	e.tagged(tagObject, len(m))
	for _, k := range sortedKeys(m) {
		e.str(k)
		e.value(m[k])
	}
}

func (e *digester) strMap(m map[string]string) {
	if len(m) == 0 {
		e.tag(tagAbsent)
		return
	}
	e.tagged(tagObject, len(m))
	for _, k := range sortedKeys(m) {
		e.str(k)
		e.str(m[k])
	}
}

// value encodes the JSON-like values decoded JSON holds. Other types (the
// gateway builds inputs from decoded JSON, so they do not occur) are
// encoded as their JSON, which is what ast.InterfaceToValue makes of them
// too; a value that does not encode clears ok.
func (e *digester) value(v any) {
	switch v := v.(type) {
	case nil:
		e.tag(tagNull)
	case bool:
		t := tagFalse
		if v {
			t = tagTrue
		}
		e.tag(t)
	case string:
		e.str(v)
	case float64:
		e.buf[0] = tagNumber
		binary.BigEndian.PutUint64(e.buf[1:], math.Float64bits(v))
		e.h.Write(e.buf[:])
	case json.Number:
		e.tagged(tagJSONNumber, len(v))
		e.h.Write([]byte(v))
	case []any:
		e.tagged(tagArray, len(v))
		for _, x := range v {
			e.value(x)
		}
	case map[string]any:
		e.tagged(tagObject, len(v))
		for _, k := range sortedKeys(v) {
			e.str(k)
			e.value(v[k])
		}
	case []string:
		e.strs(v)
	case map[string]string:
		e.tagged(tagObject, len(v))
		for _, k := range sortedKeys(v) {
			e.str(k)
			e.str(v[k])
		}
	default:
		b, err := json.Marshal(v)
		if err != nil {
			e.ok = false
			return
		}
		// A tag of its own: JSON text never encodes as the string it spells.
		e.tagged(tagJSON, len(b))
		e.h.Write(b)
	}
}
