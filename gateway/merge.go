package gateway

import (
	"encoding/json"
	"fmt"
)

// listShape is where a list method keeps its items and how they are named.
type listShape struct {
	items string // the result member holding the items
	field string // the item member that is named (and prefixed)
	kind  string
}

var listShapes = map[string]listShape{
	"tools/list":               {"tools", "name", kindTool},
	"prompts/list":             {"prompts", "name", kindPrompt},
	"resources/list":           {"resources", "uri", kindResource},
	"resources/templates/list": {"resourceTemplates", "uriTemplate", kindTemplate},
	"skills/list":              {"skills", "uri", kindSkill}, // SEP-2640 (skills.go)
}

// partialMetaKey marks a merged result that lacks a member's part
// (missing) or holds a member's last good part instead of a fresh one
// (stale).
const partialMetaKey = "io.ctxgate/partial"

// memberPage is one member's part of a merged list page.
type memberPage struct {
	member string
	// result is the member's list result, already filtered by the policy;
	// nil when the member's part is missing.
	result json.RawMessage
	// stale marks a last good result served because the member failed;
	// ageMs is its age.
	stale bool
	ageMs int64
	// reason says why a member is missing when it is not plain failure:
	// not asked (legacy only), or its last good page too old to serve.
	reason string
	// ended marks a member that ended its session: the client must
	// initialize again to get a new one.
	ended bool
}

// partialNote is the _meta value of a partial merged list.
type partialNote struct {
	Missing []string         `json:"missing,omitempty"`
	Stale   map[string]int64 `json:"staleAgeMs,omitempty"`
	// Reasons says, for a missing member that was not asked or whose last
	// good page expired, why.
	Reasons map[string]string `json:"reasons,omitempty"`
}

// mergedPage is the merge of member pages, in member order.
type mergedPage struct {
	items   []json.RawMessage
	pending []memberCursor
	partial partialNote
}

// decodedPage is a member page's items and its own next cursor.
type decodedPage struct {
	items []map[string]json.RawMessage
	names []string
	next  string
}

func decodePage(shape listShape, result json.RawMessage) (decodedPage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(result, &all); err != nil {
		return decodedPage{}, err
	}
	var d decodedPage
	if raw, ok := all[shape.items]; ok {
		if err := json.Unmarshal(raw, &d.items); err != nil {
			return decodedPage{}, fmt.Errorf("%s: %w", shape.items, err)
		}
	}
	if raw, ok := all["nextCursor"]; ok {
		_ = json.Unmarshal(raw, &d.next)
	}
	for _, it := range d.items {
		var name string
		_ = json.Unmarshal(it[shape.field], &name)
		d.names = append(d.names, name)
	}
	return d, nil
}

// mergePages names every item for the client and concatenates them in the
// pages' order (route order), each member's items in its own order. An
// item whose client name an earlier item already has is left out (prefix
// mode never); dropped lists those names.
func mergePages(n *namer, shape listShape, pages []memberPage) (mergedPage, []string, error) {
	var out mergedPage
	parts := make([]decodedPage, len(pages))
	// First learn every member's names, so collision mode sees the
	// collisions within this page before naming anything.
	for i, p := range pages {
		if p.result == nil {
			out.partial.Missing = append(out.partial.Missing, p.member)
			if p.reason != "" {
				if out.partial.Reasons == nil {
					out.partial.Reasons = map[string]string{}
				}
				out.partial.Reasons[p.member] = p.reason
			}
			continue
		}
		d, err := decodePage(shape, p.result)
		if err != nil {
			return mergedPage{}, nil, fmt.Errorf("member %s: %w", p.member, err)
		}
		n.learn(shape.kind, p.member, d.names)
		if shape.kind == kindSkill {
			// A skill's files are resources of the member too.
			for _, it := range d.items {
				n.learn(kindResource, p.member, skillFileURIs(it))
			}
		}
		parts[i] = d
		if p.stale {
			if out.partial.Stale == nil {
				out.partial.Stale = map[string]int64{}
			}
			out.partial.Stale[p.member] = p.ageMs
		}
	}
	seen := map[string]bool{}
	var dropped []string
	for i, p := range pages {
		for j, it := range parts[i].items {
			name := n.outward(shape.kind, p.member, parts[i].names[j])
			if seen[name] {
				dropped = append(dropped, p.member+": "+name)
				continue
			}
			seen[name] = true
			it[shape.field], _ = json.Marshal(name)
			if shape.kind == kindSkill {
				renameSkillFiles(n, p.member, it, name != parts[i].names[j])
			}
			raw, err := json.Marshal(it)
			if err != nil {
				return mergedPage{}, nil, err
			}
			out.items = append(out.items, raw)
		}
		if parts[i].next != "" {
			out.pending = append(out.pending, memberCursor{Member: p.member, Cursor: parts[i].next})
		}
	}
	return out, dropped, nil
}

// mergedResult encodes a merged page as the list result the client gets.
func mergedResult(shape listShape, page mergedPage, nextCursor string) (json.RawMessage, error) {
	result := map[string]any{shape.items: page.items}
	if page.items == nil {
		result[shape.items] = []json.RawMessage{}
	}
	if nextCursor != "" {
		result["nextCursor"] = nextCursor
	}
	if len(page.partial.Missing) > 0 || len(page.partial.Stale) > 0 {
		result["_meta"] = map[string]any{partialMetaKey: page.partial}
	}
	return json.Marshal(result)
}

// withModernAttributes adds to a merged list result what a 2026-07-28
// result carries: resultType "complete", and the list-caching attributes
// (SEP-2549) as the merge allows: ttlMs the shortest of the members'
// fresh parts (0 when a part is stale, missing or has none), cacheScope
// "private", since the gateway filtered the merge for this principal.
func withModernAttributes(result json.RawMessage, pages []memberPage) json.RawMessage {
	var all map[string]json.RawMessage
	if json.Unmarshal(result, &all) != nil {
		return result
	}
	ttl := int64(-1)
	for _, p := range pages {
		var part struct {
			TTL *int64 `json:"ttlMs"`
		}
		if p.result == nil || p.stale || json.Unmarshal(p.result, &part) != nil || part.TTL == nil || *part.TTL < 0 {
			ttl = 0
			continue
		}
		if ttl < 0 || *part.TTL < ttl {
			ttl = *part.TTL
		}
	}
	all["resultType"], all["cacheScope"] = json.RawMessage(`"complete"`), json.RawMessage(`"private"`)
	all["ttlMs"], _ = json.Marshal(max(ttl, 0))
	out, err := json.Marshal(all)
	if err != nil {
		return result
	}
	return out
}
