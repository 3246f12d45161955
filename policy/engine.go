package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/ctxgate/ctxgate/config"
)

// Failures: why a Decision denies without the policy having said so.
const (
	// FailureUndefined: the policy defines no value for allow for this
	// input. (An undefined visible is not a failure: the item is hidden.)
	FailureUndefined = "undefined"
	// FailureError: evaluation failed (a conflict between rule values, a
	// strict builtin error, a result of the wrong type, a malformed redact
	// instruction).
	FailureError = "error"
	// FailureTimeout: evaluation exceeded Options.Timeout or the caller's
	// deadline.
	FailureTimeout = "timeout"
	// FailureUnavailable: no policy revision is active yet (the bundles of
	// Options.OPA have not all been activated).
	FailureUnavailable = "unavailable"
)

// Options configure an Engine. The zero value of every field but one of Dir
// and FS means its default.
type Options struct {
	// Dir is the directory of .rego and data files (.json, .yaml, .yml),
	// loaded recursively as `opa eval -d Dir` would: a data file's content
	// is placed at the path of its directory relative to Dir. Hidden files
	// and directories (names starting with ".") and *_test.rego files are
	// skipped; RunTests loads the tests.
	Dir string
	// FS replaces Dir (e.g. an embedded policy for `ctxgate demo`). Set
	// exactly one of Dir and FS, or neither when OPA configures bundles.
	// An FS is never reloaded.
	FS fs.FS
	// OPA is an OPA configuration (JSON, in OPA's format, validated by
	// config.Policy) run by OPA's own plugins: with bundles (or discovery)
	// and neither Dir nor FS, the policy comes from the bundles, each
	// revision compiled and prepared as a directory is and swapped in
	// atomically, and until one is active every decision denies with
	// FailureUnavailable (Status.Ready is false); decision_logs ships
	// every decision record, masked, to a log service; status reports to
	// a status service. Nil runs no OPA plugin.
	OPA []byte
	// Package is the Rego package whose rules decide. Empty means
	// config.DefaultPolicyPackage ("ctxgate.authz").
	Package string
	// Timeout bounds one evaluation; exceeding it denies with
	// FailureTimeout. Zero means config.DefaultPolicyTimeout.
	Timeout time.Duration
	// ReloadInterval is how often Dir is checked for changes. Zero (or
	// less) disables the reload loop; Reload may still be called.
	ReloadInterval time.Duration
	// DecisionLog receives one JSON line per decision. Nil disables the
	// decision log.
	DecisionLog io.Writer
	// Mask lists dotted input paths (e.g. "tool.arguments.password")
	// whose values the decision log replaces with "***".
	Mask []string
	// Logger receives reload events and evaluation failures. Nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock for timestamps and the visibility cache. Nil
	// means time.Now.
	Now func() time.Time
	// PartialEvalBudget bounds the partial evaluation of each rule when a
	// set is loaded; a rule that takes longer is evaluated in full at
	// each decision instead (slower, same answers) and a warning is
	// logged. Zero means DefaultPartialEvalBudget.
	PartialEvalBudget time.Duration
	// OnReload, if set, is told of every reload that changed the policy
	// (err nil, revision the new one) or was rejected (err set, revision
	// the one still deciding), after Status reflects it. It runs on the
	// reloading goroutine, outside the engine's locks, so it may call
	// Status; it should return quickly. It keeps this package free of
	// metrics libraries: the gateway counts reloads through it.
	OnReload func(revision string, err error)
}

// DefaultPartialEvalBudget is the default Options.PartialEvalBudget.
const DefaultPartialEvalBudget = 2 * time.Second

// Engine decides requests with a compiled, prepared policy set that it
// reloads when Dir changes. It is safe for concurrent use.
type Engine struct {
	src     source
	pkg     ast.Ref // data.<package>
	timeout time.Duration
	budget  time.Duration // partial evaluation, per rule, at load
	log     *decisionLog  // nil: no decision log
	logger  *slog.Logger
	now     func() time.Time
	// onReload is Options.OnReload; nil when unset.
	onReload func(revision string, err error)

	set atomic.Pointer[policySet]
	// opa runs the OPA plugins of Options.OPA; nil without.
	opa *opaRuntime
	// fromBundles: the policy comes from OPA bundles, not from src.
	fromBundles bool

	reloadMu sync.Mutex // serialises Reload and guards the fields below
	srcHash  string
	status   Status

	stop context.CancelFunc // ends the reload loop
	done chan struct{}      // closed when the reload loop has ended
}

