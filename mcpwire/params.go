package mcpwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// The typed params of client requests: one table of every params member
// the gateway reads or MCP types, per method, with its JSON type. A request
// is checked against it once, right after the strict decode, so every
// later reader (the policy input, the access log, the cache key, the
// federated router, the upstream) reads the same member the same way:
//
//   - a member spelled in another case ("URI", "Arguments", "argumentſ")
//     than a member of the table is refused, alone or not: the policy input
//     looks members up exactly, while an upstream decoding with Go's
//     encoding/json (and anything case-insensitive) would act on it;
//   - a member of the wrong JSON type ("uri":[...], "name":1, "arguments":
//     "x") is refused, where it would otherwise be decided as "" and
//     forwarded for the upstream to read some other way;
//   - params that are an array, or null or absent where the method has a
//     required member, are refused: MCP params are always an object;
//   - names and URIs that are not well formed (identifiers.go) are refused.
//
// Members not in the table (extensions) are left alone, as the SDKs leave
// them.
//
// The same walk keeps what the gateway reads (Params): the name, URI,
// cursor, arguments and _meta members, so no reader downstream decodes
// params again.

// ErrInvalidParams marks a request whose params fail the table: the
// client's answer is -32602.
var ErrInvalidParams = errors.New("invalid params")

// paramMember is one member of a params object (or of an object inside).
type paramMember struct {
	// kinds are the jsontext kinds accepted: '"' string, '0' number, '{'
	// object, '[' array, 't' boolean; "" accepts any (only the spelling
	// is checked). An optional member may also be null, which every
	// reader takes for absent.
	kinds    string
	required bool
	// check validates a string value.
	check func(string) error
	// members, for an object, are its own typed members, checked alike.
	members *memberSet
	// keep names the Params field the value is kept in; 0 keeps nothing.
	keep field
}

// memberSet is a table of members, with each name's case fold so a case
// variant is found without scanning.
type memberSet struct {
	byName map[string]paramMember
	byFold map[string]string // FoldName(name) -> name
}

func memberTable(table map[string]paramMember) *memberSet {
	set := &memberSet{byName: table, byFold: make(map[string]string, len(table))}
	for name := range table {
		set.byFold[FoldName(name)] = name
	}
	return set
}

// requestMetaMembers are the members of params._meta the gateway reads.
var requestMetaMembers = memberTable(map[string]paramMember{
	"progressToken":        {kinds: `"0`},
	MetaProtocolVersion:    {kinds: `"`, keep: fieldMetaVersion},
	MetaClientCapabilities: {kinds: `{`, keep: fieldMetaCapabilities},
	MetaIdempotencyKey:     {kinds: `"`, keep: fieldIdempotencyKey},
	"traceparent":          {kinds: `"`},
	"tracestate":           {kinds: `"`},
})

var (
	metaMember      = paramMember{kinds: `{`, members: requestMetaMembers, keep: fieldMeta}
	cursorMember    = paramMember{kinds: `"`, keep: fieldCursor}
	uriMember       = paramMember{kinds: `"`, required: true, check: CheckURI, keep: fieldURI}
	nameMember      = paramMember{kinds: `"`, required: true, check: CheckName, keep: fieldName}
	argumentsMember = paramMember{kinds: `{`, keep: fieldArguments}
	objectMember    = paramMember{kinds: `{`}
)

