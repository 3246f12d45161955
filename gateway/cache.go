package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/cache"
	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/mcpwire"
)

// The response cache in the pipeline (DESIGN "Cache"). A POST holding one
// cacheable request (cache.Cacheable) on a route whose upstream has a cache
// block is served here, after authorization:
//
//	lookup (shared key, then this principal's key)
//	  fresh        -> the cached raw result, filtered now   Ctxgate-Cache: hit
//	  stale / none -> one upstream request per key (single-flight); its
//	                  answer read whole (bounded), stored raw if storable,
//	                  and served through the same filter    Ctxgate-Cache: miss
//	                  anything not storable (errors, isError, interim
//	                  results, a server request mid-stream, non-200) is
//	                  relayed as it came, through the proxy  Ctxgate-Cache: bypass
//	  upstream down (refused, timeout, 5xx) and a stale entry within its
//	  stale_if_error window, never for tools/call:
//	                  served marked _meta io.ctxgate/stale   Ctxgate-Cache: stale; age=S
//
// The cache holds the upstream's raw result; the policy in force filters
// and redacts every answer as it leaves (filterCached), so a policy change
// applies to cached data at once. What depends on the result's bytes alone
// (a tools/list page read, neutralised and digested for its pins) is kept
// beside it, by those bytes (toolscreen.go), so a hit does not redo it.

// cacheHeader tells the client where its answer came from.
const cacheHeader = "Ctxgate-Cache"

// staleMetaKey is the _meta member marking a result served stale.
const staleMetaKey = "io.ctxgate/stale"

// cacheLookup is one request's view of the cache.
type cacheLookup struct {
	// hints: the exchange with the upstream is modern-era, where ttlMs
	// and cacheScope are defined. A legacy-era answer's fields of those
	// names are not protocol (the Go SDK sends ttlMs 0 and cacheScope
	// public by default on every revision): trusting them would share
	// every legacy answer between principals and cache none.
	hints    bool
	upstream string
	req      *jsonrpc.Request
	cfg      *config.UpstreamCache
	shared   string // "" when identity is forwarded: nothing is shared then
	private  string
	target   string // the URI of a resources/read, the tool of a tools/call: a tag
	// generation is the second level's, read before the fetch (-1: no
	// second level, or it did not answer: the answer is not stored there).
	generation int64
}

// serveCached answers the request from or through the cache and reports
// true, or reports false for a request the cache does not handle (the
// caller forwards it as usual).
func (s *Server) serveCached(w http.ResponseWriter, r *http.Request, fwd *forward) bool {
	lk, ok := s.cacheLookupFor(fwd)
	if !ok {
		if fwd.cache == "bypass" {
			w.Header().Set(cacheHeader, "bypass")
		}
		return false
	}
	keys := []string{lk.private}
	if lk.shared != "" {
		keys = []string{lk.shared, lk.private}
	}
	e, state, key := s.cache.Lookup(keys...)
	if state == cache.Fresh {
		fwd.cache, fwd.cacheKey = "hit", key
		fwd.cacheAgeMs = s.cache.Now().Sub(e.StoredAt).Milliseconds()
		s.writeCached(w, r, fwd, lk, e, "hit")
		return true
	}
	switch e2, state2, key2 := s.lookupSecond(r.Context(), lk, keys); {
	case state2 == cache.Fresh:
		fwd.cache, fwd.cacheKey = "hit_l2", key2
		fwd.cacheAgeMs = s.cache.Now().Sub(e2.StoredAt).Milliseconds()
		s.writeCached(w, r, fwd, lk, e2, "hit; l2")
		return true
	case state2 == cache.Stale && state != cache.Stale:
		e, state, key = e2, state2, key2
	}
	got, ran, err := s.fetchOnce(r, fwd, lk, keys)
	switch {
	case err == nil && got.entry != nil:
		fwd.cache, fwd.cacheKey = "miss", got.key
		s.writeCached(w, r, fwd, lk, got.entry, "miss")
	case err == nil && ran:
		fwd.cache = "bypass"
		w.Header().Set(cacheHeader, "bypass")
		s.relayCaptured(w, r, fwd, got.relay, got.captured)
	case err == nil:
		// The shared fetch's answer was not cacheable and was relayed to
		// its own client only: this request goes upstream on its own.
		fwd.cache = "bypass"
		w.Header().Set(cacheHeader, "bypass")
		fwd.route.proxy.ServeHTTP(w, r)
	case r.Context().Err() != nil:
		s.proxyError(w, r, err) // the client went away: no one to answer
	case state == cache.Stale && lk.req.Method != "tools/call":
		// tools/call is never served stale: a call's answer stands for an
		// action taken now.
		s.cache.CountStale()
		fwd.cache, fwd.cacheKey = "stale", key
		fwd.cacheAgeMs = s.cache.Now().Sub(e.StoredAt).Milliseconds()
		loggerOf(r.Context(), s.log).Warn("upstream failed: serving a stale answer", "error", err, "age_ms", fwd.cacheAgeMs)
		s.writeCached(w, r, fwd, lk, e, "stale")
	default:
		s.proxyError(w, r, err)
	}
	return true
}

