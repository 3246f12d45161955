package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"

	"github.com/ctxgate/ctxgate/shared"
)

// Pins shared on Redis: with a redis block, every replica's pins of an
// upstream are one hash in Redis (shared/pins.go), so a tool pinned or
// approved on one replica is pinned or approved on all:
//
//   - mode record: the first replica to see a tool records its pin there
//     (HSETNX); a replica that first sees the tool in another version gets
//     the recorded pin back, so it quarantines that version as the first
//     replica would. With Redis unreachable, redis.on_error decides: local
//     pins it here (as a single replica does), deny keeps it out of the
//     list until Redis answers.
//   - an approval (POST /admin/pins/approve) is stored in Redis first
//     (refused with 503 if Redis cannot take it: never applied to one
//     replica alone), then applied here and announced on the invalidation
//     fan-out; the others read the upstream's pins again. A replica that
//     missed the announcement reads every pin again when it is back in
//     step.
//   - the pin file stays each replica's local mirror (rewritten from what
//     is in force) and the seed: a pin in the file that Redis does not
//     have is recorded there at start-up and when the file changes; for a
//     tool Redis has, Redis's pin stands (approve through the admin API).

// errApprovalNotShared: Redis did not take an approval, so none was made.
var errApprovalNotShared = errors.New("the approval could not be stored on Redis, where every replica reads it")

// shareWith puts every pin set on Redis: it seeds Redis with the file's
// pins and reads what Redis holds. Redis unreachable at start-up leaves
// the file's pins in force until the fan-out is in step (then pullAll).
func (st *pinStore) shareWith(ctx context.Context, c *shared.Client, log *slog.Logger) {
	if st == nil {
		return
	}
	for name, set := range st.sets {
		set.mu.Lock()
		set.redis, set.upstream, set.log = c, name, log
		set.syncLocked(ctx)
		set.mu.Unlock()
	}
}

// pullAll reads every upstream's pins from Redis again.
func (st *pinStore) pullAll(ctx context.Context) {
	if st == nil {
		return
	}
	for _, set := range st.sets {
		set.pull(ctx)
	}
}

// pull reads the upstream's pins from Redis: another replica changed them.
func (p *pinSet) pull(ctx context.Context) {
	if p == nil || p.redis == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pullLocked(ctx)
}

// skillsHash names the skills' pins on Redis: a hash beside the tools'
// (upstream names have no NUL).
const skillsHash = "\x00skills"

// syncLocked records the local pins Redis lacks, then reads Redis's.
func (p *pinSet) syncLocked(ctx context.Context) {
	p.initSkillsLocked()
	for _, set := range []struct {
		hash string
		pins map[string]pinEntry
	}{{p.upstream, p.pins}, {p.upstream + skillsHash, p.skillPins}} {
		remote, err := p.redis.Pins(ctx, set.hash)
		if err != nil {
			p.log.Warn("tool pins not read from Redis; this replica's own pins are in force until it is back in step", "upstream", p.upstream, "error", err.Error())
			return
		}
		missing := map[string]pinEntry{}
		for _, name := range slices.Sorted(maps.Keys(set.pins)) {
			if _, ok := remote[name]; !ok {
				missing[name] = set.pins[name]
			}
		}
		if _, err := p.recordSharedIn(ctx, set.hash, missing); err != nil {
			p.log.Warn("pins not recorded on Redis", "upstream", p.upstream, "error", err.Error())
		}
	}
	p.pullLocked(ctx)
}

// pullLocked makes Redis's pins the ones in force (and the file's).
func (p *pinSet) pullLocked(ctx context.Context) {
	p.initSkillsLocked()
	changed := false
	for _, set := range []struct {
		hash string
		pins map[string]pinEntry
	}{{p.upstream, p.pins}, {p.upstream + skillsHash, p.skillPins}} {
		remote, err := p.redis.Pins(ctx, set.hash)
		if err != nil {
			p.log.Warn("pins not read from Redis", "upstream", p.upstream, "error", err.Error())
			return
		}
		for name, raw := range remote {
			var e pinEntry
			if err := json.Unmarshal(raw, &e); err != nil || e.Digest == "" {
				p.log.Warn("pin on Redis unreadable; ignored", "upstream", p.upstream, "name", name)
				continue
			}
			if set.pins[name].Digest != e.Digest {
				set.pins[name], changed = e, true
			}
		}
	}
	if changed {
		if err := p.saveLocked(); err != nil {
			p.log.Warn("pin file not rewritten from Redis", "upstream", p.upstream, "error", err.Error())
		}
	}
}

// recordSharedAll is recordSharedIn for tools.
func (p *pinSet) recordSharedAll(ctx context.Context, defs map[string]pinEntry) (map[string]pinEntry, error) {
	return p.recordSharedIn(ctx, p.upstream, defs)
}

// recordSharedIn records the pins of tools (or, in the skills hash,
// skills) not pinned yet, each unless another replica has recorded one, in
// one round trip; it returns the pins in force. While Redis is known to be
// down it does not wait for it.
func (p *pinSet) recordSharedIn(ctx context.Context, hash string, defs map[string]pinEntry) (map[string]pinEntry, error) {
	if len(defs) == 0 {
		return nil, nil
	}
	raw := make(map[string][]byte, len(defs))
	for tool, def := range defs {
		b, err := json.Marshal(def)
		if err != nil {
			return nil, err
		}
		raw[tool] = b
	}
	got, err := p.redis.RecordPins(ctx, hash, raw)
	if err != nil {
		p.redis.Fallback(shared.FeaturePins, err)
		return nil, err
	}
	out := make(map[string]pinEntry, len(got))
	for tool, b := range got {
		var inForce pinEntry
		if err := json.Unmarshal(b, &inForce); err != nil || inForce.Digest == "" {
			return nil, errors.New("the pin on Redis is unreadable")
		}
		out[tool] = inForce
	}
	return out, nil
}

// shareApproval stores a pin this replica made on its own authority (a
// format 1 pin migrated) on Redis, best effort: the others migrate the
// same pin the same way when they list the tool.
func (p *pinSet) shareApproval(ctx context.Context, tool string, def pinEntry) {
	if p.redis == nil {
		return
	}
	if b, err := json.Marshal(def); err == nil {
		if err := p.redis.SetPin(ctx, p.upstream, tool, b); err != nil {
			p.log.Warn("migrated tool pin not stored on Redis", "upstream", p.upstream, "tool", tool, "error", err.Error())
		}
	}
}
