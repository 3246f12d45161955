package mcpwire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// DecodeRPC decodes one JSON-RPC message into the SDK's types, as
// jsonrpc.DecodeMessage does, but stricter and cheaper: the SDK's decoder
// allocates a 32 KiB buffer per call (twice per message), which was a
// fifth of the gateway's CPU on a cached answer, and it keeps the last of
// two duplicate members where other parsers keep the first. Here a
// duplicate member, a case variant of a JSON-RPC member ("Result" beside
// "result": Go's encoding/json and others match names case-insensitively),
// invalid UTF-8, a non-string method, or an id that is not a string, an
// integer or null is an error, so a message the gateway reads one way
// cannot be read another way downstream. Other extension members are
// tolerated, as the SDK tolerates them. params and result stay raw bytes.
func DecodeRPC(data []byte) (jsonrpc.Message, error) { return decodeRPCFrom(data, false) }

// decodeRPCInPlace is DecodeRPC for bytes that never change while the
// message is used (a client's body, kept whole as fwd.body): params and
// result are slices of data, not copies of it.
func decodeRPCInPlace(data []byte) (jsonrpc.Message, error) { return decodeRPCFrom(data, true) }

func decodeRPCFrom(data []byte, inPlace bool) (jsonrpc.Message, error) {
	var version, id, method, params, result, wireErr jsontext.Value
	fields := map[string]*jsontext.Value{"jsonrpc": &version, "id": &id, "method": &method, "params": &params, "result": &result, "error": &wireErr}
	// jsontext rejects duplicate names and invalid UTF-8 by default.
	// A bytes.Buffer is parsed in place, without a copy of data.
	dec := jsontext.NewDecoder(bytes.NewBuffer(data))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, fmt.Errorf("unmarshaling jsonrpc message: not a JSON object (%v)", err)
	}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
		name := tok.String() // the token is void after the next read
		value, err := dec.ReadValue()
		if err != nil {
			return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
		}
		if field, ok := fields[name]; ok {
			if inPlace {
				end := dec.InputOffset()
				*field = jsontext.Value(data[end-int64(len(value)) : end])
			} else {
				*field = value.Clone() // the value is void after the next read
			}
			continue
		}
		for key := range fields {
			if strings.EqualFold(name, key) {
				return nil, fmt.Errorf("member %q is a case variant of the JSON-RPC member %q", name, key)
			}
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("unmarshaling jsonrpc message: %w", err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, errors.New("unmarshaling jsonrpc message: data after the message")
	}
	return buildRPC(version, id, method, params, result, wireErr)
}

// buildRPC makes the SDK's message from the members of a decoded object.
func buildRPC(version, rawID, method, params, result, wireErr jsontext.Value) (jsonrpc.Message, error) {
	if string(version) != `"2.0"` {
		return nil, fmt.Errorf("invalid message version tag %s; expected \"2.0\"", version)
	}
	id, err := wireID(rawID)
	if err != nil {
		return nil, err
	}
	if len(method) > 0 {
		var name string
		if err := jsonv2.Unmarshal(method, &name); err != nil {
			return nil, fmt.Errorf("method: %w", err)
		}
		return &jsonrpc.Request{Method: name, ID: id, Params: rawOrNil(params)}, nil
	}
	if !id.IsValid() {
		return nil, errors.New("a JSON-RPC response needs an id")
	}
	resp := &jsonrpc.Response{ID: id, Result: rawOrNil(result)}
	if len(wireErr) > 0 && wireErr.Kind() != 'n' {
		var e jsonrpc.Error
		if err := jsonv2.Unmarshal(wireErr, &e); err != nil {
			return nil, fmt.Errorf("error: %w", err)
		}
		resp.Error = &e // never a typed nil in the error interface
	}
	return resp, nil
}

// wireID converts a raw id: absent or null is no id (a notification), a
// string or an integer is an id, anything else an error.
func wireID(raw jsontext.Value) (jsonrpc.ID, error) {
	if len(raw) == 0 || raw.Kind() == 'n' {
		return jsonrpc.ID{}, nil
	}
	var v any
	if err := jsonv2.Unmarshal(raw, &v); err != nil {
		return jsonrpc.ID{}, fmt.Errorf("id: %w", err)
	}
	if f, ok := v.(float64); ok && (f != math.Trunc(f) || math.Abs(f) > 1<<53) {
		return jsonrpc.ID{}, fmt.Errorf("id %s is not an integer", raw)
	}
	return jsonrpc.MakeID(v)
}

func rawOrNil(v jsontext.Value) []byte {
	if len(v) == 0 {
		return nil
	}
	return []byte(v)
}
