package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/policy"
)

// The Skills extension (SEP-2640, io.modelcontextprotocol/skills). The wire
// shape, as the MCP conformance suite checks it (package
// @modelcontextprotocol/conformance 0.2.0-alpha.12, scenarios
// sep-2640-skills-enumeration and sep-2640-skills-directory, citing
// https://modelcontextprotocol.io/seps/2640-skills-extension#specification):
//
//   - the server declares capabilities.extensions["io.modelcontextprotocol/skills"]:
//     {} or {"directoryRead": true}, and the resources capability (skill
//     files are ordinary resources, read with resources/read);
//   - skills/list {cursor?} -> {skills: [entry], nextCursor?}, paginated as
//     the base lists are, an entry never split across pages;
//   - skills/get {uri} -> {skill: entry}, no nextCursor; an unknown URI is
//     -32602;
//   - from protocol 2026-07-28 both results carry ttlMs and cacheScope
//     (SEP-2549), as the other cacheable results do;
//   - an entry is {uri: "skill://<skill-path>/SKILL.md", frontmatter: {name,
//     description, ...} (SKILL.md's YAML frontmatter as JSON), resources:
//     [{uri, digest: "sha256:<64 lowercase hex>", size}] | "dynamic"}; the
//     final <skill-path> segment equals frontmatter.name; resources lists
//     every file of the skill, SKILL.md included;
//   - with directoryRead, resources/directory/read {uri, cursor?} ->
//     {resources: [{uri, mimeType, ...}], nextCursor?}: a directory's direct
//     children, a subdirectory with mimeType inode/directory; a URI that is
//     no directory is -32602.
//
// The gateway treats skills as a list family: both methods are relayed
// (params checked by mcpwire), skills/list items are filtered by the
// policy (input.skill) and cached like the other lists, skills/get is
// decided on its URI, and with pin_tools an entry's whole definition (its
// frontmatter and every file's digest) is pinned: a changed skill is left
// out of skills/list and refused on skills/get (-31030). On a federated
// route the entries' URIs are named as resource URIs (naming.go), so that
// a skill's resources/read goes to the member that serves it.
// resources/directory/read (directoryRead) is relayed as a resource
// request decided on the directory's URI, its children filtered as
// resources/list items and, on a federated route, prefixed exactly when
// the directory is.

// skillsExtension is the Skills extension's identifier.
const skillsExtension = "io.modelcontextprotocol/skills"

// kindSkill names skills/get's target; a skill is named as a resource on a
// federated route (its URI is its SKILL.md's).
const kindSkill = "skill"

// skillEntryMembers are the members of an entry the gateway reads or
// renames: a case variant of one makes the entry ambiguous.
var skillEntryMembers = []string{"uri", "frontmatter", "resources"}

// skillItem is one skill entry of a skills/list or skills/get result.
type skillItem struct {
	URI string
	raw jsontext.Value
}

// readSkillItem reads an entry with exact member names. ok is false for an
// entry that cannot be read unambiguously (not an object, no string uri,
// a case variant of a member the gateway reads).
func readSkillItem(raw jsontext.Value) (skillItem, bool) {
	ms, err := members(raw)
	if err != nil {
		return skillItem{}, false
	}
	item := skillItem{raw: raw}
	for _, m := range ms {
		if caseVariant(m.name, skillEntryMembers) != "" {
			return skillItem{}, false
		}
		if m.name == "uri" && (m.value.Kind() != '"' || json.Unmarshal(m.value, &item.URI) != nil) {
			return skillItem{}, false
		}
	}
	return item, item.URI != ""
}

// definition is the entry's pin: the digest of the whole entry, canonical
// (RFC 8785), so member order and spacing are not a change while any file's
// digest, the frontmatter or the file list is.
func (item skillItem) definition() (pinEntry, error) {
	canon := item.raw.Clone()
	if err := canon.Canonicalize(); err != nil {
		return pinEntry{}, err
	}
	sum := sha256.Sum256(canon)
	return pinEntry{Digest: pinDigestPrefix + hex.EncodeToString(sum[:]), Definition: json.RawMessage(canon)}, nil
}

// skillPage is a skills/list result taken apart: its top members, and the
// skills array's items.
type skillPage struct {
	top   []member
	at    int // index of "skills" in top; -1 when absent
	items []jsontext.Value
}

