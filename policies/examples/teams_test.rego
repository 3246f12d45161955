package ctxgate.examples.teams_test

import data.ctxgate.examples.teams

table := {
	"team-a": ["search", "read_file"],
	"team-b": ["search", "run_query", "delete_file"],
}

principal(groups) := {
	"id": "oidc:https://idp.example.com#u",
	"kind": "oidc",
	"scopes": [],
	"groups": groups,
}

anon := {"id": "anonymous", "kind": "anonymous", "scopes": [], "groups": ["team-a"]}

base(p) := {
	"principal": p,
	"route": "docs",
	"upstream": "docs",
	"protocol": {"version": "2025-11-25", "era": "legacy"},
	"source": {"ip": "192.0.2.10"},
}

# Annotations are deliberately the opposite of what the table says: the
# table wins.
tools := {
	"search": {"name": "search", "annotations": {"readOnlyHint": true}},
	"read_file": {"name": "read_file", "annotations": {"readOnlyHint": true}},
	"run_query": {"name": "run_query"},
	"delete_file": {"name": "delete_file", "annotations": {"destructiveHint": true}},
	"list_files": {"name": "list_files", "annotations": {"readOnlyHint": true}},
}

call(p, name, args) := object.union(base(p), {
	"method": "tools/call",
	"phase": "request",
	"tool": object.union(tools[name], {"arguments": args}),
})

item(p, name) := object.union(base(p), {"method": "tools/list", "phase": "list_item", "tool": tools[name]})

test_team_member_uses_listed_tools if {
	every name in ["search", "read_file"] {
		teams.allow with input as call(principal(["team-a"]), name, {"path": "a.md"}) with data.ctxgate.config.teams as table
		teams.visible with input as item(principal(["team-a"]), name) with data.ctxgate.config.teams as table
	}
}

test_unlisted_tool_hidden_even_if_read_only if {
	p := principal(["team-a"])
	not teams.allow with input as call(p, "list_files", {}) with data.ctxgate.config.teams as table
	not teams.visible with input as item(p, "list_files") with data.ctxgate.config.teams as table
	teams.reason == "tool not found or not permitted" with input as call(p, "list_files", {}) with data.ctxgate.config.teams as table
	teams.reason == "tool not found or not permitted" with input as call(p, "delete_file", {}) with data.ctxgate.config.teams as table
}

test_listed_destructive_tool_allowed if {
	teams.allow with input as call(principal(["team-b"]), "delete_file", {"path": "tmp/x"}) with data.ctxgate.config.teams as table
}

test_union_of_teams if {
	p := principal(["team-a", "team-b"])
	every name in ["search", "read_file", "delete_file"] {
		teams.visible with input as item(p, name) with data.ctxgate.config.teams as table
	}
	not teams.visible with input as item(p, "list_files") with data.ctxgate.config.teams as table
}

test_no_team_no_tools if {
	every name in object.keys(tools) {
		not teams.allow with input as call(principal(["other"]), name, {}) with data.ctxgate.config.teams as table
		not teams.visible with input as item(principal([]), name) with data.ctxgate.config.teams as table
	}
}

test_anonymous_never_in_a_team if {
	not teams.allow with input as call(anon, "search", {}) with data.ctxgate.config.teams as table
}

test_no_table_no_tools if {
	not teams.allow with input as call(principal(["team-a"]), "search", {})
	not teams.allow with input as call(principal(["team-a"]), "search", {}) with data.ctxgate.config.teams as ["search"]
}

test_list_visibility_equals_call_permission if {
	every groups in [[], ["team-a"], ["team-b"], ["team-a", "team-b"]] {
		every name in object.keys(tools) {
			v := teams.visible with input as item(principal(groups), name) with data.ctxgate.config.teams as table
			a := teams.allow with input as call(principal(groups), name, {"readonly": true}) with data.ctxgate.config.teams as table
			v == a
		}
	}
}

test_default_argument_rules_still_apply if {
	p := principal(["team-b"])
	not teams.allow with input as call(p, "run_query", {"readonly": false}) with data.ctxgate.config.teams as table
	teams.allow with input as call(p, "run_query", {"readonly": true}) with data.ctxgate.config.teams as table
	r := teams.reason with input as call(p, "delete_file", {"path": "../x"}) with data.ctxgate.config.teams as table
	r == `argument "path" must not contain ".."`
}

test_everything_else_as_default_policy if {
	p := principal(["team-a"])
	teams.allow with input as object.union(base(p), {"method": "initialize", "phase": "request"}) with data.ctxgate.config.teams as table
	read := object.union(base(p), {"method": "resources/read", "phase": "request", "resource": {"uri": "secret://x"}})
	not teams.allow with input as read with data.ctxgate.config.teams as table
	teams.reason == "resource not found or not permitted" with input as read with data.ctxgate.config.teams as table
	not teams.visible with input as object.union(read, {"phase": "list_item"}) with data.ctxgate.config.teams as table
	resp := object.union(base(p), {"method": "tools/call", "phase": "response", "result": {}, "tool": tools.search})
	teams.allow with input as resp with data.ctxgate.config.teams as table
	teams.redact == {{"pattern": "AKIA[0-9A-Z]{16}", "replacement": "[REDACTED]"}} with input as resp with data.ctxgate.config.teams as table
}

test_bad_default_config_fails_closed if {
	cfg := {"teams": table, "admin_groups": "x"}
	not teams.allow with input as call(principal(["team-a"]), "search", {}) with data.ctxgate.config as cfg
	teams.reason == "policy configuration error" with input as call(principal(["team-a"]), "search", {}) with data.ctxgate.config as cfg
}
