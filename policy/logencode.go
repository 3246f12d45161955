package policy

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// appendRecord appends rec as one JSON object: the document encoding/json
// makes of it (the same members, the same omitempty rules, map members
// sorted), written field by field instead of by reflection, which took
// most of a memo hit's time. Strings are quoted by jsontext: control
// characters (CR, LF) are escaped, so no input value can break a line or
// forge a record, and invalid UTF-8 becomes U+FFFD as encoding/json makes
// it. Only values of types decoded JSON does not hold (a delegation
// record, say) go through encoding/json.
func appendRecord(b []byte, rec *record) []byte {
	b = append(b, `{"labels":`...)
	b = appendStringMap(b, rec.Labels)
	b = appendMember(b, "decision_id", rec.DecisionID)
	b = appendMember(b, "path", rec.Path)
	b = append(b, `,"input":`...)
	b = appendLogInput(b, rec.Input)
	b = append(b, `,"result":`...)
	b = appendResult(b, rec.Result)
	if rec.Error != "" {
		b = appendMember(b, "error", rec.Error)
	}
	b = appendMember(b, "timestamp", rec.Timestamp)
	b = appendMember(b, "revision", rec.Revision)
	if len(rec.Metrics) > 0 {
		b = append(b, `,"metrics":{`...)
		for i, k := range sortedKeys(make([]string, 0, len(rec.Metrics)), rec.Metrics) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = strconv.AppendInt(append(b, ':'), rec.Metrics[k], 10)
		}
		b = append(b, '}')
	}
	b = appendMember(b, "principal", rec.Principal)
	if rec.RequestID != "" {
		b = appendMember(b, "request_id", rec.RequestID)
	}
	if rec.Delegation != nil {
		b = append(b, `,"delegation":`...)
		b = appendAny(b, rec.Delegation)
	}
	if rec.MemoHit {
		b = append(b, `,"memo_hit":true`...)
	}
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	// The error only reports invalid UTF-8, already replaced.
	b, _ = jsontext.AppendQuote(b, s)
	return b
}

// appendMember appends `,"name":"value"`; name needs no escaping.
func appendMember(b []byte, name, value string) []byte {
	b = append(append(append(b, ",\""...), name...), "\":"...)
	return appendJSONString(b, value)
}

// appendOptional appends a member unless value is empty (omitempty).
func appendOptional(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	return appendMember(b, name, value)
}

func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

func appendStringMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	b = append(b, '{')
	var buf [16]string
	for i, k := range sortedKeys(buf[:0], m) {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(appendJSONString(b, k), ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

// appendAnyMember appends `,"name":value` unless m is empty (omitempty).
func appendMapMember(b []byte, name string, m map[string]any) []byte {
	if len(m) == 0 {
		return b
	}
	b = append(append(append(b, ",\""...), name...), "\":"...)
	return appendAny(b, m)
}

// appendAny appends a value of decoded JSON.
func appendAny(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...)
	case bool:
		return strconv.AppendBool(b, v)
	case string:
		return appendJSONString(b, v)
	case float64:
		return appendFloat(b, v)
	case json.Number:
		if jsontext.Value(v).Kind() == '0' && jsontext.Value(v).IsValid() {
			return append(b, v...)
		}
	case []any:
		b = append(b, '[')
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendAny(b, x)
		}
		return append(b, ']')
	case map[string]any:
		if v == nil {
			return append(b, "null"...)
		}
		b = append(b, '{')
		var buf [16]string
		for i, k := range sortedKeys(buf[:0], v) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(appendJSONString(b, k), ':')
			b = appendAny(b, v[k])
		}
		return append(b, '}')
	case []string:
		return appendStrings(b, v)
	case map[string]string:
		return appendStringMap(b, v)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return appendJSONString(b, "…[not encodable: "+err.Error()+"]")
	}
	return append(b, raw...)
}

