# Tests for the default policy. Run with `ctxgate policy test policies/` or
# `opa test policies/ -v`.
package ctxgate.authz_test

import data.ctxgate.authz

# ---------------------------------------------------------------------------
# Fixtures: principals as the gateway builds them.
# ---------------------------------------------------------------------------

anon := {"id": "anonymous", "kind": "anonymous", "scopes": [], "groups": []}

user := {
	"id": "oidc:https://idp.example.com#alice",
	"kind": "oidc",
	"issuer": "https://idp.example.com",
	"subject": "alice",
	"scopes": ["docs.read"],
	"groups": ["engineering"],
	"claims": {"email": "alice@example.com"},
}

admin := object.union(user, {
	"id": "oidc:https://idp.example.com#root",
	"subject": "root",
	"groups": ["engineering", "mcp-admin"],
})

secrets_reader := object.union(user, {
	"id": "oidc:https://idp.example.com#sam",
	"subject": "sam",
	"groups": ["mcp-secrets"],
})

api_key := {"id": "api_key:ci-bot", "kind": "api_key", "name": "ci-bot", "scopes": [], "groups": null}

deployer_spiffe := "spiffe://example.org/ns/ci/sa/deployer"

service := {
	"id": concat("", ["mtls:", deployer_spiffe]),
	"kind": "mtls",
	"scopes": [],
	"groups": [],
	"cert": {
		"subject": "CN=deployer",
		"uris": [deployer_spiffe],
		"dns_names": [],
		"sha256": "ab12",
	},
}

non_admins := [anon, user, secrets_reader, api_key, service]

everyone := array.concat(non_admins, [admin])

# Tools as an upstream declares them in tools/list.
search := {"name": "search", "description": "Search the docs", "annotations": {"readOnlyHint": true}}

delete_file := {"name": "delete_file", "annotations": {"readOnlyHint": false, "destructiveHint": true}}

write_file := {"name": "write_file", "annotations": {"readOnlyHint": false, "destructiveHint": false}}

# A tool the gateway has no annotations for (never seen in a tools/list).
unannotated := {"name": "mystery"}

# A tool that claims to be both: treated as destructive.
confused := {"name": "confused", "annotations": {"readOnlyHint": true, "destructiveHint": true}}

run_query := {"name": "run_query", "annotations": {"readOnlyHint": true}}

read_file := {"name": "read_file", "annotations": {"readOnlyHint": true}}

all_tools := [search, delete_file, write_file, unannotated, confused, run_query, read_file]

# ---------------------------------------------------------------------------
# Input builders.
# ---------------------------------------------------------------------------

base(principal) := {
	"principal": principal,
	"route": "docs",
	"upstream": "docs",
	"protocol": {"version": "2025-11-25", "era": "legacy"},
	"source": {"ip": "192.0.2.10", "user_agent": "test"},
}

request(principal, method) := object.union(base(principal), {"method": method, "phase": "request"})

call(principal, tool, args) := object.union(request(principal, "tools/call"), {"tool": object.union(tool, {"arguments": args})})

tool_item(principal, tool) := object.union(base(principal), {"method": "tools/list", "phase": "list_item", "tool": tool})

read(principal, uri) := object.union(request(principal, "resources/read"), {"resource": {"uri": uri}})

resource_item(principal, resource) := object.union(base(principal), {"method": "resources/list", "phase": "list_item", "resource": resource})

response(principal, method, result) := object.union(base(principal), {"method": method, "phase": "response", "result": result})

aws_redaction := {"pattern": "AKIA[0-9A-Z]{16}", "replacement": "[REDACTED]"}

# ---------------------------------------------------------------------------
# Defaults.
# ---------------------------------------------------------------------------

test_empty_input_denies if {
	not authz.allow with input as {}
	not authz.visible with input as {}
	authz.reason == "method not permitted" with input as {}
}

test_no_data_needed if {
	authz.conf == authz.defaults
	count(authz.config_errors) == 0
}

