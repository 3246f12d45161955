package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/upstream"
)

// Bridging serves modern-era (2026-07-28) clients from an upstream that
// speaks only the legacy era, when the upstream is configured with bridge:
// true. The rules:
//
//   - The gateway keeps one legacy session with the upstream per principal
//     and route, opened with initialize on the principal's first bridged
//     request (after the policy allowed it, or to read the upstream's
//     tools/list before deciding a call: toolfetch.go), with the highest legacy
//     revision both sides know and empty client capabilities. Sessions live
//     in the memory of each gateway process (each replica opens its own;
//     the client never sees one) for at most sessions.ttl; an upstream 404
//     (or a 400 for no request: bridgeSessionLost) ends one, and the next
//     request opens a new one. A session the upstream's transport knows
//     has ended (a stdio process reaped idle or crashed) is replaced
//     before it is used, so the client's request does not fail on it. A
//     session the gateway stops using (replaced after sessions.ttl, or
//     evicted) is ended upstream (DELETE) once no request uses it: a stdio
//     upstream's process per principal lives as long as its session.
//   - server/discover is answered by the gateway from the session's
//     initialize result: the route's revisions (2026-07-28 and the legacy
//     ones), the upstream's capabilities without what cannot be bridged
//     (listChanged, subscribe, logging), its instructions, and its
//     serverInfo in _meta.
//   - Every other request is forwarded on the session, with the modern
//     _meta keys (io.modelcontextprotocol/*) removed from params._meta and
//     the legacy revision in MCP-Protocol-Version; every other byte is the
//     client's. The answer is relayed as it comes, each result given
//     what a 2026-07-28 result carries and a legacy one lacks
//     (bridgedResult: resultType, and ttlMs and cacheScope on cacheable
//     methods).
//
// Limits: no server-to-client requests (the session declares no client
// capabilities; one sent anyway is refused to the upstream and never
// reaches the client), no subscriptions/listen (404, -32601), no per-request
// client capabilities or log level, and no bridging the other way (a legacy
// client in front of a modern-only upstream).

const (
	// maxBridgeSessions bounds the principals a route keeps sessions for.
	maxBridgeSessions = 10000
	modernMetaPrefix  = "io.modelcontextprotocol/"
)

// bridgeSession is the gateway's legacy session with an upstream on behalf
// of one principal.
type bridgeSession struct {
	id      string // the upstream's Mcp-Session-Id; "" if it assigned none
	version string // the negotiated legacy revision
	as      *Principal
	opened  time.Time
	// From the initialize result, for server/discover.
	capabilities map[string]any
	serverInfo   json.RawMessage
	instructions string

	// Under bridgeSessions.mu: the requests using the session now (from
	// get to release); retired, no longer handed out; lost, ended by the
	// upstream (nothing left to end).
	uses          int
	retired, lost bool
}

// bridgeSessions are one route's bridged sessions, by principal id.
type bridgeSessions struct {
	ttl time.Duration
	// gone reports a session the upstream's transport knows has ended
	// (upstream.SessionGone); nil: it never knows.
	gone func(id string) bool
	// end ends a retired session upstream; it must not block (the
	// gateway's runs in a goroutine of its own). Nil: the upstream
	// expires it itself.
	end func(*bridgeSession)

	mu sync.Mutex
	m  map[string]*bridgeEntry
}

type bridgeEntry struct {
	mu   sync.Mutex     // held while the session is opened: one initialize per principal
	sess *bridgeSession // written under both mu and bridgeSessions.mu
}

func newBridgeSessions(ttl time.Duration) *bridgeSessions {
	return &bridgeSessions{ttl: ttl, m: map[string]*bridgeEntry{}}
}

