package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// Argument validation (upstreams[].validate_arguments). A tools/call whose
// arguments do not match the tool's inputSchema is answered -32602 and
// never forwarded: an upstream that trusts its own schema (or its SDK's
// validation) is not handed input it never declared. Schemas come from the
// upstream's own tools/list results, as the gateway last saw them, and are
// JSON Schema draft 2020-12 (or draft-07), checked by
// github.com/google/jsonschema-go, the Go SDK's own validator. Remote $ref
// is never fetched: a schema that needs one cannot be checked, and calls to
// that tool are refused. A tool the gateway has not seen listed (since it
// started) is forwarded unchecked: pin the tools (mode file) to refuse
// tools nobody reviewed.

// CodeInvalidParams answers arguments the tool's inputSchema rejects.
const CodeInvalidParams = jsonrpc.CodeInvalidParams // -32602

// toolSchema is one tool's inputSchema, resolved once per version.
type toolSchema struct {
	raw      json.RawMessage
	resolved *jsonschema.Resolved
	err      error // the schema cannot be checked
}

// schemaStore holds the input schemas of the upstreams that validate.
type schemaStore struct {
	mu    sync.RWMutex
	tools map[string]map[string]*toolSchema // upstream -> tool -> schema
}

func newSchemaStore() *schemaStore {
	return &schemaStore{tools: map[string]map[string]*toolSchema{}}
}

// learn records the input schemas of a tools/list result page, as
// readToolPage read it.
func (st *schemaStore) learn(upstreamName string, items []toolItem) {
	st.mu.Lock()
	defer st.mu.Unlock()
	known := st.tools[upstreamName]
	if known == nil {
		known = map[string]*toolSchema{}
		st.tools[upstreamName] = known
	}
	for _, t := range items {
		raw := json.RawMessage(t.members["inputSchema"])
		if old, ok := known[t.Name]; ok && bytes.Equal(old.raw, raw) {
			continue // resolved already
		}
		if _, ok := known[t.Name]; !ok && len(known) >= maxCatalogTools {
			continue
		}
		known[t.Name] = resolveSchema(raw)
	}
}

func resolveSchema(raw json.RawMessage) *toolSchema {
	ts := &toolSchema{raw: raw}
	var s jsonschema.Schema
	if err := json.Unmarshal(raw, &s); err != nil {
		ts.err = fmt.Errorf("inputSchema is not a JSON Schema: %w", err)
		return ts
	}
	// No Loader: a remote $ref is an error, never a fetch (no SSRF, no
	// schema swapped behind the gateway's back).
	ts.resolved, ts.err = s.Resolve(nil)
	return ts
}

func (st *schemaStore) schema(upstreamName, tool string) *toolSchema {
	st.mu.RLock()
	defer st.mu.RUnlock()
	return st.tools[upstreamName][tool]
}

// learnSchemas records a tools/list result's schemas when the route's
// upstream validates arguments.
func (s *Server) learnSchemas(fwd *forward, items []toolItem) {
	if fwd.route.upstream.Name != "" && s.validatesArguments(fwd.route.upstream.Name) {
		s.schemas.learn(fwd.route.upstream.Name, items)
	}
}

func (s *Server) validatesArguments(upstreamName string) bool {
	for _, up := range s.cfg.Upstreams {
		if up.Name == upstreamName {
			return up.ValidateArguments
		}
	}
	return false
}

// checkArguments answers -32602 for a tools/call whose arguments the
// tool's inputSchema rejects, or whose schema cannot be checked.
func (s *Server) checkArguments(ctx context.Context, fwd *forward, req *jsonrpc.Request) error {
	if req.Method != "tools/call" || !s.validatesArguments(fwd.route.upstream.Name) {
		return nil
	}
	params := mcpwire.ParamsOf(req)
	if params == nil {
		return newError(http.StatusOK, CodeInvalidParams, "invalid params", nil)
	}
	ts := s.schemas.schema(fwd.route.upstream.Name, params.Name)
	if ts == nil {
		return nil // never listed: see the package note above
	}
	if ts.err != nil {
		loggerOf(ctx, s.log).Warn("tool call refused: its inputSchema cannot be checked", "tool", params.Name, "error", ts.err)
		return newError(http.StatusOK, CodeInvalidParams, "invalid params: the tool's inputSchema cannot be checked by the gateway", ts.err)
	}
	var args any = map[string]any{}
	if len(params.Arguments) > 0 && string(params.Arguments) != "null" {
		if err := json.Unmarshal(params.Arguments, &args); err != nil {
			return newError(http.StatusOK, CodeInvalidParams, "invalid params: "+err.Error(), nil)
		}
	}
	if err := ts.resolved.Validate(args); err != nil {
		return newError(http.StatusOK, CodeInvalidParams, "invalid params: "+clip(err.Error(), 512), nil)
	}
	return nil
}