test_reason_undefined_when_allowed if {
	inp := call(anon, search, {"q": "x"})
	authz.allow with input as inp
	not authz.reason with input as inp
}

test_unknown_phase_denied if {
	not authz.allow with input as object.union(call(admin, search, {}), {"phase": "other"})
}

# ---------------------------------------------------------------------------
# Tools: read-only for everyone, the rest for admins.
# ---------------------------------------------------------------------------

test_read_only_tool_callable_by_every_principal if {
	every p in everyone {
		authz.allow with input as call(p, search, {"q": "gateway"})
	}
}

test_anonymous_calls_read_only_tool if {
	authz.allow with input as call(anon, search, {"q": "x"})
	authz.visible with input as call(anon, search, {"q": "x"})
}

test_destructive_tool_denied_to_non_admins if {
	every p in non_admins {
		not authz.allow with input as call(p, delete_file, {"path": "a.txt"})
		authz.reason == "tool not found or not permitted" with input as call(p, delete_file, {"path": "a.txt"})
	}
}

test_destructive_tool_allowed_to_admin_group if {
	authz.allow with input as call(admin, delete_file, {"path": "a.txt"})
}

test_non_read_only_non_destructive_tool_is_admin_only if {
	not authz.allow with input as call(user, write_file, {"path": "a.txt"})
	authz.allow with input as call(admin, write_file, {"path": "a.txt"})
}

test_unknown_annotations_are_not_read_only if {
	not authz.allow with input as call(anon, unannotated, {})
	not authz.allow with input as call(user, unannotated, {})
	authz.allow with input as call(admin, unannotated, {})
}

test_read_only_and_destructive_counts_as_destructive if {
	not authz.allow with input as call(user, confused, {})
	authz.allow with input as call(admin, confused, {})
}

test_read_only_hint_must_be_boolean_true if {
	stringly := {"name": "s", "annotations": {"readOnlyHint": "true"}}
	not authz.allow with input as call(user, stringly, {})
}

test_tools_call_without_tool_denied if {
	not authz.allow with input as request(admin, "tools/call")
	authz.reason == "tool not found or not permitted" with input as request(admin, "tools/call")
}

test_anonymous_with_admin_group_claim_is_not_admin if {
	forged := object.union(anon, {"groups": ["mcp-admin"]})
	not authz.allow with input as call(forged, delete_file, {})
}

test_api_key_with_admin_group_is_admin if {
	bot := object.union(api_key, {"groups": ["mcp-admin"]})
	authz.allow with input as call(bot, delete_file, {})
}

# ---------------------------------------------------------------------------
# Hidden equals unknown; list visibility equals call permission.
# ---------------------------------------------------------------------------

test_hidden_tool_answered_like_unknown_tool if {
	hidden := authz.reason with input as call(user, delete_file, {})
	unknown := authz.reason with input as call(user, {"name": "no_such_tool"}, {})
	hidden == unknown
	hidden == "tool not found or not permitted"
}

test_hidden_tool_not_visible_and_not_allowed_in_list if {
	not authz.visible with input as tool_item(user, delete_file)
	not authz.allow with input as tool_item(user, delete_file)
	authz.visible with input as tool_item(admin, delete_file)
	authz.allow with input as tool_item(admin, delete_file)
}

test_list_visibility_equals_call_permission if {
	every p in everyone {
		every t in all_tools {
			visible := authz.visible with input as tool_item(p, t)
			callable := authz.allow with input as call(p, t, {"readonly": true})
			visible == callable
		}
	}
}

test_visible_matches_allow_for_list_items if {
	every p in everyone {
		every t in all_tools {
			v := authz.visible with input as tool_item(p, t)
			a := authz.allow with input as tool_item(p, t)
			v == a
		}
	}
}

# ---------------------------------------------------------------------------
# Argument constraints.
# ---------------------------------------------------------------------------

