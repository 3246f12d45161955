package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/ctxgate/ctxgate/config"
)

// checkNameCollisions refuses to start a federated route with prefix
// never whose members offer the same tool or prompt name, resource URI or
// URI template: the client could not say which one it means. It asks the
// members themselves (initialize, then every list), each within the
// route's member timeout; a member that cannot be reached is logged and
// not checked (names that collide later are served from the first member).
func (s *Server) checkNameCollisions(ctx context.Context) error {
	var problems []string
	for i, rt := range s.federated {
		f := rt.fed
		if f.cfg.Prefix != config.PrefixNever {
			continue
		}
		s.learnAtStart(ctx, f)
		for _, kind := range []string{kindTool, kindPrompt, kindResource, kindTemplate} {
			for _, c := range f.names.collisions(kind) {
				problems = append(problems, fmt.Sprintf("routes[%d] (%s): %s %q is offered by %s; with prefix: never a client cannot tell them apart: set prefix: collision or always", i, f.cfg.Path, kind, c.name, strings.Join(c.owners, " and ")))
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("federated route names collide:\n  %s", strings.Join(problems, "\n  "))
	}
	return nil
}

// learnAtStart opens a session with every member as the gateway itself,
// reads all its lists into the route's names, and ends the session.
func (s *Server) learnAtStart(ctx context.Context, f *federation) {
	p := &Principal{ID: "ctxgate", Kind: "anonymous"}
	params, _ := json.Marshal(map[string]any{"protocolVersion": supportedVersions[len(supportedVersions)-1], "capabilities": map[string]any{},
		"clientInfo": map[string]string{"name": "ctxgate-federation-check", "version": "1"}})
	var wg sync.WaitGroup
	for _, m := range f.members {
		wg.Go(func() {
			// The gateway's own request: no client request, no state.
			fr := &fedRequest{s: s, f: f, p: p}
			init := fr.initMember(ctx, m, supportedVersions[len(supportedVersions)-1], params)
			if init.err != nil {
				s.log.Warn("federated route: a member could not be asked for its names at start-up; its names are not checked for collisions", "route", f.cfg.Path, "member", m.upstream.Name, "error", init.err)
				return
			}
			claims := sessionClaims{Version: init.result.ProtocolVersion, Members: map[string]string{m.upstream.Name: init.session}}
			fr.fo = legacyFan(claims)
			for method := range listShapes {
				fr.learnMember(ctx, m, method)
			}
			dctx, cancel := context.WithTimeout(ctx, f.cfg.MemberTimeout)
			defer cancel()
			_, _, _ = askMember(dctx, m, upstreamRequest{method: http.MethodDelete, session: init.session, version: claims.Version, as: m.identity(p)})
		})
	}
	wg.Wait()
}

type collision struct {
	name   string
	owners []string
}

// collisions are the names of kind more than one member offers, sorted.
func (n *namer) collisions(kind string) []collision {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []collision
	for name, owners := range n.owners[kind] {
		if len(owners) > 1 {
			out = append(out, collision{name, slices.Clone(owners)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}
