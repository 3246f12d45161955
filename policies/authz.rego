# ctxgate default policy: attribute-based access control for MCP.
#
# This is the policy a new install starts with (policy.package: ctxgate.authz).
# The gateway asks it one question per decision, with the document described in
# policies/README.md as `input`, and reads four rules from this package:
#
#   allow    boolean. Anything but `true` (false, undefined, an evaluation error,
#            a timeout) is a deny: the gateway fails closed.
#   visible  boolean, per list item (tools/list, prompts/list, resources/list,
#            resources/templates/list, skills/list). Hidden items are dropped
#            from the list.
#   reason   string shown to the client when a request is denied.
#   redact   set of redaction instructions applied to results before they leave.
#
# Design rules a reviewer should hold this file to:
#
# 1. One source of truth per item. Whether a principal may see a tool in
#    tools/list and whether it may call it come from the SAME helper
#    (tool_permitted), so a tool hidden from a list is never callable and a tool
#    that cannot be called never shows in a list. Arguments only ever narrow a
#    call further (argument_violations); they never widen it.
# 2. Hidden and unknown are indistinguishable. A denied tool, resource or
#    prompt is answered with the same generic reason whether it exists or not,
#    so a client cannot probe for names it is not allowed to see.
# 3. Fail closed. Facts the gateway does not know count against the caller: a
#    tool whose annotations are unknown is not read-only; an unknown method is
#    denied; a malformed configuration denies everything.
# 4. Everything site-specific lives in data.ctxgate.config (see `defaults`
#    below), so most installs never edit this file. The policy works with no
#    data at all.
package ctxgate.authz

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

# Built-in defaults. Override any key with a data file, e.g. policies/data.json:
#   {"ctxgate": {"config": {"admin_groups": ["platform-admins"]}}}
# Keys given in data replace the default value of that key (lists are replaced,
# not appended to); keys not given keep their default.
defaults := {
	# Group claims (input.principal.groups) whose members may see and call
	# tools that are not read-only.
	"admin_groups": ["mcp-admin"],
	# SPIFFE ids of mTLS service identities with the same power as admins.
	# Empty by default: no machine is an admin until someone says so.
	"admin_spiffe_ids": [],
	# Tool names that only admins may see and call, whatever their
	# annotations say. Use it to overrule an upstream that labels a dangerous
	# tool read-only.
	"admin_only_tools": [],
	# Resource URI prefixes (compared case-insensitively) that only members of
	# restricted_groups may see, read or subscribe to.
	"restricted_prefixes": ["secret://"],
	"restricted_groups": ["mcp-secrets"],
	# Tools whose read-only annotation only holds for some arguments: callers
	# that are not admins must pass arguments.readonly == true.
	"readonly_argument_tools": ["run_query"],
	# Tool arguments that name files, at any depth of the arguments (so
	# {"files": [{"path": ...}]} is checked too) and in any case ("Path");
	# their values must be relative paths without "..", however encoded,
	# for every caller.
	"path_arguments": ["path"],
	# Path arguments that may hold absolute paths (e.g. a filesystem server
	# that takes /home/...); they are still checked for "..".
	"absolute_path_arguments": [],
	# Server-to-client requests the gateway relays to clients.
	"server_requests": ["sampling/createMessage", "elicitation/create", "roots/list"],
	# Further methods every principal may call (e.g. "tasks/get").
	"extra_methods": [],
	# Redactions applied to every result.
	"redactions": [{"pattern": "AKIA[0-9A-Z]{16}", "replacement": "[REDACTED]"}],
}

# conf is the effective configuration: defaults overlaid with
# data.ctxgate.config when that is an object.
conf := object.union(defaults, data.ctxgate.config) if {
	is_object(data.ctxgate.config)
} else := defaults

# A configuration of the wrong shape would otherwise silently disable the rule
# that reads it (iterating a string yields nothing), which could widen or
# narrow access without anyone noticing. Any problem here denies every request
# and hides every item; `ctxgate policy eval` shows config_errors.
list_keys := {
	"admin_groups", "admin_spiffe_ids", "admin_only_tools", "restricted_prefixes",
	"restricted_groups", "readonly_argument_tools", "path_arguments", "absolute_path_arguments",
	"server_requests", "extra_methods",
}

config_errors contains msg if {
	cfg := data.ctxgate.config
	not is_object(cfg)
	msg := "data.ctxgate.config must be an object"
}

config_errors contains msg if {
	some key in list_keys
	not strings_only(conf[key])
	msg := sprintf("data.ctxgate.config.%s must be a list of strings", [key])
}

config_errors contains msg if {
	not is_array(conf.redactions)
	msg := "data.ctxgate.config.redactions must be a list"
}

