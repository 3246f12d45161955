package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/lineage"
)

// testTimeout bounds one test, as `opa test` does by default.
const testTimeout = 5 * time.Second

// RunTests runs the Rego tests (rules named test_*) of the policies in dir
// with OPA's test runner, as `opa test dir` would, and reports to w the
// way `opa test` does: failing tests (every test when verbose, with notes
// and failure traces), then a summary "PASS: n/m" or "FAIL: x/m". Unlike
// the engine it loads *_test.rego files; hidden files are skipped. A test
// that errors counts as failed. err is set when the policies do not load
// or compile, or when dir holds no tests. w must not be nil (io.Discard
// for no report).
func RunTests(ctx context.Context, dir string, w io.Writer, verbose bool) (passed, failed int, err error) {
	modules, store, err := tester.LoadWithParserOptions([]string{dir}, testFilter,
		ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
	if err != nil {
		return 0, 0, fmt.Errorf("load policy tests %q: %w", dir, err)
	}
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return 0, 0, err
	}
	defer store.Abort(ctx, txn)
	compiler := ast.NewCompiler().
		WithPathConflictsCheck(storage.NonEmpty(ctx, store, txn)).
		WithEnablePrintStatements(true).
		WithUseTypeCheckAnnotations(true)
	ch, err := tester.NewRunner().
		SetCompiler(compiler).
		SetStore(store).
		SetModules(modules).
		CapturePrintOutput(true).
		EnableTracing(verbose).
		StackTraces(true).
		SetTimeout(testTimeout).
		RunTests(ctx, txn)
	if err != nil {
		return 0, 0, fmt.Errorf("compile policy tests %q: %w", dir, err)
	}
	counted := make(chan *tester.Result)
	go func() {
		defer close(counted)
		for tr := range ch {
			p, f := countResult(tr)
			passed, failed = passed+p, failed+f
			// opa test -v shows notes and failures, not the full trace.
			tr.Trace = lineage.Filter(tr.Trace, func(e *topdown.Event) bool {
				return e.Op == topdown.NoteOp || e.Op == topdown.FailOp
			})
			counted <- tr
		}
	}()
	// Report returns once counted is closed, so passed and failed are final.
	if err := (tester.PrettyReporter{Output: w, Verbose: verbose}).Report(counted); err != nil {
		return passed, failed, err
	}
	if passed+failed == 0 {
		return 0, 0, errors.New("no tests found in " + dir + " (tests are rules named test_* in *_test.rego files)")
	}
	return passed, failed, nil
}

// countResult counts a result as the reporter does: leaf sub-results of a
// parameterised test each count; a skipped (todo_) test counts neither
// way; an error is a failure.
func countResult(tr *tester.Result) (passed, failed int) {
	switch {
	case tr.Skip:
		return 0, 0
	case tr.Error != nil:
		return 0, 1
	case len(tr.SubResults) > 0:
		for _, sr := range tr.SubResults.Iter {
			if len(sr.SubResults) > 0 {
				continue
			}
			if sr.Fail {
				failed++
			} else {
				passed++
			}
		}
		return passed, failed
	case tr.Fail:
		return 0, 1
	default:
		return 1, 0
	}
}
