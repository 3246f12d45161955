package mcpwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// MaxDepth bounds nesting. MCP messages are shallow; deep nesting only
// serves to exhaust a parser somewhere behind us.
const MaxDepth = 64

// envelopeKeys are the members a JSON-RPC 2.0 message object may have.
var envelopeKeys = map[string]bool{"jsonrpc": true, "id": true, "method": true, "params": true, "result": true, "error": true}

// Message is one client message, decoded once and strictly. Raw is exactly
// the bytes that were checked, and exactly what is forwarded.
type Message struct {
	Raw []byte
	// Msg is the SDK's typed view: *jsonrpc.Request or *jsonrpc.Response.
	Msg jsonrpc.Message
}

// Request returns the message as a request or notification, or nil.
func (m *Message) Request() *jsonrpc.Request {
	r, _ := m.Msg.(*jsonrpc.Request)
	return r
}

// ID is the message's JSON-RPC id (invalid for notifications).
func (m *Message) ID() jsonrpc.ID {
	switch msg := m.Msg.(type) {
	case *jsonrpc.Request:
		return msg.ID
	case *jsonrpc.Response:
		return msg.ID
	}
	return jsonrpc.ID{}
}

// Method is the request method, or "" for a response.
func (m *Message) Method() string {
	if r := m.Request(); r != nil {
		return r.Method
	}
	return ""
}

// IsCall reports whether the message is a request that expects a response.
func (m *Message) IsCall() bool {
	r := m.Request()
	return r != nil && r.ID.IsValid()
}

// Limits are the decode budget of one client message
// (server.max_json_values, server.max_json_string_bytes); a zero field
// bounds nothing (the gateway's own messages).
type Limits struct {
	// Values bounds the JSON values and member names of the message.
	Values int
	// StringBytes bounds each string and number, as sent (escapes and
	// quotes included).
	StringBytes int
}

var (
	// ErrOverBudget marks a body over its Limits: answered 413 before
	// anything but the strict check has read it.
	ErrOverBudget = errors.New("over the decode budget")
	// ErrBatch marks a body that is a JSON array, which the caller accepts
	// or refuses by protocol version (AllowsBatch).
	ErrBatch = errors.New("body is a JSON array (a JSON-RPC batch)")
	// ErrMalformed marks bytes that are not JSON at all (JSON-RPC's parse
	// error), as opposed to JSON that is not an acceptable message.
	ErrMalformed = errors.New("malformed JSON")
)

// Decode strictly decodes one JSON-RPC message. It rejects, before
// anything else sees the bytes:
//   - invalid JSON and invalid UTF-8 (jsontext's defaults);
//   - duplicate member names at any depth: Go's encoding/json keeps the last
//     duplicate, other parsers the first, so the gateway and the upstream
//     could read different messages;
//   - names that differ only in case within one object ("name" and "NAME"):
//     encoding/json matches fields case-insensitively (CVE-2026-27896 class);
//   - envelope members other than the six JSON-RPC 2.0 defines, in any case;
//   - ids that are not a string or an integer (the SDK would truncate 1.5 to 1).
//
// A client request's params are then checked by CheckParams (params.go).
//
// A JSON array is reported as ErrBatch so the caller can answer by protocol
// version.
func Decode(data []byte) (*Message, error) {
	return DecodeWith(data, Limits{})
}

// DecodeWith is Decode within a decode budget, checked in
// the first pass, before anything is allocated per value. The message
// keeps slices of data (Raw, params): data must not change while it is
// used.
func DecodeWith(data []byte, lim Limits) (*Message, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrMalformed)
	}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := checkStrictWith(data, lim); err != nil {
			return nil, err
		}
		return nil, ErrBatch
	}
	if err := checkStrictWith(data, lim); err != nil {
		return nil, err
	}
	if trimmed[0] != '{' {
		return nil, errors.New("body must be a JSON-RPC message object")
	}
	if err := checkEnvelope(data); err != nil {
		return nil, err
	}
	msg, err := decodeRPCInPlace(data) // Raw keeps data, unchanged
	if err != nil {
		return nil, err
	}
	if r, ok := msg.(*jsonrpc.Request); ok && r.Method == "" {
		return nil, errors.New("method must not be empty")
	}
	return &Message{Raw: data, Msg: msg}, nil
}

// CheckStrict walks every token once, rejecting duplicate and case-variant
// member names and excessive depth.
func CheckStrict(data []byte) error { return checkStrictWith(data, Limits{}) }

