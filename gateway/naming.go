package gateway

import (
	"slices"
	"strings"
	"sync"

	"github.com/ctxgate/ctxgate/config"
)

// Naming on a federated route. Tool and prompt names become
// <member><separator><name> (git__search); resource URIs and URI templates
// become <member>+<uri> (docs+file:///guide.md), which keeps them URIs (a
// scheme may hold "+", not "_"). Whether a name is prefixed is the route's
// prefix mode:
//
//   - always: every name and URI;
//   - collision: only a name (URI, template) that more than one member
//     offers, as far as the gateway has seen the members' lists; the others
//     keep their own names;
//   - never: none; a name two members share is a start-up error, and one
//     that appears later is served from the first member only.
//
// Un-naming (a call, get or read on its way to the member) accepts the
// prefixed form in every mode but never, and the plain form where the
// gateway knows the one member that offers the name.

// Item kinds, as named and un-named.
const (
	kindTool     = "tool"
	kindPrompt   = "prompt"
	kindResource = "resource"
	kindTemplate = "template"
)

// namedAs is the kind a kind is named as: a skill (SEP-2640) is named by
// its SKILL.md's URI, so as the resource it is, and resources/read of its
// files finds the same member skills/get does.
func namedAs(kind string) string {
	if kind == kindSkill {
		return kindResource
	}
	return kind
}

// uriSeparator joins a member name and a URI.
const uriSeparator = "+"

// namer names a federated route's items. It is safe for concurrent use.
type namer struct {
	mode    string
	sep     string
	members []string // in route order
	mu      sync.RWMutex
	// owners are the members seen offering each name, by kind, in route
	// order.
	owners map[string]map[string][]string
}

func newNamer(mode, sep string, members []string) *namer {
	return &namer{mode: mode, sep: sep, members: members, owners: map[string]map[string][]string{}}
}

func (n *namer) separator(kind string) string {
	if kind = namedAs(kind); kind == kindResource || kind == kindTemplate {
		return uriSeparator
	}
	return n.sep
}

// learn records that member offers names of kind.
func (n *namer) learn(kind, member string, names []string) {
	kind = namedAs(kind)
	n.mu.Lock()
	defer n.mu.Unlock()
	byName := n.owners[kind]
	if byName == nil {
		byName = map[string][]string{}
		n.owners[kind] = byName
	}
	for _, name := range names {
		if slices.Contains(byName[name], member) {
			continue
		}
		owners := append(byName[name], member)
		// Route order, so "the first member" is the same on every replica.
		slices.SortFunc(owners, func(a, b string) int { return slices.Index(n.members, a) - slices.Index(n.members, b) })
		byName[name] = owners
	}
}

func (n *namer) ownersOf(kind, name string) []string {
	kind = namedAs(kind)
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.owners[kind][name]
}

// outward is the name the client sees for member's name.
func (n *namer) outward(kind, member, name string) string {
	switch n.mode {
	case config.PrefixNever:
		return name
	case config.PrefixCollision:
		if len(n.ownersOf(kind, name)) < 2 {
			return name
		}
	}
	return member + n.separator(kind) + name
}

// inward finds the member a client's name belongs to and the member's own
// name for it. ok is false when no member is known to own it.
func (n *namer) inward(kind, name string) (member, own string, ok bool) {
	kind = namedAs(kind)
	if n.mode != config.PrefixAlways {
		owners := n.ownersOf(kind, name)
		if kind == kindResource && len(owners) == 0 {
			owners = n.templateOwners(name)
		}
		if kind == kindResource && len(owners) == 0 {
			owners = n.directoryOwners(name)
		}
		if len(owners) == 1 || n.mode == config.PrefixNever && len(owners) > 0 {
			return owners[0], name, true
		}
		if n.mode == config.PrefixNever {
			return "", "", false
		}
	}
	return n.splitPrefix(kind, name)
}

// splitPrefix takes a prefixed name apart; the longest matching member
// wins, so members "a" and "a__b" are told apart.
func (n *namer) splitPrefix(kind, name string) (member, own string, ok bool) {
	sep := n.separator(kind)
	for _, m := range n.members {
		if strings.HasPrefix(name, m+sep) && len(m) > len(member) && len(name) > len(m+sep) {
			member, own, ok = m, name[len(m+sep):], true
		}
	}
	return member, own, ok
}

// templateOwners are the members with a URI template whose fixed start
// (before the first variable) begins uri.
func (n *namer) templateOwners(uri string) []string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []string
	for tmpl, owners := range n.owners[kindTemplate] {
		fixed, _, _ := strings.Cut(tmpl, "{")
		if fixed != "" && strings.HasPrefix(uri, fixed) {
			for _, o := range owners {
				if !slices.Contains(out, o) {
					out = append(out, o)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(n.members, a) - slices.Index(n.members, b) })
	return out
}

// directoryPrefixed reports whether the client sees the directory uri
// (and so its children) prefixed: in mode always, and in mode collision
// when more than one member offers it or resources inside it.
func (n *namer) directoryPrefixed(uri string) bool {
	switch n.mode {
	case config.PrefixAlways:
		return true
	case config.PrefixCollision:
		owners := slices.Clone(n.ownersOf(kindResource, uri))
		for _, o := range n.directoryOwners(uri) {
			if !slices.Contains(owners, o) {
				owners = append(owners, o)
			}
		}
		return len(owners) > 1
	}
	return false
}

// directoryOwners are the members with a resource inside the directory uri
// (a SEP-2640 skill directory, read with resources/directory/read).
func (n *namer) directoryOwners(uri string) []string {
	dir := strings.TrimSuffix(uri, "/") + "/"
	n.mu.RLock()
	defer n.mu.RUnlock()
	var out []string
	for res, owners := range n.owners[kindResource] {
		if strings.HasPrefix(res, dir) {
			for _, o := range owners {
				if !slices.Contains(out, o) {
					out = append(out, o)
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b string) int { return slices.Index(n.members, a) - slices.Index(n.members, b) })
	return out
}
