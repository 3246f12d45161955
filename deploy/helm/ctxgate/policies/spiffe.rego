# Example: tools for mTLS service identities, by SPIFFE id.
#
# Machines that authenticate with a client certificate (principal kind
# "mtls") may see and call exactly the tools listed for their SPIFFE id in
# data; a service that is not listed gets no tools at all, whatever the tools'
# annotations say. People and API keys are decided by the default policy,
# data.ctxgate.authz, which must be loaded too (it is, when the whole policies/
# directory is). Everything that is not about tools is the default policy's
# decision for everyone.
#
# To use it, set in the gateway config
#
#   auth:   {mtls: {identity: [spiffe]}}
#   policy: {dir: policies, package: ctxgate.examples.spiffe}
#
# and put the table in a data file, e.g. policies/data.json:
#
#   {"ctxgate": {"config": {"services": {
#     "spiffe://example.org/ns/ci/sa/indexer":  ["search", "read_file"],
#     "spiffe://example.org/ns/ops/sa/janitor": ["delete_file"]
#   }}}}
#
# Ids are compared exactly: a trust domain or path prefix grants nothing.
package ctxgate.examples.spiffe

import data.ctxgate.authz

services := data.ctxgate.config.services if {
	is_object(data.ctxgate.config.services)
} else := {}

service if input.principal.kind == "mtls"

# The caller's SPIFFE id: the principal id when the gateway chose the SPIFFE
# URI as the identity ("mtls:spiffe://..."); otherwise the certificate's URI
# SAN, but only when it is the only one, as in an X.509-SVID (a certificate
# with several URI SANs is not an SVID and names no service).
spiffe_id := trim_prefix(input.principal.id, "mtls:") if {
	service
	startswith(input.principal.id, "mtls:spiffe://")
} else := uri if {
	service
	[uri] := input.principal.cert.uris
	startswith(uri, "spiffe://")
}

service_tools contains name if {
	some name in services[spiffe_id]
	is_string(name)
}

# tool_permitted decides both tools/list visibility and tools/call: the table
# for services, the default policy for everyone else.
tool_permitted(tool) if {
	service
	tool.name in service_tools
}

tool_permitted(tool) if {
	not service
	authz.tool_permitted(tool)
}

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
