package gateway

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// The modern era of MCP (protocol revision 2026-07-28, SEP-2575) is
// stateless: no initialize, no sessions; every request carries its protocol
// version and the client's capabilities in params._meta, and mirrors its
// method and name in the Mcp-Method and Mcp-Name headers (SEP-2243), which
// must match the body. The gateway checks all of that itself, before the
// policy runs and before anything reaches the upstream: a header the gateway
// did not check could otherwise route or be logged differently from the body
// the policy decided.

// Error codes the MCP specification itself defines for the modern era; they
// are the spec's, not the gateway's, so clients act on them as on a server's.
const (
	CodeHeaderMismatch             = -32020 // SEP-2243: Mcp-* or MCP-Protocol-Version header disagrees with the body
	CodeUnsupportedProtocolVersion = -32022 // SEP-2575: requested revision not served; data lists the supported ones
)

// removedModernMethod reports whether msg is a modern-era call of a method
// the era removed, which prepareModern answers 404 before anything else.
func removedModernMethod(r *http.Request, msg *mcpwire.Message) bool {
	return msg.IsCall() && mcpwire.RemovedInModern(msg.Method()) && isModernRequest(r, msg)
}

// isModernHeaderVersion reports whether an MCP-Protocol-Version value asks
// for the modern era: anything that is not a legacy revision and sorts at or
// after the first modern one (as the Go SDK compares revisions), so an
// unknown future version is answered with the modern era's -32022.
func isModernHeaderVersion(v string) bool {
	return v != "" && !isSupportedVersion(v) && v >= modernVersions[0]
}

// requestMeta is the part of a modern request's params._meta the gateway
// reads: the version and whether the client capabilities are present.
type requestMeta struct {
	version         string
	hasCapabilities bool
}

// metaOf is a request's requestMeta, as its params check kept it. A
// request whose params failed the check (a method the modern era removed
// is still answered 404 whatever its params) is read leniently
// (readRequestMeta): a missing or malformed _meta reads as empty.
func metaOf(msg *mcpwire.Message) requestMeta {
	p := msg.Params()
	if p == nil {
		return readRequestMeta(msg.Request().Params)
	}
	return requestMeta{version: p.MetaVersion, hasCapabilities: len(p.MetaCapabilities) > 0 && p.MetaCapabilities[0] == '{'}
}

// readRequestMeta decodes params._meta of a request whose params failed
// the check, leniently.
func readRequestMeta(params json.RawMessage) requestMeta {
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if len(params) == 0 || json.Unmarshal(params, &p) != nil {
		return requestMeta{}
	}
	var m requestMeta
	_ = json.Unmarshal(p.Meta[metaProtocolVersion], &m.version)
	caps := strings.TrimSpace(string(p.Meta[metaClientCapabilities]))
	m.hasCapabilities = strings.HasPrefix(caps, "{")
	return m
}

// isModernRequest tells the era of one decoded message: modern when the
// request carries _meta's protocol version or its MCP-Protocol-Version
// header names a modern revision; legacy otherwise (initialize, sessions).
func isModernRequest(r *http.Request, msg *mcpwire.Message) bool {
	if msg.Request() == nil {
		return false
	}
	if metaOf(msg).version != "" {
		return true
	}
	vs := r.Header.Values("Mcp-Protocol-Version")
	return len(vs) == 1 && isModernHeaderVersion(strings.TrimSpace(vs[0]))
}

