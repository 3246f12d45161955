package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// exchange is one client request awaiting its response: what the response
// needs from the request's decision.
type exchange struct {
	id     jsonrpc.ID
	input  *policy.Input
	redact []policy.Redaction
	// answered: the upstream's response to it has been relayed; another
	// with the same id is dropped (claimResponse).
	answered bool
}

// idKey makes a JSON-RPC id usable as a map key ("s:x" or "n:1").
func idKey(id jsonrpc.ID) string {
	switch v := id.Raw().(type) {
	case string:
		return "s:" + v
	case int64:
		return fmt.Sprintf("n:%d", v)
	}
	return ""
}

// authorize decides every client request and notification of the body
// before anything is forwarded. One decision per message; the first deny
// answers the whole body.
func (s *Server) authorize(r *http.Request, fwd *forward) error {
	if s.policy == nil || fwd.body == nil {
		return nil
	}
	for _, msg := range fwd.messages {
		req, ok := msg.(*jsonrpc.Request)
		if !ok {
			continue // a client's answer to a server request decided earlier
		}
		if err := checkClientMethod(req, fwd.era); err != nil {
			return err
		}
		s.learnToolsBeforeCall(r.Context(), fwd, req)
		in := s.policyInput(r, fwd, req)
		d := s.decide(r.Context(), policy.PhaseRequest, in)
		if !d.Allow {
			fwd.decision = decisionDeny
			e := denial(req.Method, d)
			if !req.ID.IsValid() {
				e.Status = http.StatusForbidden // a notification has no response to carry the error
			}
			return e
		}
		if in.Tool != nil {
			if err := s.checkPinnedCall(fwd, req, in.Tool.Pin); err != nil {
				return err
			}
			if err := s.checkArguments(r.Context(), fwd, req); err != nil {
				return err
			}
		}
		if in.Skill != nil {
			if err := s.checkPinnedSkill(fwd, in.Skill.Pin); err != nil {
				return err
			}
		}
		if req.ID.IsValid() {
			if fwd.exchanges == nil {
				fwd.exchanges = map[string]*exchange{}
			}
			fwd.exchanges[idKey(req.ID)] = &exchange{id: req.ID, input: in, redact: d.Redact}
		}
		fwd.decision = decisionAllow
	}
	return nil
}

// readTools is the untrusted-upstream part of a tools/list answer: the
// page is read once with exact names (ambiguous items withheld), the
// catalog and the argument schemas learn the items kept, the pins screen
// them (digests of what the upstream sent, before any rewriting), and
// their text is neutralised. What depends on the page's bytes alone
// (reading, neutralising, the pin digests) is done once per page
// (screenToolPage, kept in the catalog's screens); what depends on state
// that changes (the pins in force) on every answer. It returns the page
// too (nil without a tools member).
func (s *Server) readTools(ctx context.Context, fwd *forward, result []byte) ([]byte, *toolPage, error) {
	name := fwd.route.upstream.Name
	page, err := s.catalog.screens.page(result, s.pins.set(name) != nil)
	if err != nil {
		return nil, nil, err
	}
	if page.prefix == nil {
		return result, nil, nil // no tools member: nothing to learn
	}
	if len(page.withheld) > 0 {
		loggerOf(ctx, s.log).Warn("tools withheld: the upstream's item cannot be read unambiguously",
			"upstream", name, "items", page.withheld)
	}
	s.catalog.learnPage(name, page)
	s.learnSchemas(fwd, page.items)
	kept, err := s.screenTools(ctx, fwd, page.items)
	if err != nil {
		return nil, nil, err
	}
	s.neutraliseToolText(ctx, fwd, kept)
	return page.encodeKept(kept), page, nil
}

// errUnreadableAnswer is an upstream JSON answer the policy could not read,
// and so could not filter: it is withheld (502), never relayed as it came.
var errUnreadableAnswer = errors.New("upstream answer is not a JSON-RPC message the policy can read")

// updateVisible reports whether the principal may see the resource a
// notifications/resources/updated names. Its uri is read with exact
// names, and a case variant of uri beside or instead of it hides the
// notification: the URI decided must be the one the client reads.
func (s *Server) updateVisible(ctx context.Context, fwd *forward, m *jsonrpc.Request) bool {
	var p struct {
		URI string `json:"uri"`
	}
	if exactParams(m.Params, "uri") != nil || jsonv2.Unmarshal(m.Params, &p) != nil {
		return false
	}
	in := s.baseInput(fwd, "resources/read")
	in.Phase, in.Resource = policy.PhaseListItem, &policy.Resource{URI: p.URI}
	return s.policy.Visible(ctx, in)
}

