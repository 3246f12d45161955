package gateway

import (
	"mime"
	"net/http"
	"strings"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// requestVersion picks the protocol version in effect for a request: the
// header if present (and supported), else the session's negotiated one,
// else the spec's default. On a session the header must name the
// negotiated version: a session is one revision, and a request claiming
// another would get that revision's rules (2025-03-26 batches inside a
// 2025-11-25 session) from the gateway, and who knows which from the
// upstream.
func requestVersion(r *http.Request, session *sessionClaims) (string, error) {
	values := r.Header.Values("Mcp-Protocol-Version")
	switch {
	case len(values) > 1:
		return "", badRequest("more than one MCP-Protocol-Version header", nil)
	case len(values) == 1:
		if !isSupportedVersion(values[0]) {
			return "", badRequest("unsupported MCP-Protocol-Version "+quote(values[0])+"; supported: "+strings.Join(supportedVersions, ", "), nil)
		}
		if session != nil && session.Version != "" && values[0] != session.Version {
			return "", badRequest("MCP-Protocol-Version "+quote(values[0])+" differs from the version negotiated for this session, "+quote(session.Version), nil)
		}
		return values[0], nil
	case session != nil && session.Version != "":
		return session.Version, nil
	}
	return mcpwire.DefaultVersion, nil
}

// checkContentType requires a JSON body, as Streamable HTTP does.
func checkContentType(r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return newError(http.StatusUnsupportedMediaType, CodeInvalidRequest, "Content-Type must be application/json", err)
	}
	return nil
}

// checkAccept requires the client to accept every listed media type, as the
// Streamable HTTP transport demands of POST (JSON and SSE) and GET (SSE).
func checkAccept(r *http.Request, want ...string) error {
	accepted := map[string]bool{}
	for _, v := range r.Header.Values("Accept") {
		for part := range strings.SplitSeq(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil {
				accepted[mt] = true
			}
		}
	}
	for _, w := range want {
		major, _, _ := strings.Cut(w, "/")
		if !accepted[w] && !accepted[major+"/*"] && !accepted["*/*"] {
			return newError(http.StatusNotAcceptable, CodeInvalidRequest, "Accept must include "+strings.Join(want, " and "), nil)
		}
	}
	return nil
}