// methodParams are the typed members of each method's params; every table
// also has _meta. A method not listed has _meta only.
var methodParams = func() map[string]*memberSet {
	tables := map[string]map[string]paramMember{
		"initialize": {
			"protocolVersion": {kinds: `"`, keep: fieldProtocolVersion},
			"capabilities":    {kinds: `{`, keep: fieldCapabilities},
			"clientInfo":      objectMember,
		},
		"tools/call":            {"name": nameMember, "arguments": argumentsMember, "task": objectMember},
		"prompts/get":           {"name": nameMember, "arguments": argumentsMember},
		"resources/read":        {"uri": uriMember},
		"resources/subscribe":   {"uri": uriMember},
		"resources/unsubscribe": {"uri": uriMember},
		"completion/complete": {
			"ref": {kinds: `{`, members: memberTable(map[string]paramMember{
				"type": {kinds: `"`}, "name": {kinds: `"`, check: CheckName}, "uri": {kinds: `"`, check: CheckURI},
			})},
			"argument": {kinds: `{`, members: memberTable(map[string]paramMember{"name": {kinds: `"`}, "value": {kinds: `"`}})},
			"context":  {kinds: `{`, members: memberTable(map[string]paramMember{"arguments": objectMember})},
		},
		"logging/setLevel":         {"level": {kinds: `"`, required: true}},
		"tools/list":               {"cursor": cursorMember},
		"prompts/list":             {"cursor": cursorMember},
		"resources/list":           {"cursor": cursorMember},
		"resources/templates/list": {"cursor": cursorMember},
		"tasks/list":               {"cursor": cursorMember},
		// SEP-2640: skills/list pages as the base lists do; skills/get
		// names one skill by its SKILL.md URI.
		"skills/list": {"cursor": cursorMember},
		"skills/get":  {"uri": uriMember},
		// SEP-2640's directoryRead: a directory resource's children,
		// paginated.
		"resources/directory/read": {"uri": uriMember, "cursor": cursorMember},
		"tasks/get":                {"taskId": {kinds: `"`, required: true}},
		"tasks/result":             {"taskId": {kinds: `"`, required: true}},
		"tasks/cancel":             {"taskId": {kinds: `"`, required: true}},
		"notifications/cancelled":  {"requestId": {kinds: `"0`}, "reason": {kinds: `"`}},
		"notifications/progress":   {"progressToken": {kinds: `"0`}, "progress": {kinds: `0`}, "total": {kinds: `0`}, "message": {kinds: `"`}},
	}
	out := make(map[string]*memberSet, len(tables)+1)
	for method, table := range tables {
		maps.Copy(table, commonParams)
		out[method] = memberTable(table)
	}
	return out
}()

// commonParams are in every method's table: _meta, and the members of a
// modern multi round-trip retry (mrtr.go), which the cache reads to never
// store such an exchange (their types are the upstream's to judge).
var commonParams = map[string]paramMember{"_meta": metaMember, "inputResponses": {}, "requestState": {}}

// otherParams is the table of a method methodParams does not list.
var otherParams = memberTable(maps.Clone(commonParams))

// ReadParams checks a strictly decoded request's params against its
// method's table and returns the members the gateway reads. The error
// wraps ErrInvalidParams.
func ReadParams(req *jsonrpc.Request) (*Params, error) {
	set := methodParams[req.Method]
	if set == nil {
		set = otherParams
	}
	p := &Params{method: req.Method}
	raw := bytes.TrimSpace(req.Params)
	if len(raw) == 0 || string(raw) == "null" {
		if name := set.firstRequired(); name != "" {
			return nil, fmt.Errorf("%w: params.%s is required", ErrInvalidParams, name)
		}
		return p, nil
	}
	if raw[0] != '{' {
		return nil, fmt.Errorf("%w: params must be an object", ErrInvalidParams)
	}
	r := &paramsReader{dec: jsontext.NewDecoder(bytes.NewBuffer(raw)), data: raw, out: p}
	if _, err := r.dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidParams, err)
	}
	if err := set.check(r, "params"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidParams, err)
	}
	return p, nil
}

// paramsReader is one walk of a params object: the decoder over data,
// and the Params it fills.
type paramsReader struct {
	dec  *jsontext.Decoder
	data []byte
	out  *Params
}

// keep stores the value that ended at the decoder's offset and began
// after start (the end of its name) in the Params field f; s is the
// value's decoded string, if it is one.
func (r *paramsReader) keep(f field, start int64, s string) {
	if f == 0 {
		return
	}
	raw := bytes.TrimLeft(r.data[start:r.dec.InputOffset()], " \t\r\n:")
	r.out.set(f, jsontext.Value(raw), s)
}

// firstRequired names a required member (the first in name order), or "".
func (set *memberSet) firstRequired() string {
	first := ""
	for name, m := range set.byName {
		if m.required && (first == "" || name < first) {
			first = name
		}
	}
	return first
}