// Status describes the loaded policy set and the reload history.
type Status struct {
	// Ready is true when a policy revision is deciding: always with a
	// directory, once the bundles are activated with OPA bundles. Until
	// then every request is denied.
	Ready bool `json:"ready"`
	// Source is where the policy comes from: "dir" or "bundles".
	Source string `json:"source"`
	// Revision identifies the policy set deciding now: the bundle's
	// manifest revision with bundles (name:revision pairs for several);
	// empty while none is active.
	Revision string `json:"revision"`
	// LoadedAt is when that set was loaded.
	LoadedAt time.Time `json:"loaded_at"`
	// LastReloadError is why the last changed set was rejected; empty
	// when the last reload succeeded or none failed yet.
	LastReloadError string `json:"last_reload_error,omitempty"`
	// LastReloadAt is when a changed set was last loaded (or rejected);
	// zero when the policy never changed.
	LastReloadAt time.Time `json:"last_reload_at,omitzero"`
	// Reloads counts successful reloads, ReloadFailures rejected ones
	// (with bundles: activations after the first, and bundles whose policy
	// did not compile or prepare).
	Reloads        int `json:"reloads"`
	ReloadFailures int `json:"reload_failures"`
	// Bundles is each bundle's state as OPA's bundle plugin reports it
	// (downloads, signature checks, activations); nil without bundles.
	Bundles map[string]BundleStatus `json:"bundles,omitempty"`
	// Memo is true when the policy deciding calls no non-deterministic
	// built-in: an input decided before is answered from the decision
	// memo, and list visibility is cached for as long as the revision
	// decides. False while no revision is active.
	Memo bool `json:"memo"`
	// NondeterministicBuiltins names the built-ins (time.now_ns,
	// http.send, ...) that keep Memo false; empty when it is true.
	NondeterministicBuiltins []string `json:"nondeterministic_builtins,omitempty"`
}

// New loads, compiles and prepares the policy set once and, when
// ReloadInterval > 0 and Dir is set, starts the reload loop (stopped by
// Close). A set that does not load or compile, that holds no .rego file,
// or whose package defines no allow rule is an error: the gateway never
// runs without a policy. With Options.OPA it starts OPA's plugins; when
// the policy comes from bundles, New returns at once with an engine that
// denies everything until they are activated (Status.Ready).
func New(opts Options) (*Engine, error) {
	e, err := newEngine(opts)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	e.stop = stop
	if e.fromBundles {
		// Fail closed until the bundles are activated: every rule of the
		// empty set is undefined.
		e.set.Store(emptySet(ctx, e.pkg, e.now()))
		e.status = Status{Source: "bundles"}
	} else if err := e.loadFirst(ctx); err != nil {
		stop()
		return nil, err
	}
	if len(opts.OPA) > 0 {
		vet := vetNothing // policy.dir decides; bundles are not configured
		if e.fromBundles {
			vet = e.vetBundles
		}
		if _, err := startOPA(ctx, e, opts.OPA, newBundleStore(vet)); err != nil {
			stop()
			return nil, err
		}
		if e.log == nil && e.opa.logs != nil {
			e.log = newDecisionLog(nil, opts.Mask, e.pkg, e.logger)
		}
		if e.log != nil && e.opa.logs != nil {
			e.log.ship = e.opa.ship
		}
	}
	if opts.ReloadInterval > 0 && opts.Dir != "" {
		go e.reloadLoop(ctx, opts.ReloadInterval)
	} else {
		close(e.done)
	}
	return e, nil
}

// loadFirst loads the set of a directory or FS at start-up.
func (e *Engine) loadFirst(ctx context.Context) error {
	hash, err := e.src.fingerprint()
	if err != nil {
		return err
	}
	set, err := e.load(ctx)
	if err != nil {
		return err
	}
	e.srcHash = hash
	e.set.Store(set)
	e.status = Status{Ready: true, Source: "dir", Revision: set.revision, LoadedAt: set.loadedAt}
	return nil
}