// appendFloat formats f as encoding/json does (ES6 number formatting);
// NaN and infinities, which JSON cannot hold, become null.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendLogInput appends the input of a record: an *Input (clippedInput)
// or a generic document (clippedDocument).
func appendLogInput(b []byte, v any) []byte {
	in, ok := v.(*Input)
	if !ok {
		return appendAny(b, v)
	}
	if in == nil {
		return append(b, "null"...)
	}
	b = append(b, `{"principal":`...)
	b = appendPrincipal(b, &in.Principal)
	b = appendMember(b, "route", in.Route)
	b = appendMember(b, "upstream", in.Upstream)
	b = appendMember(b, "method", in.Method)
	b = appendMember(b, "phase", in.Phase)
	if t := in.Tool; t != nil {
		b = append(b, `,"tool":{"name":`...)
		b = appendJSONString(b, t.Name)
		b = appendMapMember(b, "arguments", t.Arguments)
		b = appendMapMember(b, "annotations", t.Annotations)
		b = appendOptional(b, "description", t.Description)
		b = append(appendOptional(b, "pin", t.Pin), '}')
	}
	if r := in.Resource; r != nil {
		b = append(b, `,"resource":{`...)
		n := len(b)
		b = appendOptional(b, "uri", r.URI)
		b = appendOptional(b, "uriTemplate", r.URITemplate)
		b = appendOptional(b, "name", r.Name)
		b = appendOptional(b, "mimeType", r.MIMEType)
		if len(b) > n {
			b = slices.Delete(b, n, n+1) // the first member's comma
		}
		b = append(b, '}')
	}
	if p := in.Prompt; p != nil {
		b = append(b, `,"prompt":{"name":`...)
		b = appendJSONString(b, p.Name)
		b = append(appendMapMember(b, "arguments", p.Arguments), '}')
	}
	if sk := in.Skill; sk != nil {
		b = append(b, `,"skill":{"uri":`...)
		b = appendJSONString(b, sk.URI)
		b = appendOptional(b, "name", sk.Name)
		b = appendOptional(b, "description", sk.Description)
		b = append(appendOptional(b, "pin", sk.Pin), '}')
	}
	b = appendMapMember(b, "params", in.Params)
	b = appendMapMember(b, "result", in.Result)
	b = append(b, `,"protocol":{"version":`...)
	b = appendJSONString(b, in.Protocol.Version)
	b = append(appendMember(b, "era", in.Protocol.Era), '}')
	b = append(b, `,"source":{"ip":`...)
	b = appendJSONString(b, in.Source.IP)
	b = append(appendOptional(b, "user_agent", in.Source.UserAgent), '}')
	return append(b, '}')
}

func appendPrincipal(b []byte, p *Principal) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, p.ID)
	b = appendMember(b, "kind", p.Kind)
	b = appendOptional(b, "issuer", p.Issuer)
	b = appendOptional(b, "subject", p.Subject)
	b = appendOptional(b, "name", p.Name)
	b = appendStrings(append(b, `,"scopes":`...), p.Scopes)
	b = appendStrings(append(b, `,"groups":`...), p.Groups)
	b = appendMapMember(b, "claims", p.Claims)
	if c := p.Cert; c != nil {
		b = append(b, `,"cert":{"subject":`...)
		b = appendJSONString(b, c.Subject)
		b = appendStrings(append(b, `,"uris":`...), c.URIs)
		b = appendStrings(append(b, `,"dns_names":`...), c.DNSNames)
		b = append(appendMember(b, "sha256", c.SHA256), '}')
	}
	if len(p.Attributes) > 0 {
		b = appendStringMap(append(b, `,"attributes":`...), p.Attributes)
	}
	return append(b, '}')
}

// appendResult appends the result of a Decide, Visible or FilterList
// record.
func appendResult(b []byte, v any) []byte {
	switch r := v.(type) {
	case decideResult:
		b = strconv.AppendBool(append(b, `{"allow":`...), r.Allow)
		b = appendOptional(b, "reason", r.Reason)
		if len(r.Redact) > 0 {
			b = append(b, `,"redact":[`...)
			for i, x := range r.Redact {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendRedaction(b, x)
			}
			b = append(b, ']')
		}
		return append(appendOptional(b, "failure", r.Failure), '}')
	case visibleResult:
		b = strconv.AppendBool(append(b, `{"visible":`...), r.Visible)
		return append(appendOptional(b, "failure", r.Failure), '}')
	case listResult:
		b = strconv.AppendInt(append(b, `{"total":`...), int64(r.Total), 10)
		b = appendStrings(append(b, `,"removed":`...), r.Removed)
		if r.Failures != 0 {
			b = strconv.AppendInt(append(b, `,"failures":`...), int64(r.Failures), 10)
		}
		return append(b, '}')
	}
	return appendAny(b, v)
}

func appendRedaction(b []byte, r Redaction) []byte {
	b = append(b, '{')
	n := len(b)
	b = appendOptional(b, "path", r.Path)
	b = appendOptional(b, "pattern", r.Pattern)
	b = appendOptional(b, "key", r.Key)
	b = appendOptional(b, "replacement", r.Replacement)
	if len(b) > n {
		b = slices.Delete(b, n, n+1) // the first member's comma
	}
	return append(b, '}')
}
