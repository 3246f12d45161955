package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/policy"
)

// Every message an upstream sends a client passes one response-side
// pipeline (transformMessage), whichever channel it comes on: the answer
// to a POST (JSON or SSE), the GET stream, a modern listen stream, a
// cached answer. This file holds the parts of it beyond results (issue 14,
// finding 5): the redaction of JSON-RPC errors, notifications and
// server-to-client requests, the decision that gives the redactions for a
// message no client request asked for, and the redaction count.

// maxPushedDecisions bounds the response-phase decisions remembered per
// stream (one per method an upstream pushes).
const maxPushedDecisions = 64

// relatedRedactions are the redactions for an upstream message that is
// not the answer to a client request of this exchange. In the answer to a
// POST (a notification, a server-to-client request, a stray), they are
// those of the POST's requests: the message travels with their answers.
// On a stream of its own (GET, listen), the policy decides the message in
// the response phase (input.method its method, or for a response its
// result's list method, else ""), once per method and stream. ok is false
// when the policy could not decide: the message is withheld, since what
// to redact in it is unknown.
func (s *Server) relatedRedactions(ctx context.Context, fwd *forward, method string) (rs []policy.Redaction, ok bool) {
	if len(fwd.exchanges) > 0 {
		for _, k := range slices.Sorted(maps.Keys(fwd.exchanges)) {
			rs = append(rs, fwd.exchanges[k].redact...)
		}
		return rs, true
	}
	if fwd.base == nil {
		return nil, true
	}
	if d, ok := fwd.pushed[method]; ok {
		return d, true
	}
	in := s.baseInput(fwd, method)
	in.Phase = policy.PhaseResponse
	d := s.decide(ctx, policy.PhaseResponse, in)
	if d.Failure != "" {
		loggerOf(ctx, s.log).Warn("upstream message withheld: the policy could not decide its redactions", "upstream", fwd.route.upstream.Name, "rpc_method", clip(method, 128), "failure", d.Failure)
		return nil, false
	}
	if fwd.pushed == nil {
		fwd.pushed = map[string][]policy.Redaction{}
	}
	if len(fwd.pushed) < maxPushedDecisions {
		fwd.pushed[method] = d.Redact
	}
	return d.Redact, true
}

// redactParams applies rs's patterns to every string of a notification's
// or server-to-client request's params. A message that cannot be redacted
// is withheld (drop).
func (s *Server) redactParams(ctx context.Context, fwd *forward, m *jsonrpc.Request, data []byte, rs []policy.Redaction, channel string) ([]byte, bool) {
	if len(rs) == 0 || len(m.Params) == 0 {
		return data, false
	}
	params, n, err := policy.RedactText(m.Params, rs)
	if err != nil {
		loggerOf(ctx, s.log).Warn("upstream message withheld: it could not be redacted", "rpc_method", clip(m.Method, 128), "error", err)
		return nil, true
	}
	if n == 0 {
		return data, false
	}
	s.countRedactions(ctx, fwd, channel, n)
	out, err := jsonrpc.EncodeMessage(&jsonrpc.Request{ID: m.ID, Method: m.Method, Params: params})
	if err != nil {
		return nil, true
	}
	return out, false
}

// redactError applies rs's patterns to a JSON-RPC error's message and
// every string of its data: an upstream's error can echo what its result
// would have carried.
func (s *Server) redactError(ctx context.Context, fwd *forward, m *jsonrpc.Response, data []byte, rs []policy.Redaction) []byte {
	if len(rs) == 0 {
		return data
	}
	we, ok := errors.AsType[*jsonrpc.Error](m.Error)
	if !ok {
		return withheldResult(m.ID)
	}
	raw, err := json.Marshal(we)
	if err != nil {
		return withheldResult(m.ID)
	}
	red, n, err := policy.RedactText(raw, rs)
	if err != nil {
		loggerOf(ctx, s.log).Warn("upstream error withheld: it could not be redacted", "error", err)
		return withheldResult(m.ID)
	}
	if n == 0 {
		return data
	}
	s.countRedactions(ctx, fwd, "error", n)
	var e jsonrpc.Error
	if json.Unmarshal(red, &e) != nil {
		return withheldResult(m.ID)
	}
	out, err := jsonrpc.EncodeMessage(&jsonrpc.Response{ID: m.ID, Error: &e})
	if err != nil {
		return withheldResult(m.ID)
	}
	return out
}