test_run_query_readonly_for_non_admins if {
	authz.allow with input as call(user, run_query, {"sql": "select 1", "readonly": true})
	not authz.allow with input as call(user, run_query, {"sql": "drop table t", "readonly": false})
	not authz.allow with input as call(user, run_query, {"sql": "drop table t"})
	not authz.allow with input as call(user, run_query, {"sql": "drop table t", "readonly": "true"})
	not authz.allow with input as call(anon, run_query, {"sql": "x", "readonly": false})
}

test_run_query_reason_names_the_argument if {
	r := authz.reason with input as call(user, run_query, {"readonly": false})
	r == `tool "run_query" may only be called with arguments.readonly set to true`
}

test_run_query_any_mode_for_admin if {
	authz.allow with input as call(admin, run_query, {"sql": "drop table t", "readonly": false})
}

test_run_query_visible_regardless_of_arguments if {
	authz.visible with input as tool_item(user, run_query)
}

test_readonly_argument_tools_configurable if {
	cfg := {"readonly_argument_tools": []}
	authz.allow with input as call(user, run_query, {"readonly": false}) with data.ctxgate.config as cfg
	cfg2 := {"readonly_argument_tools": ["search"]}
	not authz.allow with input as call(user, search, {"q": "x"}) with data.ctxgate.config as cfg2
}

test_path_traversal_denied_for_everyone if {
	every p in everyone {
		not authz.allow with input as call(p, read_file, {"path": "../../etc/passwd"})
		not authz.allow with input as call(p, read_file, {"path": "docs/..%2F..%2Fsecret"})
		not authz.allow with input as call(p, read_file, {"path": "docs/%2E%2e/x"})
	}
}

test_path_traversal_reason if {
	r := authz.reason with input as call(user, read_file, {"path": "../x"})
	r == `argument "path" must not contain ".."`
}

test_clean_path_allowed if {
	authz.allow with input as call(anon, read_file, {"path": "docs/readme.md"})
	authz.allow with input as call(anon, read_file, {"path": "./a.b/c.d"})
}

test_non_string_path_denied if {
	not authz.allow with input as call(admin, read_file, {"path": ["..", "etc"]})
	r := authz.reason with input as call(admin, read_file, {"path": 7})
	r == `argument "path" must be a string`
}

test_argument_reasons_joined if {
	r := authz.reason with input as call(user, run_query, {"path": "../x"})
	r == concat("; ", [
		`argument "path" must not contain ".."`,
		`tool "run_query" may only be called with arguments.readonly set to true`,
	])
}

test_hidden_tool_reason_wins_over_argument_reason if {
	# The caller must not learn that delete_file checks its arguments.
	r := authz.reason with input as call(user, delete_file, {"path": "../x"})
	r == "tool not found or not permitted"
}

test_path_traversal_encodings_denied if {
	every v in [
		"a/\uff0e\uff0e/b", # fullwidth full stops (NFKC: "..")
		"\u2024\u2024/etc", # one dot leaders
		"a/%252e%252e/b", # percent-encoded twice
		"a/%25252E%25252e/b", # three times, mixed case
		"a/%c0%ae%c0%ae/b", # overlong UTF-8
		"a/%ef%bc%8e%ef%bc%8e/b", # the fullwidth stop's UTF-8, encoded
		".%2e/x",
	] {
		r := authz.reason with input as call(admin, read_file, {"path": v})
		r == `argument "path" must not contain ".."`
	}
}

test_absolute_paths_denied if {
	every v in ["/etc/passwd", "\\server\\share", "~/.ssh/id_rsa", "C:\\Windows", "c:/x", "file:///etc/passwd", "%2fetc/passwd", "%252Fetc", "\uff0fetc/passwd"] {
		r := authz.reason with input as call(admin, read_file, {"path": v})
		r == `argument "path" must be a relative path`
	}
}

test_absolute_paths_allowed_where_configured if {
	cfg := {"absolute_path_arguments": ["path"]}
	authz.allow with input as call(user, read_file, {"path": "/srv/docs/a.md"}) with data.ctxgate.config as cfg
	not authz.allow with input as call(user, read_file, {"path": "/srv/docs/../../etc"}) with data.ctxgate.config as cfg
}

