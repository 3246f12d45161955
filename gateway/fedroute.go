package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
)

// routed sends a request that names an item to the member that
// owns it, with the member's own name in place of the client's, through
// the member's whole pipeline. An item no member of the session owns is
// answered as unknown, exactly like an item the policy hides.
func (fr *fedRequest) routed(w http.ResponseWriter, req *jsonrpc.Request) error {
	s, r, f, fo, st := fr.s, fr.r, fr.f, fr.fo, fr.st
	target, ok := mcpwire.TargetOf(req.Method)
	if !ok {
		return newError(http.StatusOK, CodeMethodNotFound, "method not found on a federated route: "+req.Method, nil)
	}
	var name string
	if p := mcpwire.ParamsOf(req); p != nil {
		name = p.Named()
	}
	if name == "" {
		return newError(http.StatusOK, jsonrpc.CodeInvalidParams, "params."+target.Member+" is required", nil)
	}
	member, own, ok := f.names.inward(target.Kind, name)
	if !ok {
		// Not seen yet (a new replica, a call before any list): learn the
		// members' names once, then decide.
		fr.learnNames(r.Context(), target.Kind)
		member, own, ok = f.names.inward(target.Kind, name)
	}
	m := f.member(member)
	if in, _ := fo.reach(member); !ok || m == nil || !in {
		if wait, late := f.late.pending(r.Header.Get("Mcp-Session-Id"), member, s.now()); ok && late && fo.era == eraLegacy {
			return memberRecovering(member, wait)
		}
		return unknownItem(req.Method)
	}
	if err := checkOwnName(target.Kind, target.Member, own); err != nil {
		return err
	}
	body, err := renameParam(st.msg.Raw, target.Member, own)
	if err != nil {
		return badRequest("request cannot be routed", err)
	}
	msg, err := decodeMessage(body)
	if err != nil {
		return badRequest("request cannot be routed", err)
	}
	// Kept for the member's pipeline, which reads them as it reads the
	// client's (params that fail are read as sent, as before renaming).
	_ = msg.CheckParams()
	// The header names what the body names: the member's own name, or the
	// member would see the two disagree (SEP-2243).
	setMirroredName(r.Header, own)
	mf := fr.forward(m)
	mf.body, mf.messages = body, []jsonrpc.Message{msg.Msg}
	st.msg, st.upstream = msg, member
	st.target = targetOf(msg.Request())
	st.toolLabel = s.toolLabel(member, st.target)
	in := s.policyInput(r, mf, msg.Request())
	in.Tool, in.Resource, in.Prompt, in.Params = nil, nil, nil, nil
	mf.base = in
	if err := s.authorize(r, mf); err != nil {
		return err
	}
	if mf.bridging {
		if err := s.prepareBridge(r, mf, msg.Request()); err != nil {
			return err
		}
	}
	s.noteSubscription(r.Context(), mf) // under the member's own URI and session
	s.forwardUpstream(w, r, m, mf)
	return nil
}

// checkOwnName checks the member's own name that un-naming left: it is
// what the member receives, so it must be as well formed as the client's
// ("git__ x" is a fine name, its " x" is not).
func checkOwnName(kind, field, own string) error {
	check := checkName
	if namedAs(kind) == kindResource {
		check = checkURI
	}
	if err := check(own); err != nil {
		return newError(http.StatusBadRequest, CodeInvalidParams, "invalid params: params."+field+" names a member's item that "+err.Error(), nil)
	}
	return nil
}

// unknownItem is the answer for an item no member owns: what an upstream
// answers for an unknown tool, prompt or resource.
func unknownItem(method string) *Error {
	switch method {
	case "tools/call":
		return newError(http.StatusOK, codeUnknownTool, "unknown tool", nil)
	case "prompts/get":
		return newError(http.StatusOK, jsonrpc.CodeInvalidParams, "unknown prompt", nil)
	case "skills/get":
		// SEP-2640: a URI that names no skill the server serves is -32602.
		return newError(http.StatusOK, jsonrpc.CodeInvalidParams, "unknown skill", nil)
	case "resources/directory/read":
		// SEP-2640: a URI that names no directory is -32602.
		return newError(http.StatusOK, jsonrpc.CodeInvalidParams, "not a directory", nil)
	}
	return newError(http.StatusOK, codeUnknownResource, "resource not found", nil)
}