// fetchOnce fetches the answer for lk, once for all concurrent requests of
// the same key. ran reports whether it was this request's fetch (the one
// to relay an answer that cannot be stored).
func (s *Server) fetchOnce(r *http.Request, fwd *forward, lk *cacheLookup, keys []string) (*fetched, bool, error) {
	for attempt := 1; ; attempt++ {
		token := s.cache.Begin()
		// Keyed by the private key: a fetch is shared only by requests of
		// one principal, since whether the answer may be shared is only
		// known once it arrives.
		v, ran, err := s.cache.Do(r.Context(), lk.private, func() (any, error) {
			// A flight that ended between this request's lookup and now
			// has stored its answer: use it rather than ask again.
			if e, key := s.cache.Fresh(keys...); e != nil {
				return &fetched{entry: e, key: key}, nil
			}
			return s.fetchCacheable(r, fwd, lk, token)
		})
		if err == nil {
			return v.(*fetched), ran, nil
		}
		// The fetch runs on the context of the request that started it;
		// if that client went away while this one is still here, ask again.
		if !ran && errors.Is(err, context.Canceled) && r.Context().Err() == nil && attempt < 3 {
			continue
		}
		return nil, ran, err
	}
}

// cacheLookupFor decides whether the cache handles this request and
// derives its keys.
func (s *Server) cacheLookupFor(fwd *forward) (*cacheLookup, bool) {
	cfg := fwd.route.cache
	if s.cache == nil || cfg == nil || fwd.msg == nil || len(fwd.messages) != 1 || fwd.initialize {
		return nil, false
	}
	req := fwd.msg.Request()
	if req == nil || cache.Cacheable(req.Method, req.ID.IsValid(), req.Params, cfg.Tools) != nil {
		return nil, false
	}
	if s.fanout != nil && !s.fanout.Synced() {
		// This replica may have missed another's invalidation: what it
		// holds may be out of date, so it serves and stores nothing until
		// it is back in step (shared/fanout.go).
		s.cache.CountBypass()
		fwd.cache = "bypass"
		return nil, false
	}
	cr := cache.Request{
		Upstream: fwd.route.upstream.Name, Method: req.Method, Params: req.Params,
		Era: "legacy", Version: fwd.version, Capabilities: fwd.caps,
	}
	lk := &cacheLookup{upstream: fwd.route.upstream.Name, req: req, cfg: cfg, generation: -1}
	if fwd.era == eraModern {
		// A modern request carries its client capabilities in _meta (the
		// key leaves _meta out, so they are keyed here). Its upstream's
		// ttlMs and cacheScope are protocol only when the exchange with
		// the upstream is modern too, not when the gateway bridges it to
		// a legacy session.
		cr.Era, cr.Capabilities = eraModern, modernCapabilityDigest(mcpwire.ParamsOf(req))
		lk.hints = !fwd.bridging
	}
	if _, ok := cfg.TTL[req.Method]; !ok && !lk.hints {
		// No ttl and no ttlMs to come: it could never be stored, so it is
		// proxied as if there were no cache (streamed, not read whole).
		return nil, false
	}
	var err error
	if lk.hints && !fwd.route.identityHeaders && !fwd.route.upstream.CallsAsUser() {
		// Only a modern-era cacheScope "public" makes an entry shared, and
		// with identity forwarded (headers, or a token naming the user)
		// the upstream may answer per principal whatever scope it claims:
		// then no entry is shared.
		if lk.shared, err = cache.Key(cr); err != nil {
			return nil, false
		}
	}
	cr.Principal = fwd.principal.ID
	if lk.private, err = cache.Key(cr); err != nil {
		return nil, false
	}
	if p := mcpwire.ParamsOf(req); p != nil {
		switch req.Method {
		case "resources/read":
			lk.target = p.URI
		case "tools/call":
			lk.target = p.Name
		}
	}
	return lk, true
}

