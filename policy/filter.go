package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/open-policy-agent/opa/v1/ast"
)

// listMember names the array of each list result.
var listMember = map[string]string{
	"tools/list":               "tools",
	"prompts/list":             "prompts",
	"resources/list":           "resources",
	"resources/templates/list": "resourceTemplates",
	"skills/list":              "skills", // SEP-2640
	// A directory's children (SEP-2640 directoryRead) are resources.
	"resources/directory/read": "resources",
}

// listItem holds the fields of a list item the policy sees.
type listItem struct {
	Name        string         `json:"name"`
	Description string         `json:"description"`
	Annotations map[string]any `json:"annotations"`
	URI         string         `json:"uri"`
	URITemplate string         `json:"uriTemplate"`
	MIMEType    string         `json:"mimeType"`
	// Frontmatter is a skills/list entry's SKILL.md frontmatter.
	Frontmatter struct {
		Description string `json:"description"`
	} `json:"frontmatter"`
}

// span is one item of the list array: result[start:end].
type span struct{ start, end int64 }

// FilterList removes from a list result (the raw JSON of the result of
// base.Method: tools/list, prompts/list, resources/list,
// resources/templates/list or skills/list) the items the policy does not
// make visible to base's principal, evaluating visible with Phase
// PhaseListItem and the item as input.tool, input.prompt, input.resource
// or input.skill. It returns the new
// result and the number of items removed, and writes one decision log
// record for the list.
//
// Everything but the removed items is kept byte for byte: other members,
// nextCursor, _meta, unknown fields of kept items, their order (only the
// whitespace between the items goes when one is removed). Another
// method, or a result without that array, is returned unchanged. A result
// that is not valid JSON, or has duplicate member names, is an error.
// An item that is not an object is removed (fail closed). A nil base is an
// error.
//
// The items are decided under one budget for the whole list
// (listBudget), and an item the policy could not decide (an evaluation
// error, the budget spent) makes the whole list an error, never a shorter
// list: a hidden item means the policy said it is not visible. Answers are
// cached per policy revision, base input and item (viscache.go); with a
// deterministic policy set, the whole filtered view of a list is reused
// for the same base input and the same list bytes (listcache.go), logged
// with memo_hit.
func (e *Engine) FilterList(ctx context.Context, base *Input, result []byte) ([]byte, int, error) {
	if base == nil {
		return nil, 0, errNilInput
	}
	member, ok := listMember[base.Method]
	if !ok {
		return result, 0, nil
	}
	start := e.now()
	set := e.set.Load()
	listBase := *base
	listBase.Phase = PhaseListItem
	digest, keyed := inputDigest(set.revision, &listBase)
	lists := set.lists
	if !keyed {
		// Unencodable input cannot be keyed: a random digest misses in
		// the visibility cache, and no view is reused or kept.
		digest, lists = baseDigest(set.revision, &listBase), nil
	}
	var key listKey
	if lists != nil {
		key = wholeListKey(digest, result)
		if v, ok := lists.get(key); ok {
			// The same list for the same base input under the same
			// deterministic revision: the same answers. Logged as a
			// memo hit, as a memoized decision is.
			if e.log != nil {
				e.log.list(ctx, set.revision, &listBase, nil, v.logResult(), nil, true, start, e.now())
			}
			out, removed := splice(result, v.open, v.close, v.items, v.entries)
			return out, removed, nil
		}
	}
	open, close, items, err := scanList(result, member)
	if err != nil {
		return nil, 0, err
	}
	if items == nil {
		return result, 0, nil
	}
	baseItems, err := inputItems(&listBase)
	if err != nil {
		return nil, 0, err
	}
	entries, failures, err := e.visibleItems(ctx, set, listBase.Method, digest, baseItems, result, items)
	v := &listView{open: open, close: close, items: items, entries: entries}
	if e.log != nil {
		res := listResult{Total: len(items), Removed: []string{}, Failures: failures}
		if err == nil {
			res = v.logResult()
		}
		e.log.list(ctx, set.revision, &listBase, ast.NewObject(baseItems...), res, err, false, start, e.now())
	}
	if err != nil {
		// Returned, not logged: the caller answers with its "policy could
		// not decide" error and logs why. Never kept as a view.
		return nil, 0, fmt.Errorf("filter %s (revision %s): %w", base.Method, set.revision, err)
	}
	if lists != nil {
		lists.put(key, v)
	}
	out, removed := splice(result, open, close, items, entries)
	return out, removed, nil
}

