package gateway

import (
	"bytes"
	"context"
	"errors"

	"github.com/go-json-experiment/json/jsontext"
	"go.opentelemetry.io/otel/propagation"
)

// Trace context in params._meta: MCP carries the W3C trace context inside
// the message too (traceparent and tracestate keys of _meta), so it survives
// transports and hops that drop HTTP headers.

// traceMetaKeys are the _meta members the gateway writes; any member that
// encoding/json would match to one of them is removed first.
var traceMetaKeys = []string{"traceparent", "tracestate"}

// member is one member of a JSON object: its decoded name and its value's
// exact bytes.
type member struct {
	name  string
	value jsontext.Value
}

var errNotObject = errors.New("not a JSON object")

// withTraceMeta returns body, a single JSON-RPC request that passed the
// strict decode, with ctx's trace context written into params._meta. Every
// other member keeps its order and its value's exact bytes. It returns
// false, and the body unchanged, when there is no trace context, params is
// not an object, _meta is spelled in another case (adding "_meta" beside it
// would make the message mean different things to different parsers), or
// the result would not pass the gateway's own strict decode.
func withTraceMeta(ctx context.Context, body []byte) ([]byte, bool) {
	carrier := propagation.MapCarrier{}
	traceContext.Inject(ctx, carrier)
	if carrier.Get("traceparent") == "" {
		return body, false
	}
	top, err := members(body)
	if err != nil {
		return body, false
	}
	pi := -1
	var params []member
	for i, m := range top {
		if m.name != "params" {
			continue
		}
		// MCP params are objects; by-position (array) params are left alone.
		if params, err = members(m.value); err != nil {
			return body, false
		}
		pi = i
	}
	params, ok := setTraceMeta(params, carrier)
	if !ok {
		return body, false
	}
	if pi < 0 {
		top = append(top, member{name: "params", value: encodeObject(params)})
	} else {
		top[pi].value = encodeObject(params)
	}
	out := encodeObject(top)
	if _, err := decodeMessage(out); err != nil {
		return body, false // never forward what the gateway itself would refuse
	}
	return out, true
}

// setTraceMeta replaces the trace context members of params' _meta (which
// it creates if needed) with carrier's.
func setTraceMeta(params []member, carrier propagation.MapCarrier) ([]member, bool) {
	mi := -1
	var meta []member
	for i, m := range params {
		switch {
		case m.name == "_meta":
			var err error
			if meta, err = members(m.value); err != nil {
				return nil, false
			}
			mi = i
		case foldName(m.name) == foldName("_meta"):
			return nil, false
		}
	}
	kept := make([]member, 0, len(meta)+len(traceMetaKeys))
	for _, m := range meta {
		if f := foldName(m.name); f != traceMetaKeys[0] && f != traceMetaKeys[1] {
			kept = append(kept, m)
		}
	}
	for _, k := range traceMetaKeys {
		if v := carrier.Get(k); v != "" {
			q, err := jsontext.AppendQuote(nil, v)
			if err != nil {
				return nil, false
			}
			kept = append(kept, member{name: k, value: q})
		}
	}
	value := encodeObject(kept)
	if mi < 0 {
		return append(params, member{name: "_meta", value: value}), true
	}
	params[mi].value = value
	return params, true
}

// members splits a JSON object into its members, in order.
func members(obj []byte) ([]member, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(obj))
	tok, err := dec.ReadToken()
	if err != nil {
		return nil, err
	}
	if tok.Kind() != '{' {
		return nil, errNotObject
	}
	var out []member
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, err
		}
		name := tok.String() // before the next read voids the token
		value, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		// The decoder reuses its buffer: keep a copy.
		out = append(out, member{name: name, value: value.Clone()})
	}
	return out, nil
}

// encodeObject writes members as a compact JSON object.
func encodeObject(ms []member) []byte {
	b := []byte{'{'}
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b, _ = jsontext.AppendQuote(b, m.name) // a decoded name is valid UTF-8
		b = append(b, ':')
		b = append(b, m.value...)
	}
	return append(b, '}')
}