// prepareModern checks a modern-era request and prepares it to be forwarded
// without a session. The order follows the Go SDK's server, so a client sees
// the same answer through the gateway as directly: removed method, version
// header against _meta, supported version, client capabilities, then the
// Mcp-Method and Mcp-Name headers.
func (s *Server) prepareModern(r *http.Request, fwd *forward, msg *mcpwire.Message) error {
	req := msg.Request()
	fwd.era = eraModern
	fwd.version = modernVersions[0]
	if req.IsCall() && mcpwire.RemovedInModern(req.Method) {
		return newError(http.StatusNotFound, CodeMethodNotFound, quote(req.Method)+" is not supported in protocol version "+modernVersions[0], nil)
	}
	version, err := s.modernVersion(r, fwd, msg)
	if err != nil {
		return err
	}
	fwd.version = version
	if err := checkMcpHeaders(r.Header, msg); err != nil {
		return err
	}
	if req.Method == "subscriptions/listen" {
		// Long-lived like a legacy GET stream: it ends at an event boundary
		// when shutdown begins.
		fwd.stream, fwd.listen = true, true
	}
	return nil
}

// modernVersion validates MCP-Protocol-Version against _meta and against
// what this route serves, and returns the version in effect.
func (s *Server) modernVersion(r *http.Request, fwd *forward, msg *mcpwire.Message) (string, error) {
	headers := r.Header.Values("Mcp-Protocol-Version")
	if len(headers) > 1 {
		return "", badRequest("more than one MCP-Protocol-Version header", nil)
	}
	meta := metaOf(msg)
	if !msg.IsCall() {
		// The _meta triple is defined for requests only; a notification
		// is checked by its header alone.
		if len(headers) == 0 {
			return modernVersions[0], nil
		}
		meta.version, meta.hasCapabilities = strings.TrimSpace(headers[0]), true
	}
	switch {
	case len(headers) == 0:
		return "", newError(http.StatusBadRequest, CodeHeaderMismatch, "MCP-Protocol-Version header is required for requests carrying "+metaProtocolVersion, nil)
	case meta.version == "":
		return "", newError(http.StatusBadRequest, jsonrpc.CodeInvalidParams, "missing or invalid _meta field "+metaProtocolVersion, nil)
	case strings.TrimSpace(headers[0]) != meta.version:
		return "", newError(http.StatusBadRequest, CodeHeaderMismatch, "MCP-Protocol-Version header "+quote(headers[0])+" does not match _meta "+quote(meta.version), nil)
	}
	fwd.servedVersions, fwd.bridging = bridgeVersions(fwd.route, s.routeVersions(r, fwd.route))
	if !slices.Contains(fwd.servedVersions, meta.version) || !slices.Contains(modernVersions, meta.version) {
		return "", unsupportedVersion(meta.version, fwd.servedVersions)
	}
	if !meta.hasCapabilities {
		return "", newError(http.StatusBadRequest, jsonrpc.CodeInvalidParams, "missing or invalid _meta field "+metaClientCapabilities, nil)
	}
	return meta.version, nil
}

// unsupportedVersion is SEP-2575's UnsupportedProtocolVersionError: 400,
// -32022, and the versions the route does serve, so a client can pick one
// (a legacy one means: use initialize).
func unsupportedVersion(requested string, supported []string) *Error {
	data, _ := json.Marshal(struct {
		Supported []string `json:"supported"`
		Requested string   `json:"requested"`
	}{supported, requested})
	e := newError(http.StatusBadRequest, CodeUnsupportedProtocolVersion, "protocol version "+quote(requested)+" is not supported", nil)
	e.Data = data
	return e
}

// checkMcpHeaders enforces SEP-2243 on a modern request: Mcp-Method must be
// present and equal the body's method; for tools/call, prompts/get and
// resources/read, Mcp-Name must be present and equal params.name (or uri).
// Header names are case-insensitive (net/http canonicalizes them), values
// are compared case-sensitively after the surrounding whitespace HTTP
// ignores; a =?base64?...?= value is decoded first. Mcp-Param-* headers are
// not checked here: they are forwarded as sent and the upstream, which owns
// the tool's x-mcp-header declarations, validates them.
func checkMcpHeaders(h http.Header, msg *mcpwire.Message) error {
	method, err := singleHeader(h, "Mcp-Method")
	switch {
	case err != nil:
		return err
	case method == "":
		return headerMismatch("missing required Mcp-Method header")
	case method != msg.Method():
		return headerMismatch("Mcp-Method header " + quote(method) + " does not match the body's method " + quote(msg.Method()))
	}
	target, _ := mcpwire.TargetOf(msg.Method())
	if !target.Mirrored {
		return nil
	}
	name, err := singleHeader(h, "Mcp-Name")
	if err != nil {
		return err
	}
	if name == "" {
		return headerMismatch("missing required Mcp-Name header for " + quote(msg.Method()))
	}
	return checkMcpName(name, target.Member, msg)
}

