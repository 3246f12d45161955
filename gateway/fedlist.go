package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// maxLearnPages bounds the pages of one member's list the gateway reads to
// learn which member owns a name (prefix modes collision and never).
const maxLearnPages = 50

// list answers a list method with the merge of the members'
// lists: the first page of each, or the pages a gateway cursor names.
func (fr *fedRequest) list(w http.ResponseWriter, req *jsonrpc.Request) error {
	s, r, f, p := fr.s, fr.r, fr.f, fr.p
	var cursor string
	if kept := mcpwire.ParamsOf(req); kept != nil {
		cursor = kept.Cursor
	}
	var todo []memberCursor
	if cursor != "" {
		c, err := openCursor(s.sessions, cursor, f.cfg.Path, p.ID, req.Method)
		if err != nil {
			return newError(http.StatusOK, jsonrpc.CodeInvalidParams, "invalid cursor", err)
		}
		todo = c.Pending
	} else {
		// Members left out of the session are missing from every first
		// page, so the client knows the list is not whole.
		for _, m := range f.members {
			todo = append(todo, memberCursor{Member: m.upstream.Name})
		}
	}
	pages := fr.pages(req, todo)
	for _, pg := range pages {
		if pg.ended {
			return memberSessionEnded(errMemberUnavailable{member: pg.member, err: errMemberSessionEnded})
		}
	}
	shape := listShapes[req.Method]
	merged, dropped, err := mergePages(f.names, shape, pages)
	if err != nil {
		return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "a member's list could not be read", err)
	}
	if len(dropped) > 0 {
		loggerOf(r.Context(), s.log).Warn("federated list: names offered by more than one member served from the first only", "route", f.cfg.Path, "dropped", dropped)
	}
	for _, m := range merged.partial.Missing {
		f.partial.WithLabelValues(f.cfg.Name, m, "missing").Inc()
	}
	for m := range merged.partial.Stale {
		f.partial.WithLabelValues(f.cfg.Name, m, "stale").Inc()
	}
	next := ""
	if len(merged.pending) > 0 {
		if next, err = sealCursor(s.sessions, fedCursor{Route: f.cfg.Path, Principal: p.ID, Method: req.Method, Pending: merged.pending}); err != nil {
			return err
		}
	}
	result, err := mergedResult(shape, merged, next)
	if err != nil {
		return err
	}
	if fr.fo.era == eraModern {
		result = withModernAttributes(result, pages)
	}
	return s.answer(w, req.ID, result)
}

// pages asks every member in todo for its page in parallel. A member
// the policy does not let the principal list is left out silently; one
// that is not in the session or fails is filled from its last good page,
// else marked missing (result nil).
func (fr *fedRequest) pages(req *jsonrpc.Request, todo []memberCursor) []memberPage {
	ctx := fr.r.Context()
	pages := make([]memberPage, len(todo))
	denied := make([]bool, len(todo))
	var wg sync.WaitGroup
	for i, mc := range todo {
		m := fr.f.member(mc.Member)
		if m == nil {
			denied[i] = true
			continue
		}
		in := fr.input(m, req)
		in.Params = map[string]any{}
		d, ok := fr.allowed(in)
		if !ok {
			denied[i] = true
			continue
		}
		wg.Go(func() {
			pages[i] = fr.page(ctx, m, req.Method, mc.Cursor)
			pages[i].result = fr.s.filterMemberList(ctx, in, d, pages[i].result)
		})
	}
	wg.Wait()
	var out []memberPage
	for i := range pages {
		if !denied[i] {
			out = append(out, pages[i])
		}
	}
	return out
}