// get returns the principal's session, opening one with open if there is
// none, it is too old, or its transport knows it ended. Every session get
// returns is in use until release.
func (b *bridgeSessions) get(principal string, open func() (*bridgeSession, error)) (*bridgeSession, error) {
	b.mu.Lock()
	e := b.m[principal]
	var evicted *bridgeSession
	if e == nil {
		if len(b.m) >= maxBridgeSessions {
			for k, old := range b.m { // any one: map order is random
				delete(b.m, k)
				evicted = b.retire(old.sess)
				break
			}
		}
		e = &bridgeEntry{}
		b.m[principal] = e
	}
	b.mu.Unlock()
	b.ending(evicted)

	e.mu.Lock()
	defer e.mu.Unlock()
	b.mu.Lock()
	cur := e.sess
	b.mu.Unlock()
	// Asked outside b.mu: the transport takes its own lock.
	gone := cur != nil && b.gone != nil && b.gone(cur.id)
	b.mu.Lock()
	if cur != nil && !gone && !cur.retired && time.Since(cur.opened) < b.ttl {
		cur.uses++
		b.mu.Unlock()
		return cur, nil
	}
	var stale *bridgeSession
	if cur != nil {
		cur.lost = cur.lost || gone
		stale = b.retire(cur)
		e.sess = nil
	}
	b.mu.Unlock()
	b.ending(stale)
	sess, err := open()
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	sess.uses = 1
	e.sess = sess
	b.mu.Unlock()
	return sess, nil
}

// retire stops handing sess out and returns it if it is to be ended now
// (no request uses it); b.mu held.
func (b *bridgeSessions) retire(sess *bridgeSession) *bridgeSession {
	if sess == nil || sess.retired {
		return nil
	}
	sess.retired = true
	if sess.uses > 0 || sess.lost {
		return nil // release ends it, or there is nothing to end
	}
	return sess
}

// release ends one use of sess that get returned; the last use of a
// retired session ends it upstream.
func (b *bridgeSessions) release(sess *bridgeSession) {
	b.mu.Lock()
	sess.uses--
	end := sess.retired && !sess.lost && sess.uses == 0
	b.mu.Unlock()
	if end {
		b.ending(sess)
	}
}

func (b *bridgeSessions) ending(sess *bridgeSession) {
	if sess != nil && b.end != nil {
		b.end(sess)
	}
}

// drop forgets sess, if it is still the principal's session: the upstream
// ended it.
func (b *bridgeSessions) drop(principal string, sess *bridgeSession) {
	b.mu.Lock()
	sess.lost, sess.retired = true, true
	e := b.m[principal]
	b.mu.Unlock()
	if e == nil {
		return
	}
	e.mu.Lock()
	b.mu.Lock()
	if e.sess == sess {
		e.sess = nil
	}
	b.mu.Unlock()
	e.mu.Unlock()
}

// endBridge ends a bridged session the gateway no longer uses: DELETE, as
// a client ends its session (for a stdio upstream: its process ends).
func (s *Server) endBridge(rt *route, sess *bridgeSession) {
	if sess.id == "" {
		return // the upstream keeps no session to end
	}
	ctx, cancel := context.WithTimeout(s.streams, probeTimeout)
	defer cancel()
	resp, err := askUpstream(ctx, rt.direct(), upstreamRequest{method: http.MethodDelete, session: sess.id, version: sess.version, as: sess.as})
	if err != nil {
		s.log.Debug("could not end a bridged session", "upstream", rt.upstream.Name, "error", err)
		return
	}
	_ = resp.Body.Close()
}

// maxLostSessionBody bounds what is read of a bridged request's 400 to
// tell a lost session from a refused request.
const maxLostSessionBody = 64 << 10

// bridgeSessionLost reports whether an upstream's answer to a bridged
// request says it no longer has the session: 404, as the spec has it, or
// 400 with a JSON-RPC error for no request (id null or absent), as the
// TypeScript SDK's examples answer a session they do not know ("Bad
// Request: No valid session ID provided"). A 400 answering the request
// itself (its id) is the upstream refusing it, relayed; its body is put
// back as it was.
func bridgeSessionLost(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusNotFound:
		return true
	case http.StatusBadRequest:
	default:
		return false
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxLostSessionBody))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(raw), resp.Body), resp.Body}
	return err == nil && sessionErrorBody(raw)
}

// sessionErrorBody reports whether a 400's body is a JSON-RPC error for no
// request (id null or absent): the TypeScript SDK's answer to a session it
// does not know.
func sessionErrorBody(raw []byte) bool {
	var msg struct {
		ID    json.RawMessage `json:"id"`
		Error *struct{}       `json:"error"`
	}
	if json.Unmarshal(raw, &msg) != nil || msg.Error == nil {
		return false
	}
	return len(msg.ID) == 0 || string(msg.ID) == "null"
}

