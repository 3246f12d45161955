package gateway

import (
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// clientMethods are the requests MCP lets a client send a server, in every
// revision the gateway relays (tasks/* from 2025-11-25, server/discover and
// subscriptions/listen from 2026-07-28).
var clientMethods = map[string]bool{
	"initialize": true, "ping": true,
	"tools/list": true, "tools/call": true,
	"resources/list": true, "resources/templates/list": true, "resources/read": true,
	"resources/subscribe": true, "resources/unsubscribe": true,
	"prompts/list": true, "prompts/get": true,
	"completion/complete": true, "logging/setLevel": true,
	"tasks/get": true, "tasks/result": true, "tasks/list": true, "tasks/cancel": true,
	"server/discover": true, "subscriptions/listen": true,
}

// checkClientMethod refuses a client request for a method MCP does not
// define for clients: the server-only requests (sampling/createMessage,
// elicitation/create, roots/list), which a confused upstream might act on
// as if its own peer had asked, and unknown methods, about which no policy
// can reason. Nothing is forwarded. The answer is 404 with -32601, as the
// 2026-07-28 revision requires of a server (SEP-2575), in both eras.
// Notifications are not checked: they get no answer, and the policy still
// decides each one.
func checkClientMethod(req *jsonrpc.Request) error {
	if !req.ID.IsValid() || clientMethods[req.Method] {
		return nil
	}
	return newError(http.StatusNotFound, CodeMethodNotFound, "method not found: "+quote(clip(req.Method, 128)), nil)
}
