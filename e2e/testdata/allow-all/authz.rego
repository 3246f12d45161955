# An allow-everything policy for the e2e tests that measure the proxy itself
# (conformance, session and transport behaviour), not a policy. Never ship it.
package ctxgate.authz

default allow := true

default visible := true