// filterResponse is transformMessage for a response. A response to a
// request of this exchange is filtered by that request's decision; one the
// gateway saw no request for (on a GET stream: an earlier answer resumed,
// or one the upstream pushed unasked) is filtered as the list its result
// holds, if it holds one (a list pushed on a stream is filtered like an
// answered one), and redacted as the policy decides for it
// (relatedRedactions).
//
// data is m as the upstream sent it, relayed when nothing changed; nil
// when there are no such bytes (a cached answer): m is encoded then.
func (s *Server) filterResponse(ctx context.Context, fwd *forward, m *jsonrpc.Response, data []byte) []byte {
	ex := fwd.exchanges[idKey(m.ID)]
	noteResultError(ctx, ex, m)
	var in *policy.Input
	var rs []policy.Redaction
	if ex != nil {
		in, rs = ex.input, ex.redact
	} else {
		if fwd.base == nil {
			return encodedOr(data, m)
		}
		method := pushedListMethod(m.Result)
		var ok bool
		if rs, ok = s.relatedRedactions(ctx, fwd, method); !ok {
			return withheldResult(m.ID)
		}
		in = s.baseInput(fwd, method)
	}
	if m.Error != nil {
		return s.redactError(ctx, fwd, m, encodedOr(data, m), rs)
	}
	if len(m.Result) == 0 {
		return encodedOr(data, m)
	}
	result, denied, err := s.filterResult(ctx, fwd, in, rs, m.Result)
	if err != nil {
		loggerOf(ctx, s.log).Error("policy could not filter a result; answering with an error instead", "rpc_method", in.Method, "error", err)
		return withheldResult(m.ID)
	}
	if denied != nil {
		return errorMessage(m.ID, denied)
	}
	if data != nil && bytes.Equal(result, m.Result) {
		return data
	}
	return resultMessage(m.ID, result)
}

// encodedOr is data, or m encoded when there are no bytes to relay (an
// answer that cannot be encoded is withheld).
func encodedOr(data []byte, m *jsonrpc.Response) []byte {
	switch {
	case data != nil:
		return data
	case m.Error == nil:
		return resultMessage(m.ID, m.Result)
	}
	out, err := jsonrpc.EncodeMessage(m)
	if err != nil {
		return withheldResult(m.ID)
	}
	return out
}

// resultMessage is the response to id with result, which is valid JSON
// (the strict decoder read it, and every step after it writes JSON). It
// is appended as it is: jsonrpc.EncodeMessage would validate and compact
// it again through reflection (a quarter of a cached 1,000-tool answer's
// cost), and HTML-escape it, which a result relayed unchanged is not.
func resultMessage(id jsonrpc.ID, result []byte) []byte {
	rawID, err := json.Marshal(id.Raw())
	if err != nil || len(result) == 0 {
		return withheldResult(id)
	}
	out := make([]byte, 0, len(`{"jsonrpc":"2.0","id":,"result":}`)+len(rawID)+len(result))
	out = append(out, `{"jsonrpc":"2.0","id":`...)
	out = append(out, rawID...)
	out = append(out, `,"result":`...)
	out = append(out, result...)
	return append(out, '}')
}

// filterResult runs the response-side pipeline on one result, one pass
// over its parsed tool page: the page read and screened (toolpage.go,
// pinning.go), list items the principal may not see removed, the modern
// era's checks, text a model reads neutralised, the redactions applied.
// denied is the modern checks' refusal of the result.
func (s *Server) filterResult(ctx context.Context, fwd *forward, in *policy.Input, rs []policy.Redaction, raw json.RawMessage) (_ []byte, denied *Error, err error) {
	result := []byte(raw)
	method := in.Method
	shape, isList := listShapes[method]
	var page *toolPage
	switch {
	case method == "tools/list":
		// readToolPage refuses a case variant of tools itself, as
		// exactListMember does for the other lists.
		result, page, err = s.learnToolPage(ctx, fwd, result)
	case method == "skills/list":
		if err = exactListMember(result, shape.items); err == nil {
			result, err = s.screenSkillPage(ctx, fwd.route.upstream.Name, result)
		}
	case isList:
		err = exactListMember(result, shape.items)
	case method == "skills/get" && in.Skill != nil:
		if denied, err = s.screenSkillResult(ctx, fwd.route.upstream.Name, in.Skill.URI, result); denied != nil {
			return nil, denied, nil
		}
	case method == "resources/directory/read":
		result, err = s.filterDirectory(ctx, in, result)
	}
	if err == nil && isList {
		result, _, err = s.policy.FilterList(ctx, in, result)
	}
	if err != nil {
		return nil, nil, err
	}
	if fwd.era == eraModern {
		if result, denied = s.filterModern(ctx, fwd, method, result); denied != nil {
			return nil, denied, nil
		}
	}
	result = s.neutraliseResult(ctx, fwd, method, result)
	n := 0
	switch {
	case len(rs) == 0:
	case page != nil && sameBytes(result, page.all):
		// Nothing filtered out of the whole page: its redaction by these
		// rules is the same for every answer (redactAll).
		result, n, err = page.redactAll(rs)
	default:
		result, n, err = policy.RedactResult(result, rs)
	}
	if err != nil {
		return nil, nil, err
	}
	s.countRedactions(ctx, fwd, "result", n)
	return result, nil, nil
}