test_nested_path_arguments_checked if {
	r := authz.reason with input as call(admin, read_file, {"files": [{"path": "../x"}]})
	r == `argument "path" must not contain ".."`
	r2 := authz.reason with input as call(admin, read_file, {"opts": {"deep": {"path": "/etc/shadow"}}})
	r2 == `argument "path" must be a relative path`
	r3 := authz.reason with input as call(admin, read_file, {"list": [{"path": 1}]})
	r3 == `argument "path" must be a string`
	authz.allow with input as call(anon, read_file, {"files": [{"path": "docs/a.md"}], "note": "../not-a-path"})
}

test_path_argument_case_variants_checked if {
	every name in ["Path", "PATH", "paTh"] {
		r := authz.reason with input as call(admin, read_file, {name: "../x"})
		r == sprintf("argument %q must not contain \"..\"", [name])
	}
	not authz.allow with input as call(admin, read_file, {"files": [{"PATH": "/etc/passwd"}]})
}

# The long s (U+017F) and the Kelvin sign (U+212A) fold to "s" and "k", as
# encoding/json matches member names.
test_path_argument_unicode_folds_checked if {
	cfg := {"path_arguments": ["source", "key"]}
	every name in ["\u017fource", "SOURCE", "\u212aey", "KEY"] {
		not authz.allow with input as call(user, read_file, {name: "../x"}) with data.ctxgate.config as cfg
	}
	authz.allow with input as call(user, read_file, {"sourcez": "../x"}) with data.ctxgate.config as cfg
}

test_path_arguments_configurable if {
	cfg := {"path_arguments": ["file", "path"]}
	not authz.allow with input as call(user, read_file, {"file": "../x"}) with data.ctxgate.config as cfg
	authz.allow with input as call(user, read_file, {"file": "../x"})
}

# ---------------------------------------------------------------------------
# Admin configuration.
# ---------------------------------------------------------------------------

test_admin_groups_configurable if {
	cfg := {"admin_groups": ["platform"]}
	not authz.allow with input as call(admin, delete_file, {}) with data.ctxgate.config as cfg
	platform := object.union(user, {"groups": ["platform"]})
	authz.allow with input as call(platform, delete_file, {}) with data.ctxgate.config as cfg
}

test_service_identity_not_admin_by_default if {
	not authz.allow with input as call(service, delete_file, {})
}

test_admin_spiffe_ids_configurable if {
	cfg := {"admin_spiffe_ids": [deployer_spiffe]}
	authz.allow with input as call(service, delete_file, {}) with data.ctxgate.config as cfg
	authz.visible with input as tool_item(service, delete_file) with data.ctxgate.config as cfg
}

test_admin_spiffe_id_needs_mtls_principal if {
	# A token-authenticated caller over a connection with the deployer's
	# certificate is the token's principal, not the deployer.
	cfg := {"admin_spiffe_ids": [deployer_spiffe]}
	token_user := object.union(user, {"cert": service.cert})
	not authz.allow with input as call(token_user, delete_file, {}) with data.ctxgate.config as cfg
	fake := object.union(user, {"id": concat("", ["mtls:", deployer_spiffe])})
	not authz.allow with input as call(fake, delete_file, {}) with data.ctxgate.config as cfg
}

test_admin_only_tools_overrule_annotations if {
	cfg := {"admin_only_tools": ["search"]}
	not authz.allow with input as call(user, search, {}) with data.ctxgate.config as cfg
	not authz.visible with input as tool_item(user, search) with data.ctxgate.config as cfg
	authz.allow with input as call(admin, search, {}) with data.ctxgate.config as cfg
	authz.visible with input as tool_item(admin, search) with data.ctxgate.config as cfg
}

test_partial_config_keeps_other_defaults if {
	c := authz.conf with data.ctxgate.config as {"admin_groups": ["x"]}
	c.admin_groups == ["x"]
	c.restricted_prefixes == ["secret://"]
	c.redactions == [aws_redaction]
}

