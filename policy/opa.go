package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opaconfig "github.com/open-policy-agent/opa/v1/config"
	"github.com/open-policy-agent/opa/v1/hooks"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// opaRuntime is OPA's plugin manager running what Options.OPA configures,
// exactly as `opa run` does (plugins.New, Init, discovery.New, Start): the
// bundle plugin downloads, verifies and activates bundles into a store
// whose commits the engine vets (bundleStore), the decision-log plugin
// ships decision records, the status plugin reports. Nothing here speaks
// the bundle, decision-log or status protocols itself.
type opaRuntime struct {
	manager *plugins.Manager
	// metrics are OPA's counters (decision-log drops, uploads), read by
	// DecisionLogStats.
	metrics metrics.Metrics
	// logs is the decision-log plugin; nil when decision_logs is not
	// configured.
	logs *logs.Plugin
	// names are the bundles the configuration names: the engine decides
	// with bundles only once every one of them has been activated, so a
	// policy bundle never decides without its data bundle. Empty with
	// discovery: then one activated bundle suffices.
	names []string

	mu      sync.Mutex
	bundles map[string]*bundle.Status // OPA's latest bundle status, by name
	// listening: bundleStatus is registered with the bundle plugin (which
	// discovery creates only once its bundle is in).
	listening bool
	// recent maps the revisions that decided lately to their bundles, for
	// the bundles field of shipped decision records.
	recent []revisionBundles
}

type revisionBundles struct {
	revision string
	bundles  map[string]server.BundleInfo
}

// maxRecentRevisions bounds opaRuntime.recent: a decision in flight was
// started with one of the last few revisions.
const maxRecentRevisions = 8

// startOPA starts OPA's plugins for the configuration raw (JSON, OPA's
// format), storing bundles through store, and sets e.opa.
func startOPA(ctx context.Context, e *Engine, raw []byte, store *bundleStore) (*opaRuntime, error) {
	r := &opaRuntime{metrics: metrics.New(), bundles: map[string]*bundle.Status{}}
	// Before the plugins start: a bundle may be activated (and vetted)
	// while Start runs (a persisted one) or right after.
	e.opa = r
	var boot opaconfig.Config
	if err := json.Unmarshal(raw, &boot); err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	var named map[string]json.RawMessage
	if len(boot.Bundles) > 0 {
		if err := json.Unmarshal(boot.Bundles, &named); err != nil {
			return nil, fmt.Errorf("policy.opa.bundles: %w", err)
		}
	}
	for name := range named {
		r.names = append(r.names, name)
	}
	hs := hooks.New(signingHook{bootKeys: len(boot.Keys) > 0 && string(boot.Keys) != "null"})
	log := opaLogger{l: e.logger}
	m, err := plugins.New(raw, newDecisionID(), store,
		plugins.Logger(log),
		plugins.ConsoleLogger(log),
		plugins.WithHooks(hs),
		plugins.WithParserOptions(ast.ParserOptions{RegoVersion: ast.RegoV1}),
		plugins.EnablePrintStatements(false),
		// No request to OPA's version service: the gateway talks only to
		// the services it was configured with.
		plugins.WithEnableVersionCheck(false),
	)
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	r.manager = m
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	disco, err := discovery.New(m, discovery.Metrics(r.metrics), discovery.Hooks(hs))
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	m.Register(discovery.Name, disco)
	if bp := bundle.Lookup(m); bp != nil {
		r.listening = true
		bp.RegisterBulkListener("ctxgate", r.bundleStatus)
	}
	r.logs = logs.Lookup(m)
	if err := m.Start(ctx); err != nil {
		m.Stop(ctx)
		return nil, fmt.Errorf("policy.opa: start: %w", err)
	}
	return r, nil
}

// stop stops the plugins; the decision-log plugin uploads what it holds
// within the deadline of ctx.
func (r *opaRuntime) stop(ctx context.Context) { r.manager.Stop(ctx) }

// bundleStatus keeps OPA's bundle status for Status.
func (r *opaRuntime) bundleStatus(st map[string]*bundle.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bundles = st
}

// ready reports whether every configured bundle is among the activated.
func (r *opaRuntime) ready(activated []string) bool {
	if len(r.names) == 0 {
		return len(activated) > 0
	}
	for _, n := range r.names {
		if !slices.Contains(activated, n) {
			return false
		}
	}
	return true
}

