package gateway

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"sync"

	"github.com/ctxgate/ctxgate/policy"
)

// Screened tools/list pages (screenToolPage) are kept by the upstream's
// bytes, so that the same list again (a cache hit, or an upstream
// answering every client the same list) is read, neutralised and digested
// for its pins once, not on every answer. A page is a pure function of
// those bytes and of whether the upstream pins, so they are the whole key;
// nothing that depends on the principal or on the policy is kept here (the
// pins in force, the list filter and the decision's redactions are
// applied on every use: readTools, filterResult). A page is found by a
// hash of the bytes and used only if they are equal to the ones it was
// screened from: no collision, chance or crafted, can serve another page.

const (
	// maxToolScreens and maxToolScreenBytes bound the pages kept: a few
	// upstreams' lists, a few versions each (a page holds about four times
	// the size of its result).
	maxToolScreens     = 64
	maxToolScreenBytes = 64 << 20
)

// screenKey finds a screened page: the hash of the upstream's result and
// whether the upstream pins (the pin digests are computed only then).
type screenKey struct {
	hash uint64
	pins bool
}

// toolScreens is the bounded set of screened pages, evicted oldest first.
// The zero value is ready to use.
type toolScreens struct {
	seedOnce sync.Once
	seed     maphash.Seed

	mu    sync.Mutex
	pages map[screenKey]*toolPage
	order []screenKey
	bytes int
}

// page returns the screened page of result, screening and keeping it if
// it is not kept yet. A result that cannot be read is an error every time
// (never kept).
func (t *toolScreens) page(result []byte, pins bool) (*toolPage, error) {
	t.seedOnce.Do(func() { t.seed = maphash.MakeSeed() })
	key := screenKey{hash: maphash.Bytes(t.seed, result), pins: pins}
	t.mu.Lock()
	p, ok := t.pages[key]
	t.mu.Unlock()
	if ok && bytes.Equal(p.src, result) {
		return p, nil
	}
	p, err := screenToolPage(result, pins)
	if err != nil || p.prefix == nil {
		return p, err
	}
	p.src = bytes.Clone(result)
	t.keep(key, p, 4*len(result))
	return p, nil
}

// keep adds a page (replacing one of the same hash), evicting the oldest
// past the bounds.
func (t *toolScreens) keep(key screenKey, p *toolPage, size int) {
	if size > maxToolScreenBytes {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pages == nil {
		t.pages = map[screenKey]*toolPage{}
	}
	if old, ok := t.pages[key]; ok {
		t.bytes += size - old.size
		p.size, t.pages[key] = size, p
		return
	}
	for len(t.order) > 0 && (len(t.order) >= maxToolScreens || t.bytes+size > maxToolScreenBytes) {
		old := t.order[0]
		t.order = t.order[1:]
		t.bytes -= t.pages[old].size
		delete(t.pages, old)
	}
	p.size = size
	t.pages[key] = p
	t.order = append(t.order, key)
	t.bytes += size
}

// maxRedactMemo bounds the redactions remembered per page: one per set of
// redactions the policy gives for the list (usually one).
const maxRedactMemo = 8

// redactMemo remembers the redaction of a page's relayed bytes (all) for
// each set of redactions: policy.RedactResult is a pure function of both.
type redactMemo struct {
	mu   sync.Mutex
	outs map[string]redactedPage
}

type redactedPage struct {
	out []byte
	n   int
}

// redactAll is policy.RedactResult(p.all, rs), computed once per rs.
func (p *toolPage) redactAll(rs []policy.Redaction) ([]byte, int, error) {
	key, ok := redactionsKey(rs)
	if !ok {
		return policy.RedactResult(p.all, rs)
	}
	p.redacted.mu.Lock()
	r, hit := p.redacted.outs[key]
	p.redacted.mu.Unlock()
	if hit {
		return r.out, r.n, nil
	}
	out, n, err := policy.RedactResult(p.all, rs)
	if err != nil {
		return nil, 0, err
	}
	p.redacted.mu.Lock()
	defer p.redacted.mu.Unlock()
	if p.redacted.outs == nil {
		p.redacted.outs = map[string]redactedPage{}
	}
	if len(p.redacted.outs) < maxRedactMemo {
		p.redacted.outs[key] = redactedPage{out: out, n: n}
	}
	return out, n, nil
}

// redactionsKey identifies a set of redactions by every field, in order.
func redactionsKey(rs []policy.Redaction) (string, bool) {
	b, err := json.Marshal(rs)
	return string(b), err == nil
}