// fetched is the outcome of one upstream fetch for the cache: a storable
// answer (entry, stored under key), or an answer to relay as it came
// (relay, with the bytes of it already read in captured), which only the
// request whose fetch it was relays.
type fetched struct {
	entry    *cache.Entry
	key      string
	relay    *http.Response
	captured *bytes.Buffer
}

// errUpstreamStatus is an upstream 5xx: a failure the stale window covers.
type errUpstreamStatus int

func (e errUpstreamStatus) Error() string { return "upstream answered HTTP " + strconv.Itoa(int(e)) }

// fetchCacheable sends the request upstream, exactly as the proxy would,
// and reads the answer whole. A transport error or 5xx is returned as an
// error; an answer that cannot be stored is returned to be relayed.
func (s *Server) fetchCacheable(r *http.Request, fwd *forward, lk *cacheLookup, token uint64) (*fetched, error) {
	// On the starting client's context, as a forwarded request is: if that
	// client goes away the upstream request is cancelled, and the others
	// waiting on it ask again.
	out := r.Clone(r.Context())
	out.RequestURI = "" // a client request, as ReverseProxy makes it
	out.Close = false
	s.rewrite(&httputil.ProxyRequest{In: r, Out: out})
	// Through the upstream's executor, as the proxy sends: timeouts,
	// retries of these safe methods, the breaker, the bulkhead.
	resp, err := fwd.route.transport.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 500 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		return nil, errUpstreamStatus(resp.StatusCode)
	}
	captured, result, err := s.captureAnswer(resp, fwd.route.upstream.Name, lk.req.ID)
	if err != nil {
		_ = resp.Body.Close()
		return nil, err
	}
	if result != nil {
		if f := s.storeAnswer(r.Context(), lk, result, token); f != nil {
			_ = resp.Body.Close()
			return f, nil
		}
	}
	s.cache.CountBypass()
	return &fetched{relay: resp, captured: captured}, nil
}

// errNoAnswer: an event stream ended before the response to the request.
var errNoAnswer = errors.New("upstream event stream ended without an answer")

// captureAnswer reads a 200 answer until the JSON-RPC response to id and
// returns its result if it is one the cache may store. captured holds every
// byte read, so an answer that is not stored can still be relayed whole.
// Notifications before the response are observed (invalidation), not
// relayed: the client of a cached method gets its answer as JSON.
func (s *Server) captureAnswer(resp *http.Response, upstreamName string, id jsonrpc.ID) (captured *bytes.Buffer, result json.RawMessage, err error) {
	captured = &bytes.Buffer{}
	if resp.StatusCode != http.StatusOK {
		return captured, nil, nil
	}
	body := io.TeeReader(io.LimitReader(resp.Body, maxFilteredResponseBytes), captured)
	switch {
	case isJSON(resp.Header):
		data, err := io.ReadAll(body)
		if err != nil {
			return nil, nil, fmt.Errorf("read upstream answer: %w", err)
		}
		return captured, storableResult(data, id), nil
	case isEventStream(resp.Header):
		result, err := s.captureEvents(body, captured, upstreamName, id)
		if err != nil {
			return nil, nil, err
		}
		return captured, result, nil
	}
	return captured, nil, nil
}

