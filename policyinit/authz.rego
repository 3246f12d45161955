# A minimal ctxgate policy, written by `ctxgate policy init`. Edit it; run
# its tests with `ctxgate policy test DIR`; point policy.dir at DIR.
#
# The gateway asks this package (policy.package: ctxgate.authz) one question
# per decision, with the document in policies/README.md as `input`:
#
#   allow    must be true, or the request is denied (fail closed)
#   visible  per list item: false or undefined hides it from the list
#   reason   the message a denied client sees
#   redact   instructions applied to results before they leave
#
# The safety rules of the shipped policy (policies/authz.rego) are kept here;
# each is marked SAFETY. Loosen one only knowing what it protects.
package ctxgate.authz

# SAFETY: nothing is allowed unless a rule below says so. Undefined, an
# error or a timeout is a deny too: the gateway fails closed.
default allow := false

default visible := false

# Who is an admin: members of these groups. Groups come from a token's
# groups claim, an API key's auth.api_keys[].groups, or a certificate
# (auth.mtls.groups). SAFETY: anonymous callers never are.
admin_groups := {"mcp-admin"}

admin if {
	input.principal.kind != "anonymous"
	some g in input.principal.groups
	g in admin_groups
}

# Protocol plumbing every client needs; lists are filtered per item below.
plumbing := {
	"initialize", "ping", "tools/list", "prompts/list", "resources/list",
	"resources/templates/list", "server/discover", "subscriptions/listen",
	"skills/list",
}

allow if {
	input.phase == "request"
	input.method in plumbing
}

allow if {
	input.phase == "request"
	startswith(input.method, "notifications/")
}

# SAFETY: a tool is read-only only when its upstream said so in its own
# tools/list (the gateway fills tool.annotations; a client cannot). Unknown
# annotations are not read-only; read-only and destructive is destructive.
read_only if {
	input.tool.annotations.readOnlyHint == true
	not input.tool.annotations.destructiveHint == true
}

# One helper decides both whether a tool is listed and whether it may be
# called, so a hidden tool is never callable (SAFETY).
tool_permitted if read_only

tool_permitted if {
	input.tool.name
	admin
}

allow if {
	input.phase == "request"
	input.method == "tools/call"
	tool_permitted
	count(violations) == 0
}

# SAFETY: path traversal is refused for everyone, admins included; a path
# that is not a string is refused rather than guessed at.
violations contains msg if {
	value := input.tool.arguments.path
	not is_string(value)
	msg := "argument \"path\" must be a string"
}

violations contains msg if {
	value := input.tool.arguments.path
	regex.match(`(?i)(\.|%2e){2}`, value)
	msg := "argument \"path\" must not contain \"..\""
}

# Resources, prompts and skills (SEP-2640: directories of resources, named
# by their SKILL.md URI): readable by every authenticated principal here.
allow if {
	input.phase == "request"
	input.method in {
		"resources/read", "resources/subscribe", "resources/unsubscribe", "resources/directory/read",
		"prompts/get", "skills/get", "completion/complete",
	}
}

# Responses were decided as requests; this phase only adds redactions.
# Server-to-client requests (sampling, elicitation, roots) are relayed.
allow if input.phase == "response"

# A list item is listed exactly when it could be used.
visible if {
	input.tool
	tool_permitted
}

visible if input.resource

visible if input.prompt

visible if input.skill

allow if {
	input.phase == "list_item"
	visible
}

# SAFETY: a denied tool gets the same message whether it exists or not, so
# a client cannot probe for names. Argument messages only for tools the
# caller may use anyway.
reason := msg if {
	input.method == "tools/call"
	tool_permitted
	some msg in violations
} else := "tool not found or not permitted" if {
	input.method == "tools/call"
} else := "request denied by policy"

# Redactions: AWS access key ids in any text; every member named password
# or api_key at any depth; social security numbers under structuredContent.
redact contains {"pattern": "AKIA[0-9A-Z]{16}", "replacement": "[REDACTED]"}

redact contains {"key": "(?i)^(password|api_?key)$"}

redact contains {"path": "..ssn"}