config_errors contains msg if {
	some i, r in conf.redactions
	not valid_redaction(r)
	msg := sprintf("data.ctxgate.config.redactions[%d] must have exactly one of a path (a.b[*].c, or ..name for any depth), a valid RE2 pattern (over text) or a valid RE2 key (over member names), and an optional string replacement", [i])
}

strings_only(xs) if {
	is_array(xs)
	every x in xs {
		is_string(x)
	}
}

valid_redaction(r) if {
	object.keys(r) - {"path", "pattern", "key", "replacement"} == set()
	count(object.keys(r) & {"path", "pattern", "key"}) == 1
	valid_redaction_target(r)
	valid_replacement(r)
}

# Paths as the gateway parses them: dotted member names, each optionally
# followed by [*] (every element) or [N] (one element); a leading ".."
# matches at any depth.
valid_redaction_target(r) if {
	is_string(r.path)
	regex.match(`^(\.\.)?[^.\[\]]+(\[(\*|[0-9]+)\])*(\.[^.\[\]]+(\[(\*|[0-9]+)\])*)*$`, r.path)
}

valid_redaction_target(r) if regex.is_valid(r.pattern)

valid_redaction_target(r) if regex.is_valid(r.key)

valid_replacement(r) if not "replacement" in object.keys(r)

valid_replacement(r) if is_string(r.replacement)

config_ok if count(config_errors) == 0

# ---------------------------------------------------------------------------
# Who is asking
# ---------------------------------------------------------------------------

# Principal attributes come from credentials the gateway verified (token
# claims, certificate names, the API key's configured name); nothing a client
# merely asserts ever reaches input.principal.

anonymous if input.principal.kind == "anonymous"

# in_group is true when the caller carries one of the given group claims.
# Anonymous callers never belong to a group, whatever the input says.
in_group(names) if {
	not anonymous
	some g in input.principal.groups
	g in names
}

# The SPIFFE id of an mTLS service identity: the principal id the gateway
# derived from the certificate's URI SAN ("mtls:spiffe://..."). Only for mTLS
# principals: a bearer token sent over a TLS connection with a client
# certificate names a different principal.
spiffe_id := trim_prefix(input.principal.id, "mtls:") if {
	input.principal.kind == "mtls"
	startswith(input.principal.id, "mtls:spiffe://")
}

# Admins are people in an admin group and explicitly listed service
# identities. Admin does NOT imply access to restricted resources (separation
# of duties: managing tools is not reading secrets).
admin if in_group(conf.admin_groups)

admin if spiffe_id in conf.admin_spiffe_ids

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

# read_only is true only when the upstream declared the tool read-only. The
# gateway fills tool.annotations on tools/call from the last tools/list it saw
# for that upstream; when it has none, annotations are absent and the tool is
# NOT read-only (fail closed). A tool that claims to be both read-only and
# destructive is treated as destructive.
read_only(tool) if {
	tool.annotations.readOnlyHint == true
	not tool.annotations.destructiveHint == true
}

admin_only(tool) if tool.name in conf.admin_only_tools

# tool_permitted decides both tools/list visibility and tools/call permission
# (without arguments). Read-only tools are for everyone, including anonymous
# callers; everything that may change state is for admins only.
tool_permitted(tool) if {
	read_only(tool)
	not admin_only(tool)
}

# Admins may use every tool (tool.name only makes the rule need a tool).
tool_permitted(tool) if {
	tool.name
	admin
}

# argument_violations narrows a permitted call by its arguments. Annotations
# describe a tool, not one call of it: a query tool is "read-only" only when
# called in read-only mode, so non-admins must ask for that mode explicitly.
argument_violations contains msg if {
	input.tool.name in conf.readonly_argument_tools
	not admin
	not input.tool.arguments.readonly == true
	msg := sprintf("tool %q may only be called with arguments.readonly set to true", [input.tool.name])
}

# Path traversal is never legitimate, so this holds for admins too. A path
# argument is found at any depth of the arguments, by its member name. A
# path argument that is not a string is refused rather than guessed at.
path_argument_values contains [name, value] if {
	some p, value
	walk(input.tool.arguments, [p, value])
	count(p) > 0
	name := p[count(p) - 1]
	is_string(name)
	folded(name) in {folded(n) | some n in conf.path_arguments}
}

# Argument names are compared as Go's encoding/json matches struct fields,
# case-insensitively ("Path", "PATH", and the long s and Kelvin sign that
# fold to "s" and "k"): an upstream written that way reads {"Path": ...} as
# its path argument. lower folds the Kelvin sign to "k" itself; the long s
# is replaced only in the names that hold one (most hold none, and replace
# costs more than contains).
folded(s) := lower(s) if {
	not contains(s, "ſ")
} else := lower(replace(s, "ſ", "s"))

