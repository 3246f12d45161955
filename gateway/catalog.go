package gateway

import "sync"

// maxCatalogTools bounds how many tools are remembered per upstream.
const maxCatalogTools = 10000

// toolMeta is what the gateway learned about a tool from its upstream.
type toolMeta struct {
	Annotations map[string]any
	Description string
}

// catalog remembers each upstream's tools as its own tools/list results
// described them (before any filtering), so a tools/call can be decided on
// the tool's annotations. The client never supplies them.
type catalog struct {
	mu    sync.RWMutex
	tools map[string]map[string]toolMeta // upstream -> tool name -> meta
	// last is, per upstream, the page learned last: learning it again
	// changes nothing (a cache hit, a list every client gets the same).
	last map[string]*toolPage
	// screens are the screened pages (toolscreen.go).
	screens toolScreens
}

func newCatalog() *catalog {
	return &catalog{tools: map[string]map[string]toolMeta{}, last: map[string]*toolPage{}}
}

func (c *catalog) tool(upstreamName, name string) (toolMeta, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.tools[upstreamName][name]
	return m, ok
}

// learnTools records the tools of one tools/list result page, as
// readToolPage read them (exact member names, ambiguous items left out).
func (c *catalog) learnTools(upstreamName string, items []toolItem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.last, upstreamName)
	c.learnLocked(upstreamName, items)
}

// learnPage is learnTools for a screened page, skipped when that page is
// the one the upstream's tools were last learned from.
func (c *catalog) learnPage(upstreamName string, page *toolPage) {
	c.mu.RLock()
	same := c.last[upstreamName] == page
	c.mu.RUnlock()
	if same {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last[upstreamName] = page
	c.learnLocked(upstreamName, page.items)
}

func (c *catalog) learnLocked(upstreamName string, items []toolItem) {
	known := c.tools[upstreamName]
	if known == nil {
		known = map[string]toolMeta{}
		c.tools[upstreamName] = known
	}
	for _, t := range items {
		if _, ok := known[t.Name]; !ok && len(known) >= maxCatalogTools {
			continue
		}
		known[t.Name] = toolMeta{Annotations: t.Annotations, Description: t.Description}
	}
}