// bridgeVersions is what a bridged route serves: the modern revisions on
// top of the upstream's legacy ones. ok is false when the route does not
// bridge or its upstream speaks the modern era itself.
func bridgeVersions(rt *route, upstreamVersions []string) ([]string, bool) {
	if rt.bridge == nil || len(upstreamVersions) == 0 || slices.ContainsFunc(upstreamVersions, func(v string) bool { return slices.Contains(modernVersions, v) }) {
		return upstreamVersions, false
	}
	return append(slices.Clone(modernVersions), upstreamVersions...), true
}

// prepareBridge runs after the policy allowed a bridged request: it finds
// or opens the principal's legacy session and translates the request, or
// prepares the gateway's own answer to server/discover.
func (s *Server) prepareBridge(r *http.Request, fwd *forward, req *jsonrpc.Request) error {
	if req.Method == "subscriptions/listen" {
		return newError(http.StatusNotFound, CodeMethodNotFound, "subscriptions/listen is not available on this route: its upstream speaks only the legacy protocol era", nil)
	}
	sess, err := fwd.route.bridge.get(fwd.principal.ID, func() (*bridgeSession, error) { return s.openBridge(r.Context(), fwd) })
	if errors.Is(err, upstream.ErrProcessesFull) || errors.Is(err, upstream.ErrRestartBackoff) || errors.Is(err, upstream.ErrSessionsFull) {
		return upstreamError(r.Context(), err) // 503 with Retry-After, as to a legacy client's initialize
	}
	if err != nil {
		return newError(http.StatusBadGateway, CodeUpstreamUnavailable, "could not open a session with the upstream", err)
	}
	fwd.bridge, fwd.upstreamSession = sess, sess.id
	if req.Method == "server/discover" {
		fwd.answer, err = discoverAnswer(req.ID, sess, fwd.servedVersions)
		return err
	}
	body, err := withoutModernMeta(fwd.body)
	if err != nil {
		return badRequest("request cannot be bridged to the legacy protocol era", err)
	}
	fwd.body = body
	return nil
}

// openBridge initializes a legacy session with the upstream on behalf of
// fwd's principal.
func (s *Server) openBridge(ctx context.Context, fwd *forward) (*bridgeSession, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
	defer cancel()
	version := ""
	for _, v := range fwd.servedVersions {
		if isSupportedVersion(v) && v > version {
			version = v
		}
	}
	params, err := json.Marshal(map[string]any{"protocolVersion": version, "capabilities": map[string]any{},
		"clientInfo": map[string]string{"name": "ctxgate-bridge", "version": "1"}})
	if err != nil {
		return nil, err
	}
	// direct: the client's request this session serves goes through the
	// executor next; the handshake taking a slot too would count one
	// bridged request twice against the bulkhead and the breaker.
	opened, err := openSession(ctx, fwd.route.direct(), handshake{id: "ctxgate-bridge", params: params,
		req: upstreamRequest{version: version, as: fwd.route.identity(fwd.principal)}})
	if err != nil {
		return nil, err
	}
	var init struct {
		Capabilities map[string]any  `json:"capabilities"`
		ServerInfo   json.RawMessage `json:"serverInfo"`
		Instructions string          `json:"instructions"`
	}
	if err := json.Unmarshal(opened.result, &init); err != nil {
		return nil, fmt.Errorf("upstream initialize result unusable: %w", err)
	}
	return &bridgeSession{id: opened.id, version: opened.version, as: fwd.route.identity(fwd.principal), opened: time.Now(),
		capabilities: init.Capabilities, serverInfo: init.ServerInfo, instructions: neutralise(init.Instructions)}, nil
}

