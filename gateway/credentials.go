package gateway

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// CodeUpstreamCredential: the gateway could not obtain the credential an
// upstream that is called as the user needs for this caller (token
// exchange refused, no token to exchange); nothing was sent.
const CodeUpstreamCredential = -31030

// prepareCredential obtains the caller's upstream credential before the
// request is decided or sent, for an upstream called as the user
// (token_exchange): a refusal is answered here, so nothing reaches the
// upstream, and the delegation chain of the token (its act claim) is known
// to the decision log. The token is cached: the proxy's request reuses it.
func (s *Server) prepareCredential(r *http.Request, rt *route) (*http.Request, error) {
	d, err := rt.upstream.Prepare(r.Context())
	if err != nil {
		return r, credentialError(err, s.challenge(rt, true, ""))
	}
	if d == nil {
		return r, nil
	}
	return r.WithContext(policy.WithDelegation(r.Context(), d)), nil
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
