package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// A tools/list result is read once, here, with exact member names, and
// everything the gateway learns or decides from it (the catalog the policy
// decides calls on, the argument schemas, the pins, the list filter, the
// neutraliser) reads the items this reading kept. Go's encoding/json, and
// so many upstream and client SDKs, match member names case-insensitively
// and keep the last of two that fold together: {"annotations":{...},
// "Annotations":{"readOnlyHint":true}} or an item with "Name" alone would
// otherwise be read one way by the gateway and another way by the client
// (issue 14, finding 3). So an item is withheld (left out of the list the
// client sees, and never learned) when
//   - it is not an object, or its name is missing, empty or not a string;
//   - two member names of one of its objects, at any depth, fold together
//     (checkStrict's rule, the one client requests are held to);
//   - one of its members is a case variant of a member of the MCP Tool
//     (toolMembers) or of its annotations (annotationMembers);
//   - description is not a string or annotations not an object.
//
// A result that cannot be read at all (not an object, a case variant of
// tools, tools not an array, two items with the same name, which a client
// would resolve by order) is an error: the whole answer is withheld, never relayed as it came.

// toolMembers are the members of an MCP Tool (schema 2025-11-25) that reach
// a client, a model, or the gateway's own decisions.
var toolMembers = []string{"name", "title", "description", "inputSchema", "outputSchema", "annotations", "icons", "execution", "_meta"}

// annotationMembers are the members of ToolAnnotations; the policy decides
// calls on the hints.
var annotationMembers = []string{"title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}

// toolItem is one tools/list item as the gateway read it.
type toolItem struct {
	Name        string
	Description string
	Annotations map[string]any
	// Raw is the item exactly as the upstream sent it; members are its
	// top-level members by their exact names.
	Raw     jsontext.Value
	members map[string]jsontext.Value
	// relayed is the item as the client gets it: Raw with its text
	// neutralised (screenToolPage); nil until screened, Raw itself when
	// nothing needed neutralising.
	relayed jsontext.Value
	// neutralised: relayed differs from Raw (for the log).
	neutralised bool
	// pin is the item's pin digests, computed once by screenToolPage for
	// an upstream that pins; nil otherwise (pinSet.screen computes them).
	pin *itemPin
}

// itemPin is what toolDefinition says of an item.
type itemPin struct {
	def pinEntry
	v1  string
	err error
}

// toolPage is a tools/list result read by readToolPage.
type toolPage struct {
	// prefix and suffix are the result's bytes around the tools array
	// (both nil when the result has no tools member).
	prefix, suffix []byte
	items          []toolItem
	// withheld says, for each item left out, why (for the log).
	withheld []string
	// all is the page with every item as relayed (screenToolPage), the
	// answer when none is quarantined.
	all []byte
	// redacted remembers redactions of all (redactAll).
	redacted redactMemo
	// src is the result the page was screened from, and size what it
	// counts against the bound (toolScreens).
	src  []byte
	size int
}

var errUnreadableToolPage = errors.New("tools/list result cannot be read unambiguously")

// readToolPage reads a tools/list result; see the note above.
func readToolPage(result []byte) (*toolPage, error) {
	dec := jsontext.NewDecoder(bytes.NewReader(result))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, fmt.Errorf("%w: not a JSON object", errUnreadableToolPage)
	}
	page := &toolPage{}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUnreadableToolPage, err)
		}
		if why := caseVariant(name.String(), []string{"tools"}); why != "" {
			return nil, fmt.Errorf("%w: %s", errUnreadableToolPage, why)
		}
		if name.String() != "tools" {
			if err := dec.SkipValue(); err != nil {
				return nil, fmt.Errorf("%w: %w", errUnreadableToolPage, err)
			}
			continue
		}
		if err := page.readItems(dec, result); err != nil {
			return nil, err
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreadableToolPage, err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the result", errUnreadableToolPage)
	}
	return page, nil
}

// readItems reads the tools array at dec's position.
func (p *toolPage) readItems(dec *jsontext.Decoder, result []byte) error {
	if dec.PeekKind() != '[' {
		return fmt.Errorf("%w: tools is not an array", errUnreadableToolPage)
	}
	if _, err := dec.ReadToken(); err != nil {
		return fmt.Errorf("%w: %w", errUnreadableToolPage, err)
	}
	p.prefix = result[:dec.InputOffset()-1]
	seen := map[string]bool{}
	for i := 0; dec.PeekKind() != ']'; i++ {
		raw, err := dec.ReadValue()
		if err != nil {
			return fmt.Errorf("%w: %w", errUnreadableToolPage, err)
		}
		item, why := readToolItem(raw.Clone())
		if why != "" {
			p.withheld = append(p.withheld, fmt.Sprintf("item %d: %s", i, why))
			continue
		}
		if seen[item.Name] {
			return fmt.Errorf("%w: two tools are named %q", errUnreadableToolPage, clip(item.Name, 128))
		}
		seen[item.Name] = true
		p.items = append(p.items, item)
	}
	if _, err := dec.ReadToken(); err != nil {
		return fmt.Errorf("%w: %w", errUnreadableToolPage, err)
	}
	p.suffix = result[dec.InputOffset():]
	return nil
}

