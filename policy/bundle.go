package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// vetFunc builds the set a transaction would make the engine decide with.
// It returns the function that puts the set in force after the commit, nil
// when nothing is to change, or an error that refuses the transaction.
type vetFunc func(ctx context.Context, store storage.Store, txn storage.Transaction) (install func(), err error)

// bundleStore is the store of OPA's plugin manager. OPA's bundle plugin
// downloads, verifies and activates bundles into it as it does in OPA; the
// store adds one step to an activation: before a write transaction commits,
// the engine compiles and prepares the set it would decide with, exactly as
// for a policy directory (buildSet). A set that fails (no allow rule, a
// rule that cannot be prepared) aborts the transaction, so OPA reports the
// activation as failed, keeps the last good bundle and retries, as it does
// for a bundle that does not compile; the engine never decides with what
// OPA's status reports as refused, nor refuses what it reports as active.
type bundleStore struct {
	storage.Store
	vet vetFunc

	mu     sync.Mutex
	writes map[any]bool // open write transactions: whether each wrote
}

func (s *bundleStore) NewTransaction(ctx context.Context, params ...storage.TransactionParams) (storage.Transaction, error) {
	txn, err := s.Store.NewTransaction(ctx, params...)
	if err == nil && len(params) > 0 && params[0].Write {
		s.mu.Lock()
		s.writes[txn] = false
		s.mu.Unlock()
	}
	return txn, err
}

// wrote marks txn as having changed data or policies.
func (s *bundleStore) wrote(txn storage.Transaction) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.writes[txn]; ok {
		s.writes[txn] = true
	}
}

// done forgets txn and reports whether it wrote.
func (s *bundleStore) done(txn storage.Transaction) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.writes[txn]
	delete(s.writes, txn)
	return w
}

func (s *bundleStore) Write(ctx context.Context, txn storage.Transaction, op storage.PatchOp, path storage.Path, value any) error {
	s.wrote(txn)
	return s.Store.Write(ctx, txn, op, path, value)
}

func (s *bundleStore) UpsertPolicy(ctx context.Context, txn storage.Transaction, id string, bs []byte) error {
	s.wrote(txn)
	return s.Store.UpsertPolicy(ctx, txn, id, bs)
}

func (s *bundleStore) DeletePolicy(ctx context.Context, txn storage.Transaction, id string) error {
	s.wrote(txn)
	return s.Store.DeletePolicy(ctx, txn, id)
}

func (s *bundleStore) Truncate(ctx context.Context, txn storage.Transaction, params storage.TransactionParams, it storage.Iterator) error {
	s.wrote(txn)
	return s.Store.Truncate(ctx, txn, params, it)
}

// Commit vets a transaction that wrote before committing it; a refused one
// is aborted, as storage.Store requires of a failed Commit.
func (s *bundleStore) Commit(ctx context.Context, txn storage.Transaction) error {
	if !s.done(txn) {
		return s.Store.Commit(ctx, txn)
	}
	install, err := s.vet(ctx, s.Store, txn)
	if err != nil {
		s.Store.Abort(ctx, txn)
		return err
	}
	if err := s.Store.Commit(ctx, txn); err != nil {
		return err
	}
	if install != nil {
		install()
	}
	return nil
}

func (s *bundleStore) Abort(ctx context.Context, txn storage.Transaction) {
	s.done(txn)
	s.Store.Abort(ctx, txn)
}

// vetNothing is the vetFunc of an engine whose policy is not from bundles.
func vetNothing(context.Context, storage.Store, storage.Transaction) (func(), error) { return nil, nil }

// vetBundles is the engine's vetFunc: once every configured bundle has
// been activated, the policies and data the transaction leaves in the
// store become the next set.
func (e *Engine) vetBundles(ctx context.Context, store storage.Store, txn storage.Transaction) (func(), error) {
	names, err := bundle.ReadBundleNamesFromStore(ctx, store, txn)
	if err != nil && !storage.IsNotFound(err) {
		return nil, fmt.Errorf("read bundle names: %w", err)
	}
	if e.opa == nil || !e.opa.ready(names) {
		return nil, nil // a policy bundle never decides without its data bundle
	}
	revs := map[string]string{}
	for _, n := range names {
		if revs[n], err = bundle.ReadBundleRevisionFromStore(ctx, store, txn, n); err != nil && !storage.IsNotFound(err) {
			return nil, fmt.Errorf("read bundle %s revision: %w", n, err)
		}
	}
	set, err := e.bundleSet(ctx, store, txn, revs)
	if err != nil {
		e.bundleRefused(err)
		return nil, err
	}
	return func() { e.bundleActivated(set, revs) }, nil
}