argument_violations contains msg if {
	some [name, value] in path_argument_values
	not is_string(value)
	msg := sprintf("argument %q must be a string", [name])
}

# A dot as an upstream might decode it: ".", percent-encoded once or more
# (%2e, %252e, ...), as an overlong UTF-8 sequence (%c0%ae, %e0%80%ae), or
# as a character NFKC normalisation turns into "." (fullwidth U+FF0E, one
# dot leader U+2024, small full stop U+FE52, and the fullwidth one's UTF-8
# bytes percent-encoded).
traversal := concat("", [`(?i)`, dot, `{2}`])

dot := `(\.|%(25)*2e|%(25)*c0%(25)*ae|%(25)*e0%(25)*80%(25)*ae|%(25)*ef%(25)*bc%(25)*8e|\x{FF0E}|\x{2024}|\x{FE52})`

argument_violations contains msg if {
	some [name, value] in path_argument_values
	is_string(value)
	regex.match(traversal, value)
	msg := sprintf("argument %q must not contain \"..\"", [name])
}

# An absolute path escapes whatever directory the tool means to serve: a
# leading / or \ (also percent-encoded or fullwidth), ~, a drive letter or
# a file: URL.
argument_violations contains msg if {
	some [name, value] in path_argument_values
	is_string(value)
	not name in conf.absolute_path_arguments
	regex.match(`(?i)^([/\\~\x{FF0F}\x{FF3C}]|%(25)*(2f|5c)|[a-z]:|file:)`, value)
	msg := sprintf("argument %q must be a relative path", [name])
}

# ---------------------------------------------------------------------------
# Resources and prompts
# ---------------------------------------------------------------------------

# A resource (or resource template) is restricted when its URI starts with a
# restricted prefix. Compared in lower case: URI schemes are case-insensitive,
# so "SECRET://x" must not slip past "secret://".
restricted(res) if {
	some prefix in conf.restricted_prefixes
	some field in ["uri", "uriTemplate"]
	startswith(lower(res[field]), lower(prefix))
}

# resource_permitted decides both list visibility and read/subscribe.
resource_permitted(res) if {
	is_object(res)
	not restricted(res)
}

resource_permitted(res) if {
	restricted(res)
	in_group(conf.restricted_groups)
}

# Prompts are text templates: every prompt is visible and gettable. Restrict
# here (e.g. by prompt.name) and both prompts/list and prompts/get follow.
prompt_permitted(prompt) if is_object(prompt)

# Skills (SEP-2640) are directories of files served as resources, named by the
# URI of their SKILL.md: a skill is visible and gettable exactly when its
# SKILL.md may be read, so the restricted prefixes hide a skill from
# skills/list and skills/get as they hide its files from resources/read.
# Restrict further here (e.g. by skill.name) and both methods follow.
skill_permitted(skill) if {
	is_string(skill.uri)
	resource_permitted({"uri": skill.uri})
}

# ---------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------

# Protocol plumbing every principal needs to use a server at all. The list
# methods are allowed as such; their items are filtered by `visible`.
plumbing_methods := {
	"initialize",
	"ping",
	"tools/list",
	"prompts/list",
	"resources/list",
	"resources/templates/list",
	# The Skills extension's list (SEP-2640); its items are decided by
	# skill_permitted.
	"skills/list",
	"logging/setLevel",
	"server/discover",
	# 2026-07-28: the notification stream; what it carries is filtered like
	# any other notification (hidden resources' updates are dropped).
	"subscriptions/listen",
}

# resources/directory/read (SEP-2640 directoryRead) reads a directory's
# children: decided on the directory's URI, each child then filtered by
# `visible` as a resources/list item.
resource_methods := {"resources/read", "resources/subscribe", "resources/unsubscribe", "resources/directory/read"}

# Requests an upstream server sends to the client through the gateway, decided
# before they are relayed. The contract puts them in phase "response"; phase
# "request" is accepted too, so the rule does not hinge on the label.
server_request_methods := {"sampling/createMessage", "elicitation/create", "roots/list"}

# ---------------------------------------------------------------------------
# Decision: allow
# ---------------------------------------------------------------------------

default allow := false

allow if {
	config_ok
	permitted
}

permitted if {
	input.phase == "request"
	input.method in plumbing_methods
}

permitted if {
	input.phase == "request"
	input.method in conf.extra_methods
}

# Client notifications (initialized, cancelled, progress, roots/list_changed)
# carry no data a server would not otherwise get.
permitted if {
	input.phase == "request"
	startswith(input.method, "notifications/")
}