// check reads the members of an object whose '{' dec has just read, up to
// and including its '}'.
func (set *memberSet) check(r *paramsReader, path string) error {
	dec := r.dec
	seen := map[string]bool{}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		name := tok.String()
		m, known := set.byName[name]
		if !known {
			if exact, variant := set.byFold[FoldName(name)]; variant {
				return fmt.Errorf("member %s.%s is a case variant of %s.%s: spell it exactly", path, Quote(name), path, exact)
			}
			if err := dec.SkipValue(); err != nil {
				return err
			}
			continue
		}
		seen[name] = true
		if err := m.checkValue(r, path+"."+name); err != nil {
			return err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	for name, m := range set.byName {
		if m.required && !seen[name] {
			return fmt.Errorf("%s.%s is required", path, name)
		}
	}
	return nil
}

// checkValue reads one member's value and checks its type, its string and
// its own members, keeping it if the member says so.
func (m paramMember) checkValue(r *paramsReader, path string) error {
	dec := r.dec
	start := dec.InputOffset()
	kind := dec.PeekKind()
	if kind == 'n' && !m.required {
		if err := dec.SkipValue(); err != nil {
			return err
		}
		r.keep(m.keep, start, "")
		return nil
	}
	if kind == 'f' {
		kind = 't' // a boolean, as kinds spells it
	}
	if m.kinds != "" && !strings.ContainsRune(m.kinds, rune(kind)) {
		return fmt.Errorf("%s must be %s, not %s", path, kindNames(m.kinds), kindName(kind))
	}
	switch {
	case kind == '"' && (m.check != nil || m.keep != 0):
		tok, err := dec.ReadToken()
		if err != nil {
			return err
		}
		s := tok.String()
		if m.check != nil {
			if err := m.check(s); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
		r.keep(m.keep, start, s)
		return nil
	case kind == '{' && m.members != nil:
		if _, err := dec.ReadToken(); err != nil {
			return err
		}
		if err := m.members.check(r, path); err != nil {
			return err
		}
		r.keep(m.keep, start, "")
		return nil
	}
	if err := dec.SkipValue(); err != nil {
		return err
	}
	r.keep(m.keep, start, "")
	return nil
}

func kindNames(kinds string) string {
	names := make([]string, 0, len(kinds))
	for _, k := range []byte(kinds) {
		names = append(names, kindName(jsontext.Kind(k)))
	}
	return strings.Join(names, " or ")
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a JSON value"
}

// DecodeObject decodes a checked request's params (or a member of them)
// for the policy input:
// the document encoding/json decodes with UseNumber (objects as
// map[string]any, arrays as []any, numbers as json.Number, kept exactly as
// sent), for a fraction of its memory. A first pass counts the members of
// every object and array, so each is allocated once at its final size:
// encoding/json appends, and its appends allocate some five times a large
// array's size on the way (a 500,000-element array cost 40 MB). nil when
// raw is not an object.
func DecodeObject(raw []byte) map[string]any {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	sizes, err := containerSizes(raw)
	if err != nil {
		return nil
	}
	d := &anyDecoder{dec: jsontext.NewDecoder(bytes.NewBuffer(raw)), sizes: sizes}
	v, err := d.value()
	if err != nil {
		return nil
	}
	m, _ := v.(map[string]any)
	return m
}

// containerSizes lists the member count of every object and array of raw,
// in the order they open.
func containerSizes(raw []byte) ([]int, error) {
	dec := jsontext.NewDecoder(bytes.NewBuffer(raw))
	var sizes, open []int
	for {
		if k := dec.PeekKind(); k == '}' || k == ']' {
			_, n := dec.StackIndex(dec.StackDepth())
			if k == '}' {
				n /= 2 // a name and a value per member
			}
			sizes[open[len(open)-1]] = int(n)
			open = open[:len(open)-1]
		}
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, err
		}
		if k := tok.Kind(); k == '{' || k == '[' {
			open = append(open, len(sizes))
			sizes = append(sizes, 0)
		}
		if dec.StackDepth() == 0 {
			return sizes, nil
		}
	}
}

// anyDecoder builds the generic value of a JSON text whose container sizes
// it was given.
type anyDecoder struct {
	dec   *jsontext.Decoder
	sizes []int
	next  int
}

func (d *anyDecoder) value() (any, error) {
	tok, err := d.dec.ReadToken()
	if err != nil {
		return nil, err
	}
	switch tok.Kind() {
	case 'n':
		return nil, nil
	case 't', 'f':
		return tok.Bool(), nil
	case '"':
		return tok.String(), nil
	case '0':
		return json.Number(tok.String()), nil
	case '{':
		m := make(map[string]any, d.size())
		for d.dec.PeekKind() != '}' {
			name, err := d.dec.ReadToken()
			if err != nil {
				return nil, err
			}
			key := name.String() // void after the next read
			if m[key], err = d.value(); err != nil {
				return nil, err
			}
		}
		_, err := d.dec.ReadToken()
		return m, err
	case '[':
		a := make([]any, 0, d.size())
		for d.dec.PeekKind() != ']' {
			v, err := d.value()
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := d.dec.ReadToken()
		return a, err
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok.Kind())
}

func (d *anyDecoder) size() int {
	if d.next >= len(d.sizes) {
		return 0
	}
	d.next++
	return d.sizes[d.next-1]
}
