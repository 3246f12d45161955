package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/ctxgate/ctxgate/config"
)

// Request is what identifies one cacheable upstream answer.
type Request struct {
	// Upstream is the configured upstream name.
	Upstream string
	// Method is the JSON-RPC method.
	Method string
	// Params are the request's params as sent; _meta is ignored, nil and
	// {} are the same request. The cursor of a paginated list is a param,
	// so each page has its own key.
	Params json.RawMessage
	// Era and Version are the MCP protocol era ("legacy", "modern") and
	// revision the answer was produced under.
	Era, Version string
	// Capabilities is a digest of the client capabilities declared at
	// initialize (legacy) or in _meta (modern): a legacy server may shape
	// its lists by them.
	Capabilities string
	// Principal is the principal id for an entry private to one principal,
	// "" for an entry shared by everyone.
	Principal string
}

// The "never cache" rules. They live here, beside Key, so that what makes
// an answer reusable and what identifies it are read together.
//
// A request may be answered from the cache only if (Cacheable):
//   - its method is one of config.CacheMethods: tools/list, prompts/list,
//     resources/list, resources/templates/list, resources/read,
//     server/discover, and tools/call only for a tool the operator listed;
//   - it is a request with an id: never a notification, never a client's
//     answer to a server-to-client request, never a batch (the gateway
//     only asks for single messages);
//   - its params carry no inputResponses and no requestState: a multi
//     round-trip retry depends on inputs that are not part of the key;
//   - its params are a JSON object (or absent), so they canonicalize.
//
// An upstream answer may be stored only if (Storable):
//   - it is a JSON-RPC result, never an error;
//   - the result is not a tool error (isError: true);
//   - the result is not interim (resultType "input_required") and carries no
//     inputResponses or requestState;
//   - it has a lifetime: the upstream's ttlMs (capped by max_ttl), else the
//     operator's ttl for the method; neither means not cached.
//
// Never cached by construction, because the gateway only stores the single
// JSON-RPC response to the single request it sent: server-to-client
// requests, notifications, and streams (GET streams, subscriptions).
//
// The key is private (Principal set) unless the upstream marked the result
// cacheScope "public" and identity is not forwarded to it: an absent scope
// is private. ttlMs and cacheScope are honoured only on modern-era
// (2026-07-28) exchanges, where they are protocol; a legacy-era answer's
// fields of those names are not (SDKs send defaults), so every legacy-era
// entry is per principal and lives for the configured ttl.

// Reasons a request or answer is not cached (for logs and tests).
var (
	ErrMethod         = errors.New("method is not cacheable")
	ErrTool           = errors.New("tool is not listed for caching")
	ErrNotification   = errors.New("notifications are never cached")
	ErrMultiRoundTrip = errors.New("multi round-trip requests and interim results are never cached")
	ErrParams         = errors.New("params are not a JSON object")
	ErrError          = errors.New("errors are never cached")
	ErrToolError      = errors.New("isError results are never cached")
	ErrNoLifetime     = errors.New("no ttl configured and no ttlMs given")
)

// Cacheable reports, as nil, whether a request may be answered from the
// cache, or the rule that forbids it. isCall is false for notifications;
// tools are the tools listed for caching on the upstream.
func Cacheable(method string, isCall bool, params json.RawMessage, tools []string) error {
	if !isCall {
		return ErrNotification
	}
	if !slices.Contains(config.CacheMethods, method) {
		return ErrMethod
	}
	var p map[string]json.RawMessage
	if len(bytes.TrimSpace(params)) > 0 && !isNull(params) {
		if err := json.Unmarshal(params, &p); err != nil || p == nil {
			return ErrParams
		}
	}
	if _, ok := p["inputResponses"]; ok {
		return ErrMultiRoundTrip
	}
	if _, ok := p["requestState"]; ok {
		return ErrMultiRoundTrip
	}
	if method == "tools/call" {
		var name string
		if json.Unmarshal(p["name"], &name) != nil || !slices.Contains(tools, name) {
			return ErrTool
		}
	}
	return nil
}

// Key derives the cache key of a request: a hex SHA-256 over every field
// of r, each length-prefixed so no two different requests can collide by
// shifting bytes from one field to the next. The same request always maps
// to the same key (params are canonicalized per RFC 8785, without _meta);
// a shared key and any principal's key never coincide.
func Key(r Request) (string, error) {
	params, err := canonicalParams(r.Params)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range [][]byte{
		[]byte("ctxgate cache key v1"),
		[]byte(r.Upstream), []byte(r.Method), params,
		[]byte(r.Era), []byte(r.Version), []byte(r.Capabilities),
		[]byte(r.Principal),
	} {
		var n [binary.MaxVarintLen64]byte
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(f)))])
		h.Write(f)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// canonicalParams drops the top-level _meta and returns the RFC 8785
// canonical form; absent, null and {} params are all "{}".
func canonicalParams(raw json.RawMessage) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 || isNull(raw) {
		return []byte("{}"), nil
	}
	var p map[string]json.RawMessage
	if err := json.Unmarshal(raw, &p); err != nil || p == nil {
		return nil, fmt.Errorf("%w: %v", ErrParams, err)
	}
	delete(p, "_meta")
	out, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrParams, err)
	}
	v := jsontext.Value(out)
	if err := v.Canonicalize(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrParams, err)
	}
	return v, nil
}

func isNull(raw []byte) bool { return string(bytes.TrimSpace(raw)) == "null" }

// Hints are what an upstream result says about its own caching.
type Hints struct {
	// TTLMs is the upstream's ttlMs; nil when absent.
	TTLMs *int64
	// Public is true only for cacheScope "public"; absent or anything else
	// is private.
	Public bool
}

// Storable applies the answer-side rules to a JSON-RPC response: its result
// member, or rpcError when it is an error response. It returns the result's
// caching hints.
func Storable(result json.RawMessage, rpcError bool) (Hints, error) {
	var h Hints
	if rpcError {
		return h, ErrError
	}
	var r struct {
		IsError        bool            `json:"isError"`
		ResultType     string          `json:"resultType"`
		InputResponses json.RawMessage `json:"inputResponses"`
		RequestState   json.RawMessage `json:"requestState"`
		InputRequests  json.RawMessage `json:"inputRequests"`
		TTLMs          *int64          `json:"ttlMs"`
		CacheScope     string          `json:"cacheScope"`
	}
	if len(result) == 0 || json.Unmarshal(result, &r) != nil || bytes.TrimSpace(result)[0] != '{' {
		return h, ErrParams
	}
	switch {
	case r.IsError:
		return h, ErrToolError
	case r.ResultType == "input_required" || r.InputResponses != nil || r.RequestState != nil || r.InputRequests != nil:
		return h, ErrMultiRoundTrip
	}
	if r.TTLMs != nil && *r.TTLMs >= 0 {
		h.TTLMs = r.TTLMs
	}
	h.Public = r.CacheScope == "public"
	return h, nil
}

// CapabilityDigest names a set of client capabilities (the capabilities
// object of initialize, or of a modern request's _meta): equal sets, in any
// member order or spacing, have equal digests. Absent capabilities digest
// like {}.
func CapabilityDigest(capabilities json.RawMessage) string {
	canon, err := canonicalParams(capabilities)
	if err != nil {
		canon = capabilities // not an object: still one digest per spelling
	}
	sum := sha256.Sum256(append([]byte("ctxgate capabilities v1\x00"), canon...))
	return hex.EncodeToString(sum[:16])
}