// filterUpstreamError is the pipeline for the body of an upstream's 4xx
// or 5xx answer: a JSON-RPC error response, redacted; nil for anything
// else (the caller answers with the gateway's own error).
func (s *Server) filterUpstreamError(ctx context.Context, fwd *forward, msg jsonrpc.Message, data []byte) []byte {
	m, ok := msg.(*jsonrpc.Response)
	if !ok || m.Error == nil {
		return nil
	}
	rs, ok := s.relatedRedactions(ctx, fwd, "")
	if !ok {
		return nil
	}
	return s.redactError(ctx, fwd, m, data, rs)
}

// countRedactions records n redactions on channel: the access record's
// redactions field and ctxgate_redactions_total.
func (s *Server) countRedactions(ctx context.Context, fwd *forward, channel string, n int) {
	if n == 0 {
		return
	}
	if st := stateOf(ctx); st != nil {
		st.redactions += n
	}
	s.metrics.redactions.WithLabelValues(fwd.route.upstream.Name, channel).Add(float64(n))
}

// pushedListMethod is the list method whose items member a result holds
// (by exact name), or "".
func pushedListMethod(result []byte) string {
	if len(result) == 0 {
		return ""
	}
	dec := jsontext.NewDecoder(bytes.NewReader(result))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return ""
	}
	found := ""
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return found
		}
		for _, method := range []string{"tools/list", "prompts/list", "resources/list", "resources/templates/list", "skills/list"} {
			if n := name.String(); found == "" && (n == listShapes[method].items || foldName(n) == foldName(listShapes[method].items)) {
				found = method
			}
		}
		if dec.SkipValue() != nil {
			return found
		}
	}
	return found
}

// exactParams refuses params holding a case variant of one of names, or
// two members that fold together (checkStrict).
func exactParams(params []byte, names ...string) error {
	if len(params) == 0 {
		return nil
	}
	if err := checkStrict(params); err != nil {
		return err
	}
	dec := jsontext.NewDecoder(bytes.NewReader(params))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return errors.New("params is not an object")
	}
	for dec.PeekKind() != '}' {
		name, err := dec.ReadToken()
		if err != nil {
			return err
		}
		if why := caseVariant(name.String(), names); why != "" {
			return fmt.Errorf("params: %s", why)
		}
		if err := dec.SkipValue(); err != nil {
			return err
		}
	}
	return nil
}

// pendingErrors are the SSE events that answer, with a JSON-RPC error,
// every request of the exchange the upstream's stream left unanswered
// when the relay ended it (stalled, over a limit, broken): the client is
// told, instead of waiting for an answer that cannot come.
func (s *Server) pendingErrors(ctx context.Context, fwd *forward, cause error) []byte {
	var out []byte
	var ids []string
	for _, k := range slices.Sorted(maps.Keys(fwd.exchanges)) {
		ex := fwd.exchanges[k]
		if ex.answered {
			continue
		}
		ex.answered = true
		e := upstreamError(ctx, cause)
		ev := sseEvent{Event: "message", Data: errorMessage(ex.id, e), HasData: true}
		out = ev.AppendTo(out)
		ids = append(ids, clip(fmt.Sprint(ex.id.Raw()), 64))
	}
	if len(ids) > 0 {
		loggerOf(ctx, s.log).Warn("upstream stream ended before answering; pending requests answered with an error",
			"upstream", fwd.route.upstream.Name, "ids", ids, "error", cause)
	}
	return out
}
