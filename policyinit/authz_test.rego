# Tests of authz.rego: run them with `ctxgate policy test DIR`.
package ctxgate.authz_test

import data.ctxgate.authz

anon := {"id": "anonymous", "kind": "anonymous", "scopes": [], "groups": ["mcp-admin"]}

user := {"id": "api_key:bob", "kind": "api_key", "name": "bob", "scopes": [], "groups": []}

admin := {"id": "api_key:alice", "kind": "api_key", "name": "alice", "scopes": [], "groups": ["mcp-admin"]}

read_only_tool := {"name": "read_file", "annotations": {"readOnlyHint": true}}

delete_tool := {"name": "delete_file", "annotations": {"destructiveHint": true}}

call(p, tool, args) := {"principal": p, "method": "tools/call", "phase": "request", "tool": object.union(tool, {"arguments": args})}

item(p, tool) := {"principal": p, "method": "tools/list", "phase": "list_item", "tool": tool}

test_plumbing_allowed if {
	authz.allow with input as {"principal": user, "method": "initialize", "phase": "request"}
}

test_unknown_method_denied if {
	not authz.allow with input as {"principal": admin, "method": "tasks/frobnicate", "phase": "request"}
}

test_read_only_tool_for_everyone if {
	authz.allow with input as call(user, read_only_tool, {"path": "README.md"})
	authz.visible with input as item(user, read_only_tool)
}

test_unknown_annotations_are_not_read_only if {
	not authz.allow with input as call(user, {"name": "read_file"}, {})
	not authz.visible with input as item(user, {"name": "read_file"})
}

test_destructive_tool_for_admins_only if {
	not authz.allow with input as call(user, delete_tool, {})
	not authz.visible with input as item(user, delete_tool)
	authz.allow with input as call(admin, delete_tool, {})
	authz.visible with input as item(admin, delete_tool)
}

test_anonymous_is_never_admin if {
	not authz.allow with input as call(anon, delete_tool, {})
}

test_path_traversal_denied_for_admins_too if {
	not authz.allow with input as call(admin, read_only_tool, {"path": "../etc/passwd"})
	authz.reason == "argument \"path\" must not contain \"..\"" with input as call(admin, read_only_tool, {"path": "%2e%2e/x"})
	not authz.allow with input as call(admin, read_only_tool, {"path": ["a"]})
}

test_hidden_tool_answered_as_unknown if {
	authz.reason == "tool not found or not permitted" with input as call(user, delete_tool, {"path": "../x"})
	authz.reason == "tool not found or not permitted" with input as call(user, {"name": "no_such_tool"}, {})
}

test_redactions if {
	r := authz.redact with input as {"principal": user, "method": "tools/call", "phase": "response"}
	{"key": "(?i)^(password|api_?key)$"} in r
	{"path": "..ssn"} in r
}

test_skills_listed_and_gettable if {
	authz.allow with input as {"principal": user, "method": "skills/list", "phase": "request"}
	authz.allow with input as {"principal": user, "method": "skills/get", "phase": "request", "skill": {"uri": "skill://pdf/SKILL.md", "name": "pdf"}}
	authz.visible with input as {"principal": user, "method": "skills/list", "phase": "list_item", "skill": {"uri": "skill://pdf/SKILL.md", "name": "pdf"}}
}
