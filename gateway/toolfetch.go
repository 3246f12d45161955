package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/upstream"
)

// Calls before lists. A client that cached a tool list (or reconnects
// after a gateway restart) may send tools/call before any tools/list has
// passed this gateway. What the policy decides on (annotations, pin state)
// and what arguments are validated against (inputSchema) come only from
// the upstream's own tools/list, so for a tool the gateway has not seen it
// reads that list itself before deciding: the call is then decided exactly
// as it would be after a list. Fetches are single-flight per upstream and
// remembered: a name that is still unknown after a fetch (a tool that
// does not exist) triggers no new fetch for toolRefetchAfter, so unknown
// names cannot be used to hammer the upstream.

// toolRefetchAfter is how long a completed fetch of an upstream's tools
// answers for names it did not contain.
const toolRefetchAfter = 30 * time.Second

// toolRetryAfter is how long after a failed fetch no new one is tried: a
// failing upstream is not asked for its list on every call (which would
// double its load and feed its breaker).
const toolRetryAfter = 5 * time.Second

// toolFetchTimeout bounds the fetch: a slow list must not hold the call
// longer than the route's own deadlines would.
const toolFetchTimeout = 10 * time.Second

// toolFetcher remembers when each upstream's tool list was last fetched.
type toolFetcher struct {
	flight  singleflight.Group
	mu      sync.Mutex
	fetched map[string]time.Time // upstream -> last completed fetch
	failed  map[string]time.Time // upstream -> last failed fetch
}

// done records a completed read of an upstream's tools/list.
func (f *toolFetcher) done(upstreamName string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fetched == nil {
		f.fetched = map[string]time.Time{}
	}
	f.fetched[upstreamName] = at
}

// learnToolsBeforeCall fetches the upstream's tools/list when req is a
// tools/call for a tool this gateway knows nothing of. A failed fetch
// leaves the tool unknown: the policy then decides on no annotations,
// which the shipped policy treats as not read-only (fail closed).
func (s *Server) learnToolsBeforeCall(ctx context.Context, fwd *forward, req *jsonrpc.Request) {
	if req.Method != "tools/call" || fwd.federation != "" {
		return // federated routes learn names their own way (fedRequest.routed)
	}
	params := mcpwire.ParamsOf(req)
	if params == nil || params.Name == "" {
		return
	}
	name := fwd.route.upstream.Name
	if _, ok := s.catalog.tool(name, params.Name); ok {
		return
	}
	f := &s.toolFetch
	f.mu.Lock()
	last, ok := f.fetched[name]
	lastFailed, failed := f.failed[name]
	f.mu.Unlock()
	if ok && s.now().Sub(last) < toolRefetchAfter || failed && s.now().Sub(lastFailed) < toolRetryAfter {
		return
	}
	// One fetch per upstream at a time; the others wait for its answer.
	// The fetch runs on a context of its own, so one caller giving up does
	// not fail the fetch the others wait for, and without the client
	// request's state and forward: the attempt transport would otherwise
	// send the client's body (the tools/call itself) in place of the list
	// and count the fetch as the client's operation. Only the trace span
	// is kept, so the fetch shows under the call that caused it.
	_, _, _ = f.flight.Do(name, func() (any, error) {
		fctx, cancel := context.WithTimeout(trace.ContextWithSpan(context.Background(), trace.SpanFromContext(ctx)), toolFetchTimeout)
		defer cancel()
		err := s.fetchToolList(upstream.WithRetry(fctx, upstream.RetrySafe), fwd, fwd.version, json.RawMessage(params.Meta))
		if err != nil {
			loggerOf(ctx, s.log).Warn("could not read the upstream's tools/list before a call; the tool is decided as unknown", "upstream", name, "error", err)
			f.mu.Lock()
			if f.failed == nil {
				f.failed = map[string]time.Time{}
			}
			f.failed[name] = s.now()
			f.mu.Unlock()
			return nil, err
		}
		f.done(name, s.now())
		return nil, nil
	})
}

// fetchToolList reads every page of the upstream's tools/list through the
// route's executor, on the client's upstream session (legacy), the
// bridged session, or statelessly with the client's _meta (modern), and
// learns from each page what a client's tools/list would have taught.
func (s *Server) fetchToolList(ctx context.Context, fwd *forward, version string, meta json.RawMessage) error {
	bridge := fwd.bridge
	if fwd.bridging && bridge == nil {
		// The call is decided before prepareBridge gives it its session:
		// the principal's bridged session carries the fetch, as a legacy
		// client's own session does (a legacy-only upstream answers no
		// sessionless list).
		sess, err := fwd.route.bridge.get(fwd.principal.ID, func() (*bridgeSession, error) { return s.openBridge(ctx, fwd) })
		if err != nil {
			return err
		}
		defer fwd.route.bridge.release(sess)
		bridge = sess
	}
	cursor := ""
	for range maxLearnPages {
		params := map[string]any{}
		if cursor != "" {
			params["cursor"] = cursor
		}
		var extra http.Header
		session := fwd.upstreamSession
		switch {
		case bridge != nil:
			session, version = bridge.id, bridge.version
		case fwd.era == eraModern:
			extra = http.Header{"Mcp-Method": {"tools/list"}}
			if len(meta) > 0 {
				params["_meta"] = meta
			}
		}
		body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": fedRequestID, "method": "tools/list", "params": params})
		if err != nil {
			return err
		}
		resp, raw, err := askMember(ctx, fwd.route, upstreamRequest{body: body, session: session, version: version, as: fwd.route.identity(fwd.principal), header: extra})
		if err != nil {
			return err
		}
		result, err := memberResult(resp, raw)
		if err != nil {
			return err
		}
		if err := exactListMember(result, listShapes["tools/list"].items); err != nil {
			return err
		}
		_, _, _ = s.learnToolPage(ctx, fwd, result)
		var page struct {
			NextCursor string `json:"nextCursor"`
		}
		if json.Unmarshal(result, &page) != nil || page.NextCursor == "" {
			return nil
		}
		cursor = page.NextCursor
	}
	return nil
}

// learnToolPage records what one tools/list page says about its tools:
// annotations and descriptions (catalog), input schemas, and pins (digests
// of what the upstream sent, before any rewriting). filterResponse calls
// it for the lists clients ask for; learnToolsBeforeCall for its own.
func (s *Server) learnToolPage(ctx context.Context, fwd *forward, result []byte) ([]byte, *toolPage, error) {
	out, page, err := s.readTools(ctx, fwd, result)
	if err == nil {
		// A list a client read is as recent as one the gateway fetched: a
		// call of a name it lacks needs no fetch either. Recorded only once
		// the catalog holds the page: a call that found the tool unknown
		// and then saw the list recorded would otherwise be decided on
		// nothing (TestCallBeforeListSingleFlight, 1 run in 12).
		s.toolFetch.done(fwd.route.upstream.Name, s.now())
	}
	return out, page, err
}
