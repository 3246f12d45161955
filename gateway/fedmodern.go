package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// The modern era (2026-07-28) on a federated route: stateless fan-out.
// A modern request is checked exactly as on a single route (prepareModern:
// MCP-Protocol-Version, _meta, Mcp-Method, Mcp-Name), then:
//
//   - server/discover is answered by the gateway: the union of the
//     members' capabilities (as initialize merges them, less logging), the
//     modern revisions every member serves followed by the gateway's legacy
//     ones (the route serves those itself, with initialize), and the members
//     left out in _meta io.ctxgate/partial.
//   - lists are asked of every member in parallel, within member_timeout,
//     without a session, and merged exactly as in the legacy era
//     (fedlist.go, merge.go): only the fetch differs.
//   - tools/call, prompts/get and resources/read are routed by name as in
//     the legacy era (fedroute.go), Mcp-Name rewritten to the member's
//     own name.
//
// Each member is reached in the era it speaks: modern directly; legacy
// only through the member's bridge (bridge.go) when it is configured with
// bridge: true, else not at all: left out of every answer and named in
// io.ctxgate/partial with the reason "legacy only". A route none of whose
// members is reached so is a legacy route: every modern request is
// answered 400 -32022 with the revisions the members serve, as a single
// legacy route answers. subscriptions/listen merges the members' listen
// streams (fedlisten.go).

// reasonLegacyOnly is why a modern request leaves a member out.
const reasonLegacyOnly = "legacy only"

// fanout is how one request reaches the members of a federated route: on
// the client's federated session (legacy) or statelessly (modern).
type fanout struct {
	era    string
	claims sessionClaims // legacy: the federated session
	caps   string        // digest of the client capabilities, for last good pages
	// modern: the revision, the client's params._meta, and how each member
	// is reached, by name.
	version string
	meta    json.RawMessage
	members map[string]memberEra
}

// memberEra is how a modern request reaches one member.
type memberEra struct {
	served     []string // the revisions the member's route serves
	bridged    bool     // legacy-only, bridged by the gateway
	legacyOnly bool     // legacy-only and not bridged: not reached
}

func legacyFan(claims sessionClaims) *fanout {
	return &fanout{era: eraLegacy, claims: claims, caps: claims.Caps}
}

// reach tells whether member name takes part in this request; reason is
// set for a member the request's era cannot reach at all.
func (fo *fanout) reach(name string) (in bool, reason string) {
	if fo.era == eraLegacy {
		_, in = fo.claims.Members[name]
		return in, ""
	}
	me, ok := fo.members[name]
	if !ok || me.legacyOnly {
		return false, reasonLegacyOnly
	}
	return true, ""
}

// forward is the forward of a request to member m, as the member's own
// route would see it, with the federated route's name for the policy.
func (fo *fanout) forward(f *federation, m *route, p *Principal, st *requestState) *forward {
	if fo.era == eraLegacy {
		return &forward{requestState: st, route: m, principal: p, era: eraLegacy, federation: f.cfg.Name,
			upstreamSession: fo.claims.Members[m.upstream.Name], caps: fo.claims.Caps}
	}
	me := fo.members[m.upstream.Name]
	return &forward{requestState: st, route: m, principal: p, era: eraModern, federation: f.cfg.Name,
		servedVersions: me.served, bridging: me.bridged}
}

