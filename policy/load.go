package policy

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
)

// policySet is one loaded, compiled and prepared set of policies. It is
// immutable once built; a reload builds a new one and swaps the pointer.
type policySet struct {
	revision string
	loadedAt time.Time
	pkg      ast.Ref
	modules  map[string]*ast.Module // as parsed, for Explain
	store    storage.Store
	// decision evaluates allow and, in the same evaluation, redact (when
	// allow is true) or reason (otherwise): one query per decision, since
	// each evaluation has a fixed cost of its own (decisionQuery). visible
	// is the list items' query. Each rule they read is partially
	// evaluated at load (rego.WithPartialEval): everything that does not
	// depend on input (data, configuration checks, constant helpers) is
	// computed once per set instead of once per decision.
	decision, visible *rego.PreparedEvalQuery
	// unoptimized names the rules whose partial evaluation did not finish
	// within its budget; they are evaluated in full at each decision.
	unoptimized []string
	// nondeterministic names the non-deterministic built-ins the modules
	// call (memo.go); empty when every answer is a function of the input,
	// the modules and the data.
	nondeterministic []string
	// memo remembers this set's decisions (nil, memoizing nothing, when
	// nondeterministic is not empty); vis caches its visibility answers,
	// for as long as the set decides when it is deterministic, for
	// visibilityTTL otherwise. A new revision starts with both empty.
	memo *decisionMemo
	vis  *visibilityCache
	// lists reuses whole filtered lists (listcache.go); nil, caching
	// none, when nondeterministic is not empty.
	lists *listCache
}

// source is where policies come from: a directory, or an fs.FS.
type source struct {
	name string // for errors: the directory, or "embedded policy"
	fsys fs.FS
}

func newSource(dir string, fsys fs.FS) (source, error) {
	switch {
	case dir != "" && fsys != nil:
		return source{}, errors.New("policy: set Dir or FS, not both")
	case dir != "":
		// os.DirFS makes module names relative to Dir ("authz.rego"),
		// which keeps revisions and trace locations independent of where
		// the directory is mounted. Its Stat follows symlinks, as the
		// files of a Kubernetes ConfigMap volume need.
		return source{name: dir, fsys: os.DirFS(dir)}, nil
	case fsys != nil:
		return source{name: "embedded policy", fsys: fsys}, nil
	default:
		return source{}, errors.New("policy: Dir or FS is required")
	}
}

