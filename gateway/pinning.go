package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/shared"
)

// Tool pinning (rug-pull protection, upstreams[].pin_tools). An upstream
// can change what a tool says it does after a person has reviewed it: a
// harmless "add" grows a description telling the model to read ~/.ssh.
// The gateway keeps a digest of each tool's whole definition (the
// canonical tools/list item: name, title, description, schemas,
// annotations, icons, _meta, everything that reaches the model); a tool whose definition no longer matches its
// pin is quarantined: left out of tools/list and refused on tools/call
// (-31030), until an operator approves the new definition through the
// admin API or the pin file. The policy sees the status as input.tool.pin.

// CodeToolQuarantined refuses a call to a quarantined tool.
const CodeToolQuarantined = -31030

// Pin statuses, as the policy sees them (input.tool.pin).
const (
	PinPinned  = "pinned"  // the definition last seen matches the pin (or none was seen yet)
	PinChanged = "changed" // the definition last seen differs from the pin: quarantined
	PinNew     = "new"     // no pin; quarantined in mode file
)

// pinEntry is one tool's pin, as stored in the pin file.
type pinEntry struct {
	Digest     string          `json:"digest"`
	Definition json.RawMessage `json:"definition,omitempty"` // canonical JSON, for review
}

// pinFile is the pin file's content: tools by name, skills (SEP-2640,
// skills.go) by SKILL.md URI.
type pinFile struct {
	Tools  map[string]pinEntry `json:"tools"`
	Skills map[string]pinEntry `json:"skills,omitempty"`
}

// pinSet is one upstream's pins and what its tools/list last said.
type pinSet struct {
	mode, file string
	mu         sync.Mutex
	pins       map[string]pinEntry
	seen       map[string]pinEntry
	loaded     time.Time // the pin file's modification time when last read or written
	// skillPins and skillSeen are pins and seen for skills, by URI.
	skillPins map[string]pinEntry
	skillSeen map[string]pinEntry
	// redis holds the pins every replica shares (pinshared.go); nil: the
	// pins are this process's and its file's only.
	redis    *shared.Client
	upstream string
	log      *slog.Logger
}

// pinStore holds the pin sets of the upstreams that pin. A nil store (or
// an upstream without a set) pins nothing.
type pinStore struct{ sets map[string]*pinSet }

// newPinStore loads every pin file; a missing file is an error in mode
// file (nothing would be trusted), and empty pins in mode record.
func newPinStore(ups []config.Upstream) (*pinStore, error) {
	st := &pinStore{sets: map[string]*pinSet{}}
	for i, up := range ups {
		if up.PinTools == nil {
			continue
		}
		set := &pinSet{mode: up.PinTools.Mode, file: up.PinTools.File, pins: map[string]pinEntry{}, seen: map[string]pinEntry{},
			skillPins: map[string]pinEntry{}, skillSeen: map[string]pinEntry{}}
		if err := set.load(); err != nil {
			return nil, fmt.Errorf("upstreams[%d].pin_tools.file: %w", i, err)
		}
		st.sets[up.Name] = set
	}
	return st, nil
}

// load reads the pin file, if there is one; in mode record it may not
// exist yet.
func (p *pinSet) load() error {
	if p.file == "" {
		return nil
	}
	info, err := os.Stat(p.file)
	if errors.Is(err, os.ErrNotExist) && p.mode == config.PinRecord {
		return nil
	}
	if err != nil {
		return err
	}
	b, err := os.ReadFile(p.file)
	if err != nil {
		return err
	}
	var f pinFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("%s: %w", p.file, err)
	}
	p.pins = map[string]pinEntry{}
	for name, e := range f.Tools {
		p.pins[name] = e
	}
	p.skillPins = map[string]pinEntry{}
	for uri, e := range f.Skills {
		p.skillPins[uri] = e
	}
	p.loaded = info.ModTime()
	return nil
}

// reloadLocked reads the pin file again when an operator changed it (an
// approval by editing the file). A file that cannot be read keeps the
// pins in force: it fails closed for changed tools either way.
func (p *pinSet) reloadLocked() (reloaded bool, err error) {
	if p.file == "" {
		return false, nil
	}
	info, err := os.Stat(p.file)
	if err != nil || info.ModTime().Equal(p.loaded) {
		return false, nil
	}
	return true, p.load()
}