// logResult is what the decision log records of a filtered list.
func (v *listView) logResult() listResult {
	res := listResult{Total: len(v.items), Removed: []string{}}
	for _, en := range v.entries {
		if !en.visible {
			res.Removed = append(res.Removed, en.name)
		}
	}
	return res
}

// listItemsPerTimeout sets the budget of a list: Options.Timeout for
// every listItemsPerTimeout items evaluated, in addition to one Timeout.
// An item takes tens of microseconds, so a list meets its budget with a
// wide margin on a busy machine, while a runaway rule is still stopped
// in a time that grows with the list, not with its items' count of
// timers.
const listItemsPerTimeout = 100

// listBudget is the time the evaluations of n items may take together.
func (e *Engine) listBudget(n int) time.Duration {
	return e.timeout + time.Duration(n)*(e.timeout/listItemsPerTimeout)
}

// errListItemUndecided wraps the failure of one list item's evaluation.
var errListItemUndecided = errors.New("the policy could not decide the visibility of a list item")

// visibleItems decides every item, from the visibility cache where it
// can, under one budget for the items not cached. It returns the answers
// and, when an item could not be decided, how many evaluations failed
// and the first failure (the others stop at once: their answers would not
// be used).
func (e *Engine) visibleItems(ctx context.Context, set *policySet, method string, digest [32]byte, baseItems [][2]*ast.Term, result []byte, items []span) ([]visibilityEntry, int, error) {
	keys := make([]visibilityKey, len(items))
	for i, it := range items {
		keys[i] = itemKey(digest, result[it.start:it.end])
	}
	entries, hit := set.vis.getAll(keys, e.now())
	var miss []int
	for i := range items {
		if !hit[i] {
			miss = append(miss, i)
		}
	}
	if len(miss) == 0 {
		return entries, 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.listBudget(len(miss)))
	defer cancel()
	var mu sync.Mutex
	var decided atomic.Int64
	failures, firstErr := 0, error(nil)
	forEach(ctx, miss, func(i int) {
		var err error
		if entries[i], err = e.visibleItem(ctx, set, method, baseItems, result[items[i].start:items[i].end]); err == nil {
			decided.Add(1)
			return
		}
		mu.Lock()
		failures++
		if firstErr == nil {
			firstErr = fmt.Errorf("%w (item %d of %d, %q): %w", errListItemUndecided, i, len(items), clipString(entries[i].name), err)
		}
		mu.Unlock()
		cancel()
	})
	if firstErr == nil && decided.Load() < int64(len(miss)) {
		// forEach stopped (the caller's context ended) before every item
		// was decided.
		firstErr = fmt.Errorf("%w: %w", errListItemUndecided, cmpOr(ctx.Err(), context.Canceled))
	}
	if firstErr != nil {
		// Never cache a failure, nor what a failed list decided.
		return entries, max(failures, 1), firstErr
	}
	set.vis.putAll(keys, entries, miss, e.now())
	return entries, 0, nil
}

// parallelMin is the number of evaluations worth a goroutine: a cold
// 1,000-tool list is 1,000 evaluations, spread over GOMAXPROCS.
const parallelMin = 32

// forEach calls f for every index, in parallel when there are many, until
// ctx ends.
func forEach(ctx context.Context, idx []int, f func(int)) {
	workers := min(runtime.GOMAXPROCS(0), len(idx)/parallelMin)
	if workers <= 1 {
		for _, i := range idx {
			if ctx.Err() != nil {
				return
			}
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for n := next.Add(1) - 1; n < int64(len(idx)) && ctx.Err() == nil; n = next.Add(1) - 1 {
				f(idx[n])
			}
		})
	}
	wg.Wait()
}

// visibleItem evaluates visible for one raw item. An item that does not
// decode as an object is hidden without evaluation (and cached so).
func (e *Engine) visibleItem(ctx context.Context, set *policySet, method string, baseItems [][2]*ast.Term, raw []byte) (visibilityEntry, error) {
	var it listItem
	if raw[0] != '{' || jsonv2.Unmarshal(raw, &it) != nil {
		return visibilityEntry{name: "(invalid item)"}, nil
	}
	var b builder
	var member [2]*ast.Term
	en := visibilityEntry{name: it.Name}
	switch method {
	case "tools/list":
		member = ast.Item(kTool, b.tool(&Tool{Name: it.Name, Annotations: it.Annotations, Description: it.Description}))
	case "prompts/list":
		member = ast.Item(kPrompt, b.prompt(&Prompt{Name: it.Name}))
	case "skills/list":
		en.name = it.URI
		member = ast.Item(kSkill, skillTerm(&Skill{URI: it.URI, Name: SkillName(it.URI), Description: it.Frontmatter.Description}))
	default:
		en.name = cmpOr(it.URI, it.URITemplate)
		member = ast.Item(kResource, resourceTerm(&Resource{URI: it.URI, URITemplate: it.URITemplate, Name: it.Name, MIMEType: it.MIMEType}))
	}
	if b.err != nil {
		return en, b.err
	}
	all := make([][2]*ast.Term, len(baseItems), len(baseItems)+1)
	copy(all, baseItems)
	var err error
	en.visible, _, err = e.visible(ctx, set, ast.NewObject(append(all, member)...))
	return en, err
}

