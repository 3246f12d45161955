# The demo's own rules, added to the shipped policy (authz.rego, same
# package). data.json beside this file makes the tool search admin-only, so
# bob (no group) does not even see it while alice (mcp-admin) does.
package ctxgate.authz

# A call denied with a reason: .env files stay private, for everyone. The
# shipped policy reports argument violations as the denial's reason.
argument_violations contains "the demo policy keeps .env files private" if {
	input.tool.name == "read_file"
	is_string(input.tool.arguments.path)
	regex.match(`(^|/)\.env$`, input.tool.arguments.path)
}

# A result redacted by who is asking: the support team does not see e-mail
# addresses (auth.api_keys[].attributes.team in the demo configuration).
redact contains {"pattern": `[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}`, "replacement": "[email]"} if {
	input.principal.attributes.team == "support"
}