func readSkillPage(result []byte) (*skillPage, error) {
	top, err := members(result)
	if err != nil {
		return nil, fmt.Errorf("skills/list result: %w", err)
	}
	p := &skillPage{top: top, at: -1}
	for i, m := range top {
		if m.name != "skills" {
			continue
		}
		p.at = i
		if m.value.Kind() != '[' {
			return nil, errors.New("skills/list result: skills is not an array")
		}
		if p.items, err = arrayItems(m.value); err != nil {
			return nil, fmt.Errorf("skills/list result: %w", err)
		}
	}
	return p, nil
}

// encode is the result with exactly items in its skills array.
func (p *skillPage) encode(items []jsontext.Value) []byte {
	arr := []byte{'['}
	for i, it := range items {
		if i > 0 {
			arr = append(arr, ',')
		}
		arr = append(arr, it...)
	}
	top := append([]member(nil), p.top...)
	top[p.at].value = append(arr, ']')
	return encodeObject(top)
}

// arrayItems are the values of a JSON array.
func arrayItems(arr jsontext.Value) ([]jsontext.Value, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(arr))
	if _, err := dec.ReadToken(); err != nil {
		return nil, err
	}
	var out []jsontext.Value
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return nil, err
		}
		out = append(out, v.Clone())
	}
	return out, nil
}

// screenSkillPage reads a skills/list page of upstreamName and keeps the
// entries that can be read unambiguously and, when the upstream pins, are
// not quarantined. A page it cannot read is an error: withheld, never
// relayed unscreened.
func (s *Server) screenSkillPage(ctx context.Context, upstreamName string, result []byte) ([]byte, error) {
	page, err := readSkillPage(result)
	if err != nil || page.at < 0 {
		return result, err
	}
	var items []skillItem
	var withheld, hidden []string
	for i, raw := range page.items {
		item, ok := readSkillItem(raw)
		if !ok {
			withheld = append(withheld, fmt.Sprintf("skills[%d]", i))
			continue
		}
		items = append(items, item)
	}
	quarantined, err := s.pins.set(upstreamName).screenSkills(ctx, items)
	if err != nil {
		return nil, err
	}
	var kept []jsontext.Value
	for i, item := range items {
		if quarantined[i] {
			hidden = append(hidden, item.URI)
			continue
		}
		kept = append(kept, item.raw)
	}
	log := loggerOf(ctx, s.log)
	if len(withheld) > 0 {
		log.Warn("skills withheld: the upstream's entry cannot be read unambiguously", "upstream", upstreamName, "items", withheld)
	}
	if len(hidden) > 0 {
		log.Warn("skills quarantined: definition changed since pinned (or not pinned); approve with POST /admin/pins/approve?skill=",
			"upstream", upstreamName, "skills", hidden)
	}
	if len(kept) == len(page.items) {
		return result, nil
	}
	return page.encode(kept), nil
}

// errSkillMismatch is a skills/get answer naming another skill than the
// one asked for, which the policy did not decide.
var errSkillMismatch = errors.New("skills/get result names another skill than the request")

// screenSkillResult screens a skills/get result: its entry must be the
// skill asked for (uri), readable, and not quarantined; a quarantined one
// is refused with -31030.
func (s *Server) screenSkillResult(ctx context.Context, upstreamName, uri string, result []byte) (*Error, error) {
	top, err := members(result)
	if err != nil {
		return nil, fmt.Errorf("skills/get result: %w", err)
	}
	for _, m := range top {
		if caseVariant(m.name, []string{"skill"}) != "" {
			return nil, fmt.Errorf("skills/get result: %s", caseVariant(m.name, []string{"skill"}))
		}
		if m.name != "skill" {
			continue
		}
		item, ok := readSkillItem(m.value)
		if !ok {
			return nil, errors.New("skills/get result: the skill entry cannot be read unambiguously")
		}
		if item.URI != uri {
			return nil, errSkillMismatch
		}
		quarantined, err := s.pins.set(upstreamName).screenSkills(ctx, []skillItem{item})
		if err != nil {
			return nil, err
		}
		if quarantined[0] {
			loggerOf(ctx, s.log).Warn("skill quarantined: definition changed since pinned (or not pinned); approve with POST /admin/pins/approve?skill=",
				"upstream", upstreamName, "skill", uri)
			return skillQuarantined(), nil
		}
	}
	return nil, nil
}

func skillQuarantined() *Error {
	return newError(http.StatusOK, CodeToolQuarantined, "skill quarantined: its definition is not the one an operator approved", nil)
}