// checkStrictWith is CheckStrict within a decode budget: it counts every
// value and member name, and measures every string as sent.
func checkStrictWith(data []byte, lim Limits) error {
	// A bytes.Buffer is parsed in place, without a copy of the body.
	dec := jsontext.NewDecoder(bytes.NewBuffer(data))
	// One set of folded names per open object; nil entries for arrays.
	var names []map[string]struct{}
	values := 0
	for {
		start := dec.InputOffset()
		tok, err := dec.ReadToken()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, jsontext.ErrDuplicateName) {
			return fmt.Errorf("duplicate member name: %w", err)
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if k := tok.Kind(); k != '}' && k != ']' {
			values++
			if lim.Values > 0 && values > lim.Values {
				return fmt.Errorf("%w: more than %d JSON values (server.max_json_values)", ErrOverBudget, lim.Values)
			}
			if (k == '"' || k == '0') && lim.StringBytes > 0 && rawLen(data, start, dec.InputOffset()) > int64(lim.StringBytes) {
				return fmt.Errorf("%w: a string or number longer than %d bytes (server.max_json_string_bytes)", ErrOverBudget, lim.StringBytes)
			}
		}
		switch tok.Kind() {
		case '{', '[':
			if dec.StackDepth() > MaxDepth {
				return fmt.Errorf("JSON nested deeper than %d levels", MaxDepth)
			}
			var set map[string]struct{}
			if tok.Kind() == '{' {
				set = map[string]struct{}{}
			}
			names = append(names, set)
		case '}', ']':
			names = names[:len(names)-1]
		case '"':
			kind, length := dec.StackIndex(dec.StackDepth())
			// In an object, every odd token is a member name.
			if kind == '{' && length%2 == 1 {
				folded := FoldName(tok.String())
				set := names[len(names)-1]
				if _, dup := set[folded]; dup {
					return fmt.Errorf("duplicate or case-variant member name %q", tok.String())
				}
				set[folded] = struct{}{}
			}
		}
		if dec.StackDepth() == 0 {
			// One value per body. jsontext reads a stream of values, and the
			// SDK decoder would see only the first: the gateway would check
			// one message and forward two.
			if _, err := dec.ReadToken(); err != io.EOF {
				return fmt.Errorf("%w: data after the JSON-RPC message", ErrMalformed)
			}
			return nil
		}
	}
}

// rawLen is the length of the token that ends at end, without the
// whitespace and separators between start (the end of the one before) and
// it.
func rawLen(data []byte, start, end int64) int64 {
	for start < end && strings.IndexByte(" \t\r\n,:", data[start]) >= 0 {
		start++
	}
	return end - start
}

// FoldName maps a member name to a key shared by every name that
// encoding/json would match to it: each rune becomes the smallest rune of
// its Unicode simple-fold orbit, so "NAME", "name" and "nAme" collide, and
// so do "arguments" and "argumentſ" (U+017F folds to s) or "k" and the
// Kelvin sign. strings.ToLower alone misses those.
func FoldName(name string) string {
	ascii := true
	for i := 0; i < len(name); i++ {
		if name[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		// Fast path: for ASCII the fold below is exactly ToLower.
		return strings.ToLower(name)
	}
	var b strings.Builder
	for _, r := range name {
		lowest := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			lowest = min(lowest, f)
		}
		b.WriteRune(unicode.ToLower(lowest))
	}
	return b.String()
}

// checkEnvelope validates the top-level members, which the SDK decoder would
// otherwise match case-insensitively or coerce.
func checkEnvelope(data []byte) error {
	dec := jsontext.NewDecoder(bytes.NewBuffer(data))
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		key := name.String()
		if !envelopeKeys[key] {
			return fmt.Errorf("unknown JSON-RPC member %q", key)
		}
		value, err := dec.ReadValue()
		if err != nil {
			return err
		}
		if key == "id" {
			if err := checkID(value); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkID(v jsontext.Value) error {
	switch v.Kind() {
	case '"':
		return nil
	case 'n':
		// JSON-RPC allows a null id only on an error response the server
		// could not attribute; MCP forbids it on requests.
		return errors.New("id must not be null")
	case '0':
		// A plain integer that a float64 holds exactly: the SDK decodes ids
		// through float64, so a larger one would reach the upstream as one
		// number and come back in the gateway's errors as another.
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || n > 1<<53 || n < -(1<<53) {
			return errors.New("id must be a string or an integer of at most 2^53")
		}
		return nil
	}
	return errors.New("id must be a string or an integer")
}

// PeekID reads the top-level id of a message that failed strict decoding,
// for the error response. It returns nil unless there is exactly one
// top-level "id" member holding a string or an integer.
func PeekID(data []byte) any {
	// A bytes.Buffer is parsed in place: a refused body costs no copy.
	dec := jsontext.NewDecoder(bytes.NewBuffer(data), jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil
	}
	var id any
	seen := 0
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil
		}
		if tok.String() != "id" {
			if dec.SkipValue() != nil {
				return nil
			}
			continue
		}
		value, err := dec.ReadValue()
		if err != nil {
			return nil
		}
		seen++
		switch value.Kind() {
		case '"':
			var s string
			if json.Unmarshal(value, &s) != nil {
				return nil
			}
			id = s
		case '0':
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil {
				return nil
			}
			id = n
		}
	}
	if seen != 1 {
		return nil
	}
	return id
}
