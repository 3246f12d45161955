package mcpwire

import (
	"encoding/base64"
	"net/http"
	"strings"
)

// SEP-2243 header values: a value HTTP cannot carry as it is (non-ASCII,
// control characters, surrounding whitespace, or one that looks encoded) is
// sent as =?base64?<standard base64 of the UTF-8 bytes>?=.
const (
	base64HeaderPrefix = "=?base64?"
	base64HeaderSuffix = "?="
)

// DecodeHeaderValue returns the value a mirrored header stands for: the
// decoded bytes of a =?base64?...?= value, any other value as it is. It
// reports false for a wrapped value that is not valid base64.
func DecodeHeaderValue(v string) (string, bool) {
	inner, ok := strings.CutPrefix(v, base64HeaderPrefix)
	if !ok {
		return v, true
	}
	inner, ok = strings.CutSuffix(inner, base64HeaderSuffix)
	if !ok {
		return v, true
	}
	b, err := base64.StdEncoding.Strict().DecodeString(inner)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// EncodeHeaderValue is DecodeHeaderValue's inverse: s as it is when a header
// can carry it unambiguously, else wrapped in base64.
func EncodeHeaderValue(s string) string {
	plain := s != "" && s[0] != ' ' && s[0] != '\t' && s[len(s)-1] != ' ' && s[len(s)-1] != '\t' &&
		!(strings.HasPrefix(s, base64HeaderPrefix) && strings.HasSuffix(s, base64HeaderSuffix))
	for i := 0; plain && i < len(s); i++ {
		plain = s[i] >= 0x20 && s[i] <= 0x7e
	}
	if plain || s == "" {
		return s
	}
	return base64HeaderPrefix + base64.StdEncoding.EncodeToString([]byte(s)) + base64HeaderSuffix
}

// SetMirroredName rewrites the Mcp-Name header of an outgoing request to
// name. Whatever rewrites a tools/call, prompts/get or resources/read name
// in the body (federation's prefixes) must call it, so the upstream's own
// SEP-2243 check sees a header that matches the body it receives.
func SetMirroredName(h http.Header, name string) {
	if _, ok := h["Mcp-Name"]; ok {
		h.Set("Mcp-Name", EncodeHeaderValue(name))
	}
}