func (st *pinStore) set(upstreamName string) *pinSet {
	if st == nil {
		return nil
	}
	return st.sets[upstreamName]
}

// pinDigestPrefix marks a digest of the whole tool item (format 2). A
// digest without it ("sha256:...", format 1, before issue 14) covered only
// name, description, inputSchema and annotations: title, outputSchema,
// icons and _meta, which reach the model too, could change unseen. A
// format 1 pin is migrated when the tool is next listed: if the four
// members it covered are unchanged, it becomes the whole item's digest
// (the members it did not cover are pinned as first seen, and the
// migration is logged so an operator can review them); if they changed,
// the tool is quarantined as before. Nothing is approved or quarantined
// silently.
const pinDigestPrefix = "v2:sha256:"

// v1Members are what a format 1 digest covered.
var v1Members = []string{"name", "description", "inputSchema", "annotations"}

// toolDefinition is a tool's pin: the digest of the whole item, canonical
// (RFC 8785) so that member order and spacing do not count as a change.
// v1 is the format 1 digest of the same item, to migrate old pins.
func toolDefinition(item toolItem) (def pinEntry, v1 string, err error) {
	canon := item.Raw.Clone()
	if err := canon.Canonicalize(); err != nil {
		return pinEntry{}, "", err
	}
	sum := sha256.Sum256(canon)
	def = pinEntry{Digest: pinDigestPrefix + hex.EncodeToString(sum[:]), Definition: json.RawMessage(canon)}
	old := map[string]json.RawMessage{}
	for _, k := range v1Members {
		if v, ok := item.members[k]; ok {
			old[k] = json.RawMessage(v)
		}
	}
	b, err := json.Marshal(old)
	if err != nil {
		return pinEntry{}, "", err
	}
	v := jsontext.Value(b)
	if err := v.Canonicalize(); err != nil {
		return pinEntry{}, "", err
	}
	sum = sha256.Sum256(v)
	return def, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// definition is toolDefinition(item), computed once when screenToolPage
// has done it already.
func (item toolItem) definition() (pinEntry, string, error) {
	if item.pin != nil {
		return item.pin.def, item.pin.v1, item.pin.err
	}
	return toolDefinition(item)
}

// status is a tool's pin status; "" when the upstream does not pin.
func (p *pinSet) status(name string) string {
	if p == nil {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.statusLocked(name)
}

func (p *pinSet) statusLocked(name string) string {
	return pinStatus(p.pins, p.seen, name)
}

// pinStatus is the status of key given its pins and what was last seen.
func pinStatus(pins, seen map[string]pinEntry, key string) string {
	pin, ok := pins[key]
	if !ok {
		return PinNew
	}
	if s, ok := seen[key]; ok && s.Digest != pin.Digest {
		return PinChanged
	}
	return PinPinned
}

// quarantined reports whether a status keeps the tool from clients.
func (p *pinSet) quarantined(status string) bool {
	return status == PinChanged || status == PinNew && p.mode == config.PinFile
}

// screened is what screen made of a tools/list page.
type screened struct {
	kept     []toolItem
	hidden   []string // quarantined
	migrated []string // format 1 pins now whole-item pins
}

// screen observes a tools/list page: it remembers each tool's definition,
// pins new tools in mode record, migrates format 1 pins, and returns the
// items that are not quarantined.
func (p *pinSet) screen(ctx context.Context, items []toolItem) (screened, error) {
	if p == nil {
		return screened{kept: items}, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	reloaded, err := p.reloadLocked()
	if err != nil {
		return screened{}, fmt.Errorf("reload pin file: %w", err)
	}
	if reloaded && p.redis != nil {
		// The file seeds what Redis does not know; Redis's pins stand.
		p.syncLocked(ctx)
	}
	var out screened
	save := false
	defs := make([]pinEntry, len(items))
	v1s := make([]string, len(items))
	fresh := map[string]pinEntry{} // tools to record, in one round trip
	for i, item := range items {
		if defs[i], v1s[i], err = item.definition(); err != nil {
			return screened{}, fmt.Errorf("pin tool %q: %w", item.Name, err)
		}
		if _, ok := p.pins[item.Name]; !ok && p.mode == config.PinRecord && p.redis != nil {
			fresh[item.Name] = defs[i]
		}
	}
	recorded, recordErr := p.recordSharedAll(ctx, fresh)
	for i, item := range items {
		def, v1 := defs[i], v1s[i]
		p.seen[item.Name] = def
		pin, ok := p.pins[item.Name]
		switch {
		case !ok && p.mode == config.PinRecord && p.redis != nil:
			inForce, known := recorded[item.Name]
			if err := recordErr; err != nil || !known {
				// Redis cannot say whether another replica pinned another
				// version first: redis.on_error decides (fail closed: not
				// listed; local: pinned here, as one replica would).
				if p.redis.Deny() {
					out.hidden = append(out.hidden, item.Name)
					continue
				}
				inForce = def
			}
			p.pins[item.Name], save = inForce, true
		case !ok && p.mode == config.PinRecord:
			p.pins[item.Name], save = def, true
		case ok && !strings.HasPrefix(pin.Digest, pinDigestPrefix) && pin.Digest == v1:
			// A format 1 pin whose reviewed members are unchanged.
			p.pins[item.Name], save = def, true
			out.migrated = append(out.migrated, item.Name)
			p.shareApproval(ctx, item.Name, def)
		}
		if p.quarantined(p.statusLocked(item.Name)) {
			out.hidden = append(out.hidden, item.Name)
			continue
		}
		out.kept = append(out.kept, item)
	}
	if save {
		if err := p.saveLocked(); err != nil {
			return screened{}, err
		}
	}
	return out, nil
}

// approve pins the definition last seen for a tool. With redis the
// approval is stored there first: one Redis cannot take is refused
// (errApprovalNotShared), never applied to this replica alone.
func (p *pinSet) approve(ctx context.Context, name string) (pinEntry, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen, ok := p.seen[name]
	if !ok {
		return pinEntry{}, fmt.Errorf("tool %q has not been seen in a tools/list result since the gateway started", name)
	}
	if p.redis != nil {
		b, err := json.Marshal(seen)
		if err != nil {
			return pinEntry{}, err
		}
		if err := p.redis.SetPin(ctx, p.upstream, name, b); err != nil {
			return pinEntry{}, fmt.Errorf("%w: %w", errApprovalNotShared, err)
		}
	}
	old := p.pins[name]
	p.pins[name] = seen
	if err := p.saveLocked(); err != nil {
		p.pins[name] = old
		return pinEntry{}, err
	}
	return seen, nil
}

// saveLocked writes the pins to the pin file (atomically: a temporary
// file renamed over it), if there is one.
func (p *pinSet) saveLocked() error {
	if p.file == "" {
		return nil
	}
	b, err := json.MarshalIndent(pinFile{Tools: p.pins, Skills: p.skillPins}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p.file), ".pins-*")
	if err != nil {
		return fmt.Errorf("write pin file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write pin file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write pin file: %w", err)
	}
	if err := os.Rename(tmp.Name(), p.file); err != nil {
		return fmt.Errorf("write pin file: %w", err)
	}
	if info, err := os.Stat(p.file); err == nil {
		p.loaded = info.ModTime() // our own write is not an operator's edit
	}
	return nil
}

// screenTools applies the upstream's pins to a tools/list page and
// returns the items to relay. A page that cannot be screened is withheld
// (an error), never relayed with a changed tool in it.
func (s *Server) screenTools(ctx context.Context, fwd *forward, items []toolItem) ([]toolItem, error) {
	out, err := s.pins.set(fwd.route.upstream.Name).screen(ctx, items)
	if err != nil {
		return nil, err
	}
	log := loggerOf(ctx, s.log)
	if len(out.migrated) > 0 {
		log.Warn("tool pins migrated to whole-item digests: name, description, inputSchema and annotations are as approved; title, outputSchema, icons, _meta and other members are pinned as listed now, review them in GET /admin/pins",
			"upstream", fwd.route.upstream.Name, "tools", out.migrated)
	}
	if len(out.hidden) > 0 {
		log.Warn("tools quarantined: definition changed since pinned (or not pinned); approve with POST /admin/pins/approve",
			"upstream", fwd.route.upstream.Name, "tools", out.hidden)
	}
	return out.kept, nil
}

// checkPinnedCall refuses a tools/call to a quarantined tool.
func (s *Server) checkPinnedCall(fwd *forward, req *jsonrpc.Request, status string) error {
	set := s.pins.set(fwd.route.upstream.Name)
	if req.Method != "tools/call" || set == nil || !set.quarantined(status) {
		return nil
	}
	return newError(http.StatusOK, CodeToolQuarantined, "tool quarantined: its definition is not the one an operator approved", nil)
}

// pinReport is one tool (or skill: Skill, without Tool) in GET /admin/pins.
type pinReport struct {
	Tool       string          `json:"tool,omitempty"`
	Skill      string          `json:"skill,omitempty"`
	Status     string          `json:"status"`
	Pinned     string          `json:"pinned,omitempty"`
	Seen       string          `json:"seen,omitempty"`
	Definition json.RawMessage `json:"definition,omitempty"` // as last seen
}

// adminPins serves GET /admin/pins: every pinning upstream's tools, and
// its skills (SEP-2640) when it serves any.
func (s *Server) adminPins(w http.ResponseWriter, _ *http.Request) {
	out := map[string][]pinReport{}
	skills := map[string][]pinReport{}
	for name, set := range s.pins.sets {
		if r := set.skillReports(); len(r) > 0 {
			skills[name] = r
		}
		set.mu.Lock()
		names := map[string]bool{}
		for n := range set.pins {
			names[n] = true
		}
		for n := range set.seen {
			names[n] = true
		}
		reports := []pinReport{}
		for n := range names {
			reports = append(reports, pinReport{Tool: n, Status: set.statusLocked(n), Pinned: set.pins[n].Digest, Seen: set.seen[n].Digest, Definition: set.seen[n].Definition})
		}
		set.mu.Unlock()
		sort.Slice(reports, func(i, j int) bool { return reports[i].Tool < reports[j].Tool })
		out[name] = reports
	}
	body := map[string]any{"upstreams": out}
	if len(skills) > 0 {
		body["skills"] = skills
	}
	writeJSON(w, http.StatusOK, body)
}

// skillReports are the set's skills for GET /admin/pins, by URI.
func (p *pinSet) skillReports() []pinReport {
	p.mu.Lock()
	defer p.mu.Unlock()
	uris := map[string]bool{}
	for u := range p.skillPins {
		uris[u] = true
	}
	for u := range p.skillSeen {
		uris[u] = true
	}
	reports := []pinReport{}
	for u := range uris {
		reports = append(reports, pinReport{Skill: u, Status: pinStatus(p.skillPins, p.skillSeen, u), Pinned: p.skillPins[u].Digest, Seen: p.skillSeen[u].Digest, Definition: p.skillSeen[u].Definition})
	}
	sort.Slice(reports, func(i, j int) bool { return reports[i].Skill < reports[j].Skill })
	return reports
}

// adminApprovePin serves POST /admin/pins/approve?upstream=..&tool=..
// (or &skill=<SKILL.md URI>): the definition last seen becomes the pin
// (written to the pin file; with redis, stored there first and announced
// to the other replicas).
func (s *Server) adminApprovePin(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	upstreamName, tool, skill := q.Get("upstream"), q.Get("tool"), q.Get("skill")
	set := s.pins.set(upstreamName)
	kind, name, approve := "tool", tool, set.approve
	if skill != "" && tool == "" {
		kind, name, approve = "skill", skill, set.approveSkill
	}
	if set == nil || name == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "upstream must name an upstream with pin_tools, and tool a tool (or skill a skill's URI)"})
		return
	}
	e, err := approve(r.Context(), name)
	switch {
	case errors.Is(err, errApprovalNotShared):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error() + "; nothing was approved: retry when Redis answers"})
		return
	case err != nil:
		writeJSON(w, http.StatusConflict, map[string]string{"error": err.Error()})
		return
	}
	s.log.Info(kind+" pin approved", "upstream", upstreamName, kind, name, "digest", e.Digest)
	if err := s.invalidate(r.Context(), invalidation{Pins: []string{upstreamName}}); err != nil {
		// Stored on Redis: the others read it when they are next in step.
		s.log.Warn("pin approval stored on Redis but not announced to the other replicas yet; they read it when back in step", "error", err.Error())
	}
	writeJSON(w, http.StatusOK, map[string]string{"upstream": upstreamName, kind: name, "status": PinPinned, "pinned": e.Digest})
}
