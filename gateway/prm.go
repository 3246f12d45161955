package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// wellKnownPRM is the RFC 9728 metadata path. For a resource with a path
// the metadata lives at the path-inserted form, wellKnownPRM + path.
const wellKnownPRM = "/.well-known/oauth-protected-resource"

// protectedResource answers the RFC 9728 metadata for one resource: the
// whole gateway (rt nil) or one route. It is public: a client fetches it
// before it has a token.
func (s *Server) protectedResource(rt *route) http.HandlerFunc {
	meta := &oauthex.ProtectedResourceMetadata{
		Resource:               strings.TrimSuffix(s.cfg.Server.PublicURL, "/"),
		BearerMethodsSupported: []string{"header"}, // never query or body (RFC 6750 2.3 is unsafe)
		ResourceName:           "ctxgate MCP gateway",
	}
	for _, o := range s.cfg.Auth.OIDC {
		meta.AuthorizationServers = append(meta.AuthorizationServers, o.Issuer)
	}
	if rt != nil {
		meta.Resource = rt.resource
		meta.ScopesSupported = rt.requiredScopes
		meta.ResourceName = "ctxgate MCP gateway: " + rt.upstream.Name
	} else {
		for _, up := range s.cfg.Upstreams {
			for _, sc := range up.RequiredScopes {
				if !slices.Contains(meta.ScopesSupported, sc) {
					meta.ScopesSupported = append(meta.ScopesSupported, sc)
				}
			}
		}
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		writeJSON(w, http.StatusOK, meta)
	}
}
