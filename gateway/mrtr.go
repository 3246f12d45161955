package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/policy"
)

// Multi round-trip requests (MRTR, modern era): a server that needs input
// from the client (elicitation, sampling, roots) answers the request with an
// input_required result carrying inputRequests and an opaque requestState;
// the client retries the request with inputResponses and the same
// requestState. The gateway relays both directions byte for byte (the retry
// is an ordinary request: decoded strictly, decided, forwarded as checked).
// The input requests are what server-to-client requests were in the legacy
// era, and are decided the same way: each one by the policy, in the response
// phase. A result with a denied input request is not relayed; the client
// gets the denial as the request's error. Such results and retries must
// never be served from a cache (DESIGN.md, Cache).

// filterModern is the modern era's part of the policy's last word on a
// result: a server/discover result describes the gateway's route, and an
// input_required result's input requests are decided.
func (s *Server) filterModern(ctx context.Context, fwd *forward, method string, result []byte) ([]byte, *Error) {
	if method == "server/discover" {
		return s.filterDiscover(fwd.route, result), nil
	}
	if !bytes.Contains(result, []byte(`"inputRequests"`)) {
		return result, nil // the cheap test first: most results are complete
	}
	var r struct {
		ResultType    string `json:"resultType"`
		InputRequests map[string]struct {
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		} `json:"inputRequests"`
	}
	if json.Unmarshal(result, &r) != nil || r.ResultType != "input_required" {
		return result, nil
	}
	for _, key := range slices.Sorted(maps.Keys(r.InputRequests)) {
		ir := r.InputRequests[key]
		if d := s.decideServerRequest(ctx, fwd, ir.Method, ir.Params); !d.Allow {
			return nil, denial(ir.Method, d)
		}
	}
	return result, nil
}

// decideServerRequest decides a request the upstream makes of the client:
// a legacy server-to-client request or a modern input request.
func (s *Server) decideServerRequest(ctx context.Context, fwd *forward, method string, params json.RawMessage) policy.Decision {
	in := s.baseInput(fwd, method)
	in.Phase = policy.PhaseResponse // it travels in the upstream's answer
	s.describeParams(in, fwd.route.upstream.Name, &jsonrpc.Request{Method: method, Params: params})
	return s.decide(ctx, policy.PhaseResponse, in)
}

// errorMessage encodes a JSON-RPC error response for id.
func errorMessage(id jsonrpc.ID, e *Error) []byte {
	out, _ := json.Marshal(errorResponse{JSONRPC: "2.0", ID: id.Raw(), Error: jsonrpc.Error{Code: e.Code, Message: e.Message}})
	return out
}
