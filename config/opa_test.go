package config_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

// TestPolicyOPA covers policy.opa: OPA's configuration format, parsed by
// OPA's own parsers, with every unknown key an error naming its path.
func TestPolicyOPA(t *testing.T) {
	const services = "services: {bundles: {url: 'https://bundles.example.com'}}\n"
	tests := []struct {
		name string
		opa  string // the YAML under policy.opa, indented by the test
		dir  bool   // policy.dir is set too
		want []string
	}{
		{
			name: "a complete configuration",
			opa: services + `
keys: {global: {key: "-----BEGIN PUBLIC KEY-----", algorithm: RS256}}
bundles:
  authz:
    service: bundles
    resource: bundles/authz.tar.gz
    polling: {min_delay_seconds: 10, max_delay_seconds: 20, long_polling_timeout_seconds: 30}
    signing: {keyid: global}
decision_logs: {service: bundles, reporting: {buffer_type: event, buffer_size_limit_events: 1000, min_delay_seconds: 1, max_delay_seconds: 5}}
status: {service: bundles}
labels: {team: platform}
`,
		},
		{
			name: "decision logs and status beside policy.dir",
			dir:  true,
			opa:  services + "decision_logs: {service: bundles}\nstatus: {service: bundles}\n",
		},
		{
			name: "unknown keys at every depth are named with their path",
			opa: services + `
bundles:
  authz:
    service: bundles
    resorce: x
    polling: {min_delay_secs: 1}
decision_logs: {service: bundles, reporting: {buffer_typ: event}}
services2: {}
`,
			want: []string{
				"policy.opa.services2: unknown or unsupported key; ctxgate runs these parts of OPA's configuration: bundles, decision_logs, discovery, keys, labels, persistence_directory, services, status",
				"policy.opa.bundles.authz.polling.min_delay_secs: unknown key (see https://www.openpolicyagent.org/docs/configuration)",
				"policy.opa.bundles.authz.resorce: unknown key (see https://www.openpolicyagent.org/docs/configuration)",
				"policy.opa.decision_logs.reporting.buffer_typ: unknown key (see https://www.openpolicyagent.org/docs/configuration)",
			},
		},
		{
			name: "parts of OPA that ctxgate does not run",
			opa:  services + "bundles: {authz: {service: bundles}}\nplugins: {x: {}}\ndefault_decision: /x\nserver: {}\n",
			want: []string{
				"policy.opa.default_decision: unknown or unsupported key; ctxgate runs these parts of OPA's configuration: bundles, decision_logs, discovery, keys, labels, persistence_directory, services, status",
				"policy.opa.plugins: unknown or unsupported key; ctxgate runs these parts of OPA's configuration: bundles, decision_logs, discovery, keys, labels, persistence_directory, services, status",
				"policy.opa.server: unknown or unsupported key; ctxgate runs these parts of OPA's configuration: bundles, decision_logs, discovery, keys, labels, persistence_directory, services, status",
			},
		},
		{
			name: "a bundle naming a service that is not configured",
			opa:  services + "bundles: {authz: {service: nope}}\n",
			want: []string{`policy.opa.bundles: invalid configuration for bundle "authz": service name "nope" not found`},
		},
		{
			name: "a signing key id that is not configured",
			opa:  services + "bundles: {authz: {service: bundles, signing: {keyid: missing}}}\n",
			want: []string{`policy.opa.bundles: invalid configuration for bundle "authz": key id missing not found`},
		},
		{
			name: "polling bounds out of order",
			opa:  services + "bundles: {authz: {service: bundles, polling: {min_delay_seconds: 20, max_delay_seconds: 10}}}\n",
			want: []string{`policy.opa.bundles: invalid configuration for bundle "authz": max polling delay must be >= min polling delay`},
		},
		{
			name: "decision logs to a plugin",
			opa:  services + "bundles: {authz: {service: bundles}}\ndecision_logs: {plugin: mine}\n",
			want: []string{"policy.opa.decision_logs.plugin: ctxgate has no OPA plugins; ship to a service (decision_logs.service) or use policy.decision_log for stdout or a file"},
		},
		{
			name: "decision log reporting bounds",
			opa:  services + "bundles: {authz: {service: bundles}}\ndecision_logs: {reporting: {min_delay_seconds: 1}}\n",
			want: []string{"policy.opa.decision_logs: reporting configuration missing 'max_delay_seconds' in decision_logs"},
		},
		{
			name: "status to an unknown service",
			opa:  services + "bundles: {authz: {service: bundles}}\nstatus: {service: nope}\n",
			want: []string{`policy.opa.status: invalid service name "nope" in status`},
		},
		{
			name: "a key with an unknown algorithm",
			opa:  services + "bundles: {authz: {service: bundles}}\nkeys: {k: {key: secret, algorithm: XS256}}\n",
			want: []string{"policy.opa.keys: unsupported algorithm 'XS256'"},
		},
		{
			name: "bundles and policy.dir",
			dir:  true,
			opa:  services + "bundles: {authz: {service: bundles}}\n",
			want: []string{"policy.dir: set policy.dir or policy.opa.bundles (or discovery), not both: with bundles the policy comes from the bundle service"},
		},
		{
			name: "decision logs only, without a policy",
			opa:  services + "decision_logs: {service: bundles}\n",
			want: []string{"policy.dir: is required: the directory of .rego files every request is decided by, or configure OPA bundles in policy.opa.bundles"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			b.WriteString("server: {listen: '127.0.0.1:0'}\nadmin: {listen: '127.0.0.1:1'}\nauth: {anonymous: true}\n")
			b.WriteString("upstreams: [{name: docs, url: 'http://127.0.0.1:3001/mcp'}]\npolicy:\n")
			if tt.dir {
				b.WriteString("  dir: policies\n")
			}
			b.WriteString("  opa:\n")
			for line := range strings.SplitSeq(strings.TrimSpace(tt.opa), "\n") {
				b.WriteString("    " + line + "\n")
			}
			cfg, err := config.Parse([]byte(b.String()), lookup(nil))
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, b.String())
			}
			var got []string
			for _, p := range cfg.Validate() {
				got = append(got, p.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}
