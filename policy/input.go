// Package policy is ctxgate's Rego engine: it loads and compiles the
// policies once, prepares their queries once, keeps them behind an atomic
// pointer, reloads them when the directory changes (keeping the last good
// set), decides requests, list items and responses, and writes the decision
// log. It knows nothing of HTTP: the gateway builds an Input and enforces
// the Decision.
//
// The input and decision documents are a public API, documented in
// policies/README.md.
package policy

import "strings"

// Phases of a decision.
const (
	// PhaseRequest decides a client request before anything is forwarded.
	PhaseRequest = "request"
	// PhaseListItem decides whether one item of a list result is visible.
	PhaseListItem = "list_item"
	// PhaseResponse decides a response (its redactions) before it leaves,
	// and server-to-client requests (sampling, elicitation, roots).
	PhaseResponse = "response"
)

// Input is the document a policy decides on: `input` in Rego. Fields that
// do not apply to a method are omitted (absent in Rego, not null).
type Input struct {
	Principal Principal `json:"principal"`
	// Route is the gateway route's name (the upstream's name for a
	// single-upstream route); Upstream the upstream serving the item.
	Route    string `json:"route"`
	Upstream string `json:"upstream"`
	// Method is the JSON-RPC method, e.g. "tools/call", "tools/list",
	// "resources/read", "sampling/createMessage".
	Method string `json:"method"`
	// Phase is PhaseRequest, PhaseListItem or PhaseResponse.
	Phase string `json:"phase"`
	// Tool is set for tools/call (with arguments) and tools/list items.
	Tool *Tool `json:"tool,omitempty"`
	// Resource is set for resources/read, resources/subscribe,
	// resources/unsubscribe and resources/list and templates/list items.
	Resource *Resource `json:"resource,omitempty"`
	// Prompt is set for prompts/get (with arguments) and prompts/list items.
	Prompt *Prompt `json:"prompt,omitempty"`
	// Skill is set for skills/get and skills/list items (the Skills
	// extension, SEP-2640).
	Skill *Skill `json:"skill,omitempty"`
	// Params are the request's params without _meta, for methods that have
	// no typed field above (completion/complete, logging/setLevel,
	// sampling/createMessage, elicitation/create, ...).
	Params map[string]any `json:"params,omitempty"`
	// Result is the result being returned, in PhaseResponse.
	Result   map[string]any `json:"result,omitempty"`
	Protocol Protocol       `json:"protocol"`
	Source   Source         `json:"source"`
}

// Principal is the verified caller.
type Principal struct {
	// ID is stable: "oidc:<issuer>#<sub>", "mtls:spiffe://...",
	// "api_key:<name>" or "anonymous".
	ID string `json:"id"`
	// Kind is "oidc", "mtls", "api_key" or "anonymous".
	Kind    string         `json:"kind"`
	Issuer  string         `json:"issuer,omitempty"`
	Subject string         `json:"subject,omitempty"`
	Name    string         `json:"name,omitempty"` // API key name
	Scopes  []string       `json:"scopes"`
	Groups  []string       `json:"groups"`
	Claims  map[string]any `json:"claims,omitempty"`
	Cert    *Cert          `json:"cert,omitempty"`
	// Attributes are an API key's configured attributes
	// (auth.api_keys[].attributes); absent for other kinds.
	Attributes map[string]string `json:"attributes,omitempty"`
}

// Cert is the verified client certificate.
type Cert struct {
	Subject  string   `json:"subject"`
	URIs     []string `json:"uris"`
	DNSNames []string `json:"dns_names"`
	SHA256   string   `json:"sha256"`
}

// Tool is a tool being called or listed.
type Tool struct {
	Name        string         `json:"name"`
	Arguments   map[string]any `json:"arguments,omitempty"`
	Annotations map[string]any `json:"annotations,omitempty"`
	Description string         `json:"description,omitempty"`
	// Pin is the tool's pin status when its upstream pins tools
	// (upstreams[].pin_tools): "pinned", "changed" (quarantined) or "new"
	// (quarantined in mode file); absent otherwise.
	Pin string `json:"pin,omitempty"`
}