# ---------------------------------------------------------------------------
# Resources.
# ---------------------------------------------------------------------------

test_ordinary_resource_readable_by_everyone if {
	every p in everyone {
		authz.allow with input as read(p, "file:///README.md")
		authz.visible with input as resource_item(p, {"uri": "file:///README.md", "name": "README.md"})
	}
}

test_restricted_resource_only_for_restricted_group if {
	every p in [anon, user, api_key, service, admin] {
		not authz.allow with input as read(p, "secret://db/password")
		authz.reason == "resource not found or not permitted" with input as read(p, "secret://db/password")
		not authz.visible with input as resource_item(p, {"uri": "secret://db/password"})
	}
	authz.allow with input as read(secrets_reader, "secret://db/password")
	authz.visible with input as resource_item(secrets_reader, {"uri": "secret://db/password"})
}

test_restricted_prefix_case_insensitive if {
	not authz.allow with input as read(user, "SECRET://db/password")
	not authz.allow with input as read(user, "Secret://db/password")
}

test_restricted_template_hidden if {
	tmpl := {"uriTemplate": "secret://{name}", "name": "secrets"}
	inp := object.union(base(user), {"method": "resources/templates/list", "phase": "list_item", "resource": tmpl})
	not authz.visible with input as inp
	authz.visible with input as object.union(inp, {"principal": secrets_reader})
	authz.visible with input as object.union(inp, {"resource": {"uriTemplate": "project://files/{+path}"}})
}

test_subscribe_follows_read if {
	every m in ["resources/subscribe", "resources/unsubscribe", "resources/directory/read"] {
		inp := object.union(request(user, m), {"resource": {"uri": "secret://x"}})
		not authz.allow with input as inp
		authz.allow with input as object.union(inp, {"principal": secrets_reader})
		authz.allow with input as object.union(inp, {"resource": {"uri": "file:///a"}})
	}
}

test_resource_method_without_resource_denied if {
	not authz.allow with input as request(secrets_reader, "resources/read")
	authz.reason == "resource not found or not permitted" with input as request(secrets_reader, "resources/read")
}

test_hidden_resource_answered_like_unknown_one if {
	a := authz.reason with input as read(user, "secret://exists")
	b := authz.reason with input as read(user, "secret://does-not-exist")
	a == b
}

test_restricted_prefixes_and_groups_configurable if {
	cfg := {"restricted_prefixes": ["vault:", "file:///etc/"], "restricted_groups": ["vault-readers"]}
	not authz.allow with input as read(user, "vault:kv/db") with data.ctxgate.config as cfg
	not authz.allow with input as read(user, "file:///etc/shadow") with data.ctxgate.config as cfg
	authz.allow with input as read(user, "secret://x") with data.ctxgate.config as cfg
	vault := object.union(user, {"groups": ["vault-readers"]})
	authz.allow with input as read(vault, "vault:kv/db") with data.ctxgate.config as cfg
	not authz.allow with input as read(secrets_reader, "vault:kv/db") with data.ctxgate.config as cfg
}

# ---------------------------------------------------------------------------
# Prompts.
# ---------------------------------------------------------------------------

test_prompts_visible_and_gettable if {
	every p in everyone {
		get := object.union(request(p, "prompts/get"), {"prompt": {"name": "review_file", "arguments": {"path": "a.go"}}})
		authz.allow with input as get
		item := object.union(base(p), {"method": "prompts/list", "phase": "list_item", "prompt": {"name": "review_file"}})
		authz.visible with input as item
	}
}

test_prompts_get_without_prompt_denied if {
	not authz.allow with input as request(user, "prompts/get")
	authz.reason == "prompt not found or not permitted" with input as request(user, "prompts/get")
}

# ---------------------------------------------------------------------------
# Skills (SEP-2640): decided as their SKILL.md resource is.
# ---------------------------------------------------------------------------