// captureEvents reads an event stream until the message that is not a
// notification: the response (its result returned if storable) or a
// server-to-client request (nil: relay). Notifications before it are
// observed for invalidation.
func (s *Server) captureEvents(body io.Reader, captured *bytes.Buffer, upstreamName string, id jsonrpc.ID) (json.RawMessage, error) {
	events := newSSEReader(body)
	for {
		ev, err := events.Next()
		if err != nil {
			if captured.Len() >= maxFilteredResponseBytes {
				return nil, nil // too large to cache: relay it
			}
			return nil, fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		if !ev.HasData || len(ev.Data) == 0 {
			continue
		}
		msg, err := decodeRPC(ev.Data)
		if err != nil {
			return nil, nil
		}
		if req, ok := msg.(*jsonrpc.Request); ok && !req.ID.IsValid() {
			s.observeUpstream(upstreamName, ev.Data)
			continue
		}
		return storableResult(ev.Data, id), nil
	}
}

// storableResult returns the result of a response to id that the rules of
// cache.Storable allow to be stored, else nil.
func storableResult(data []byte, id jsonrpc.ID) json.RawMessage {
	msg, err := decodeRPC(data)
	if err != nil {
		return nil
	}
	resp, ok := msg.(*jsonrpc.Response)
	if !ok || resp.ID != id {
		return nil
	}
	if _, err := cache.Storable(resp.Result, resp.Error != nil); err != nil {
		return nil
	}
	return resp.Result
}

// storeAnswer stores a storable result under the key its scope dictates,
// with its lifetime: the upstream's ttlMs (capped by max_ttl), else the
// configured ttl. No lifetime means not cached: nil.
func (s *Server) storeAnswer(ctx context.Context, lk *cacheLookup, result json.RawMessage, token uint64) *fetched {
	var hints cache.Hints
	if lk.hints {
		hints, _ = cache.Storable(result, false)
	}
	ttl, ok := lk.cfg.TTL[lk.req.Method]
	if hints.TTLMs != nil {
		ttl, ok = min(time.Duration(*hints.TTLMs)*time.Millisecond, lk.cfg.MaxTTL), true
	}
	stale := lk.cfg.StaleIfError
	if lk.req.Method == "tools/call" {
		stale = 0
	}
	if !ok || ttl+stale <= 0 {
		return nil
	}
	key := lk.private
	if hints.Public && lk.shared != "" {
		key = lk.shared
	}
	now := s.cache.Now()
	e := &cache.Entry{
		Value: result, StoredAt: now, FreshUntil: now.Add(ttl), StaleUntil: now.Add(ttl + stale),
		Tags: cache.TagsFor(lk.upstream, lk.req.Method, lk.target),
	}
	if err := s.cache.Set(key, e, token); err != nil {
		s.log.Debug("answer not cached", "error", err)
	} else {
		s.storeSecond(ctx, lk, key, e)
	}
	if l, ok := s.listeners.Load(lk.upstream); ok && lk.req.Method == "resources/read" && lk.target != "" {
		go l.(*changeListener).subscribeTo(s.streams, lk.target)
	}
	// Served even when it could not be stored (larger than a shard).
	return &fetched{entry: e, key: key}
}

// relayCaptured relays an upstream answer the cache will not store through
// the route's proxy, exactly as an uncached answer: the bytes already read
// first, then the rest of the stream. Session swapping, the SSE relay and
// the policy's filtering all apply.
func (s *Server) relayCaptured(w http.ResponseWriter, r *http.Request, fwd *forward, resp *http.Response, captured *bytes.Buffer) {
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(captured, resp.Body), resp.Body}
	p := *fwd.route.proxy.(*httputil.ReverseProxy)
	p.Transport = answered{resp}
	p.ServeHTTP(w, r)
}

// answered is a RoundTripper that returns an answer already received.
type answered struct{ resp *http.Response }

func (a answered) RoundTrip(*http.Request) (*http.Response, error) { return a.resp, nil }