// Resource is a resource (or resource template) being read or listed.
type Resource struct {
	URI         string `json:"uri,omitempty"`
	URITemplate string `json:"uriTemplate,omitempty"`
	Name        string `json:"name,omitempty"`
	MIMEType    string `json:"mimeType,omitempty"`
}

// Prompt is a prompt being fetched or listed.
type Prompt struct {
	Name      string         `json:"name"`
	Arguments map[string]any `json:"arguments,omitempty"`
}

// Skill is a skill (SEP-2640) being fetched or listed. A skill is a
// directory of files served as resources; it is named by the URI of its
// SKILL.md.
type Skill struct {
	// URI is the skill's SKILL.md URI (the upstream's own on a federated
	// route, as tool names are).
	URI string `json:"uri"`
	// Name is the final <skill-path> segment of URI, which SEP-2640
	// requires to equal the frontmatter's name: derived from the URI for
	// skills/get and list items alike, so both are decided on the same
	// name. Empty when URI does not end in /SKILL.md.
	Name string `json:"name,omitempty"`
	// Description is the frontmatter's description, for list items only
	// (a skills/get request carries none).
	Description string `json:"description,omitempty"`
	// Pin is the skill's pin status when its upstream pins
	// (upstreams[].pin_tools): "pinned", "changed" (quarantined) or "new"
	// (quarantined in mode file); absent otherwise.
	Pin string `json:"pin,omitempty"`
}

// SkillName is the skill name a SKILL.md URI carries: its final
// <skill-path> segment ("skill://acme/pdf-processing/SKILL.md" is
// "pdf-processing"), or "" for a URI that names no SKILL.md.
func SkillName(uri string) string {
	_, rest, ok := strings.Cut(uri, "://")
	if !ok {
		return ""
	}
	dir, ok := strings.CutSuffix(rest, "/SKILL.md")
	if !ok {
		return ""
	}
	if i := strings.LastIndexByte(dir, '/'); i >= 0 {
		dir = dir[i+1:]
	}
	return dir
}

// Protocol is the MCP protocol in use.
type Protocol struct {
	Version string `json:"version"`
	// Era is "legacy" (sessions, 2025-xx revisions) or "modern".
	Era string `json:"era"`
}

// Source is where the request came from, as the gateway saw it.
type Source struct {
	IP        string `json:"ip"`
	UserAgent string `json:"user_agent,omitempty"`
}

// Decision is what the policy answered. The zero Decision denies.
type Decision struct {
	// Allow is data.<package>.allow; undefined, an error or a timeout is
	// false (fail closed).
	Allow bool `json:"allow"`
	// Reason is data.<package>.reason, shown to the client on a deny.
	Reason string `json:"reason,omitempty"`
	// Redact is data.<package>.redact: what to remove from a result.
	Redact []Redaction `json:"redact,omitempty"`
	// Revision identifies the policy set that decided.
	Revision string `json:"revision"`
	// ID is the decision id written to the decision log.
	ID string `json:"decision_id"`
	// Failure says why a deny was not the policy's own answer: "" normally,
	// FailureUndefined, FailureError or FailureTimeout. The gateway maps a
	// failure to its own JSON-RPC error code.
	Failure string `json:"failure,omitempty"`
}

// Redaction is one instruction to remove data from a result before it
// leaves the gateway. Exactly one of Path or Pattern is set.
type Redaction struct {
	// Path is a dotted path into the result, with [*] for every element of
	// an array, e.g. "structuredContent.ssn" or "content[*].annotations".
	// The value there is replaced by Replacement. A leading ".." matches at
	// any depth: "..ssn" is every member named ssn wherever it appears,
	// "..card.number" every number member of a card member.
	Path string `json:"path,omitempty"`
	// Pattern is an RE2 regular expression applied to every text string
	// of the result (content text, structuredContent strings, resource
	// contents text); matches become Replacement.
	Pattern string `json:"pattern,omitempty"`
	// Key is an RE2 regular expression matched against member names at
	// any depth, e.g. "(?i)^(password|api_?key|secret)$": the value of
	// every matching member is replaced by Replacement, whatever its type.
	Key string `json:"key,omitempty"`
	// Replacement defaults to "[REDACTED]".
	Replacement string `json:"replacement,omitempty"`
}