// renameParam replaces params.<field> with value; every other byte of the
// message is the client's, as checked.
func renameParam(body []byte, field, value string) ([]byte, error) {
	return editParams(body, func(params []member) ([]member, error) {
		for j, pm := range params {
			if foldName(pm.name) == field {
				v, _ := json.Marshal(value)
				params[j].value = jsontext.Value(v)
			}
		}
		return params, nil
	})
}

// editParams re-encodes a message with its params object's members
// changed by edit; every other member keeps its exact bytes.
func editParams(body []byte, edit func([]member) ([]member, error)) ([]byte, error) {
	top, err := members(body)
	if err != nil {
		return nil, err
	}
	for i, t := range top {
		if foldName(t.name) != "params" {
			continue
		}
		params, err := members(t.value)
		if err != nil {
			return nil, errParamsNotObject
		}
		if params, err = edit(params); err != nil {
			return nil, err
		}
		top[i].value = encodeObject(params)
	}
	return encodeObject(top), nil
}

// renamed gives the client a member's URIs under their federated names:
// in a resources/read result's contents and in
// notifications/resources/updated. Every other message, and every message
// outside a federated route, is returned as it is.
func (s *Server) renamed(fwd *forward, data []byte) []byte {
	f := s.federationNamed(fwd.federation)
	if f == nil {
		return data
	}
	msg, err := decodeRPC(data)
	if err != nil {
		return data
	}
	member := fwd.route.upstream.Name
	var out []byte
	switch m := msg.(type) {
	case *jsonrpc.Response:
		ex := fwd.exchanges[idKey(m.ID)]
		if ex != nil && (ex.input.Method == "skills/get" || ex.input.Method == "resources/directory/read") && m.Error == nil {
			raw, ok := renameSkillResult(f.names, member, ex.input, m.Result)
			if !ok {
				return data
			}
			out, err = jsonrpc.EncodeMessage(&jsonrpc.Response{ID: m.ID, Result: raw})
			break
		}
		if ex == nil || ex.input.Method != "resources/read" || m.Error != nil {
			return data
		}
		var result struct {
			Contents []map[string]json.RawMessage `json:"contents"`
		}
		if json.Unmarshal(m.Result, &result) != nil {
			return data
		}
		var all map[string]json.RawMessage
		_ = json.Unmarshal(m.Result, &all)
		for _, c := range result.Contents {
			f.renameURI(c, member)
		}
		all["contents"], _ = json.Marshal(result.Contents)
		raw, _ := json.Marshal(all)
		out, err = jsonrpc.EncodeMessage(&jsonrpc.Response{ID: m.ID, Result: raw})
	case *jsonrpc.Request:
		var params map[string]json.RawMessage
		if m.Method != "notifications/resources/updated" || json.Unmarshal(m.Params, &params) != nil {
			return data
		}
		f.renameURI(params, member)
		raw, _ := json.Marshal(params)
		out, err = jsonrpc.EncodeMessage(&jsonrpc.Request{Method: m.Method, Params: raw})
	}
	if err != nil || out == nil {
		return data
	}
	return out
}

// renameURI replaces obj's uri with its federated name.
func (f *federation) renameURI(obj map[string]json.RawMessage, member string) {
	var uri string
	if json.Unmarshal(obj["uri"], &uri) != nil || uri == "" {
		return
	}
	obj["uri"], _ = json.Marshal(f.names.outward(kindResource, member, uri))
}

// federationNamed is the federated route named name; nil for "" or none.
func (s *Server) federationNamed(name string) *federation {
	for _, rt := range s.federated {
		if name != "" && rt.fed.cfg.Name == name {
			return rt.fed
		}
	}
	return nil
}