skill(uri) := {"uri": uri, "name": "pdf-processing"}

test_skills_visible_and_gettable_like_their_files if {
	every p in everyone {
		authz.allow with input as request(p, "skills/list")
		get := object.union(request(p, "skills/get"), {"skill": skill("skill://pdf-processing/SKILL.md")})
		authz.allow with input as get
		item := object.union(base(p), {"method": "skills/list", "phase": "list_item", "skill": skill("skill://pdf-processing/SKILL.md")})
		authz.visible with input as item
	}
}

test_restricted_skill_hidden_and_refused_like_unknown if {
	get := object.union(request(user, "skills/get"), {"skill": skill("secret://ops/SKILL.md")})
	not authz.allow with input as get
	authz.reason == "skill not found or not permitted" with input as get
	item := object.union(base(user), {"method": "skills/list", "phase": "list_item", "skill": skill("SECRET://ops/SKILL.md")})
	not authz.visible with input as item
	authz.allow with input as object.union(get, {"principal": secrets_reader})
	authz.visible with input as object.union(item, {"principal": secrets_reader})
}

test_skills_get_without_skill_denied if {
	not authz.allow with input as request(user, "skills/get")
	authz.reason == "skill not found or not permitted" with input as request(user, "skills/get")
}

# ---------------------------------------------------------------------------
# Protocol plumbing and other methods.
# ---------------------------------------------------------------------------

test_plumbing_allowed_for_everyone if {
	methods := [
		"initialize", "ping", "tools/list", "prompts/list", "resources/list",
		"resources/templates/list", "completion/complete", "logging/setLevel",
		"server/discover", "subscriptions/listen", "notifications/initialized", "notifications/cancelled",
		"notifications/roots/list_changed",
	]
	every p in everyone {
		every m in methods {
			authz.allow with input as request(p, m)
		}
	}
}

test_unknown_method_denied if {
	not authz.allow with input as request(admin, "tasks/get")
	authz.reason == "method not permitted" with input as request(admin, "tasks/get")
	not authz.allow with input as request(admin, "tools/delete")
}

test_extra_methods_configurable if {
	authz.allow with input as request(user, "tasks/get") with data.ctxgate.config as {"extra_methods": ["tasks/get"]}
}

test_completion_of_restricted_template_denied if {
	inp := object.union(request(user, "completion/complete"), {"params": {
		"ref": {"type": "ref/resource", "uri": "secret://{name}"},
		"argument": {"name": "name", "value": "d"},
	}})
	not authz.allow with input as inp
	authz.reason == "resource not found or not permitted" with input as inp
	authz.allow with input as object.union(inp, {"principal": secrets_reader})
}

test_completion_of_prompt_allowed if {
	inp := object.union(request(anon, "completion/complete"), {"params": {
		"ref": {"type": "ref/prompt", "name": "review_file"},
		"argument": {"name": "path", "value": "a"},
	}})
	authz.allow with input as inp
}

# ---------------------------------------------------------------------------
# Server-to-client requests and responses.
# ---------------------------------------------------------------------------

test_server_requests_allowed_by_default if {
	every m in ["sampling/createMessage", "elicitation/create", "roots/list"] {
		every phase in ["request", "response"] {
			authz.allow with input as object.union(base(user), {"method": m, "phase": phase})
		}
	}
}

test_server_requests_configurable if {
	cfg := {"server_requests": ["roots/list"]}
	inp := object.union(base(user), {"method": "sampling/createMessage", "phase": "response", "params": {"messages": [], "maxTokens": 10}})
	not authz.allow with input as inp with data.ctxgate.config as cfg
	authz.reason == "server-to-client request not permitted" with input as inp with data.ctxgate.config as cfg
	authz.allow with input as object.union(inp, {"method": "roots/list"}) with data.ctxgate.config as cfg
}

test_responses_allowed if {
	every p in everyone {
		authz.allow with input as response(p, "tools/call", {"content": [{"type": "text", "text": "hi"}]})
		authz.allow with input as response(p, "resources/read", {"contents": []})
		authz.allow with input as response(p, "notifications/message", {})
	}
}

