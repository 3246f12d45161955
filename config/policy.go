package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Policy configures the Rego policy every request is decided by.
type Policy struct {
	// Dir holds the .rego files and data files (.json, .yaml) to load,
	// recursively. Required unless OPA bundles are configured (OPA below):
	// the gateway never runs without a policy.
	Dir string `yaml:"dir"`
	// OPA is an OPA configuration block in OPA's own format: services,
	// bundles, keys, decision_logs, status, labels, discovery,
	// persistence_directory. With bundles (or discovery) the policy comes
	// from them instead of Dir; decision_logs and status also work with Dir.
	// Nil means no OPA plugins.
	OPA map[string]any `yaml:"opa" json:",omitempty"`
	// Package is the Rego package whose rules decide (allow, visible,
	// reason, redact). Default: ctxgate.authz.
	Package string `yaml:"package"`
	// DecisionLog is where decision records go: "stdout", "stderr", "off",
	// or a file path (appended to). Default: stdout.
	DecisionLog string `yaml:"decision_log"`
	// Timeout bounds one decision; a decision that takes longer denies.
	// Default: 100ms.
	Timeout time.Duration `yaml:"timeout"`
	// ReloadInterval is how often Dir is checked for changes; a changed
	// set that fails to compile is logged and the last good one kept.
	// Default: 2s.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// Mask lists input paths whose values the decision log replaces with
	// "***", e.g. "tool.arguments.password". Credentials are never in the
	// input at all.
	Mask []string `yaml:"mask"`
}

// Policy defaults.
const (
	DefaultPolicyPackage  = "ctxgate.authz"
	DefaultDecisionLog    = "stdout"
	DefaultPolicyTimeout  = 100 * time.Millisecond
	DefaultReloadInterval = 2 * time.Second
)

func (p *Policy) applyDefaults() {
	setDefault(&p.Package, DefaultPolicyPackage)
	setDefault(&p.DecisionLog, DefaultDecisionLog)
	setDefault(&p.Timeout, DefaultPolicyTimeout)
	setDefault(&p.ReloadInterval, DefaultReloadInterval)
}

var regoPackage = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$`)

func (v *validator) policy(p *Policy) {
	switch {
	case p.Dir == "" && p.OPA != nil && !p.FromBundles():
		v.add("policy.dir", "is required: the directory of .rego files every request is decided by, or configure OPA bundles in policy.opa.bundles")
	case p.Dir == "" && !p.FromBundles():
		v.add("policy.dir", "is required: the directory of .rego files every request is decided by (see policies/ for the shipped default)")
	case p.Dir != "" && p.FromBundles():
		// A bundle owns the data and policy namespace under its roots, as
		// in OPA; a local directory beside it would be overwritten or
		// conflict at every activation.
		v.add("policy.dir", "set policy.dir or policy.opa.bundles (or discovery), not both: with bundles the policy comes from the bundle service")
	}
	if p.OPA != nil {
		v.opa(p.OPA)
	}
	if !regoPackage.MatchString(p.Package) {
		v.add("policy.package", "must be a Rego package name such as ctxgate.authz")
	}
	if p.DecisionLog == "" {
		v.add("policy.decision_log", "must be stdout, stderr, off or a file path")
	}
	if p.Timeout <= 0 || p.Timeout > 10*time.Second {
		v.add("policy.timeout", "must be between 1ms and 10s")
	}
	if p.ReloadInterval < 100*time.Millisecond {
		v.add("policy.reload_interval", "must be at least 100ms")
	}
	for i, m := range p.Mask {
		if m == "" || strings.HasPrefix(m, ".") || strings.HasSuffix(m, ".") {
			v.add(fmt.Sprintf("policy.mask[%d]", i), "must be a dotted input path such as tool.arguments.password")
		}
	}
}