// modern serves one modern-era request on a federated route.
func (fr *fedRequest) modern(w http.ResponseWriter, fwd *forward) error {
	s, r, st := fr.s, fr.r, fr.st
	req := st.msg.Request()
	if err := s.prepareModern(r, fwd, st.msg); err != nil {
		return err
	}
	if !req.IsCall() {
		// A modern notification has no session to belong to and no member
		// awaits it.
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
	var meta json.RawMessage
	if p := mcpwire.ParamsOf(req); p != nil {
		meta = json.RawMessage(p.Meta)
	}
	fr.fo = &fanout{era: eraModern, version: st.version, meta: meta, caps: "modern\x00" + modernCapabilityDigest(mcpwire.ParamsOf(req)),
		members: fr.memberEras(st.version)}
	if served, ok := fr.fo.legacyRoute(); ok {
		// No member is reached in this era: the route is a legacy route,
		// answered as a single one is (modernVersion), not as a failure.
		return unsupportedVersion(st.version, served)
	}
	switch {
	case req.Method == "server/discover":
		return fr.discover(w, req)
	case req.Method == "subscriptions/listen":
		return fr.listen(w, req) // fedlisten.go
	case listShapes[req.Method].items != "":
		return fr.list(w, req)
	}
	return fr.routed(w, req)
}

// legacyRoute reports whether no member of the route is reached in this
// request's era (each speaks only the legacy era and is not bridged), and
// the revisions the members serve, newest first: what a single legacy
// route's -32022 lists.
func (fo *fanout) legacyRoute() ([]string, bool) {
	for _, me := range fo.members {
		if !me.legacyOnly {
			return nil, false
		}
	}
	served := slices.DeleteFunc(gatewayVersions(), func(v string) bool {
		for _, me := range fo.members {
			if slices.Contains(me.served, v) {
				return false
			}
		}
		return true
	})
	return served, len(fo.members) > 0
}

// memberEras learns, in parallel, how each member is reached at version.
func (fr *fedRequest) memberEras(version string) map[string]memberEra {
	f := fr.f
	eras := make([]memberEra, len(f.members))
	var wg sync.WaitGroup
	for i, m := range f.members {
		wg.Go(func() {
			served, bridged := bridgeVersions(m, fr.s.routeVersions(fr.r, m))
			eras[i] = memberEra{served: served, bridged: bridged, legacyOnly: !slices.Contains(served, version)}
		})
	}
	wg.Wait()
	out := make(map[string]memberEra, len(eras))
	for i, m := range f.members {
		out[m.upstream.Name] = eras[i]
	}
	return out
}

// modernCall sends the gateway's own modern request (a list page,
// server/discover) to member m and returns its result: directly with the
// client's _meta, or on the member's bridged legacy session without it.
func (fr *fedRequest) modernCall(ctx context.Context, m *route, method string, params map[string]any) (json.RawMessage, error) {
	p := fr.p
	me := fr.fo.members[m.upstream.Name]
	if me.bridged {
		sess, err := fr.bridged(ctx, m)
		if err != nil {
			return nil, err
		}
		defer m.bridge.release(sess)
		body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": fedRequestID, "method": method, "params": params})
		if err != nil {
			return nil, err
		}
		resp, raw, err := askMember(ctx, m, upstreamRequest{body: body, session: sess.id, version: sess.version, as: m.identity(p)})
		if err != nil {
			return nil, err
		}
		result, err := memberResult(resp, raw)
		if errors.Is(err, errMemberSessionEnded) {
			// The next request opens a new bridged session; this one is
			// the member's failure, not the client's session's.
			m.bridge.drop(p.ID, sess)
			err = fmt.Errorf("bridged session ended: %v", err)
		}
		return result, err
	}
	if len(fr.fo.meta) > 0 {
		params["_meta"] = fr.fo.meta
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": fedRequestID, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	resp, raw, err := askMember(ctx, m, upstreamRequest{body: body, version: fr.fo.version, as: m.identity(p), header: http.Header{"Mcp-Method": {method}}})
	if err != nil {
		return nil, err
	}
	return memberResult(resp, raw)
}

// bridged is the principal's bridged legacy session with member m, opened
// if there is none; release it when done.
func (fr *fedRequest) bridged(ctx context.Context, m *route) (*bridgeSession, error) {
	fwd := &forward{requestState: fr.st, route: m, principal: fr.p, servedVersions: fr.fo.members[m.upstream.Name].served}
	return m.bridge.get(fr.p.ID, func() (*bridgeSession, error) { return fr.s.openBridge(ctx, fwd) })
}

// discoverResult is what the gateway reads of a member's server/discover.
type discoverResult struct {
	Capabilities map[string]json.RawMessage `json:"capabilities"`
	Instructions string                     `json:"instructions"`
}

// discover answers server/discover for the federated route from
// the members the policy lets the principal reach, asked in parallel.
func (fr *fedRequest) discover(w http.ResponseWriter, req *jsonrpc.Request) error {
	s, r, f, fo := fr.s, fr.r, fr.f, fr.fo
	type part struct {
		result discoverResult
		denied bool
		err    error
	}
	parts := make([]part, len(f.members))
	var wg sync.WaitGroup
	for i, m := range f.members {
		if in, _ := fo.reach(m.upstream.Name); !in {
			continue
		}
		if _, ok := fr.allowed(fr.input(m, req)); !ok {
			parts[i].denied = true
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(upstream.WithRetry(r.Context(), upstream.RetrySafe), f.cfg.MemberTimeout)
			defer cancel()
			if fo.members[m.upstream.Name].bridged {
				sess, err := fr.bridged(ctx, m)
				if err != nil {
					parts[i].err = err
					return
				}
				m.bridge.release(sess) // only its initialize result is read
				caps, _ := json.Marshal(sess.capabilities)
				parts[i].err = json.Unmarshal(caps, &parts[i].result.Capabilities)
				parts[i].result.Instructions = sess.instructions
				return
			}
			result, err := fr.modernCall(ctx, m, "server/discover", map[string]any{})
			if err == nil {
				err = json.Unmarshal(result, &parts[i].result)
			}
			parts[i].err = err
		})
	}
	wg.Wait()
	var ok, listened []initResult
	note := partialNote{}
	versions := slices.Clone(modernVersions)
	for i, pt := range parts {
		name := f.members[i].upstream.Name
		in, reason := fo.reach(name)
		switch {
		case !in:
			note.Missing = append(note.Missing, name)
			if note.Reasons == nil {
				note.Reasons = map[string]string{}
			}
			note.Reasons[name] = reason
		case pt.denied:
		case pt.err != nil:
			note.Missing = append(note.Missing, name)
			loggerOf(r.Context(), s.log).Warn("federated server/discover: member left out", "route", f.cfg.Path, "member", name, "error", pt.err)
		default:
			ok = append(ok, initResult{Capabilities: pt.result.Capabilities, Instructions: pt.result.Instructions})
			if !fo.members[name].bridged {
				listened = append(listened, ok[len(ok)-1]) // a bridge has no listen
			}
			served := fo.members[name].served
			versions = slices.DeleteFunc(versions, func(v string) bool { return !slices.Contains(served, v) })
		}
	}
	if len(ok) == 0 {
		if len(note.Missing) == 0 {
			return newError(http.StatusOK, CodePolicyDenied, "request denied by policy", nil)
		}
		return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "no member of the federated route answered server/discover", nil)
	}
	for _, v := range slices.Backward(supportedVersions) {
		versions = append(versions, v) // the route serves the legacy era itself
	}
	caps, instructions := mergeCapabilities(ok, "tools", "prompts", "resources", "completions")
	skillsCapability(caps, ok)
	streamCapabilities(caps, listened) // subscriptions/listen carries them (fedlisten.go)
	meta := map[string]any{modernMetaPrefix + "serverInfo": map[string]string{"name": "ctxgate federation " + f.cfg.Name, "version": "1"}}
	if len(note.Missing) > 0 {
		meta[partialMetaKey] = note
	}
	result := map[string]any{"resultType": "complete", "supportedVersions": versions, "capabilities": caps, "_meta": meta}
	if instructions != "" {
		result["instructions"] = instructions
	}
	// DiscoverResult is cacheable (2026-07-28 schema: ttlMs and cacheScope
	// required); the union is the gateway's answer, not kept: 0, private.
	result["ttlMs"], result["cacheScope"] = 0, "private"
	raw, err := json.Marshal(result)
	if err != nil {
		return err
	}
	return s.answer(w, req.ID, raw)
}