// scanList finds the array member of a JSON object and the span of each
// of its elements. open is the offset just after '[', close the offset of
// ']'. items is nil when there is no such array.
func scanList(result []byte, member string) (open, close int64, items []span, err error) {
	dec := jsontext.NewDecoder(bytes.NewReader(result))
	if dec.PeekKind() != '{' {
		// Not an object: no list to filter, unless it is not JSON at all.
		if _, err := dec.ReadValue(); err != nil {
			return 0, 0, nil, listError(err)
		}
		return 0, 0, nil, atEOF(dec)
	}
	if _, err := dec.ReadToken(); err != nil {
		return 0, 0, nil, listError(err)
	}
	seen := false
	for dec.PeekKind() != '}' {
		// The unescaped name: "\u0074ools" is "tools" to every client.
		// Case-insensitive decoders (Go's encoding/json) also take
		// "Tools" for "tools", so a case variant is the list too, and two
		// of them are an error rather than a way to smuggle items past.
		name, err := dec.ReadToken()
		if err != nil {
			return 0, 0, nil, listError(err)
		}
		if !strings.EqualFold(name.String(), member) {
			if err := dec.SkipValue(); err != nil {
				return 0, 0, nil, listError(err)
			}
			continue
		}
		if seen {
			return 0, 0, nil, listError(fmt.Errorf("member %q appears twice (as case variants)", member))
		}
		seen = true
		if dec.PeekKind() != '[' {
			if err := dec.SkipValue(); err != nil {
				return 0, 0, nil, listError(err)
			}
			continue
		}
		if open, close, items, err = scanArray(dec); err != nil {
			return 0, 0, nil, listError(err)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return 0, 0, nil, listError(err)
	}
	if err := atEOF(dec); err != nil {
		return 0, 0, nil, err
	}
	return open, close, items, nil
}

// atEOF checks that nothing follows the value.
func atEOF(dec *jsontext.Decoder) error {
	if _, err := dec.ReadToken(); err != io.EOF {
		return listError(cmpOr(err, errors.New("data after the result")))
	}
	return nil
}

func scanArray(dec *jsontext.Decoder) (open, close int64, items []span, err error) {
	if _, err := dec.ReadToken(); err != nil {
		return 0, 0, nil, err
	}
	open = dec.InputOffset()
	items = []span{}
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return 0, 0, nil, err
		}
		end := dec.InputOffset()
		items = append(items, span{end - int64(len(v)), end})
	}
	if _, err := dec.ReadToken(); err != nil {
		return 0, 0, nil, err
	}
	return open, dec.InputOffset() - 1, items, nil
}

func listError(err error) error {
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("filter list result: %w", err)
}

// splice returns result without the items not kept, and how many were
// removed; result itself when none was.
func splice(result []byte, open, close int64, items []span, entries []visibilityEntry) ([]byte, int) {
	removed := 0
	for _, en := range entries {
		if !en.visible {
			removed++
		}
	}
	if removed == 0 {
		return result, 0
	}
	out := make([]byte, 0, len(result))
	out = append(out, result[:open]...)
	first := true
	for i, it := range items {
		if !entries[i].visible {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, result[it.start:it.end]...)
	}
	return append(out, result[close:]...), removed
}

// baseDigest identifies everything but the item that a visibility answer
// depends on: the policy revision and the whole base input (principal
// with its claims, route, upstream, method, protocol, source, params) —
// stricter than the principal id alone, so that a principal whose claims
// changed is never answered from the old claims.
func baseDigest(revision string, base *Input) [32]byte {
	d, ok := inputDigest(revision, base)
	if !ok {
		// Unencodable input cannot be keyed: a random key is a miss.
		h := sha256.Sum256([]byte(newDecisionID()))
		return h
	}
	return d
}