// checkMcpName compares an Mcp-Name header with params.<member>, as the
// params check kept it.
func checkMcpName(name, member string, msg *mcpwire.Message) error {
	p := msg.Params()
	if p == nil {
		return headerMismatch("Mcp-Name header present but params." + member + " is not a string")
	}
	decoded, ok := mcpwire.DecodeHeaderValue(name)
	if !ok {
		return headerMismatch("Mcp-Name header has invalid base64 encoding")
	}
	if decoded != p.Named() {
		return headerMismatch("Mcp-Name header " + quote(name) + " does not match params." + member)
	}
	return nil
}

// checkLegacyMcpHeaders holds a legacy-era message (msg nil: a GET, a
// DELETE, a batch; or a client's answer) to the modern era's rule for the
// headers that mirror the body. The legacy era defines none of them, but
// they are forwarded, and an upstream that speaks both eras may route or
// log by them: Mcp-Method and Mcp-Name, when present, must match the body
// as in checkMcpHeaders; Mcp-Param-* headers, which only a modern tool
// declaration gives a meaning the gateway could check, are refused.
func checkLegacyMcpHeaders(h http.Header, msg *mcpwire.Message) error {
	for name := range h {
		if strings.HasPrefix(name, "Mcp-Param-") {
			return headerMismatch(name + " header is defined only in protocol version " + modernVersions[0])
		}
	}
	var req *jsonrpc.Request
	if msg != nil {
		req = msg.Request()
	}
	method, err := singleHeader(h, "Mcp-Method")
	switch {
	case err != nil:
		return err
	case method != "" && (req == nil || method != req.Method):
		return headerMismatch("Mcp-Method header " + quote(method) + " does not match the body")
	}
	name, err := singleHeader(h, "Mcp-Name")
	if err != nil || name == "" {
		return err
	}
	var target mcpwire.Target
	if req != nil {
		target, _ = mcpwire.TargetOf(req.Method)
	}
	if !target.Mirrored {
		return headerMismatch("Mcp-Name header " + quote(name) + " on a message that names no tool, prompt or resource")
	}
	return checkMcpName(name, target.Member, msg)
}

// singleHeader returns a header's one value without surrounding whitespace;
// "" when absent. Two values are refused: they could be read differently by
// the gateway and by the upstream.
func singleHeader(h http.Header, name string) (string, error) {
	vs := h.Values(name)
	switch len(vs) {
	case 0:
		return "", nil
	case 1:
		return strings.TrimSpace(vs[0]), nil
	}
	return "", headerMismatch("more than one " + name + " header")
}

func headerMismatch(message string) *Error {
	return newError(http.StatusBadRequest, CodeHeaderMismatch, message, nil)
}

// modernStreamless answers GET and DELETE in the modern era: there is no
// server stream and no session to end (SEP-2575), so 405 with Allow: POST.
func modernStreamless(r *http.Request) error {
	vs := r.Header.Values("Mcp-Protocol-Version")
	if len(vs) != 1 || !isModernHeaderVersion(strings.TrimSpace(vs[0])) {
		return nil
	}
	e := newError(http.StatusMethodNotAllowed, CodeInvalidRequest, "protocol version "+quote(vs[0])+" has no GET stream or DELETE; use POST", nil)
	e.Header = http.Header{"Allow": {"POST"}}
	return e
}
