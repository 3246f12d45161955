package policy

import (
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Keys of the input document. Terms are never mutated by evaluation, so
// they are shared by every input built.
var (
	kPrincipal   = ast.StringTerm("principal")
	kRoute       = ast.StringTerm("route")
	kUpstream    = ast.StringTerm("upstream")
	kMethod      = ast.StringTerm("method")
	kPhase       = ast.StringTerm("phase")
	kTool        = ast.StringTerm("tool")
	kPin         = ast.StringTerm("pin")
	kResource    = ast.StringTerm("resource")
	kPrompt      = ast.StringTerm("prompt")
	kSkill       = ast.StringTerm("skill")
	kParams      = ast.StringTerm("params")
	kResult      = ast.StringTerm("result")
	kProtocol    = ast.StringTerm("protocol")
	kSource      = ast.StringTerm("source")
	kID          = ast.StringTerm("id")
	kKind        = ast.StringTerm("kind")
	kIssuer      = ast.StringTerm("issuer")
	kSubject     = ast.StringTerm("subject")
	kName        = ast.StringTerm("name")
	kScopes      = ast.StringTerm("scopes")
	kGroups      = ast.StringTerm("groups")
	kClaims      = ast.StringTerm("claims")
	kCert        = ast.StringTerm("cert")
	kAttributes  = ast.StringTerm("attributes")
	kURIs        = ast.StringTerm("uris")
	kDNSNames    = ast.StringTerm("dns_names")
	kSHA256      = ast.StringTerm("sha256")
	kArguments   = ast.StringTerm("arguments")
	kAnnotations = ast.StringTerm("annotations")
	kDescription = ast.StringTerm("description")
	kURI         = ast.StringTerm("uri")
	kURITemplate = ast.StringTerm("uriTemplate")
	kMIMEType    = ast.StringTerm("mimeType")
	kVersion     = ast.StringTerm("version")
	kEra         = ast.StringTerm("era")
	kIP          = ast.StringTerm("ip")
	kUserAgent   = ast.StringTerm("user_agent")
)

var errNilInput = errors.New("policy input is nil")

// inputValue builds the input document directly as an ast.Object: the
// same document encoding/json would produce from in (same keys, the same
// omitempty rules), without a JSON round trip. One difference: nil
// scopes, groups, uris and dns_names are empty arrays, never null, so that
// `some s in input.principal.scopes` needs no guard.
func inputValue(in *Input) (ast.Value, error) {
	items, err := inputItems(in)
	if err != nil {
		return nil, err
	}
	return ast.NewObject(items...), nil
}

// inputItems returns the members of the input document; FilterList adds
// one member per list item to the members of its base input.
func inputItems(in *Input) ([][2]*ast.Term, error) {
	if in == nil {
		return nil, errNilInput
	}
	var b builder
	items := make([][2]*ast.Term, 0, 12)
	items = append(items,
		ast.Item(kPrincipal, b.principal(&in.Principal)),
		ast.Item(kRoute, ast.StringTerm(in.Route)),
		ast.Item(kUpstream, ast.StringTerm(in.Upstream)),
		ast.Item(kMethod, ast.StringTerm(in.Method)),
		ast.Item(kPhase, ast.StringTerm(in.Phase)),
	)
	if in.Tool != nil {
		items = append(items, ast.Item(kTool, b.tool(in.Tool)))
	}
	if in.Resource != nil {
		items = append(items, ast.Item(kResource, resourceTerm(in.Resource)))
	}
	if in.Prompt != nil {
		items = append(items, ast.Item(kPrompt, b.prompt(in.Prompt)))
	}
	if in.Skill != nil {
		items = append(items, ast.Item(kSkill, skillTerm(in.Skill)))
	}
	if len(in.Params) > 0 {
		items = append(items, ast.Item(kParams, b.anyMap(in.Params)))
	}
	if len(in.Result) > 0 {
		items = append(items, ast.Item(kResult, b.anyMap(in.Result)))
	}
	items = append(items,
		ast.Item(kProtocol, ast.ObjectTerm(
			ast.Item(kVersion, ast.StringTerm(in.Protocol.Version)),
			ast.Item(kEra, ast.StringTerm(in.Protocol.Era)))),
		ast.Item(kSource, sourceTerm(&in.Source)),
	)
	if b.err != nil {
		return nil, fmt.Errorf("policy input: %w", b.err)
	}
	return items, nil
}

// builder converts the parts of an Input; the first conversion error
// sticks.
type builder struct{ err error }

func (b *builder) anyMap(m map[string]any) *ast.Term {
	v, err := ast.InterfaceToValue(m)
	if err != nil {
		b.err = cmpOr(b.err, err)
		return ast.NullTerm()
	}
	return ast.NewTerm(v)
}

func (b *builder) principal(p *Principal) *ast.Term {
	items := make([][2]*ast.Term, 0, 9)
	items = append(items,
		ast.Item(kID, ast.StringTerm(p.ID)),
		ast.Item(kKind, ast.StringTerm(p.Kind)))
	items = appendString(items, kIssuer, p.Issuer)
	items = appendString(items, kSubject, p.Subject)
	items = appendString(items, kName, p.Name)
	items = append(items,
		ast.Item(kScopes, stringsTerm(p.Scopes)),
		ast.Item(kGroups, stringsTerm(p.Groups)))
	if len(p.Claims) > 0 {
		items = append(items, ast.Item(kClaims, b.anyMap(p.Claims)))
	}
	if len(p.Attributes) > 0 {
		attrs := make([][2]*ast.Term, 0, len(p.Attributes))
		for k, v := range p.Attributes {
			attrs = append(attrs, ast.Item(ast.StringTerm(k), ast.StringTerm(v)))
		}
		items = append(items, ast.Item(kAttributes, ast.ObjectTerm(attrs...)))
	}
	if c := p.Cert; c != nil {
		items = append(items, ast.Item(kCert, ast.ObjectTerm(
			ast.Item(kSubject, ast.StringTerm(c.Subject)),
			ast.Item(kURIs, stringsTerm(c.URIs)),
			ast.Item(kDNSNames, stringsTerm(c.DNSNames)),
			ast.Item(kSHA256, ast.StringTerm(c.SHA256)))))
	}
	return ast.ObjectTerm(items...)
}

func (b *builder) tool(t *Tool) *ast.Term {
	items := make([][2]*ast.Term, 0, 5)
	items = append(items, ast.Item(kName, ast.StringTerm(t.Name)))
	if len(t.Arguments) > 0 {
		items = append(items, ast.Item(kArguments, b.anyMap(t.Arguments)))
	}
	if len(t.Annotations) > 0 {
		items = append(items, ast.Item(kAnnotations, b.anyMap(t.Annotations)))
	}
	items = appendString(items, kDescription, t.Description)
	items = appendString(items, kPin, t.Pin)
	return ast.ObjectTerm(items...)
}

func (b *builder) prompt(p *Prompt) *ast.Term {
	items := make([][2]*ast.Term, 0, 2)
	items = append(items, ast.Item(kName, ast.StringTerm(p.Name)))
	if len(p.Arguments) > 0 {
		items = append(items, ast.Item(kArguments, b.anyMap(p.Arguments)))
	}
	return ast.ObjectTerm(items...)
}

func resourceTerm(r *Resource) *ast.Term {
	items := make([][2]*ast.Term, 0, 4)
	items = appendString(items, kURI, r.URI)
	items = appendString(items, kURITemplate, r.URITemplate)
	items = appendString(items, kName, r.Name)
	items = appendString(items, kMIMEType, r.MIMEType)
	return ast.ObjectTerm(items...)
}

func skillTerm(sk *Skill) *ast.Term {
	items := make([][2]*ast.Term, 0, 4)
	items = append(items, ast.Item(kURI, ast.StringTerm(sk.URI)))
	items = appendString(items, kName, sk.Name)
	items = appendString(items, kDescription, sk.Description)
	items = appendString(items, kPin, sk.Pin)
	return ast.ObjectTerm(items...)
}

func sourceTerm(s *Source) *ast.Term {
	items := make([][2]*ast.Term, 0, 2)
	items = append(items, ast.Item(kIP, ast.StringTerm(s.IP)))
	items = appendString(items, kUserAgent, s.UserAgent)
	return ast.ObjectTerm(items...)
}

// appendString appends an omitempty string member.
func appendString(items [][2]*ast.Term, k *ast.Term, v string) [][2]*ast.Term {
	if v == "" {
		return items
	}
	return append(items, ast.Item(k, ast.StringTerm(v)))
}

func stringsTerm(ss []string) *ast.Term {
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = ast.StringTerm(s)
	}
	return ast.ArrayTerm(ts...)
}