// checkPinnedSkill refuses a skills/get of a skill whose last seen
// definition is quarantined, before anything is sent.
func (s *Server) checkPinnedSkill(fwd *forward, status string) error {
	set := s.pins.set(fwd.route.upstream.Name)
	if set == nil || !set.quarantined(status) {
		return nil
	}
	return skillQuarantined()
}

// screenSkills remembers each entry's definition, pins the new ones in
// mode record (one write of the pin file for the page), and reports which
// are quarantined. A nil set pins nothing.
func (p *pinSet) screenSkills(ctx context.Context, items []skillItem) ([]bool, error) {
	out := make([]bool, len(items))
	if p == nil {
		return out, nil
	}
	defs := make([]pinEntry, len(items))
	for i, item := range items {
		var err error
		if defs[i], err = item.definition(); err != nil {
			return nil, fmt.Errorf("pin skill %q: %w", item.URI, err)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	reloaded, err := p.reloadLocked()
	if err != nil {
		return nil, fmt.Errorf("reload pin file: %w", err)
	}
	p.initSkillsLocked()
	if reloaded && p.redis != nil {
		p.syncLocked(ctx)
	}
	// With redis, the first replica to see a skill records its pin
	// (pinshared.go), as for tools.
	fresh := map[string]pinEntry{}
	for i, item := range items {
		if _, ok := p.skillPins[item.URI]; !ok && p.mode == config.PinRecord && p.redis != nil {
			fresh[item.URI] = defs[i]
		}
	}
	recorded, recordErr := p.recordSharedIn(ctx, p.upstream+skillsHash, fresh)
	save := false
	for i, item := range items {
		p.skillSeen[item.URI] = defs[i]
		if _, ok := p.skillPins[item.URI]; !ok && p.mode == config.PinRecord {
			inForce := defs[i]
			if p.redis != nil {
				if recordErr != nil && p.redis.Deny() {
					out[i] = true // fail closed: not offered until Redis answers
					continue
				}
				if v, ok := recorded[item.URI]; recordErr == nil && ok {
					inForce = v
				}
			}
			p.skillPins[item.URI], save = inForce, true
		}
		out[i] = p.quarantined(pinStatus(p.skillPins, p.skillSeen, item.URI))
	}
	if save {
		if err := p.saveLocked(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// initSkillsLocked makes the skill maps of a set built without them.
func (p *pinSet) initSkillsLocked() {
	if p.skillPins == nil {
		p.skillPins = map[string]pinEntry{}
	}
	if p.skillSeen == nil {
		p.skillSeen = map[string]pinEntry{}
	}
}

// skillStatus is a skill's pin status; "" when the upstream does not pin.
func (p *pinSet) skillStatus(uri string) string {
	if p == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return pinStatus(p.skillPins, p.skillSeen, uri)
}

// approveSkill pins the definition last seen for a skill; with redis,
// stored there first, as approve does for a tool.
func (p *pinSet) approveSkill(ctx context.Context, uri string) (pinEntry, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.initSkillsLocked()
	seen, ok := p.skillSeen[uri]
	if !ok {
		return pinEntry{}, fmt.Errorf("skill %q has not been seen in a skills/list or skills/get result since the gateway started", uri)
	}
	if p.redis != nil {
		b, err := json.Marshal(seen)
		if err != nil {
			return pinEntry{}, err
		}
		if err := p.redis.SetPin(ctx, p.upstream+skillsHash, uri, b); err != nil {
			return pinEntry{}, fmt.Errorf("%w: %w", errApprovalNotShared, err)
		}
	}
	old, had := p.skillPins[uri]
	p.skillPins[uri] = seen
	if err := p.saveLocked(); err != nil {
		if had {
			p.skillPins[uri] = old
		} else {
			delete(p.skillPins, uri)
		}
		return pinEntry{}, err
	}
	return seen, nil
}

// skillsCapability adds the Skills extension to a federated route's
// capabilities when a member declares it: {}, with directoryRead only when
// every member declaring the extension declares it (a directory is read
// from the member that owns it, which must serve the method).
func skillsCapability(caps map[string]map[string]any, members []initResult) {
	declared, directoryRead := false, true
	for _, m := range members {
		var ext map[string]json.RawMessage
		if json.Unmarshal(m.Capabilities["extensions"], &ext) != nil {
			continue
		}
		raw, ok := ext[skillsExtension]
		if !ok {
			continue
		}
		declared = true
		var settings struct {
			DirectoryRead bool `json:"directoryRead"`
		}
		if json.Unmarshal(raw, &settings) != nil || !settings.DirectoryRead {
			directoryRead = false
		}
	}
	if !declared {
		return
	}
	settings := map[string]any{}
	if directoryRead {
		settings["directoryRead"] = true
	}
	caps["extensions"] = map[string]any{skillsExtension: settings}
}

// skillFileURIs are the URIs of an entry's resources array (none for
// "dynamic").
func skillFileURIs(item map[string]json.RawMessage) []string {
	var files []struct {
		URI string `json:"uri"`
	}
	if json.Unmarshal(item["resources"], &files) != nil {
		return nil
	}
	out := make([]string, 0, len(files))
	for _, f := range files {
		if f.URI != "" {
			out = append(out, f.URI)
		}
	}
	return out
}

// renameSkillFiles gives an entry's resources[].uri their federated names:
// prefixed with member exactly when the skill's own URI is (prefixed), so
// every file stays within the skill's directory as SEP-2640 requires,
// whatever other members offer. resources/read is routed by these names
// (the prefixed form always un-names; the plain one by the owners learned).
func renameSkillFiles(n *namer, member string, item map[string]json.RawMessage, prefixed bool) {
	if !prefixed {
		return
	}
	var files []map[string]json.RawMessage
	if json.Unmarshal(item["resources"], &files) != nil {
		return // "dynamic", or nothing to rename
	}
	for _, f := range files {
		var uri string
		if json.Unmarshal(f["uri"], &uri) == nil && uri != "" {
			f["uri"], _ = json.Marshal(member + n.separator(kindResource) + uri)
		}
	}
	item["resources"], _ = json.Marshal(files)
}

// renameSkillResult gives a member's skills/get result its federated
// names (the entry's uri and its files'), or a resources/directory/read
// result of the directory in.Resource (its children's).
func renameSkillResult(n *namer, member string, in *policy.Input, result json.RawMessage) (json.RawMessage, bool) {
	if in.Method == "resources/directory/read" && in.Resource != nil {
		return renameDirectory(n, member, in.Resource.URI, result)
	}
	var all map[string]json.RawMessage
	var entry map[string]json.RawMessage
	if json.Unmarshal(result, &all) != nil || json.Unmarshal(all["skill"], &entry) != nil || entry == nil {
		return nil, false
	}
	var uri string
	if json.Unmarshal(entry["uri"], &uri) != nil {
		return nil, false
	}
	n.learn(kindResource, member, append(skillFileURIs(entry), uri))
	outward := n.outward(kindSkill, member, uri)
	entry["uri"], _ = json.Marshal(outward)
	renameSkillFiles(n, member, entry, outward != uri)
	all["skill"], _ = json.Marshal(entry)
	out, err := json.Marshal(all)
	return out, err == nil
}

// filterDirectory filters a resources/directory/read result (SEP-2640
// directoryRead) as a resources/list page: its children are resources, and
// one the principal may not see is left out, as from a list.
func (s *Server) filterDirectory(ctx context.Context, in *policy.Input, result []byte) ([]byte, error) {
	if err := exactListMember(result, "resources"); err != nil {
		return nil, err
	}
	// The items are decided alone: the request's own resource (the
	// directory) is not part of an item's input.
	base := *in
	base.Resource = nil
	out, _, err := s.policy.FilterList(ctx, &base, result)
	return out, err
}

// renameDirectory names a directory's children: prefixed with member
// exactly when the directory itself is (directoryPrefixed), so they stay
// inside the directory the client named, as a skill's files do.
func renameDirectory(n *namer, member, dir string, result json.RawMessage) (json.RawMessage, bool) {
	if !n.directoryPrefixed(dir) {
		return result, true
	}
	var all map[string]json.RawMessage
	var children []map[string]json.RawMessage
	if json.Unmarshal(result, &all) != nil || json.Unmarshal(all["resources"], &children) != nil {
		return nil, false
	}
	for _, c := range children {
		var uri string
		if json.Unmarshal(c["uri"], &uri) == nil && uri != "" {
			c["uri"], _ = json.Marshal(member + n.separator(kindResource) + uri)
		}
	}
	all["resources"], _ = json.Marshal(children)
	out, err := json.Marshal(all)
	return out, err == nil
}