func newEngine(opts Options) (*Engine, error) {
	fromBundles := opts.Dir == "" && opts.FS == nil && len(opts.OPA) > 0
	var src source
	if !fromBundles {
		var err error
		if src, err = newSource(opts.Dir, opts.FS); err != nil {
			return nil, err
		}
	}
	pkg, err := packageRef(cmpOr(opts.Package, config.DefaultPolicyPackage))
	if err != nil {
		return nil, err
	}
	e := &Engine{
		src:      src,
		pkg:      pkg,
		timeout:  cmpOr(opts.Timeout, config.DefaultPolicyTimeout),
		budget:   cmpOr(opts.PartialEvalBudget, DefaultPartialEvalBudget),
		logger:   opts.Logger,
		now:      opts.Now,
		onReload: opts.OnReload,
		done:     make(chan struct{}),

		fromBundles: fromBundles,
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	if e.now == nil {
		e.now = time.Now
	}
	if opts.DecisionLog != nil {
		e.log = newDecisionLog(opts.DecisionLog, opts.Mask, pkg, e.logger)
	}
	return e, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// packageRef turns "ctxgate.authz" into data.ctxgate.authz.
func packageRef(pkg string) (ast.Ref, error) {
	ref, err := ast.ParseRef("data." + pkg)
	if err != nil {
		return nil, fmt.Errorf("policy package %q: %w", pkg, err)
	}
	for _, t := range ref[1:] {
		if _, ok := t.Value.(ast.String); !ok {
			return nil, fmt.Errorf("policy package %q: must be a dotted name such as ctxgate.authz", pkg)
		}
	}
	return ref, nil
}

// load loads a set from the engine's source and warns about rules that
// could not be optimized.
func (e *Engine) load(ctx context.Context) (*policySet, error) {
	set, err := loadSet(ctx, e.src, e.pkg, e.now(), e.budget)
	if err == nil {
		e.noteSet(set)
	}
	return set, err
}

// noteSet logs, once per loaded set, what makes its decisions slower than
// they could be.
func (e *Engine) noteSet(set *policySet) {
	if len(set.unoptimized) > 0 {
		e.logger.Warn("policy rules not optimized: their input-independent part takes longer than the partial evaluation budget to fold in, so they are evaluated in full at every decision (same answers, slower)",
			"rules", set.unoptimized, "budget", e.budget, "revision", set.revision)
	}
	if len(set.nondeterministic) > 0 {
		e.logger.Info("policy decision memo off: the policy calls non-deterministic built-ins, so every decision is evaluated afresh and list visibility is cached for at most a minute",
			"builtins", set.nondeterministic, "revision", set.revision)
	}
}

// Close stops the reload loop and waits for it, and stops OPA's plugins,
// giving the decision-log plugin a few seconds to upload what it holds.
// Decisions keep working with the last loaded set. Close may be called
// more than once.
func (e *Engine) Close() {
	e.stop()
	<-e.done
	if e.opa != nil {
		ctx, cancel := context.WithTimeout(context.Background(), opaStopTimeout)
		defer cancel()
		e.opa.stop(ctx)
	}
}

// opaStopTimeout bounds the last upload of decision records at Close.
const opaStopTimeout = 5 * time.Second

// Revision identifies the policy set deciding now: the short hex SHA-256
// of its modules' paths and sources and of its data; with bundles, their
// manifest revision (name:revision pairs for several); empty while no
// bundle is active.
func (e *Engine) Revision() string { return e.set.Load().revision }

// Status reports the loaded set and the reload history.
func (e *Engine) Status() Status {
	e.reloadMu.Lock()
	st := e.status
	e.reloadMu.Unlock()
	set := e.set.Load()
	st.Memo = set.memo != nil && set.revision != ""
	st.NondeterministicBuiltins = set.nondeterministic
	if e.opa != nil {
		st.Bundles = e.opa.bundleStatuses()
	}
	return st
}

// Decide evaluates allow, and redact or reason, for a request or a
// response in one prepared query and writes one decision log record. An undefined
// allow, an evaluation error or a timeout denies (fail closed) with
// Decision.Failure set and a warning in the log. A nil in denies with
// FailureError.
//
// A policy set that calls no non-deterministic built-in (Status.Memo)
// answers an input it already answered from its decision memo, without
// evaluating again: the same input, modules and data always give the same
// answer. Failures are never memoized, and every decision, memoized or
// not, has its own id and decision log record (marked memo_hit).
func (e *Engine) Decide(ctx context.Context, in *Input) Decision {
	set := e.set.Load()
	start := e.now()
	d := Decision{Revision: set.revision, ID: newDecisionID()}
	key, memo := set.memo.key(set.revision, in)
	if memo {
		if a, ok := set.memo.get(key); ok {
			d.Allow, d.Reason, d.Redact = a.allow, a.reason, a.redact
			if e.log != nil {
				e.log.decision(ctx, &d, in, nil, nil, nil, true, start, e.now())
			}
			return d
		}
	}
	val, convErr := inputValue(in)
	err, failure := convErr, FailureError
	switch {
	case err == nil && set.revision == "":
		failure, err = FailureUnavailable, errNoRevision
	case err == nil:
		failure, err = e.decide(ctx, set, val, &d)
	}
	if err != nil {
		d.Allow, d.Reason, d.Redact, d.Failure = false, "", nil, failure
		e.logger.WarnContext(ctx, "policy decision failed closed", "failure", failure,
			"error", err.Error(), "decision_id", d.ID, "request_id", RequestID(ctx), "revision", set.revision)
	} else if memo {
		set.memo.put(key, &d)
	}
	if e.log != nil {
		e.log.decision(ctx, &d, in, val, convErr, err, false, start, e.now())
	}
	return d
}

// decide evaluates the decision query (allow, and redact when allowed or
// reason when denied: decisionQuery) under one deadline, and fills d.
func (e *Engine) decide(ctx context.Context, set *policySet, val ast.Value, d *Decision) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	rs, failure, err := e.run(ctx, set.decision, val)
	if err != nil {
		return failure, err
	}
	if len(rs) != 1 {
		// Its comprehensions always bind: one result, or a bug that
		// fails closed.
		return FailureError, fmt.Errorf("policy decision query returned %d results, want 1", len(rs))
	}
	return d.fill(rs[0].Bindings)
}

// Visible evaluates visible for one list item (Phase PhaseListItem) and
// writes one decision log record. Undefined, an error or a timeout hides
// the item; errors and timeouts are logged as warnings.
func (e *Engine) Visible(ctx context.Context, in *Input) bool {
	set := e.set.Load()
	start := e.now()
	id := newDecisionID()
	val, convErr := inputValue(in)
	visible, failure, err := false, FailureError, convErr
	if err == nil {
		tctx, cancel := context.WithTimeout(ctx, e.timeout)
		visible, failure, err = e.visible(tctx, set, val)
		cancel()
	}
	if err != nil {
		e.logger.WarnContext(ctx, "policy visibility failed closed", "failure", failure,
			"error", err.Error(), "decision_id", id, "request_id", RequestID(ctx), "revision", set.revision)
	}
	if e.log != nil {
		e.log.visible(ctx, id, set.revision, in, val, convErr, visible, failure, err, start, e.now())
	}
	return visible
}

// visible evaluates the visible query for one input value under ctx's
// deadline (the caller's: one decision's, or a whole list's). Undefined is
// neither an error nor a failure: the item is hidden.
func (e *Engine) visible(ctx context.Context, set *policySet, val ast.Value) (bool, string, error) {
	vs, failure, err := e.eval(ctx, set.visible, val)
	if err != nil {
		return false, failure, err
	}
	if len(vs) == 0 {
		// No default: hidden is the policy's answer, not a failure.
		return false, "", nil
	}
	v, ok := vs[0].(bool)
	if !ok {
		return false, FailureError, fmt.Errorf("visible is %T, want boolean", vs[0])
	}
	return v, "", nil
}

// eval runs one rule's prepared query with ctx's deadline and returns its
// value as a list: empty when the rule is undefined, else the one value.
// On failure it returns the failure kind and its cause.
func (e *Engine) eval(ctx context.Context, pq *rego.PreparedEvalQuery, val ast.Value) ([]any, string, error) {
	rs, failure, err := e.run(ctx, pq, val)
	switch {
	case err != nil:
		return nil, failure, err
	case len(rs) == 0:
		return []any{}, "", nil // undefined
	case len(rs) != 1 || len(rs[0].Expressions) != 1:
		// A single rule reference has at most one value: anything else
		// is a bug, and fails closed.
		return nil, FailureError, fmt.Errorf("policy query returned %d results, want 1", len(rs))
	}
	return []any{rs[0].Expressions[0].Value}, "", nil
}

// run evaluates a prepared query with ctx's deadline. On failure it
// returns the failure kind and its cause.
func (e *Engine) run(ctx context.Context, pq *rego.PreparedEvalQuery, val ast.Value) (rego.ResultSet, string, error) {
	// A deadline already passed fails at once: AfterFunc would cancel
	// the evaluation only when its goroutine runs, which makes the answer
	// a race.
	var rs rego.ResultSet
	err := ctx.Err()
	if err == nil {
		// Cancel evaluation when ctx ends, without the goroutine per
		// query that rego starts otherwise.
		c := topdown.NewCancel()
		stop := context.AfterFunc(ctx, c.Cancel)
		rs, err = pq.Eval(ctx, rego.EvalParsedInput(val), rego.EvalExternalCancel(c), rego.EvalMetrics(metrics.NoOp()))
		stop()
	}
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, FailureTimeout, fmt.Errorf("policy evaluation exceeded its deadline (timeout %v): %w", e.timeout, err)
	case err != nil:
		return nil, FailureError, err
	}
	return rs, "", nil
}
