package ctxgate.examples.spiffe_test

import data.ctxgate.examples.spiffe

indexer := "spiffe://example.org/ns/ci/sa/indexer"

janitor := "spiffe://example.org/ns/ops/sa/janitor"

table := {
	indexer: ["search", "read_file"],
	janitor: ["delete_file"],
}

svc(id) := {
	"id": concat("", ["mtls:", id]),
	"kind": "mtls",
	"scopes": [],
	"groups": [],
	"cert": {"subject": "O=example", "uris": [id], "dns_names": [], "sha256": "ab"},
}

# A service whose identity the gateway took from the DNS name
# (auth.mtls.identity: [dns, spiffe]) but whose certificate is an SVID.
svc_dns(id) := object.union(svc(id), {"id": "mtls:dns:indexer.ci.svc"})

user := {"id": "oidc:https://idp.example.com#u", "kind": "oidc", "scopes": [], "groups": []}

admin := object.union(user, {"groups": ["mcp-admin"]})

base(p) := {
	"principal": p,
	"route": "docs",
	"upstream": "docs",
	"protocol": {"version": "2025-11-25", "era": "legacy"},
	"source": {"ip": "192.0.2.10"},
}

tools := {
	"search": {"name": "search", "annotations": {"readOnlyHint": true}},
	"read_file": {"name": "read_file", "annotations": {"readOnlyHint": true}},
	"delete_file": {"name": "delete_file", "annotations": {"destructiveHint": true}},
	"list_files": {"name": "list_files", "annotations": {"readOnlyHint": true}},
}

call(p, name) := object.union(base(p), {
	"method": "tools/call",
	"phase": "request",
	"tool": object.union(tools[name], {"arguments": {"path": "a"}}),
})

item(p, name) := object.union(base(p), {"method": "tools/list", "phase": "list_item", "tool": tools[name]})

test_spiffe_id_from_principal_id if {
	spiffe.spiffe_id == indexer with input as call(svc(indexer), "search")
}

test_spiffe_id_from_single_uri_san if {
	spiffe.spiffe_id == indexer with input as call(svc_dns(indexer), "search")
	spiffe.allow with input as call(svc_dns(indexer), "search") with data.ctxgate.config.services as table
}

test_several_uri_sans_name_no_service if {
	p := object.union(svc_dns(indexer), {"cert": {"uris": [indexer, janitor]}})
	not spiffe.spiffe_id with input as call(p, "search")
	not spiffe.allow with input as call(p, "search") with data.ctxgate.config.services as table
}

test_service_uses_listed_tools if {
	every name in ["search", "read_file"] {
		spiffe.allow with input as call(svc(indexer), name) with data.ctxgate.config.services as table
		spiffe.visible with input as item(svc(indexer), name) with data.ctxgate.config.services as table
	}
	spiffe.allow with input as call(svc(janitor), "delete_file") with data.ctxgate.config.services as table
}

test_service_denied_unlisted_tools if {
	not spiffe.allow with input as call(svc(indexer), "delete_file") with data.ctxgate.config.services as table
	not spiffe.allow with input as call(svc(indexer), "list_files") with data.ctxgate.config.services as table
	not spiffe.visible with input as item(svc(janitor), "search") with data.ctxgate.config.services as table
	spiffe.reason == "tool not found or not permitted" with input as call(svc(indexer), "list_files") with data.ctxgate.config.services as table
}

test_unknown_service_gets_no_tools if {
	other := svc("spiffe://example.org/ns/ci/sa/other")
	not spiffe.allow with input as call(other, "search") with data.ctxgate.config.services as table
	not spiffe.allow with input as call(svc(indexer), "search")
}

test_prefix_grants_nothing if {
	cfg := {"spiffe://example.org/ns/ci": ["search"]}
	not spiffe.allow with input as call(svc(indexer), "search") with data.ctxgate.config.services as cfg
}

test_people_use_default_policy if {
	spiffe.allow with input as call(user, "search") with data.ctxgate.config.services as table
	spiffe.allow with input as call(user, "list_files") with data.ctxgate.config.services as table
	not spiffe.allow with input as call(user, "delete_file") with data.ctxgate.config.services as table
	spiffe.allow with input as call(admin, "delete_file") with data.ctxgate.config.services as table
}

test_token_over_svid_connection_is_not_the_service if {
	p := object.union(user, {"cert": svc(janitor).cert})
	not spiffe.allow with input as call(p, "delete_file") with data.ctxgate.config.services as table
}

test_list_visibility_equals_call_permission if {
	every p in [svc(indexer), svc(janitor), svc_dns(indexer), user, admin] {
		every name in object.keys(tools) {
			v := spiffe.visible with input as item(p, name) with data.ctxgate.config.services as table
			a := spiffe.allow with input as call(p, name) with data.ctxgate.config.services as table
			v == a
		}
	}
}

test_everything_else_as_default_policy if {
	spiffe.allow with input as object.union(base(svc(indexer)), {"method": "tools/list", "phase": "request"}) with data.ctxgate.config.services as table
	read := object.union(base(svc(indexer)), {"method": "resources/read", "phase": "request", "resource": {"uri": "secret://k"}})
	not spiffe.allow with input as read with data.ctxgate.config.services as table
	spiffe.reason == "resource not found or not permitted" with input as read with data.ctxgate.config.services as table
	resp := object.union(base(svc(indexer)), {"method": "tools/call", "phase": "response", "result": {}})
	spiffe.allow with input as resp with data.ctxgate.config.services as table
	count(spiffe.redact) == 1 with input as resp with data.ctxgate.config.services as table
}
