package config

import (
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	opaconfig "github.com/open-policy-agent/opa/v1/config"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/plugins/rest"
	"github.com/open-policy-agent/opa/v1/plugins/status"
)

// opaKeys are the top-level keys of OPA's configuration that ctxgate runs.
// The others configure parts of OPA that ctxgate does not have (its HTTP
// server, disk storage, custom plugins, its own tracing) or replaces
// (default_decision: the gateway reads policy.package), so accepting them
// would silently ignore a setting.
var opaKeys = []string{"bundles", "decision_logs", "discovery", "keys", "labels", "persistence_directory", "services", "status"}

// OPAConfig returns policy.opa as the JSON document OPA's configuration
// parser reads, or nil when policy.opa is not set.
func (p *Policy) OPAConfig() ([]byte, error) {
	if len(p.OPA) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(p.OPA)
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	return b, nil
}

// FromBundles reports whether the policy comes from OPA bundles
// (policy.opa.bundles or policy.opa.discovery) rather than policy.dir.
func (p *Policy) FromBundles() bool {
	return p.OPA["bundles"] != nil || p.OPA["discovery"] != nil
}

// unknownOption extracts the dotted path from OPA's warning for an unknown
// key: `unknown configuration option "bundles.authz.polling.foo" encountered`.
var unknownOption = regexp.MustCompile(`^unknown configuration option "([^"]*)"`)

// opa validates policy.opa with OPA's own parsers, so that what `ctxgate
// check` accepts is what OPA's plugins start with; every unknown key is an
// error naming its path (OPA only warns).
func (v *validator) opa(opa map[string]any) {
	raw := maps.Clone(opa) // unsupported keys are dropped from the copy once reported
	var top []string
	for k := range raw {
		top = append(top, k)
	}
	sort.Strings(top)
	for _, k := range top {
		if !slices.Contains(opaKeys, k) {
			v.add("policy.opa."+k, "unknown or unsupported key; ctxgate runs these parts of OPA's configuration: %s", strings.Join(opaKeys, ", "))
			delete(raw, k)
		}
	}
	b, err := json.Marshal(raw)
	if err != nil {
		v.add("policy.opa", "must be a mapping with string keys, in OPA's configuration format: %v", err)
		return
	}
	cfg, err := opaconfig.ParseConfig(b, "ctxgate")
	if err != nil {
		v.add("policy.opa", "%v", err)
		return
	}
	for _, w := range cfg.Warnings {
		if m := unknownOption.FindStringSubmatch(w); m != nil {
			v.add("policy.opa."+m[1], "unknown key (see https://www.openpolicyagent.org/docs/configuration)")
		} else {
			v.add("policy.opa", "%s", w)
		}
	}
	v.opaPlugins(cfg)
}

// opaPlugins parses each section with the parser of the OPA plugin that
// runs it; their messages name the bundle or service concerned.
func (v *validator) opaPlugins(cfg *opaconfig.Config) {
	ks, err := keys.ParseKeysConfig(cfg.Keys)
	if err != nil {
		v.add("policy.opa.keys", "%v", err)
	}
	services := v.opaServices(cfg.Services, ks)
	if len(cfg.Bundles) > 0 {
		if _, err := bundle.NewConfigBuilder().WithBytes(cfg.Bundles).WithServices(services).WithKeyConfigs(ks).Parse(); err != nil {
			v.add("policy.opa.bundles", "%v", err)
		}
	}
	if len(cfg.Discovery) > 0 {
		if _, err := discovery.NewConfigBuilder().WithBytes(cfg.Discovery).WithServices(services).WithKeyConfigs(ks).Parse(); err != nil {
			v.add("policy.opa.discovery", "%v", err)
		}
	}
	if len(cfg.DecisionLogs) > 0 {
		var dl struct {
			Plugin *string `json:"plugin"`
		}
		if json.Unmarshal(cfg.DecisionLogs, &dl) == nil && dl.Plugin != nil {
			v.add("policy.opa.decision_logs.plugin", "ctxgate has no OPA plugins; ship to a service (decision_logs.service) or use policy.decision_log for stdout or a file")
		} else if _, err := logs.NewConfigBuilder().WithBytes(cfg.DecisionLogs).WithServices(services).Parse(); err != nil {
			v.add("policy.opa.decision_logs", "%v", err)
		}
	}
	if len(cfg.Status) > 0 {
		if _, err := status.NewConfigBuilder().WithBytes(cfg.Status).WithServices(services).Parse(); err != nil {
			v.add("policy.opa.status", "%v", err)
		}
	}
}

// opaServices parses services (a map by name, or a list with names, as
// OPA accepts) and returns their names.
func (v *validator) opaServices(raw json.RawMessage, ks map[string]*keys.Config) []string {
	if len(raw) == 0 {
		return nil
	}
	var names []string
	var list []json.RawMessage
	var byName map[string]json.RawMessage
	switch {
	case json.Unmarshal(raw, &list) == nil:
		for i, s := range list {
			c, err := rest.New(s, ks)
			if err != nil {
				v.add(fmt.Sprintf("policy.opa.services[%d]", i), "%v", err)
				continue
			}
			if c.Service() == "" {
				v.add(fmt.Sprintf("policy.opa.services[%d].name", i), "is required in a list of services")
			}
			names = append(names, c.Service())
		}
	case json.Unmarshal(raw, &byName) == nil:
		for _, name := range sortedKeys(byName) {
			if _, err := rest.New(byName[name], ks, rest.Name(name)); err != nil {
				v.add("policy.opa.services."+name, "%v", err)
			}
			names = append(names, name)
		}
	default:
		v.add("policy.opa.services", "must be a mapping of services by name (or a list of services with names)")
	}
	return names
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