// bundleSet builds the set of the store's policies and data.
func (e *Engine) bundleSet(ctx context.Context, store storage.Store, txn storage.Transaction, revs map[string]string) (*policySet, error) {
	ids, err := store.ListPolicies(ctx, txn)
	if err != nil {
		return nil, fmt.Errorf("list bundle policies: %w", err)
	}
	slices.Sort(ids)
	h := sha256.New()
	modules := make(map[string]*ast.Module, len(ids))
	for _, id := range ids {
		raw, err := store.GetPolicy(ctx, txn, id)
		if err != nil {
			return nil, fmt.Errorf("read bundle policy %s: %w", id, err)
		}
		// Rego v1, as OPA 1.x builds bundles and as policy.dir is read.
		m, err := ast.ParseModuleWithOpts(id, string(raw), ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
		if err != nil {
			return nil, fmt.Errorf("parse bundle policy %s: %w", id, err)
		}
		modules[id] = m
		writeField(h, []byte(id))
		writeField(h, raw)
	}
	data, err := store.Read(ctx, txn, storage.Path{})
	if err != nil {
		return nil, fmt.Errorf("read bundle data: %w", err)
	}
	docs, _ := data.(map[string]any)
	writeField(h, util.MustMarshalJSON(docs))
	rev := bundleRevision(revs, hex.EncodeToString(h.Sum(nil))[:12])
	set, err := buildSet(ctx, "bundle "+rev, modules, docs, rev, e.pkg, e.now(), e.budget)
	if err == nil {
		e.noteSet(set)
	}
	return set, err
}

// bundleRevision names a set made of bundles: the manifest revision of a
// single bundle, name:revision pairs for several; hash stands in for a
// bundle built without a revision.
func bundleRevision(revs map[string]string, hash string) string {
	names := make([]string, 0, len(revs))
	for n := range revs {
		names = append(names, n)
	}
	slices.Sort(names)
	if len(names) == 1 {
		if r := revs[names[0]]; r != "" {
			return r
		}
		return hash
	}
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, n+":"+cmpOr(revs[n], hash))
	}
	return strings.Join(parts, ",")
}

// bundleActivated puts a vetted set in force, after OPA committed it.
func (e *Engine) bundleActivated(set *policySet, revs map[string]string) {
	e.opa.activated(set.revision, revs)
	e.reloadMu.Lock()
	old := e.status.Revision
	e.set.Store(set)
	first := !e.status.Ready
	e.status.Revision, e.status.LoadedAt, e.status.Ready = set.revision, set.loadedAt, true
	e.status.LastReloadAt, e.status.LastReloadError = set.loadedAt, ""
	if !first {
		e.status.Reloads++
	}
	e.reloadMu.Unlock()
	e.logger.Info("policy bundle activated", "revision", set.revision, "previous_revision", old)
	if e.onReload != nil {
		e.onReload(set.revision, nil)
	}
}

// bundleRefused records a bundle whose set did not build; OPA keeps the
// previous bundle, and the engine the previous set.
func (e *Engine) bundleRefused(err error) {
	e.reloadMu.Lock()
	e.reloadFailed(err)
	rev := e.status.Revision
	e.reloadMu.Unlock()
	e.logger.Error("policy bundle refused; the previous policy keeps deciding", "revision", rev, "error", err.Error())
	if e.onReload != nil {
		e.onReload(rev, err)
	}
}

var errNoRevision = errors.New("no policy revision is active yet: the policy bundles have not been activated (see /admin/policy)")

// emptySet is the set of an engine whose bundles are not active yet: no
// modules, so every rule is undefined; Decide denies with
// FailureUnavailable, Visible and FilterList hide everything.
func emptySet(ctx context.Context, pkg ast.Ref, now time.Time) *policySet {
	set := &policySet{loadedAt: now, pkg: pkg, modules: map[string]*ast.Module{}, store: inmem.New()}
	// No modules: deterministic, every answer undefined until the bundles
	// replace this set.
	set.memo, set.vis, set.lists = newDecisionMemo(nil), newVisibilityCache(nil), newListCache(nil)
	c := ast.NewCompiler()
	c.Compile(set.modules)
	refs := map[string]ast.Ref{}
	for _, name := range decisionRules {
		refs[name] = rule(pkg, name)
	}
	var err error
	if set.decision, err = prepareQuery(ctx, c, set.store, decisionQuery(refs)); err == nil {
		set.visible, err = prepareQuery(ctx, c, set.store, refs["visible"].String())
	}
	if err != nil {
		// A reference into an empty compiler always prepares.
		panic(fmt.Sprintf("policy: prepare the empty set: %v", err))
	}
	return set
}
