package gateway

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/ctxgate/ctxgate/identity"
	"github.com/ctxgate/ctxgate/upstream"
)

// Principal is who identity verified a request comes from. The alias
// keeps the name every handler uses; the type is identity's.
type Principal = identity.Principal

// reasonInsufficientScope counts a principal without the route's required
// scopes (the route's rule, so the gateway's; identity's reasons are the
// others of ctxgate_authentication_failures_total).
const reasonInsufficientScope = "insufficient_scope"

// callerOf is the principal as upstream credential sources know it.
func callerOf(p *Principal) *upstream.Caller {
	c := &upstream.Caller{ID: p.ID, Kind: p.Kind}
	if p.Kind == "oidc" {
		// Only a token the gateway verified against its own issuers.
		c.AccessToken, c.Expiry = p.AccessToken, p.Expiry
	}
	return c
}

// authenticate is the per-route middleware: it puts the verified principal
// in the request state, or answers 401 (no or bad credential) or 403
// (a token without the route's required scopes) with an RFC 6750/9728
// challenge that tells an MCP client where to get a token.
func (s *Server) authenticate(rt *route) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			st := stateOf(r.Context())
			// Known from here on, so refusals below count for the route.
			st.upstream, st.route = rt.upstream.Name, rt.upstream.Name
			p, err := s.authenticateTraced(r, rt)
			if err != nil {
				writeError(w, r, err)
				return
			}
			st.principal = p
			// Every upstream request made for this one is made for p, and
			// counts against p's share of that upstream's bulkhead.
			st.caller = callerOf(p)
			ctx := upstream.WithPrincipal(r.Context(), p.ID)
			next.ServeHTTP(w, r.WithContext(upstream.WithCaller(ctx, st.caller)))
		})
	}
}

// authenticateTraced authenticates r for rt inside an "authenticate" span
// and counts a refusal by reason. The error is the client's answer.
func (s *Server) authenticateTraced(r *http.Request, rt *route) (*Principal, error) {
	ctx, span := s.tracer.Start(r.Context(), "authenticate")
	defer span.End()
	p, err := s.auth.Authenticate(r.WithContext(ctx), rt.resource)
	reason := ""
	if err != nil {
		err, reason = identityError(err, func(invalidToken bool) string { return s.challenge(rt, invalidToken, "") })
	} else if err = s.checkScopes(rt, p); err != nil {
		reason = reasonInsufficientScope
	}
	if err != nil {
		s.metrics.authFailures.WithLabelValues(rt.upstream.Name, reason).Inc()
		span.SetAttributes(attribute.String("ctxgate.auth.failure", reason))
		span.SetStatus(codes.Error, reason)
		return nil, err
	}
	span.SetAttributes(attribute.String("ctxgate.auth.kind", p.Kind))
	return p, nil
}

// checkScopes requires every scope the route demands. A principal that
// cannot carry scopes at all is sent to get a token (401); a token that
// lacks one is a step-up (403 insufficient_scope).
func (s *Server) checkScopes(rt *route, p *Principal) error {
	var missing []string
	for _, want := range rt.requiredScopes {
		if !slices.Contains(p.Scopes, want) {
			missing = append(missing, want)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if p.Kind != "oidc" {
		e := newError(http.StatusUnauthorized, CodeUnauthenticated, "this route requires a bearer token with scopes "+strings.Join(rt.requiredScopes, " "), nil)
		e.Header = http.Header{"Www-Authenticate": {s.challenge(rt, false, "")}}
		return e
	}
	e := newError(http.StatusForbidden, CodeInsufficientScope, "insufficient scope: the token lacks "+strings.Join(missing, " "), nil)
	e.Header = http.Header{"Www-Authenticate": {s.challenge(rt, false, "insufficient_scope")}}
	return e
}

// challenge builds the WWW-Authenticate value (RFC 6750 section 3, RFC
// 9728 section 5.1): where the route's protected-resource metadata is, the
// scopes to ask for, and the error when there is one.
func (s *Server) challenge(rt *route, invalidToken bool, errorCode string) string {
	var b strings.Builder
	b.WriteString(`Bearer resource_metadata="` + rt.metadataURL + `"`)
	if len(rt.requiredScopes) > 0 {
		b.WriteString(`, scope="` + strings.Join(rt.requiredScopes, " ") + `"`)
	}
	if invalidToken {
		errorCode = "invalid_token"
	}
	if errorCode != "" {
		b.WriteString(`, error="` + errorCode + `"`)
	}
	return b.String()
}

// principalOf returns the request's verified principal. Every route sits
// behind authenticate, so a missing principal is a wiring bug: fail closed.
func principalOf(ctx context.Context) (*Principal, error) {
	if st := stateOf(ctx); st != nil && st.principal != nil {
		return st.principal, nil
	}
	return nil, errors.New("no principal in request context")
}