// readToolItem reads one item, or says why it is withheld.
func readToolItem(raw jsontext.Value) (toolItem, string) {
	if raw.Kind() != '{' {
		return toolItem{}, "not an object"
	}
	if err := checkStrict(raw); err != nil {
		return toolItem{}, err.Error()
	}
	item := toolItem{Raw: raw, members: map[string]jsontext.Value{}}
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.ReadToken(); err != nil {
		return toolItem{}, err.Error()
	}
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return toolItem{}, err.Error()
		}
		name := tok.String()
		v, err := dec.ReadValue()
		if err != nil {
			return toolItem{}, err.Error()
		}
		if why := caseVariant(name, toolMembers); why != "" {
			return toolItem{}, why
		}
		item.members[name] = v.Clone()
	}
	return item.decode()
}

// decode fills the typed fields from the exact members.
func (item toolItem) decode() (toolItem, string) {
	name, ok := item.members["name"]
	if !ok || name.Kind() != '"' || jsonv2.Unmarshal(name, &item.Name) != nil || item.Name == "" {
		return toolItem{}, "name missing, empty or not a string"
	}
	if d, ok := item.members["description"]; ok && jsonv2.Unmarshal(d, &item.Description) != nil {
		return toolItem{}, "description is not a string"
	}
	if a, ok := item.members["annotations"]; ok {
		if a.Kind() != '{' || jsonv2.Unmarshal(a, &item.Annotations) != nil {
			return toolItem{}, "annotations is not an object"
		}
		for k := range item.Annotations {
			if why := caseVariant(k, annotationMembers); why != "" {
				return toolItem{}, "annotations: " + why
			}
		}
	}
	return item, ""
}

// caseVariant says whether name is a case variant (foldName) of one of
// known without being spelled as it.
func caseVariant(name string, known []string) string {
	folded := foldName(name)
	for _, k := range known {
		if name != k && folded == foldName(k) {
			return fmt.Sprintf("member %q is a case variant of %q", clip(name, 64), k)
		}
	}
	return ""
}

// encode is the result with exactly items in its tools array, and
// everything around the array as the upstream sent it.
func (p *toolPage) encode(items []toolItem) []byte {
	if p.prefix == nil {
		return nil
	}
	n := len(p.prefix) + len(p.suffix) + 2
	for _, it := range items {
		n += len(it.Raw) + 1
	}
	out := make([]byte, 0, n)
	out = append(append(out, p.prefix...), '[')
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, it.relayedRaw()...)
	}
	return append(append(out, ']'), p.suffix...)
}

// relayedRaw is the item as relayed: its neutralised text once screened.
func (it *toolItem) relayedRaw() jsontext.Value {
	if it.relayed != nil {
		return it.relayed
	}
	return it.Raw
}

// screenToolPage reads a tools/list result (readToolPage) and does, once,
// everything about it that depends on its bytes alone: each item's text
// neutralised, its pin digests computed when the upstream pins (pins),
// and the page as relayed when every item is kept. What depends on more
// (the pins in force, the catalog, the policy) is done on every use of
// the page: see readTools. The page is read-only once returned, so one
// page serves concurrent requests (toolScreens).
func screenToolPage(result []byte, pins bool) (*toolPage, error) {
	page, err := readToolPage(result)
	if err != nil || page.prefix == nil {
		return page, err
	}
	for i := range page.items {
		it := &page.items[i]
		it.relayed, it.neutralised = neutraliseItem(it.Raw)
		if pins {
			def, v1, err := toolDefinition(*it)
			it.pin = &itemPin{def: def, v1: v1, err: err}
		}
	}
	page.all = page.encode(page.items)
	return page, nil
}

// encodeKept is encode(kept), without a copy when every item is kept.
func (p *toolPage) encodeKept(kept []toolItem) []byte {
	if len(kept) == len(p.items) && p.all != nil {
		return p.all
	}
	return p.encode(kept)
}