// isPolicyFile reports whether the loader reads a file of this name.
func isPolicyFile(name string) bool {
	switch path.Ext(name) {
	case ".rego", ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// engineFilter is the loader filter of the engine: policies and data,
// without tests (only RunTests loads *_test.rego) and without hidden files
// and directories (editor swap files, .git, a ConfigMap's ..data link).
// Other files (README.md) are ignored rather than parsed.
func engineFilter(_ string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if depth > 0 && strings.HasPrefix(name, ".") {
		return true
	}
	if info.IsDir() {
		return false
	}
	return !isPolicyFile(name) || strings.HasSuffix(name, "_test.rego")
}

// testFilter is engineFilter with the tests.
func testFilter(_ string, info fs.FileInfo, depth int) bool {
	name := info.Name()
	if depth > 0 && strings.HasPrefix(name, ".") {
		return true
	}
	return !info.IsDir() && !isPolicyFile(name)
}

// fingerprint hashes the names and contents of the files the engine
// loads. Policy directories are small, so reading them every reload tick
// is cheap, and unlike sizes and mtimes a content hash misses no edit.
func (s source) fingerprint() (string, error) {
	paths, err := loader.FilteredPathsFS(s.fsys, []string{"."}, engineFilter)
	if err != nil {
		return "", fmt.Errorf("list policy files in %s: %w", s.name, err)
	}
	slices.Sort(paths)
	h := sha256.New()
	for _, p := range paths {
		b, err := fs.ReadFile(s.fsys, p)
		if err != nil {
			return "", fmt.Errorf("read policy file %s: %w", p, err)
		}
		writeField(h, []byte(p))
		writeField(h, b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeField writes a length-prefixed field, so that no two different
// sequences of fields hash the same.
func writeField(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// loadSet loads, compiles and prepares the policy set of src. Everything
// that can fail fails here, never during a decision.
func loadSet(ctx context.Context, src source, pkg ast.Ref, now time.Time, peBudget time.Duration) (*policySet, error) {
	res, err := loader.NewFileLoader().
		WithFS(src.fsys).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		Filtered([]string{"."}, engineFilter)
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", src.name, err)
	}
	if len(res.Modules) == 0 {
		return nil, fmt.Errorf("load policy %s: no .rego files", src.name)
	}
	return buildSet(ctx, src.name, res.ParsedModules(), res.Documents, revision(res), pkg, now, peBudget)
}

// buildSet compiles and prepares modules with data documents: the one way
// a set is made, for a directory and a bundle alike. name is for errors.
func buildSet(ctx context.Context, name string, modules map[string]*ast.Module, docs map[string]any, rev string, pkg ast.Ref, now time.Time, peBudget time.Duration) (*policySet, error) {
	set := &policySet{
		revision: rev,
		loadedAt: now,
		pkg:      pkg,
		modules:  modules,
		// Data is converted to AST values once, at load, not on every read.
		store: inmem.NewFromObjectWithOpts(docs, inmem.OptReturnASTValuesOnRead(true)),
	}
	compiler, err := compile(ctx, set.store, set.modules, false)
	if err != nil {
		return nil, fmt.Errorf("compile policy %s: %w", name, err)
	}
	set.nondeterministic = nondeterministicBuiltins(compiler)
	set.memo, set.vis = newDecisionMemo(set.nondeterministic), newVisibilityCache(set.nondeterministic)
	set.lists = newListCache(set.nondeterministic)
	if len(compiler.GetRulesExact(rule(pkg, "allow"))) == 0 {
		return nil, fmt.Errorf("compile policy %s: package %s defines no allow rule", name, pkg[1:])
	}
	refs := map[string]ast.Ref{}
	noInline := noInlining(compiler, pkg)
	for _, rn := range decisionRules {
		optimized := false
		if refs[rn], optimized, err = partial(ctx, compiler, set.store, rn, rule(pkg, rn), noInline, peBudget); err != nil {
			return nil, fmt.Errorf("prepare policy %s: rule %s: %w", name, rn, err)
		}
		if !optimized {
			set.unoptimized = append(set.unoptimized, rn)
		}
	}
	if set.decision, err = prepareQuery(ctx, compiler, set.store, decisionQuery(refs)); err != nil {
		return nil, fmt.Errorf("prepare policy %s: rules allow, reason, redact: %w", name, err)
	}
	if set.visible, err = prepareQuery(ctx, compiler, set.store, refs["visible"].String()); err != nil {
		return nil, fmt.Errorf("prepare policy %s: rule visible: %w", name, err)
	}
	return set, nil
}

// compile compiles modules against store. print() calls are erased unless
// prints is set (Explain): the hot path never formats output no one reads.
func compile(ctx context.Context, store storage.Store, modules map[string]*ast.Module, prints bool) (*ast.Compiler, error) {
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	defer store.Abort(ctx, txn)
	c := ast.NewCompiler().
		WithEnablePrintStatements(prints).
		// A rule defined where a data file already put a value would be
		// shadowed at run time; opa reports it at compile time, so do we.
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn))
	c.Compile(modules)
	if c.Failed() {
		return nil, c.Errors
	}
	return c, nil
}

// decisionRules are the rules the gateway reads, each partially evaluated
// on its own (partial).
var decisionRules = []string{"allow", "reason", "redact", "visible"}

// partial partially evaluates one rule when that finishes within budget
// and returns the reference that evaluates it: the partial result's, or
// the rule's own when it was not optimized. Partial evaluation folds in
// everything that does not depend on input (data, configuration checks)
// once per set; it keeps non-deterministic builtins (time.now_ns,
// http.send) for evaluation time. A policy whose input-independent part
// is too costly to fold (an expensive constant computation) is evaluated
// as it is instead, in full at each decision: the same answers, only
// slower, so start-up and reloads stay bounded. noInline are the rules
// partial evaluation keeps as rules (noInlining).
func partial(ctx context.Context, c *ast.Compiler, store storage.Store, name string, ref ast.Ref, noInline []string, budget time.Duration) (ast.Ref, bool, error) {
	// Partial evaluation adds its result to the shared compiler under its
	// namespace (rego.PartialResult), as the module below holding the
	// rules of data.<ns>.__result__ (none when the rule is undefined for
	// every input): one namespace per rule, or the rules overwrite each
	// other.
	ns := "__ctxgate_partial_" + name
	peCtx, cancel := context.WithTimeout(ctx, budget)
	_, err := rego.New(rego.Query(ref.String()), rego.Compiler(c), rego.Store(store),
		rego.PartialNamespace(ns), rego.DisableInlining(noInline)).PrepareForEval(peCtx, rego.WithPartialEval())
	cancel()
	switch {
	case err == nil && c.Modules["__partialresult__"+ns+"__"] != nil:
		return ast.MustParseRef("data." + ns + ".__result__"), true, nil
	case err == nil:
		// OPA put its result elsewhere: evaluate the rule as written
		// (and say so) rather than guess.
		return ref, false, nil
	case ctx.Err() != nil:
		return nil, false, ctx.Err()
	}
	// Over budget, or a policy partial evaluation cannot help (recursive
	// references): evaluate it as written. A policy that is wrong fails
	// when the queries are prepared.
	return ref, false, nil
}

// prepareQuery prepares a query on the compiled set, as it is.
func prepareQuery(ctx context.Context, c *ast.Compiler, store storage.Store, query string) (*rego.PreparedEvalQuery, error) {
	pq, err := rego.New(rego.Query(query), rego.Compiler(c), rego.Store(store)).PrepareForEval(ctx)
	if err != nil {
		return nil, err
	}
	return &pq, nil
}

// revision hashes what was compiled: every module's path and source and
// the merged data document in canonical JSON (sorted keys), so that a
// reformatted data file that means the same is the same revision.
func revision(res *loader.Result) string {
	h := sha256.New()
	mods := make([]*loader.RegoFile, 0, len(res.Modules))
	for _, m := range res.Modules {
		mods = append(mods, m)
	}
	slices.SortFunc(mods, func(a, b *loader.RegoFile) int { return cmp.Compare(a.Name, b.Name) })
	for _, m := range mods {
		writeField(h, []byte(m.Name))
		writeField(h, m.Raw)
	}
	writeField(h, util.MustMarshalJSON(res.Documents))
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// noInlining returns the rules that partial evaluation should keep as
// rules rather than inline (rego.DisableInlining): the multi-value rules
// (`contains`) of the package that read input and are referenced by more
// than one rule. Inlined, such a rule's body is copied into each rule
// that iterates it and so evaluated once per copy at every decision (the
// default policy's path_argument_values, walked by three
// argument_violations rules, cost three walks of the arguments); kept, it
// is evaluated once per decision and its set reused, as OPA caches a
// rule's value within an evaluation. Inlining never changes an answer,
// only the cost, so this heuristic cannot make a decision wrong.
func noInlining(c *ast.Compiler, pkg ast.Ref) []string {
	uses := map[string]int{}
	readsInput := map[string]bool{}
	for _, m := range c.Modules {
		if !m.Package.Path.HasPrefix(pkg) {
			continue
		}
		for _, r := range m.Rules {
			self := r.Ref().GroundPrefix().String()
			seen := map[string]bool{}
			ast.WalkRefs(r, func(ref ast.Ref) bool {
				if ref.HasPrefix(ast.InputRootRef) {
					readsInput[self] = true
				}
				if s := ref.GroundPrefix().String(); s != self && !seen[s] {
					seen[s] = true
					uses[s]++
				}
				return false
			})
		}
	}
	var names []string
	for _, m := range c.Modules {
		if !m.Package.Path.HasPrefix(pkg) {
			continue
		}
		for _, r := range m.Rules {
			name := r.Ref().GroundPrefix().String()
			if r.Head.RuleKind() == ast.MultiValue && readsInput[name] && uses[name] > 1 && !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names
}
