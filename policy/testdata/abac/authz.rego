# An attribute-based policy shaped like a real deployment's, for the
# benchmarks: roles from token claims and groups, permissions from data,
# tool risk from MCP tool annotations, and a constraint on an argument.
package ctxgate.authz

default allow := false

# Roles come from the token's roles claim and from group membership.
roles contains r if some r in input.principal.claims.roles

roles contains r if {
	some g in input.principal.groups
	some r in data.group_roles[g]
}

destructive if input.tool.annotations.destructiveHint == true

read_only if input.tool.annotations.readOnlyHint == true

# A role grants tools by name pattern, per route.
tool_granted if {
	some r in roles
	some grant in data.roles[r].grants
	grant.route in {"*", input.route}
	glob.match(grant.tools, null, input.tool.name)
}

# Destructive tools need the admin role on top of a grant.
tool_permitted if {
	tool_granted
	not destructive
}

tool_permitted if {
	tool_granted
	destructive
	"admin" in roles
}

# File arguments must stay inside the workspace.
arguments_ok if not input.tool.arguments.path

arguments_ok if {
	startswith(input.tool.arguments.path, "/workspace/")
	not contains(input.tool.arguments.path, "..")
}

allow if {
	input.phase == "request"
	input.method == "tools/call"
	tool_permitted
	arguments_ok
}

allow if {
	input.phase == "request"
	input.method in {"initialize", "ping", "tools/list", "prompts/list", "resources/list"}
}

allow if {
	input.phase == "response"
}

visible if {
	input.phase == "list_item"
	tool_permitted
}

reason := "destructive tools require the admin role" if {
	tool_granted
	destructive
	not "admin" in roles
}

reason := "path must be inside /workspace" if {
	tool_permitted
	not arguments_ok
}

redact contains {"pattern": `\b\d{3}-\d{2}-\d{4}\b`, "replacement": "***-**-****"} if input.phase == "response"

redact contains {"path": "structuredContent.ssn"} if {
	input.phase == "response"
	not "hr" in roles
}
