# Example: per-team tool allow-lists.
#
# Who may see and call a tool is decided by a table in data, keyed by group
# claim (input.principal.groups): a member of "team-a" may use exactly the tools
# listed for team-a, whatever the tools' annotations say. A principal in
# several teams gets the union of their lists; a principal in none gets no
# tools. Everything that is not about tools (plumbing, resources, prompts,
# server-to-client requests, responses, redactions) is decided by the default
# policy, data.ctxgate.authz, which must be loaded too (it is, when the whole
# policies/ directory is).
#
# To use it, set in the gateway config
#
#   policy: {dir: policies, package: ctxgate.examples.teams}
#
# and put the table in a data file, e.g. policies/data.json:
#
#   {"ctxgate": {"config": {"teams": {
#     "team-a": ["search", "read_file"],
#     "team-b": ["search", "run_query"]
#   }}}}
#
# The default policy's argument rules still apply (run_query needs
# readonly: true unless the caller is an admin; path arguments without "..").
package ctxgate.examples.teams

import data.ctxgate.authz

# teams is the allow-list table; anything but an object means "no team has
# any tool" (fail closed).
teams := data.ctxgate.config.teams if {
	is_object(data.ctxgate.config.teams)
} else := {}

# team_tools is every tool name the caller's teams may use. Anonymous callers
# belong to no team, whatever the input claims.
team_tools contains name if {
	not authz.anonymous
	some group in input.principal.groups
	some name in teams[group]
	is_string(name)
}

# tool_permitted decides both tools/list visibility and tools/call.
tool_permitted(tool) if tool.name in team_tools

default allow := false

allow if {
	authz.config_ok
	input.phase == "request"
	input.method == "tools/call"
	tool_permitted(input.tool)
	count(authz.argument_violations) == 0
}

# A list item is allowed exactly when it is visible.
allow if {
	input.phase == "list_item"
	visible
}

# Everything else is the default policy's decision.
allow if {
	input.phase == "request"
	input.method != "tools/call"
	authz.allow
}

allow if {
	input.phase == "response"
	authz.allow
}

default visible := false

visible if {
	authz.config_ok
	tool_permitted(input.tool)
}

visible if {
	not input.tool
	authz.visible
}

# Hidden and unknown tools get the same answer as in the default policy.
reason := deny_reason if not allow

deny_reason := "policy configuration error" if {
	not authz.config_ok
} else := "tool not found or not permitted" if {
	input.method == "tools/call"
	not input.tool
} else := "tool not found or not permitted" if {
	input.tool
	not tool_permitted(input.tool)
} else := concat("; ", sort(authz.argument_violations)) if {
	input.method == "tools/call"
	count(authz.argument_violations) > 0
} else := authz.reason

redact := authz.redact
