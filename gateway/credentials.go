package gateway

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// CodeUpstreamCredential: the gateway could not obtain the credential an
// upstream that is called as the user needs for this caller (token
// exchange refused, no token to exchange); nothing was sent.
const CodeUpstreamCredential = -31040

// prepareCredential obtains the caller's upstream credential before the
// request is decided or sent, for an upstream called as the user
// (token_exchange, user_oauth): a refusal is answered here, so nothing
// reaches the upstream, and the delegation chain of the token (its act
// claim) is known to the decision log. The token is cached: the proxy's
// request reuses it.
func (s *Server) prepareCredential(r *http.Request, fwd *forward) (*http.Request, error) {
	rt := fwd.route
	d, err := rt.upstream.Prepare(r.Context())
	if ce, ok := errors.AsType[*upstream.CredentialError](err); ok && ce.Reason == upstream.ReasonNotConnected {
		urlElicit := fwd.urlElicit
		if fwd.era == eraModern && fwd.msg != nil && fwd.msg.Request() != nil {
			urlElicit = fwd.msg.Params() != nil && declaresURLElicitation(fwd.msg.Params().MetaCapabilities)
		}
		return r, s.connectRequired(ce, urlElicit)
	}
	if err != nil {
		return r, credentialError(err, s.challenge(rt, true, ""))
	}
	if d == nil {
		return r, nil
	}
	return r.WithContext(policy.WithDelegation(r.Context(), d)), nil
}

// CodeConnectRequired: the upstream needs the user's own account, which
// they have not connected; the message carries the URL to do it (for
// clients without the elicitation url capability).
const CodeConnectRequired = -31041

// CodeURLElicitationRequired is MCP's URLElicitationRequiredError
// (2025-11-25): the request needs the user to visit a URL first.
const CodeURLElicitationRequired = -32042

// connectRequired answers a caller who has not connected their account. A
// client that declared elicitation.url gets the URLElicitationRequiredError
// (-32042, MCP 2025-11-25) naming the connect page; any other client an
// error whose message carries the same URL. Both as HTTP 200, the way an
// MCP server answers a request it cannot serve yet.
func (s *Server) connectRequired(ce *upstream.CredentialError, urlElicit bool) *Error {
	link := strings.TrimSuffix(s.cfg.Server.PublicURL, "/") + "/oauth/connect/" + ce.Upstream + "?link=" + ce.Link
	message := "upstream " + ce.Upstream + " needs your own account: connect it at " + link + " and retry"
	// The link is a single-use capability for this principal: it is not
	// written to the log.
	logMessage := "upstream " + ce.Upstream + " needs the user's own account: connect link sent"
	if !urlElicit {
		e := newError(http.StatusOK, CodeConnectRequired, message, ce)
		e.logMessage = logMessage
		return e
	}
	data, _ := json.Marshal(map[string]any{"elicitations": []map[string]string{{
		"mode": "url", "elicitationId": ce.Link, "url": link,
		"message": "Connect your " + ce.Upstream + " account to continue.",
	}}})
	e := newError(http.StatusOK, CodeURLElicitationRequired, message, ce)
	e.Data, e.logMessage = data, logMessage
	return e
}

// declaresURLElicitation reports whether client capabilities, as a
// request's params declare them (initialize's capabilities, or a modern
// request's _meta client capabilities), include the elicitation url
// capability.
func declaresURLElicitation(caps []byte) bool {
	var c struct {
		Elicitation *struct {
			URL json.RawMessage `json:"url"`
		} `json:"elicitation"`
	}
	return json.Unmarshal(caps, &c) == nil && c.Elicitation != nil && len(c.Elicitation.URL) > 0 && string(c.Elicitation.URL) != "null"
}

// credentialError is the client's answer to a *upstream.CredentialError.
// The token service's error code goes to the log (in the cause), never its
// description, and the client learns only what it can act on. challenge,
// when known, is the route's WWW-Authenticate for a refused token.
func credentialError(err error, challenge string) *Error {
	ce, ok := errors.AsType[*upstream.CredentialError](err)
	if !ok {
		return newError(http.StatusBadGateway, CodeUpstreamCredential, "the gateway could not obtain a credential for the upstream; nothing was sent", err)
	}
	switch ce.Reason {
	case upstream.ReasonNoToken:
		return newError(http.StatusForbidden, CodeUpstreamCredential,
			"upstream "+ce.Upstream+" is called as the signed-in user: use a bearer token from this gateway's OpenID provider (API keys, client certificates and anonymous access have no user token to exchange)", err)
	case upstream.ReasonRefused:
		// RFC 6750 invalid_token: expired or revoked at the token service
		// although it verified here, so the client should sign in again.
		e := newError(http.StatusUnauthorized, CodeUpstreamCredential,
			"the token service refused to exchange your token for upstream "+ce.Upstream+" (expired or revoked); sign in again", err)
		if challenge != "" {
			e.Header = http.Header{"Www-Authenticate": {challenge}}
		}
		return e
	}
	return newError(http.StatusBadGateway, CodeUpstreamCredential,
		"the gateway could not obtain a credential for upstream "+ce.Upstream+" (token exchange failed); nothing was sent", err)
}

// delegationAttrs are the access record's delegation fields: for each
// upstream token obtained for the caller, its sub and act claim.
func delegationAttrs(c *upstream.Caller) []slog.Attr {
	ds := c.Delegations()
	if len(ds) == 0 {
		return nil
	}
	out := make([]any, 0, len(ds))
	for _, d := range ds {
		out = append(out, d)
	}
	return []slog.Attr{slog.Any("delegation", out)}
}