// discoverAnswer is the gateway's server/discover result for a bridged
// route, built from the legacy session's initialize result.
func discoverAnswer(id jsonrpc.ID, sess *bridgeSession, versions []string) ([]byte, error) {
	caps := map[string]any{}
	for k, v := range sess.capabilities {
		if k == "logging" {
			continue // no log level can be bridged
		}
		if m, ok := v.(map[string]any); ok {
			m = maps.Clone(m)
			delete(m, "listChanged") // no subscriptions/listen through the bridge
			delete(m, "subscribe")
			v = m
		}
		caps[k] = v
	}
	result := map[string]any{"resultType": "complete", "supportedVersions": versions, "capabilities": caps,
		"ttlMs": 0, "cacheScope": "private"} // as bridgedResult gives a cacheable result
	if sess.instructions != "" {
		result["instructions"] = sess.instructions
	}
	if len(sess.serverInfo) > 0 {
		result["_meta"] = map[string]any{modernMetaPrefix + "serverInfo": sess.serverInfo}
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return nil, err
	}
	return jsonrpc.EncodeMessage(&jsonrpc.Response{ID: id, Result: raw})
}

// writeAnswer writes a JSON-RPC answer the gateway gives itself.
func writeAnswer(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

var errParamsNotObject = errors.New("params is not an object")

// withoutModernMeta removes the modern era's own _meta keys from a
// request's params (a legacy server would read a protocol version there as
// a modern request); every other member keeps its exact bytes.
func withoutModernMeta(body []byte) ([]byte, error) {
	out, err := editParams(body, func(params []member) ([]member, error) {
		for j, p := range params {
			if foldName(p.name) != "_meta" {
				continue
			}
			meta, err := members(p.value)
			if err != nil {
				return nil, err
			}
			meta = slices.DeleteFunc(meta, func(k member) bool { return strings.HasPrefix(foldName(k.name), modernMetaPrefix) })
			params[j].value = encodeObject(meta)
		}
		return params, nil
	})
	if err != nil {
		return nil, err
	}
	if _, err := decodeMessage(out); err != nil {
		return nil, err // never forward what the gateway itself would refuse
	}
	return out, nil
}

// What a bridged result is given when it lacks it (bridgedResult).
var (
	completeResult = jsontext.Value(`"complete"`)
	staleNow       = jsontext.Value(`0`)
	privateScope   = jsontext.Value(`"private"`)
)

// cacheableMethods are those whose 2026-07-28 results carry ttlMs and
// cacheScope.
var cacheableMethods = map[string]bool{"tools/list": true, "prompts/list": true, "resources/list": true,
	"resources/templates/list": true, "resources/read": true, "server/discover": true}

// bridgedResult gives a bridged response's result the members every
// 2026-07-28 result of its method carries and a legacy one lacks:
// resultType "complete" (a legacy result is never input_required) and,
// for a cacheable method, ttlMs 0 and cacheScope "private" (the gateway
// knows nothing of how long it stays fresh, and the policy filtered it
// for this principal: no one else may be served it). Members the result
// has are kept; an error, and anything that is not an object, are
// returned as they are. Every other byte is the upstream's.
func bridgedResult(data []byte, method string) []byte {
	top, err := members(data)
	if err != nil {
		return data
	}
	for i, t := range top {
		if foldName(t.name) != "result" {
			continue
		}
		result, err := members(t.value)
		if err != nil {
			return data
		}
		add := []member{{name: "resultType", value: completeResult}}
		if cacheableMethods[method] {
			add = append(add, member{name: "ttlMs", value: staleNow}, member{name: "cacheScope", value: privateScope})
		}
		changed := false
		for _, a := range add {
			if !slices.ContainsFunc(result, func(m member) bool { return foldName(m.name) == foldName(a.name) }) {
				result, changed = append(result, a), true
			}
		}
		if !changed {
			return data
		}
		top[i].value = encodeObject(result)
		return encodeObject(top)
	}
	return data
}

// codeMissingCapability is 2026-07-28's MissingRequiredClientCapability
// error (SEP-2575), which a legacy server may answer too.
const codeMissingCapability = -32021

// missingCapability reports whether a bridged JSON answer is that error,
// which a 2026-07-28 server answers with HTTP 400 and a legacy session
// (a stdio one always) with 200.
func missingCapability(body []byte) bool {
	var msg struct {
		Error *struct {
			Code int64 `json:"code"`
		} `json:"error"`
	}
	return json.Unmarshal(body, &msg) == nil && msg.Error != nil && msg.Error.Code == codeMissingCapability
}