# Completion is allowed, except against a resource template the caller may
# not see: completing it would reveal it exists.
permitted if {
	input.phase == "request"
	input.method == "completion/complete"
	not completion_hidden_resource
	not completion_hidden_prompt
}

completion_hidden_resource if {
	input.params.ref.type == "ref/resource"
	not resource_permitted({"uri": input.params.ref.uri})
}

completion_hidden_prompt if {
	input.params.ref.type == "ref/prompt"
	not prompt_permitted({"name": input.params.ref.name})
}

permitted if {
	input.phase == "request"
	input.method == "tools/call"
	tool_permitted(input.tool)
	count(argument_violations) == 0
}

permitted if {
	input.phase == "request"
	input.method in resource_methods
	resource_permitted(input.resource)
}

permitted if {
	input.phase == "request"
	input.method == "prompts/get"
	prompt_permitted(input.prompt)
}

permitted if {
	input.phase == "request"
	input.method == "skills/get"
	skill_permitted(input.skill)
}

# A list item is allowed exactly when it is visible, so an engine that reads
# `allow` for list items reaches the same answer as one that reads `visible`.
permitted if {
	input.phase == "list_item"
	visible
}

# Responses were already authorized as requests; at this phase the policy
# only adds redactions. Server-to-client requests have their own rule below.
permitted if {
	input.phase == "response"
	not input.method in server_request_methods
}

# Server-to-client requests (sampling, elicitation, roots) are relayed when
# listed in conf.server_requests. To stop, say, sampling for everyone, set
# data.ctxgate.config.server_requests to ["elicitation/create", "roots/list"];
# for finer control add conditions here (e.g. input.principal.kind == "oidc").
permitted if {
	input.phase in {"request", "response"}
	input.method in server_request_methods
	input.method in conf.server_requests
}

# ---------------------------------------------------------------------------
# Decision: visible
# ---------------------------------------------------------------------------

# visible is "allow, for this item, without arguments": the same helpers that
# decide calls, reads and gets.
default visible := false

visible if {
	config_ok
	item_permitted
}

item_permitted if tool_permitted(input.tool)

item_permitted if resource_permitted(input.resource)

item_permitted if prompt_permitted(input.prompt)

item_permitted if skill_permitted(input.skill)

# ---------------------------------------------------------------------------
# Decision: reason
# ---------------------------------------------------------------------------

# reason is defined only for denies. Messages never depend on whether the
# item exists: a hidden tool gets exactly the answer an unknown one gets.
# Argument messages are only given for tools the caller may see anyway.
reason := deny_reason if not allow

deny_reason := "policy configuration error" if {
	not config_ok
} else := "tool not found or not permitted" if {
	tool_denied
} else := concat("; ", sort(argument_violations)) if {
	input.method == "tools/call"
	count(argument_violations) > 0
} else := "resource not found or not permitted" if {
	resource_denied
} else := "prompt not found or not permitted" if {
	prompt_denied
} else := "skill not found or not permitted" if {
	skill_denied
} else := "server-to-client request not permitted" if {
	input.method in server_request_methods
} else := "method not permitted"

# A tool, resource or prompt is denied when the request or list item names one
# the caller may not use, or when the method needs one and the input has none.
# (`not f(input.x)` would be undefined, not true, when input.x is absent.)
tool_denied if {
	input.tool
	not tool_permitted(input.tool)
}

tool_denied if {
	input.method == "tools/call"
	not input.tool
}

resource_denied if {
	input.resource
	not resource_permitted(input.resource)
}

resource_denied if {
	input.method in resource_methods
	not input.resource
}

resource_denied if {
	input.method == "completion/complete"
	completion_hidden_resource
}

prompt_denied if {
	input.prompt
	not prompt_permitted(input.prompt)
}

prompt_denied if {
	input.method == "prompts/get"
	not input.prompt
}

prompt_denied if {
	input.method == "completion/complete"
	completion_hidden_prompt
}

skill_denied if {
	input.skill
	not skill_permitted(input.skill)
}

skill_denied if {
	input.method == "skills/get"
	not input.skill
}

# ---------------------------------------------------------------------------
# Decision: redact
# ---------------------------------------------------------------------------

# Redactions are returned with every decision, whatever the principal: the
# gateway applies the redactions of a request's decision to that request's
# result (after list filtering). Patterns are RE2 and match the text strings of
# the result (content text, resource contents text, prompt message text and
# every string in structuredContent); the default catches AWS access key ids
# a tool might echo from a config file or an environment dump.
redact contains r if {
	config_ok
	some r in conf.redactions
}