// activated records the bundles of a revision now deciding.
func (r *opaRuntime) activated(revision string, revs map[string]string) {
	b := make(map[string]server.BundleInfo, len(revs))
	for name, rev := range revs {
		b[name] = server.BundleInfo{Revision: rev}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recent = append(r.recent, revisionBundles{revision, b})
	if len(r.recent) > maxRecentRevisions {
		r.recent = r.recent[1:]
	}
}

func (r *opaRuntime) bundlesOf(revision string) map[string]server.BundleInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.recent) - 1; i >= 0; i-- {
		if r.recent[i].revision == revision {
			return r.recent[i].bundles
		}
	}
	return nil
}

// BundleStatus is one bundle's state as OPA's bundle plugin reports it.
type BundleStatus struct {
	// ActiveRevision is the manifest revision of the bundle deciding now.
	ActiveRevision           string    `json:"active_revision,omitempty"`
	LastSuccessfulActivation time.Time `json:"last_successful_activation,omitzero"`
	LastSuccessfulDownload   time.Time `json:"last_successful_download,omitzero"`
	LastRequest              time.Time `json:"last_request,omitzero"`
	// Error is why the last download, verification or activation failed
	// (the previous revision keeps deciding); empty when it succeeded.
	Error string `json:"error,omitempty"`
}

func (r *opaRuntime) bundleStatuses() map[string]BundleStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	if bp := bundle.Lookup(r.manager); !r.listening && bp != nil {
		// A bundle plugin made by discovery. Registered from a goroutine:
		// the plugin's lock may be held by an activation that is calling
		// OnReload, which may call Status.
		r.listening = true
		go bp.RegisterBulkListener("ctxgate", r.bundleStatus)
	}
	if len(r.bundles) == 0 {
		return nil
	}
	out := make(map[string]BundleStatus, len(r.bundles))
	for name, st := range r.bundles {
		b := BundleStatus{
			ActiveRevision:           st.ActiveRevision,
			LastSuccessfulActivation: st.LastSuccessfulActivation,
			LastSuccessfulDownload:   st.LastSuccessfulDownload,
			LastRequest:              st.LastRequest,
		}
		if st.Message != "" || len(st.Errors) > 0 {
			msgs := []string{st.Message}
			for _, err := range st.Errors {
				msgs = append(msgs, err.Error())
			}
			b.Error = strings.Trim(strings.Join(msgs, ": "), ": ")
		}
		out[name] = b
	}
	return out
}

// ship hands a decision record, already masked, to OPA's decision-log
// plugin. The plugin only buffers (its upload loop sends batches, gzipped,
// retried with backoff); a full buffer drops the oldest record and counts
// it, so a slow or absent log service never holds up a request.
func (r *opaRuntime) ship(ctx context.Context, rec *record) {
	ts, _ := time.Parse(time.RFC3339Nano, rec.Timestamp)
	// As JSON values, the form OPA's plugin works on: its mask rules
	// (data.system.log.mask) walk maps, not Go structs.
	input, result := rec.Input, rec.Result
	if err := util.RoundTrip(&input); err != nil {
		input = nil
	}
	if err := util.RoundTrip(&result); err != nil {
		result = nil
	}
	custom := map[string]any{"principal": rec.Principal}
	if rec.RequestID != "" {
		custom["request_id"] = rec.RequestID
	}
	if rec.MemoHit {
		custom["memo_hit"] = true
	}
	if rec.Error != "" {
		// In custom: OPA's error field holds an error value, which
		// encodes as {} for a plain message.
		custom["error"] = rec.Error
	}
	info := &server.Info{
		DecisionID: rec.DecisionID,
		Path:       rec.Path,
		Input:      &input,
		Results:    &result,
		Timestamp:  ts,
		Revision:   rec.Revision,
		Bundles:    r.bundlesOf(rec.Revision),
		Custom:     custom,
	}
	// Log fails only for a misconfigured plugin (decision_logs.plugin),
	// which validation refuses.
	_ = r.logs.Log(ctx, info)
}

