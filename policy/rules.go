package policy

// GatewayRules are the rules of the policy package the gateway reads:
// allow decides requests (required), visible decides list items (without
// it every item is hidden), reason explains denials and redact redacts
// results (both optional).
var GatewayRules = []string{"allow", "visible", "reason", "redact"}

// Defines reports which of GatewayRules the package of the policy set in
// force defines, for `ctxgate check`.
func (e *Engine) Defines() map[string]bool {
	set := e.set.Load()
	out := make(map[string]bool, len(GatewayRules))
	for _, m := range set.modules {
		if !m.Package.Path.Equal(set.pkg) {
			continue
		}
		for _, r := range m.Rules {
			name := r.Head.Ref()[0].Value.String()
			if len(r.Head.Ref()) == 1 {
				out[name] = true
			}
		}
	}
	return out
}
