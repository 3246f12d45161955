package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/gateway"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// probeTimeout bounds each --probe contact; an upstream or IdP slower than
// this to answer is reported as unreachable.
const probeTimeout = 5 * time.Second

// cmdCheck checks a configuration as far as serve would before listening:
// every key and value, the policy (loaded and compiled by the same code,
// with the rules the gateway reads), and every file the configuration
// names. It reports every problem at once; with --probe it also contacts
// each upstream and OIDC issuer.
func cmdCheck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("check", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", "", "configuration file (YAML)")
	probe := flags.Bool("probe", false, "also contact each upstream and OIDC issuer")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "ctxgate: check: --config FILE is required")
		return 1
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		fmt.Fprintln(stderr, "ctxgate: read config:", err)
		return 1
	}
	cfg, problems := config.ParseAll(data, os.LookupEnv)
	var notes []string
	if cfg != nil {
		problems = append(problems, checkPolicy(cfg, problems, &notes)...)
		problems = append(problems, gateway.CheckFiles(cfg)...)
		if *probe && len(problems) == 0 {
			problems = append(problems, probeAll(ctx, cfg, stdout)...)
		}
	}
	for _, n := range notes {
		fmt.Fprintln(stdout, n)
	}
	if len(problems) > 0 {
		fmt.Fprintf(stderr, "ctxgate: %s: configuration has %d problem(s):\n", *path, len(problems))
		for _, p := range problems {
			// Multi-line errors (OPA's lists) stay under their item.
			fmt.Fprintln(stderr, "  "+strings.ReplaceAll(p.Error(), "\n", "\n    "))
		}
		return 1
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintln(stderr, "ctxgate: warning:", w.Error())
	}
	fmt.Fprintln(stdout, *path+": configuration is valid")
	return 0
}

// checkPolicy loads the policy the way serve does (newPolicyEngine), unless
// the policy block itself already has problems, and says which of the
// rules the gateway reads the package defines.
func checkPolicy(cfg *config.Config, problems []error, notes *[]string) []error {
	for _, p := range problems {
		var cp config.Problem
		if errors.As(p, &cp) && strings.HasPrefix(cp.Path, "policy") {
			return nil
		}
		if strings.HasPrefix(p.Error(), "policy.") {
			return nil
		}
	}
	var out []error
	pc := cfg.Policy
	if err := checkDecisionLog(pc.DecisionLog); err != nil {
		out = append(out, err)
	}
	if pc.FromBundles() {
		// Validate already parsed policy.opa with OPA's own parsers; the
		// bundles themselves are downloaded (and verified, compiled) by
		// serve: check contacts no service.
		*notes = append(*notes, "policy: from OPA bundles (policy.opa.bundles); check parses their configuration but does not download them")
		return out
	}
	// No decision log, no reload loop and no OPA plugins (decision-log or
	// status services): check writes nothing, starts nothing and contacts
	// no one, but compiles and prepares exactly what serve would.
	pc.DecisionLog, pc.ReloadInterval, pc.OPA = "off", 0, nil
	engine, closeLog, err := newPolicyEngine(pc, nil, newLogger("error", io.Discard), nil)
	if err != nil {
		return append(out, policyProblem(err))
	}
	defer closeLog()
	defer engine.Close()
	defined := engine.Defines()
	var missing []string
	for _, r := range policy.GatewayRules {
		if !defined[r] {
			missing = append(missing, r)
		}
	}
	pkg := cmpOr(pc.Package, config.DefaultPolicyPackage)
	*notes = append(*notes, fmt.Sprintf("policy: package %s, revision %s, rules %s", pkg, engine.Revision(), strings.Join(slices.DeleteFunc(slices.Clone(policy.GatewayRules), func(r string) bool { return !defined[r] }), ", ")))
	if slices.Contains(missing, "visible") {
		*notes = append(*notes, fmt.Sprintf("warning: policy package %s defines no visible rule: every tools/list, prompts/list and resources/list item will be hidden", pkg))
	}
	return out
}

// policyProblem names the field a policy that does not load is about:
// the package when it defines no allow rule, else the directory (OPA's
// message names the file and line).
func policyProblem(err error) error {
	inner := err
	if u := errors.Unwrap(err); u != nil {
		inner = u // newPolicyEngine's "policy: " prefix, replaced by a field path
	}
	if strings.Contains(inner.Error(), "defines no allow rule") {
		return fmt.Errorf("policy.package: %w; set it to the package your .rego files declare (the gateway reads its rules %s)", inner, strings.Join(policy.GatewayRules, ", "))
	}
	return fmt.Errorf("policy.dir: %w", inner)
}

// checkDecisionLog checks that serve can append to a decision log file,
// without creating it.
func checkDecisionLog(target string) error {
	switch target {
	case "off", "stdout", "stderr", "":
		return nil
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		f.Close()
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("policy.decision_log: %w", err)
	}
	if info, err := os.Stat(filepath.Dir(target)); err != nil || !info.IsDir() {
		return fmt.Errorf("policy.decision_log: %s: its directory does not exist; create it or log to stdout", target)
	}
	return nil
}

// probeAll contacts each upstream (an initialize) and each OIDC issuer's
// discovery document, printing what answered; what did not is a problem.
func probeAll(ctx context.Context, cfg *config.Config, stdout io.Writer) []error {
	var problems []error
	pool, err := upstream.NewPool(cfg.Upstreams)
	if err != nil {
		return []error{err}
	}
	for i, up := range pool.All() {
		p := gateway.ProbeUpstream(ctx, up, probeTimeout, time.Now)
		if !p.Reachable {
			problems = append(problems, fmt.Errorf("upstreams[%d] (%s, %s): unreachable: %s", i, up.Name, up.URL, p.Detail))
			continue
		}
		fmt.Fprintf(stdout, "probe upstreams[%d] (%s, %s): reachable: %s\n", i, up.Name, up.URL, p.Detail)
	}
	client := &http.Client{Timeout: probeTimeout}
	for i, o := range cfg.Auth.OIDC {
		jwks, err := probeDiscovery(ctx, client, o.Issuer)
		if err != nil {
			problems = append(problems, fmt.Errorf("auth.oidc[%d] (%s): discovery: %w", i, o.Issuer, err))
			continue
		}
		fmt.Fprintf(stdout, "probe auth.oidc[%d] (%s): discovery answered, jwks_uri %s\n", i, o.Issuer, jwks)
	}
	return problems
}

// probeDiscovery fetches an issuer's OpenID configuration and checks that it
// names the issuer exactly (as go-oidc will) and a key set.
func probeDiscovery(ctx context.Context, client *http.Client, issuer string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", fmt.Errorf("not a JSON document: %w", err)
	}
	if doc.Issuer != issuer {
		return "", fmt.Errorf("the document names issuer %q, not %q: tokens would be refused", doc.Issuer, issuer)
	}
	if doc.JWKSURI == "" {
		return "", errors.New("the document has no jwks_uri")
	}
	return doc.JWKSURI, nil
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
