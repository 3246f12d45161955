package mcpwire

import (
	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// Params are the members of a client request's params that the gateway
// reads, kept by the walk that checks them (ReadParams), so every reader
// (the policy input, the access log, the header checks, the idempotency
// key, argument validation) reads the member the check vouched for, and
// none decodes params again. Raw values are the bytes as sent, slices of
// the message (never to be changed), nil when the member is absent; a
// member sent as null is its raw "null" and an empty string.
type Params struct {
	method string
	// Name is params.name of tools/call and prompts/get.
	Name string
	// URI is params.uri of resources/read, resources/subscribe and
	// resources/unsubscribe.
	URI string
	// Cursor is params.cursor of the list methods.
	Cursor string
	// Arguments is params.arguments of tools/call and prompts/get.
	Arguments jsontext.Value
	// ProtocolVersion and Capabilities are initialize's members.
	ProtocolVersion string
	Capabilities    jsontext.Value
	// Meta is params._meta.
	Meta jsontext.Value
	// MetaVersion and MetaCapabilities are the modern era's
	// _meta[MetaProtocolVersion] and _meta[MetaClientCapabilities].
	MetaVersion      string
	MetaCapabilities jsontext.Value
	// IdempotencyKey is _meta[MetaIdempotencyKey]; HasIdempotencyKey
	// reports the member present, even null or empty.
	IdempotencyKey    string
	HasIdempotencyKey bool
}

// field names a Params field in the member table (params.go).
type field uint8

const (
	fieldNone field = iota
	fieldName
	fieldURI
	fieldCursor
	fieldArguments
	fieldProtocolVersion
	fieldCapabilities
	fieldMeta
	fieldMetaVersion
	fieldMetaCapabilities
	fieldIdempotencyKey
)

func (p *Params) set(f field, raw jsontext.Value, s string) {
	switch f {
	case fieldName:
		p.Name = s
	case fieldURI:
		p.URI = s
	case fieldCursor:
		p.Cursor = s
	case fieldArguments:
		p.Arguments = raw
	case fieldProtocolVersion:
		p.ProtocolVersion = s
	case fieldCapabilities:
		p.Capabilities = raw
	case fieldMeta:
		p.Meta = raw
	case fieldMetaVersion:
		p.MetaVersion = s
	case fieldMetaCapabilities:
		p.MetaCapabilities = raw
	case fieldIdempotencyKey:
		p.IdempotencyKey, p.HasIdempotencyKey = s, true
	}
}

// Target is what a request names: its kind ("tool", "prompt", "resource"
// or "skill") and the member that names it ("name" or "uri").
type Target struct {
	Kind   string
	Member string
	// Mirrored: the modern era mirrors the member in the Mcp-Name header
	// (SEP-2243).
	Mirrored bool
}

// targets are the methods that name a tool, prompt or resource: the one
// table the policy input, the access log and the Mcp-Name header checks
// read.
var targets = map[string]Target{
	"tools/call":            {Kind: "tool", Member: "name", Mirrored: true},
	"prompts/get":           {Kind: "prompt", Member: "name", Mirrored: true},
	"resources/read":        {Kind: "resource", Member: "uri", Mirrored: true},
	"resources/subscribe":   {Kind: "resource", Member: "uri"},
	"resources/unsubscribe": {Kind: "resource", Member: "uri"},
	// SEP-2640 names no header for its methods: the URI stays in the body.
	"skills/get":               {Kind: "skill", Member: "uri"},
	"resources/directory/read": {Kind: "resource", Member: "uri"},
}

// TargetOf reports what a method names; false for a method that names
// nothing.
func TargetOf(method string) (Target, bool) {
	t, ok := targets[method]
	return t, ok
}

// Named is the name or URI the request names (TargetOf its method), or ""
// when the method names nothing.
func (p *Params) Named() string {
	switch targets[p.method].Member {
	case "name":
		return p.Name
	case "uri":
		return p.URI
	}
	return ""
}

// CheckParams checks a request's params (ReadParams) and keeps what it
// read, for Params and ParamsOf. A response, or params that fail the
// check, keep nothing.
func (m *Message) CheckParams() error {
	req := m.Request()
	if req == nil {
		return nil
	}
	p, err := ReadParams(req)
	if err != nil {
		return err
	}
	req.Extra = p
	return nil
}

// Params returns what CheckParams kept of the message's params, or nil
// when they were not (or could not be) checked.
func (m *Message) Params() *Params {
	req := m.Request()
	if req == nil {
		return nil
	}
	p, _ := req.Extra.(*Params)
	return p
}

// ParamsOf returns what CheckParams kept of req's params. For a request
// that was not checked (one the gateway built or rewrote itself) it reads
// them now, without keeping them, so a request shared between goroutines
// is never written; nil when they fail the check.
func ParamsOf(req *jsonrpc.Request) *Params {
	if p, ok := req.Extra.(*Params); ok {
		return p
	}
	p, err := ReadParams(req)
	if err != nil {
		return nil
	}
	return p
}