# ---------------------------------------------------------------------------
# Redaction.
# ---------------------------------------------------------------------------

test_redact_aws_keys_in_every_result if {
	every p in everyone {
		every m in ["tools/call", "resources/read", "prompts/get"] {
			authz.redact == {aws_redaction} with input as response(p, m, {})
		}
	}

	# The gateway applies a request decision's redactions to its result.
	authz.redact == {aws_redaction} with input as call(anon, search, {"q": "x"})
}

test_redact_pattern_matches_aws_key if {
	text := "key=AKIAIOSFODNN7EXAMPLE rest"
	regex.replace(text, aws_redaction.pattern, aws_redaction.replacement) == "key=[REDACTED] rest"
	not regex.match(aws_redaction.pattern, "AKIA-not-a-key")
}

test_redactions_configurable if {
	cfg := {"redactions": [
		{"path": "structuredContent.ssn"},
		{"path": "content[*].annotations", "replacement": "[hidden]"},
		{"path": "items[0].owner.email"},
		{"pattern": `\b\d{3}-\d{2}-\d{4}\b`, "replacement": "[SSN]"},
		{"path": "..ssn"},
		{"key": "(?i)^(password|api_?key)$"},
	]}
	r := authz.redact with input as response(user, "tools/call", {}) with data.ctxgate.config as cfg
	r == {
		{"path": "structuredContent.ssn"},
		{"path": "content[*].annotations", "replacement": "[hidden]"},
		{"path": "items[0].owner.email"},
		{"pattern": `\b\d{3}-\d{2}-\d{4}\b`, "replacement": "[SSN]"},
		{"path": "..ssn"},
		{"key": "(?i)^(password|api_?key)$"},
	}
}

# ---------------------------------------------------------------------------
# Malformed configuration fails closed.
# ---------------------------------------------------------------------------

bad_configs := [
	{"admin_groups": "mcp-admin"},
	{"admin_groups": null},
	{"restricted_prefixes": [1]},
	{"server_requests": {"sampling/createMessage": true}},
	{"redactions": {"pattern": "x"}},
	{"redactions": [{"pattern": "("}]},
	{"redactions": [{"path": "a", "pattern": "b"}]},
	{"redactions": [{"replacement": "x"}]},
	{"redactions": [{"pattern": "x", "replacement": 1}]},
	{"redactions": [{"pattern": "x", "other": 1}]},
	{"redactions": ["AKIA"]},
	{"redactions": [{"path": ""}]},
	{"redactions": [{"path": "a..b"}]},
	{"redactions": [{"path": "content[x].text"}]},
	{"redactions": [{"path": "[*].text"}]},
	{"redactions": [{"path": "...ssn"}]},
	{"redactions": [{"path": ".."}]},
	{"redactions": [{"key": "("}]},
	{"redactions": [{"key": "a", "path": "b"}]},
]

test_bad_config_denies_everything if {
	every cfg in bad_configs {
		count(authz.config_errors) > 0 with data.ctxgate.config as cfg
		not authz.allow with input as call(admin, search, {}) with data.ctxgate.config as cfg
		not authz.allow with input as request(admin, "initialize") with data.ctxgate.config as cfg
		not authz.visible with input as tool_item(admin, search) with data.ctxgate.config as cfg
		authz.reason == "policy configuration error" with input as call(admin, search, {}) with data.ctxgate.config as cfg
	}
}

test_config_not_an_object if {
	authz.config_errors == {"data.ctxgate.config must be an object"} with data.ctxgate.config as ["x"]
	not authz.allow with input as request(user, "ping") with data.ctxgate.config as ["x"]
}

test_config_error_message_names_the_key if {
	errs := authz.config_errors with data.ctxgate.config as {"admin_groups": "mcp-admin"}
	errs == {"data.ctxgate.config.admin_groups must be a list of strings"}
}
