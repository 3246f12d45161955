package mcpwire

import (
	"slices"
	"strings"
)

// SupportedVersions are the legacy-era MCP protocol revisions the gateway
// relays, oldest first. 2024-11-05 is served on the Streamable HTTP
// endpoint to any upstream that negotiates it (a client of that revision
// sends no MCP-Protocol-Version header; its session carries the version).
// Callers must not change the slice.
var SupportedVersions = []string{"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"}

// DefaultVersion is what the Streamable HTTP spec tells a server to assume
// when a request has neither an MCP-Protocol-Version header nor a session
// that says otherwise.
const DefaultVersion = "2025-03-26"

// ModernVersions are the modern-era revisions (stateless, SEP-2575) the
// gateway relays. Callers must not change the slice.
var ModernVersions = []string{"2026-07-28"}

// Protocol eras, as the policy input names them.
const (
	EraLegacy = "legacy"
	EraModern = "modern"
)

// Keys of params._meta that carry a modern request's context, and the
// gateway's own idempotency key.
const (
	MetaProtocolVersion    = "io.modelcontextprotocol/protocolVersion"
	MetaClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	MetaIdempotencyKey     = "io.ctxgate/idempotency-key"
)

// IsSupportedVersion reports whether v is a legacy-era revision the
// gateway relays.
func IsSupportedVersion(v string) bool { return slices.Contains(SupportedVersions, v) }

// AllowsBatch reports whether a revision accepts JSON-RPC batches. Only
// 2025-03-26 does: its changelog adds batching (the 2024-11-05 schema has
// no JSONRPCBatchRequest), and 2025-06-18 removed it again.
func AllowsBatch(version string) bool { return version == "2025-03-26" }

// clientMethods are the requests MCP lets a client send a server, in every
// revision the gateway relays (tasks/* from 2025-11-25, server/discover and
// subscriptions/listen from 2026-07-28), and those of the extensions the
// gateway relays: skills/list and skills/get of the Skills extension
// (SEP-2640, io.modelcontextprotocol/skills), and its optional
// resources/directory/read, in both eras.
var clientMethods = map[string]bool{
	"initialize": true, "ping": true,
	"tools/list": true, "tools/call": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"prompts/list": true, "prompts/get": true,
	"completion/complete": true, "logging/setLevel": true,
	"tasks/get": true, "tasks/result": true, "tasks/list": true, "tasks/cancel": true,
	"server/discover": true, "subscriptions/listen": true,
	"skills/list": true, "skills/get": true, "resources/directory/read": true,
}

// IsClientMethod reports whether MCP defines method as a request a client
// sends a server. The server-only requests (sampling/createMessage,
// elicitation/create, roots/list) and unknown methods are not.
func IsClientMethod(method string) bool { return clientMethods[method] }

// removedMethods no longer exist in the modern era.
var removedMethods = map[string]bool{
	"initialize":            true,
	"ping":                  true,
	"logging/setLevel":      true,
	"resources/subscribe":   true,
	"resources/unsubscribe": true,
}

// RemovedInModern reports whether the modern era removed method; a
// modern request for one is answered 404 + -32601 without reaching the
// upstream, as the spec requires of a server.
func RemovedInModern(method string) bool { return removedMethods[method] }

// Quote quotes a client-supplied string for an error message or a log
// line: at most 64 bytes, control characters and quotes replaced.
func Quote(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return `"` + strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '"' {
			return '?'
		}
		return r
	}, s) + `"`
}
