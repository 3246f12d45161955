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

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// exchange is one client request awaiting its response: what the response
// needs from the request's decision.
type exchange struct {
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
func (s *Server) authorize(r *http.Request, fwd *forward, st *requestState) error {
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
		in := s.policyInput(r, fwd, st, req)
		d := s.decide(r.Context(), policy.PhaseRequest, in)
		if !d.Allow {
			st.decision = decisionDeny
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
		if req.ID.IsValid() {
			if fwd.exchanges == nil {
				fwd.exchanges = map[string]*exchange{}
			}
			fwd.exchanges[idKey(req.ID)] = &exchange{input: in, redact: d.Redact}
		}
		st.decision = decisionAllow
	}
	return nil
}

// errUnreadableAnswer is an upstream JSON answer the policy could not read,
// and so could not filter: it is withheld (502), never relayed as it came.
var errUnreadableAnswer = errors.New("upstream answer is not a JSON-RPC message the policy can read")

// transformJSON applies transformMessage to a JSON response body, a single
// message or (2025-03-26) a batch.
func (s *Server) transformJSON(ctx context.Context, fwd *forward, body []byte) ([]byte, error) {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '[' {
		out, drop := s.transformMessage(ctx, fwd, body)
		if drop {
			// The one message of a JSON answer is the response to the
			// request: there is nothing to relay in its place.
			return nil, errUnreadableAnswer
		}
		return out, nil
	}
	dec := jsontext.NewDecoder(bytes.NewReader(body))
	if _, err := dec.ReadToken(); err != nil {
		return nil, errUnreadableAnswer
	}
	out := []byte{'['}
	for dec.PeekKind() != ']' {
		v, err := dec.ReadValue()
		if err != nil {
			return nil, errUnreadableAnswer
		}
		m, drop := s.transformMessage(ctx, fwd, v)
		if drop {
			continue
		}
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, m...)
	}
	return append(out, ']'), nil
}

// transformMessage is the policy's last word on one upstream message before
// the client sees it. It returns the message to relay, or drop.
//   - the response to a client request: list items the principal may not
//     see are removed (the raw page first teaches the catalog), then the
//     request decision's redactions are applied; anything that cannot be
//     filtered is replaced by an error, never relayed unfiltered;
//   - a server-to-client request (sampling, elicitation, roots): decided;
//     if denied it is dropped and the upstream gets the refusal;
//   - notifications/resources/updated for a resource the principal may not
//     see: dropped.
func (s *Server) transformMessage(ctx context.Context, fwd *forward, data []byte) ([]byte, bool) {
	if s.policy == nil {
		return data, false
	}
	msg, err := decodeRPC(data)
	if err != nil {
		// What the gateway cannot read it cannot filter or redact: withheld,
		// never relayed unfiltered (a duplicate "result" member, say, could
		// be read one way here and another way by the client).
		loggerOf(ctx, s.log).Warn("upstream message withheld: not a JSON-RPC message the policy can read", "error", err)
		return nil, true
	}
	switch m := msg.(type) {
	case *jsonrpc.Response:
		if !fwd.claimResponse(m.ID) {
			s.dropStrayResponse(ctx, fwd, m.ID)
			return nil, true
		}
		return s.renamed(fwd, s.filterResponse(ctx, fwd, m, data)), false
	case *jsonrpc.Request:
		if m.ID.IsValid() && fwd.bridge != nil {
			// A bridged modern client cannot be asked (the bridge's session
			// declared no client capabilities): refused to the upstream.
			go s.answerUpstream(fwd, errorMessage(m.ID, newError(0, CodeMethodNotFound, m.Method+" is not available: the client is bridged from the modern protocol era", nil)))
			return data, true
		}
		if m.ID.IsValid() && fwd.federation != "" {
			// The client's answer could not be routed back to this member
			// (federation.go): refused to the member, never relayed.
			go s.answerUpstream(fwd, errorMessage(m.ID, newError(0, CodeMethodNotFound, m.Method+" is not available on a federated route", nil)))
			return data, true
		}
		if m.ID.IsValid() {
			return data, !s.allowServerRequest(ctx, fwd, m)
		}
		if m.Method == "notifications/resources/updated" {
			var p struct {
				URI string `json:"uri"`
			}
			_ = json.Unmarshal(m.Params, &p)
			in := s.baseInput(fwd, "resources/read")
			in.Phase, in.Resource = policy.PhaseListItem, &policy.Resource{URI: p.URI}
			return s.renamed(fwd, data), !s.policy.Visible(ctx, in)
		}
	}
	return data, false
}

func (s *Server) filterResponse(ctx context.Context, fwd *forward, m *jsonrpc.Response, data []byte) []byte {
	ex := fwd.exchanges[idKey(m.ID)]
	noteResultError(ctx, ex, m)
	if ex == nil || m.Error != nil || len(m.Result) == 0 {
		return data
	}
	result := []byte(m.Result)
	method := ex.input.Method
	shape, isList := listShapes[method]
	var err error
	if isList {
		err = exactListMember(result, shape.items)
	}
	if err == nil && method == "tools/list" {
		s.catalog.learnTools(fwd.route.upstream.Name, result)
		s.learnSchemas(fwd, result)
		// Pins are digests of what the upstream sent, before any rewriting.
		if result, err = s.screenTools(ctx, fwd, result); err == nil {
			result = s.neutraliseToolText(ctx, fwd, result)
		}
	}
	if err == nil && isList {
		result, _, err = s.policy.FilterList(ctx, ex.input, result)
	}
	if err == nil && fwd.era == eraModern {
		var denied *Error
		if result, denied = s.filterModern(ctx, fwd, method, result); denied != nil {
			return errorMessage(m.ID, denied)
		}
	}
	if err == nil && len(ex.redact) > 0 {
		result, err = policy.Redact(result, ex.redact)
	}
	if err != nil {
		loggerOf(ctx, s.log).Error("policy could not filter a result; answering with an error instead", "rpc_method", method, "error", err)
		out, _ := json.Marshal(errorResponse{JSONRPC: "2.0", ID: m.ID.Raw(), Error: jsonrpc.Error{Code: CodePolicyUndecided, Message: "result withheld: the policy could not filter it"}})
		return out
	}
	if bytes.Equal(result, m.Result) {
		return data
	}
	out, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: m.ID, Result: result})
	if err != nil {
		return data
	}
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
func (s *Server) allowServerRequest(ctx context.Context, fwd *forward, m *jsonrpc.Request) bool {
	d := s.decideServerRequest(ctx, fwd, m.Method, m.Params)
	if d.Allow {
		return true
	}
	go s.answerUpstream(fwd, errorMessage(m.ID, denial(m.Method, d)))
	return false
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
	ctx = upstream.WithCaller(ctx, fwd.principal.caller())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fwd.route.upstream.URL.String(), bytes.NewReader(body))
	if err != nil {
		return
	}
	version := ""
	switch {
	case fwd.bridge != nil:
		version = fwd.bridge.version
	case fwd.base != nil:
		version = fwd.base.Protocol.Version
	}
	// The refusal speaks for the gateway, not the principal: no identity.
	setUpstreamHeaders(req.Header, fwd.upstreamSession, version, nil, false)
	resp, err := fwd.route.upstream.Transport.RoundTrip(req)
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
