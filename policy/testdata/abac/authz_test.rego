package ctxgate.authz_test

import data.ctxgate.authz

developer := {"principal": {"claims": {"roles": ["developer"]}, "groups": []}, "route": "code"}

call(who, tool) := object.union(who, {"method": "tools/call", "phase": "request", "tool": tool})

test_developer_reads_repo if {
	authz.allow with input as call(developer, {"name": "repo_read_file", "arguments": {"path": "/workspace/a.go"}})
}

test_path_outside_workspace_denied if {
	not authz.allow with input as call(developer, {"name": "repo_read_file", "arguments": {"path": "/etc/passwd"}})
	authz.reason == "path must be inside /workspace" with input as call(developer, {"name": "repo_read_file", "arguments": {"path": "/etc/passwd"}})
}

test_destructive_needs_admin if {
	tool := {"name": "repo_delete", "annotations": {"destructiveHint": true}}
	not authz.allow with input as call(developer, tool)
	authz.allow with input as call(object.union(developer, {"principal": {"claims": {"roles": ["admin"]}}}), tool)
}

test_role_from_group if {
	sre := {"principal": {"groups": ["sre"]}, "route": "ops"}
	authz.allow with input as call(sre, {"name": "deploy_service"})
}

test_hidden_tool_not_visible if {
	not authz.visible with input as object.union(developer, {"method": "tools/list", "phase": "list_item", "tool": {"name": "employee_lookup"}})
}

test_ssn_redacted_for_non_hr if {
	some r in authz.redact with input as object.union(developer, {"phase": "response"})
	r.path == "structuredContent.ssn"
}
