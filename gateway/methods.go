package gateway

import (
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// checkClientMethod refuses a client request for a method MCP does not
// define for clients: the server-only requests (sampling/createMessage,
// elicitation/create, roots/list), which a confused upstream might act on
// as if its own peer had asked, and unknown methods, about which no policy
// can reason. Nothing is forwarded. The answer is -32601: with HTTP 404 in
// the modern era, as the 2026-07-28 revision requires of a server
// (SEP-2575); with HTTP 200 in the legacy era, as a 2025 server answers an
// unknown method, because there a 404 means "session not found" and would
// send the client to initialize again. Notifications are not checked: they
// get no answer, and the policy still decides each one.
func checkClientMethod(req *jsonrpc.Request, era string) error {
	if !req.ID.IsValid() || mcpwire.IsClientMethod(req.Method) {
		return nil
	}
	status := http.StatusOK
	if era == eraModern {
		status = http.StatusNotFound
	}
	return newError(status, CodeMethodNotFound, "method not found: "+quote(clip(req.Method, 128)), nil)
}