// page fetches one page of a member's list within the member
// timeout, remembering it as the member's last good page; on failure it is
// the last good page (stale) while it is younger than member_stale_for, or
// nothing (missing, with the reason when a page was too old). A member the
// request's era cannot reach at all (a legacy-only member of a modern
// request) is left out with the reason, never filled in.
func (fr *fedRequest) page(ctx context.Context, m *route, method, cursor string) memberPage {
	s, f := fr.s, fr.f
	name := m.upstream.Name
	page := memberPage{member: name}
	key := lastGoodKey(m, fr.p, fr.fo.caps, method, cursor)
	in, reason := fr.fo.reach(name)
	if reason != "" {
		page.reason = reason
		return page
	}
	var err error = errMemberUnavailable{member: name}
	if in {
		var result json.RawMessage
		if result, err = fr.fetchList(ctx, m, method, cursor); err == nil {
			if method == "tools/list" {
				// Read as a single upstream's page is (toolpage.go): only
				// unambiguous items are learned and passed on.
				tp, err := readToolPage(result)
				if err != nil {
					loggerOf(ctx, s.log).Warn("federated list: member part withheld", "member", name, "error", err)
					return page
				}
				s.catalog.learnTools(name, tp.items)
				kept := tp.items
				if set := s.pins.set(name); set != nil && tp.prefix != nil {
					// Screened by the member's pins as on its own route: a
					// quarantined tool is not offered here either.
					out, err := set.screen(ctx, tp.items)
					if err != nil {
						loggerOf(ctx, s.log).Warn("federated list: member part withheld", "member", name, "error", err)
						return memberPage{member: name}
					}
					if len(out.hidden) > 0 {
						loggerOf(ctx, s.log).Warn("tools quarantined: definition changed since pinned (or not pinned); approve with POST /admin/pins/approve", "upstream", name, "tools", out.hidden)
					}
					kept = out.kept
				}
				if tp.prefix != nil {
					result = tp.encode(kept)
				}
			}
			if method == "skills/list" {
				// Screened by the member's pins (skills.go).
				if result, err = s.screenSkillPage(ctx, name, result); err != nil {
					loggerOf(ctx, s.log).Warn("federated list: member part withheld", "member", name, "error", err)
					return memberPage{member: name}
				}
			}
			f.lastGood.Store(key, lastGood{result: result, at: s.now()})
			page.result = result
			return page
		}
		page.ended = errors.Is(err, errMemberSessionEnded)
	}
	if lg, ok := f.lastGood.Load(key); ok {
		age := s.now().Sub(lg.(lastGood).at)
		if age <= f.cfg.MemberStaleFor {
			page.result, page.stale, page.ageMs = lg.(lastGood).result, true, age.Milliseconds()
		} else {
			// Too old to stand in for the member: its items would be
			// offered while every call to it fails.
			page.reason = reasonStaleExpired
		}
	}
	loggerOf(ctx, s.log).Warn("federated list: member part not fresh", "member", name, "rpc_method", method, "stale", page.stale, "expired", page.reason != "", "error", err)
	return page
}

// reasonStaleExpired is why a failing member's last good page was not
// served: it is older than the route's member_stale_for.
const reasonStaleExpired = "last good page older than member_stale_for"

// lastGoodKey names a member's page for its last good copy: raw, before
// the policy, so shared by principals unless the member is told who asks.
func lastGoodKey(m *route, p *Principal, caps, method, cursor string) string {
	who := ""
	if m.identityHeaders {
		who = p.ID
	}
	return m.upstream.Name + "\x00" + method + "\x00" + cursor + "\x00" + caps + "\x00" + who
}

// fetchList asks a member for one page of a list.
func (fr *fedRequest) fetchList(ctx context.Context, m *route, method, cursor string) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(upstream.WithRetry(ctx, upstream.RetrySafe), fr.f.cfg.MemberTimeout)
	defer cancel()
	params := map[string]any{}
	if cursor != "" {
		params["cursor"] = cursor
	}
	if fr.fo.era == eraModern {
		return fr.modernCall(ctx, m, method, params)
	}
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": fedRequestID, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	claims := fr.fo.claims
	resp, raw, err := askMember(ctx, m, upstreamRequest{body: body, session: claims.Members[m.upstream.Name], version: claims.Version, as: m.identity(fr.p)})
	if err != nil {
		return nil, err
	}
	return memberResult(resp, raw)
}

// filterMemberList applies the policy to one member's page, as
// filterResponse does for a single upstream. A page the policy cannot
// filter is treated as missing, never passed on unfiltered.
func (s *Server) filterMemberList(ctx context.Context, in *policy.Input, d policy.Decision, result json.RawMessage) json.RawMessage {
	if s.policy == nil || result == nil {
		return result
	}
	out, _, err := s.policy.FilterList(ctx, in, result)
	if err == nil && len(d.Redact) > 0 {
		out, err = policy.Redact(out, d.Redact)
	}
	if err != nil {
		loggerOf(ctx, s.log).Error("policy could not filter a member's list; leaving it out", "member", in.Upstream, "error", err)
		return nil
	}
	return out
}

// learnNames reads every page of the members' lists of kind, to learn who
// owns which name; for a resource URI, templates too.
func (fr *fedRequest) learnNames(ctx context.Context, kind string) {
	// A skill's files are resources: skills/list names them too.
	methods := map[string][]string{kindTool: {"tools/list"}, kindPrompt: {"prompts/list"}, kindResource: {"resources/list", "resources/templates/list", "skills/list"}, kindSkill: {"skills/list"}}[kind]
	var wg sync.WaitGroup
	for _, m := range fr.f.members {
		if in, _ := fr.fo.reach(m.upstream.Name); !in {
			continue
		}
		for _, method := range methods {
			wg.Go(func() { fr.learnMember(ctx, m, method) })
		}
	}
	wg.Wait()
}

// learnMember reads every page of member m's list, for its names.
func (fr *fedRequest) learnMember(ctx context.Context, m *route, method string) {
	shape := listShapes[method]
	cursor := ""
	for range maxLearnPages {
		result, err := fr.fetchList(ctx, m, method, cursor)
		if err != nil {
			return
		}
		page, _, err := mergePages(fr.f.names, shape, []memberPage{{member: m.upstream.Name, result: result}})
		if err != nil || len(page.pending) == 0 {
			return
		}
		cursor = page.pending[0].Cursor
	}
}