// DecisionLogStats counts what OPA's decision-log plugin did with the
// records it was given.
type DecisionLogStats struct {
	// Dropped counts records dropped before upload, by reason:
	// buffer_full (the bounded buffer was full: the oldest record went),
	// rate_limit (reporting.max_decisions_per_second), encoding.
	Dropped map[string]uint64
	// Uploaded and UploadFailed count batches (chunks) sent to the log
	// service and attempts that failed (retried with backoff).
	Uploaded, UploadFailed uint64
}

// DecisionLogStats reports the decision-log plugin's counters; zero when
// decision logs are not shipped.
func (e *Engine) DecisionLogStats() DecisionLogStats {
	st := DecisionLogStats{Dropped: map[string]uint64{"buffer_full": 0, "rate_limit": 0, "encoding": 0}}
	if e.opa == nil {
		return st
	}
	c := func(name string) uint64 {
		v, _ := e.opa.metrics.Counter(name).Value().(uint64)
		return v
	}
	// The names are the plugin's own counters (plugins/logs/plugin.go).
	st.Dropped["buffer_full"] = c("decision_logs_dropped_buffer_size_limit_exceeded") + c("decision_logs_dropped_buffer_size_limit_bytes_exceeded")
	st.Dropped["rate_limit"] = c("decision_logs_dropped_rate_limit_exceeded")
	st.Dropped["encoding"] = c("decision_logs_encoding_failure")
	st.Uploaded, st.UploadFailed = c("decision_logs_chunks_uploaded"), c("decision_logs_chunks_upload_failed")
	return st
}

// ShipsDecisionLogs reports whether decision records go to a log service.
func (e *Engine) ShipsDecisionLogs() bool { return e.opa != nil && e.opa.logs != nil }

// signingHook makes a signature required for every bundle when keys are
// configured (and labels the boot configuration, OnConfig). OPA accepts an unsigned bundle under keys unless the bundle
// has a signing block; a gateway that was given a key means to trust only
// what that key signed, so a missing signature is refused like a bad one.
// An empty signing block takes the key named by the signature's kid.
type signingHook struct{ bootKeys bool }

var (
	_ hooks.ConfigHook          = signingHook{}
	_ hooks.ConfigDiscoveryHook = signingHook{}
)

// OnConfig also labels the gateway app=ctxgate, as the local decision log
// does, unless the configuration sets app: a log or status service can
// tell gateways from OPAs.
func (h signingHook) OnConfig(_ context.Context, c *opaconfig.Config) (*opaconfig.Config, error) {
	if c.Labels == nil {
		c.Labels = map[string]string{}
	}
	if _, ok := c.Labels["app"]; !ok {
		c.Labels["app"] = "ctxgate"
	}
	return c, requireSignatures(c, h.bootKeys)
}

func (h signingHook) OnConfigDiscovery(_ context.Context, c *opaconfig.Config) (*opaconfig.Config, error) {
	return c, requireSignatures(c, h.bootKeys)
}

// requireSignatures adds `signing: {}` to each bundle of c without one, and
// to the discovery bundle, when keys are configured (here or in the boot
// configuration). c is changed in place: the plugin manager keeps the
// pointer it passed.
func requireSignatures(c *opaconfig.Config, bootKeys bool) error {
	hasKeys := bootKeys || (len(c.Keys) > 0 && string(c.Keys) != "null")
	if !hasKeys {
		return nil
	}
	if len(c.Discovery) > 0 && string(c.Discovery) != "null" {
		var d map[string]any
		if err := json.Unmarshal(c.Discovery, &d); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
		if d["signing"] == nil {
			d["signing"] = map[string]any{}
			c.Discovery, _ = json.Marshal(d)
		}
	}
	if len(c.Bundles) == 0 || string(c.Bundles) == "null" {
		return nil
	}
	var bundles map[string]map[string]any
	if err := json.Unmarshal(c.Bundles, &bundles); err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	for _, b := range bundles {
		if b != nil && b["signing"] == nil {
			b["signing"] = map[string]any{}
		}
	}
	raw, err := json.Marshal(bundles)
	if err != nil {
		return fmt.Errorf("bundles: %w", err)
	}
	c.Bundles = raw
	return nil
}

// newBundleStore is the manager's store: an in-memory store whose commits
// of bundle activations the engine vets.
func newBundleStore(vet vetFunc) *bundleStore {
	return &bundleStore{Store: inmem.New(), vet: vet, writes: map[any]bool{}}
}
