package gateway

import (
	"context"
	"net"
	"net/http"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/policy"
)

// Policy denials are answered the way an upstream answers an unknown tool
// or resource (MCP: -32602 for an unknown tool, -32002 for a resource not
// found), so a client cannot tell a hidden tool from one that does not
// exist. Other methods get the gateway's own codes.
const (
	CodePolicyDenied    = -31020 // the policy denied this request
	CodePolicyUndecided = -31021 // the policy could not decide (undefined, error, timeout): denied
	codeUnknownTool     = jsonrpc.CodeInvalidParams
	codeUnknownResource = -32002
)

// decider is the policy engine as the gateway uses it.
type decider interface {
	Decide(ctx context.Context, in *policy.Input) policy.Decision
	Visible(ctx context.Context, in *policy.Input) bool
	FilterList(ctx context.Context, base *policy.Input, result []byte) ([]byte, int, error)
	Revision() string
	Status() policy.Status
}

// policyInput builds the decision input for one client message. Only what
// the gateway verified or decoded strictly goes in: the principal from
// authentication, the method and params from the strict decode.
func (s *Server) policyInput(r *http.Request, fwd *forward, msg *jsonrpc.Request) *policy.Input {
	in := &policy.Input{
		Principal: policyPrincipal(fwd.principal),
		Route:     fwd.route.upstream.Name,
		Upstream:  fwd.route.upstream.Name,
		Method:    msg.Method,
		Phase:     policy.PhaseRequest,
		Protocol:  policy.Protocol{Version: fwd.version, Era: fwd.era},
		Source:    policy.Source{IP: remoteIP(r), UserAgent: r.UserAgent()},
	}
	if fwd.federation != "" {
		in.Route = fwd.federation // policies are written per member upstream
	}
	s.describeParams(in, fwd.route.upstream.Name, msg)
	return in
}

// describeParams fills the typed part of the input (tool, resource,
// prompt) from what the params check kept, and Params with the rest of
// the params, without _meta, for the other methods. Params that were
// never checked (an upstream's request of the client, mrtr.go) are read
// as sent.
func (s *Server) describeParams(in *policy.Input, upstreamName string, req *jsonrpc.Request) {
	var name, uri string
	var args map[string]any
	if _, named := mcpwire.TargetOf(in.Method); named {
		name, uri, args = namedParams(req)
	}
	switch in.Method {
	case "tools/call":
		in.Tool = &policy.Tool{Name: name, Arguments: args, Pin: s.pins.set(upstreamName).status(name)}
		// Annotations come from the upstream's own tools/list, never from
		// the client; unknown annotations are absent (and a policy must
		// treat the tool as not read-only).
		if meta, ok := s.catalog.tool(upstreamName, name); ok {
			in.Tool.Annotations, in.Tool.Description = meta.Annotations, meta.Description
		}
	case "resources/read", "resources/subscribe", "resources/unsubscribe", "resources/directory/read":
		in.Resource = &policy.Resource{URI: uri}
	case "prompts/get":
		in.Prompt = &policy.Prompt{Name: name, Arguments: args}
	case "skills/get":
		in.Skill = &policy.Skill{URI: uri, Name: policy.SkillName(uri), Pin: s.pins.set(upstreamName).skillStatus(uri)}
	default:
		// Decoded once, exactly, at the size of what was sent (params.go).
		in.Params = mcpwire.DecodeObject(req.Params)
		delete(in.Params, "_meta")
	}
}

// namedParams are the name, URI and arguments of a request that names a
// tool, prompt or resource: as the params check kept them, or, for params
// it never saw, as sent.
func namedParams(req *jsonrpc.Request) (name, uri string, args map[string]any) {
	if p := mcpwire.ParamsOf(req); p != nil {
		return p.Name, p.URI, mcpwire.DecodeObject(p.Arguments)
	}
	params := mcpwire.DecodeObject(req.Params)
	name, _ = params["name"].(string)
	uri, _ = params["uri"].(string)
	args, _ = params["arguments"].(map[string]any)
	return name, uri, args
}

func policyPrincipal(p *Principal) policy.Principal {
	out := policy.Principal{
		ID: p.ID, Kind: p.Kind, Issuer: p.Issuer, Subject: p.Subject, Name: p.Name,
		Scopes: p.Scopes, Groups: p.Groups, Claims: p.Claims, Attributes: p.Attributes,
	}
	if out.Scopes == nil {
		out.Scopes = []string{}
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	if p.Cert != nil {
		out.Cert = &policy.Cert{Subject: p.Cert.Subject, URIs: p.Cert.URIs, DNSNames: p.Cert.DNSNames, SHA256: p.Cert.SHA256}
	}
	return out
}

func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// denial turns a deny into the client's answer: HTTP 200 with a JSON-RPC
// error, as an upstream answers a refused call, so MCP clients surface it
// as the call's error rather than a transport failure.
func denial(method string, d policy.Decision) *Error {
	code := int64(CodePolicyDenied)
	message := d.Reason
	switch {
	case d.Failure != "":
		code, message = CodePolicyUndecided, "request denied: the policy could not decide"
	case method == "tools/call":
		code = codeUnknownTool
	case method == "resources/read" || method == "resources/subscribe":
		code = codeUnknownResource
	case method == "skills/get" || method == "resources/directory/read":
		code = jsonrpc.CodeInvalidParams // SEP-2640's answer for an unknown skill or a non-directory
	}
	if message == "" {
		message = "request denied by policy"
	}
	e := newError(http.StatusOK, code, message, nil)
	if d.Failure != "" {
		e.Err = errPolicyFailure(d.Failure)
	}
	return e
}

type errPolicyFailure string

func (e errPolicyFailure) Error() string { return "policy failure: " + string(e) }