// writeCached answers with a cached (or just fetched) raw result, filtered
// and redacted by the current policy on the way out. A stale answer carries
// its age in the result's _meta and in the Ctxgate-Cache header.
func (s *Server) writeCached(w http.ResponseWriter, r *http.Request, fwd *forward, lk *cacheLookup, e *cache.Entry, how string) {
	result := e.Value
	header := how
	if how == "stale" {
		age := s.cache.Now().Sub(e.StoredAt)
		result = markStale(result, age.Milliseconds())
		header = "stale; age=" + strconv.FormatInt(int64(age/time.Second), 10)
	}
	body, err := s.filterCached(r.Context(), fwd, &jsonrpc.Response{ID: lk.req.ID, Result: result})
	if err != nil {
		writeError(w, r, fmt.Errorf("filter cached answer: %w", err))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set(cacheHeader, header)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// filterCached is transformMessage for a cached answer, which the gateway
// holds decoded already (the strict decoder read it when it arrived): the
// same filter, without encoding the answer only to decode it again.
func (s *Server) filterCached(ctx context.Context, fwd *forward, m *jsonrpc.Response) ([]byte, error) {
	if s.policy == nil {
		return jsonrpc.EncodeMessage(m)
	}
	if !fwd.claimResponse(m.ID) {
		return nil, errUnreadableAnswer // cannot happen: the one request of the exchange
	}
	return s.renamed(fwd, s.filterResponse(ctx, fwd, m, nil)), nil
}

// markStale sets _meta["io.ctxgate/stale"] = {"ageMs": age} on a result
// object, keeping the rest of the result and of its _meta.
func markStale(result json.RawMessage, ageMs int64) json.RawMessage {
	var obj map[string]json.RawMessage
	if json.Unmarshal(result, &obj) != nil || obj == nil {
		return result
	}
	var meta map[string]json.RawMessage
	if json.Unmarshal(obj["_meta"], &meta) != nil || meta == nil {
		meta = map[string]json.RawMessage{}
	}
	meta[staleMetaKey] = json.RawMessage(`{"ageMs":` + strconv.FormatInt(ageMs, 10) + `}`)
	obj["_meta"], _ = json.Marshal(meta)
	out, err := json.Marshal(obj)
	if err != nil {
		return result
	}
	return out
}

// invalidatedBy maps the upstream notifications that change cached answers
// to the methods whose entries they drop. server/discover describes the
// lists, so it goes with each of them. SEP-2640 defines no notification of
// its own: skills are resources, so a change of the resources drops the
// skills' entries too.
var invalidatedBy = map[string][]string{
	"notifications/tools/list_changed":     {"tools/list", "server/discover"},
	"notifications/prompts/list_changed":   {"prompts/list", "server/discover"},
	"notifications/resources/list_changed": {"resources/list", "resources/templates/list", "server/discover", "skills/list", "skills/get"},
}

// observeUpstream drops the cache entries an upstream message announces
// changed. It sees every message of every stream relayed from the upstream.
func (s *Server) observeUpstream(upstreamName string, data []byte) {
	if s.cache == nil || !bytes.Contains(data, []byte(`notifications/`)) {
		return
	}
	var n struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			URI string `json:"uri"`
		} `json:"params"`
	}
	if json.Unmarshal(data, &n) != nil || n.ID != nil {
		return
	}
	var tags []string
	for _, m := range invalidatedBy[n.Method] {
		tags = append(tags, cache.MethodTag(upstreamName, m))
	}
	if n.Method == "notifications/resources/updated" && n.Params.URI != "" {
		tags = append(tags, cache.ResourceTag(upstreamName, n.Params.URI))
	}
	if len(tags) > 0 {
		s.invalidateInBackground(invalidation{Tags: tags})
	}
}

// newCache returns the injected store, or builds one when any upstream has
// a cache block, or nil.
func newCache(cfg *config.Config, injected *cache.Store, now func() time.Time) (*cache.Store, error) {
	if injected != nil {
		return injected, nil
	}
	for _, up := range cfg.Upstreams {
		if up.Cache != nil {
			return cache.New(cfg, cache.Options{Now: now})
		}
	}
	return nil, nil
}

// capabilityDigest names the capabilities an initialize request declares
// (p as the strict decode kept it; nil declares none); sealed into the
// session, it keys the legacy-era lists a server may shape by them.
func capabilityDigest(p *mcpwire.Params) string {
	if p == nil {
		return cache.CapabilityDigest(nil)
	}
	return cache.CapabilityDigest(json.RawMessage(p.Capabilities))
}

// modernCapabilityDigest digests the client capabilities a modern request
// declares in params._meta (p as the strict decode kept it; nil declares
// none).
func modernCapabilityDigest(p *mcpwire.Params) string {
	if p == nil {
		return cache.CapabilityDigest(nil)
	}
	return cache.CapabilityDigest(json.RawMessage(p.MetaCapabilities))
}

// cacheConfig is the cache block of the named upstream, or nil.
func (s *Server) cacheConfig(upstreamName string) *config.UpstreamCache {
	for _, up := range s.cfg.Upstreams {
		if up.Name == upstreamName {
			return up.Cache
		}
	}
	return nil
}

// Cache is the gateway's response cache, nil when no upstream has a cache
// block; its Stats feed the metrics.
func (s *Server) Cache() *cache.Store { return s.cache }
