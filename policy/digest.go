package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"hash"
	"math"
	"slices"
	"sync"
)

// inputDigest is SHA-256 over revision and a canonical encoding of in:
// every field of the Input in a fixed order, every value tagged with its
// type and length-prefixed (varints), map members sorted by name. Two inputs whose
// documents differ in any value (the policy could answer them
// differently) never encode the same, so a digest stands for the whole
// input in the decision memo and the visibility cache. It is computed from
// the Input itself, not from its OPA value, so that a memo hit costs no
// conversion. ok is false when in holds a value the encoding does not know
// (the caller then neither memoizes nor looks up).
func inputDigest(revision string, in *Input) (d [sha256.Size]byte, ok bool) {
	e := digesters.Get().(*digester)
	e.h.Reset()
	e.b, e.ok = e.buf[:0], true
	e.str(revision)
	e.input(in)
	if e.ok {
		e.flush()
		// Into the pooled array: d would escape through the interface.
		copy(d[:], e.h.Sum(e.sum[:0]))
	}
	ok = e.ok
	digesters.Put(e)
	return d, ok
}

// digesters are reused: a decision hashes its input without allocating.
var digesters = sync.Pool{New: func() any { return &digester{h: sha256.New()} }}

// digester streams the canonical encoding into h through buf, so that
// memory stays bounded whatever the input's size (a 1 MB argument is
// hashed, not copied); an unknown value clears ok.
type digester struct {
	h   hash.Hash
	sum [sha256.Size]byte
	buf [4096]byte
	b   []byte // buf[:n], the part not yet hashed
	ok  bool
}

// flush hashes what b holds.
func (e *digester) flush() {
	e.h.Write(e.b)
	e.b = e.buf[:0]
}

// room makes room for n more bytes (n <= len(buf)) in b.
func (e *digester) room(n int) {
	if len(e.b)+n > len(e.buf) {
		e.flush()
	}
}

// write appends s, hashing as b fills.
func (e *digester) write(s string) {
	for len(s) > 0 {
		if len(e.b) == len(e.buf) {
			e.flush()
		}
		n := copy(e.buf[len(e.b):], s)
		e.b, s = e.buf[:len(e.b)+n], s[n:]
	}
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

func (e *digester) tag(t byte) {
	e.room(1)
	e.b = append(e.b, t)
}

// tagged appends a tag and a length (or count), as a varint: self-
// delimiting, and one byte for most, so there is less to hash.
func (e *digester) tagged(t byte, n int) {
	e.room(1 + binary.MaxVarintLen64)
	e.b = binary.AppendUvarint(append(e.b, t), uint64(n))
}

func (e *digester) str(s string) {
	e.tagged(tagString, len(s))
	e.write(s)
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
	if sk := in.Skill; sk != nil {
		e.tag(tagPresent)
		for _, s := range []string{sk.URI, sk.Name, sk.Description, sk.Pin} {
			e.str(s)
		}
	} else {
		e.tag(tagAbsent)
	}
	e.anyMap(in.Params)
	e.anyMap(in.Result)
	for _, s := range []string{in.Protocol.Version, in.Protocol.Era, in.Source.IP, in.Source.UserAgent} {
		e.str(s)
	}
}

// sortedKeys appends the keys of m to keys, in order. Callers pass an
// array on their stack: most maps of an input are small.
func sortedKeys[V any](keys []string, m map[string]V) []string {
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
	var buf [16]string
	for _, k := range sortedKeys(buf[:0], m) {
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
	var buf [16]string
	for _, k := range sortedKeys(buf[:0], m) {
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
		e.room(9)
		e.b = binary.BigEndian.AppendUint64(append(e.b, tagNumber), math.Float64bits(v))
	case json.Number:
		e.tagged(tagJSONNumber, len(v))
		e.write(string(v))
	case []any:
		e.tagged(tagArray, len(v))
		for _, x := range v {
			e.value(x)
		}
	case map[string]any:
		e.tagged(tagObject, len(v))
		var buf [16]string
		for _, k := range sortedKeys(buf[:0], v) {
			e.str(k)
			e.value(v[k])
		}
	case []string:
		e.strs(v)
	case map[string]string:
		e.tagged(tagObject, len(v))
		var buf [16]string
		for _, k := range sortedKeys(buf[:0], v) {
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
		e.write(string(b))
	}
}