// sameBytes reports whether a and b are the same bytes in memory (not
// merely equal): a result no step rewrote.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && len(a) > 0 && &a[0] == &b[0]
}

// withheldResult answers a request whose result cannot be filtered.
func withheldResult(id jsonrpc.ID) []byte {
	out, _ := json.Marshal(errorResponse{JSONRPC: "2.0", ID: id.Raw(), Error: jsonrpc.Error{Code: CodePolicyUndecided, Message: "result withheld: the policy could not filter it"}})
	return out
}

// noteResultError records, for metrics and spans, that the upstream's
// answer is an error: its JSON-RPC code, or "tool_error" for a tools/call
// result with isError (the MCP semantic conventions' error.type).
func noteResultError(ctx context.Context, ex *exchange, m *jsonrpc.Response) {
	st := stateOf(ctx)
	if st == nil {
		return
	}
	if we, ok := errors.AsType[*jsonrpc.Error](m.Error); ok {
		st.rpcError = rpcErrorType(we.Code)
		return
	}
	// The cheap test first: most results are not errors, and some are large.
	if ex == nil || ex.input.Method != "tools/call" || !bytes.Contains(m.Result, []byte(`"isError"`)) {
		return
	}
	var r struct {
		IsError bool `json:"isError"`
	}
	if json.Unmarshal(m.Result, &r) == nil && r.IsError {
		st.rpcError = "tool_error"
	}
}

// allowServerRequest decides a request the upstream sends the client. A
// denied one never reaches the client; the upstream is told, so it does not
// wait for an answer that cannot come.
func (s *Server) allowServerRequest(ctx context.Context, fwd *forward, m *jsonrpc.Request) (policy.Decision, bool) {
	d := s.decideServerRequest(ctx, fwd, m.Method, m.Params)
	if d.Allow {
		return d, true
	}
	go s.answerUpstream(fwd, errorMessage(m.ID, denial(m.Method, d)))
	return d, false
}

func (s *Server) baseInput(fwd *forward, method string) *policy.Input {
	in := *fwd.base
	in.Method = method
	in.Tool, in.Resource, in.Prompt, in.Params = nil, nil, nil, nil
	return &in
}

// answerUpstream posts a message to the upstream session on the client's
// behalf (the refusal of a denied server-to-client request).
func (s *Server) answerUpstream(fwd *forward, body []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Still for the principal's session: an upstream called as the user
	// (token_exchange) gets the user's token, as for the request itself.
	ctx = upstream.WithCaller(ctx, callerOf(fwd.principal))
	version := ""
	switch {
	case fwd.bridge != nil:
		version = fwd.bridge.version
	case fwd.base != nil:
		version = fwd.base.Protocol.Version
	}
	// The refusal speaks for the gateway, not the principal: no identity.
	// direct: a best-effort answer to the upstream's own request, not a
	// client's: it takes no client's bulkhead slot and is never retried
	// (the upstream must not read the answer twice).
	resp, err := askUpstream(ctx, fwd.route.direct(), upstreamRequest{body: body, session: fwd.upstreamSession, version: version})
	if err != nil {
		s.log.Warn("could not tell the upstream a server request was denied", "upstream", fwd.route.upstream.Name, "error", err)
		return
	}
	resp.Body.Close()
}

// exactListMember refuses a list result whose items member is spelled in
// another case ("tooLs"). Go's encoding/json and other case-insensitive
// clients read it as the list, while the catalog, pin screening and text
// neutralising read the exact name: such a result cannot be filtered
// faithfully, so it is withheld (the policy's own filter also refuses two
// case variants side by side).
func exactListMember(result []byte, items string) error {
	dec := jsontext.NewDecoder(bytes.NewReader(result))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil // not an object: the policy's filter reports it
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return nil
		}
		if n := name.String(); n != items && strings.EqualFold(n, items) {
			return fmt.Errorf("list member %q is a case variant of %q", n, items)
		}
		if err := dec.SkipValue(); err != nil {
			return nil
		}
	}
	return nil
}

// isJSON reports whether a response is application/json.
func isJSON(h http.Header) bool {
	ct, _, _ := strings.Cut(h.Get("Content-Type"), ";")
	return strings.EqualFold(strings.TrimSpace(ct), "application/json")
}
