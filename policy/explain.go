package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// Explain is the what-if behind `ctxgate policy eval`: it decides in as
// Decide does (or, for Phase PhaseListItem, as Visible does, reporting
// visible as Allow) and explains the answer in readable lines: the rules
// of the policy that produced a value, with their file and line, the
// output of print() calls and trace() notes, then the answer. It compiles
// the loaded set again with print() enabled, so it is for people, not for
// requests, and writes no decision log record. err is set (and the
// Decision denies with Failure set) when evaluation fails or in is nil.
func (e *Engine) Explain(ctx context.Context, in *Input) (Decision, []string, error) {
	set := e.set.Load()
	d := Decision{Revision: set.revision, ID: newDecisionID()}
	val, err := inputValue(in)
	if err != nil {
		d.Failure = FailureError
		return d, nil, err
	}
	compiler, err := compile(ctx, set.store, set.modules, true)
	if err != nil {
		d.Failure = FailureError
		return d, nil, fmt.Errorf("compile policy for explain: %w", err)
	}
	listItem := in.Phase == PhaseListItem
	query := decideQuery(set.pkg)
	if listItem {
		query = visibleQuery(set.pkg)
	}
	tracer := topdown.NewBufferTracer()
	prints := &printHook{tracer: tracer}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	rs, err := rego.New(
		rego.Query(query),
		rego.Compiler(compiler),
		rego.Store(set.store),
		rego.ParsedInput(val),
		rego.QueryTracer(tracer),
		rego.EnablePrintStatements(true),
		rego.PrintHook(prints),
	).Eval(ctx)
	lines := explainTrace(*tracer, prints.out)
	failure, err := e.explained(ctx, &d, rs, err, listItem)
	if err != nil {
		d.Allow, d.Reason, d.Redact, d.Failure = false, "", nil, failure
		return d, append(lines, fmt.Sprintf("failure: %s: %v", failure, err)), err
	}
	return d, append(lines, answerLines(&d, listItem)...), nil
}

// explained fills d from an Explain evaluation.
func (e *Engine) explained(ctx context.Context, d *Decision, rs rego.ResultSet, err error, listItem bool) (string, error) {
	switch {
	case err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded):
		return FailureTimeout, err
	case err != nil:
		return FailureError, err
	case len(rs) != 1:
		return FailureError, fmt.Errorf("policy query returned %d results, want 1", len(rs))
	case !listItem:
		return d.fill(rs[0].Bindings)
	}
	vs, _ := rs[0].Bindings["visible"].([]any)
	if len(vs) == 0 {
		return "", nil // hidden
	}
	v, ok := vs[0].(bool)
	if !ok {
		return FailureError, fmt.Errorf("visible is %T, want boolean", vs[0])
	}
	d.Allow = v
	return "", nil
}

// explainTrace names, in evaluation order and once each, the rules that
// produced a value (rule bodies that succeeded, defaults that applied),
// with the trace() notes and print() output among them.
func explainTrace(events []*topdown.Event, prints []printed) []string {
	var lines []string
	seen := map[*ast.Rule]bool{}
	for i, ev := range events {
		for len(prints) > 0 && prints[0].at <= i {
			lines, prints = append(lines, prints[0].line), prints[1:]
		}
		switch {
		case ev.Op == topdown.NoteOp:
			lines = append(lines, fmt.Sprintf("note: %s: %s", location(ev.Location), ev.Message))
		case ev.Op == topdown.ExitOp && ev.HasRule():
			r := ev.Node.(*ast.Rule)
			if seen[r] {
				continue
			}
			seen[r] = true
			lines = append(lines, fmt.Sprintf("rule: %s: %s", location(r.Location), ruleHead(r)))
		}
	}
	for _, p := range prints {
		lines = append(lines, p.line)
	}
	return lines
}

// printHook collects print() output with its location and its place in
// the trace, so that it can be shown among the rules.
type printHook struct {
	tracer *topdown.BufferTracer
	out    []printed
}

type printed struct {
	at   int // number of trace events before the print
	line string
}

func (h *printHook) Print(pctx print.Context, msg string) error {
	h.out = append(h.out, printed{at: len(*h.tracer), line: fmt.Sprintf("print: %s: %s", location(pctx.Location), msg)})
	return nil
}

// ruleHead shows a rule as its author wrote its first line:
// "allow if", "default allow := false", "roles contains r if some r in
// input.principal.claims.roles".
func ruleHead(r *ast.Rule) string {
	if r.Default {
		// A default rule's location text is the keyword alone; its head
		// has no rewritten variables.
		return "default " + r.Head.String()
	}
	if r.Location == nil || len(r.Location.Text) == 0 {
		return r.Head.String()
	}
	line, _, _ := strings.Cut(string(r.Location.Text), "\n")
	return strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), "{"))
}

func location(loc *ast.Location) string {
	if loc == nil {
		return "?"
	}
	return fmt.Sprintf("%s:%d", loc.File, loc.Row)
}

func answerLines(d *Decision, listItem bool) []string {
	if listItem {
		return []string{fmt.Sprintf("visible = %t", d.Allow)}
	}
	lines := []string{fmt.Sprintf("allow = %t", d.Allow)}
	if d.Reason != "" {
		lines = append(lines, fmt.Sprintf("reason = %q", d.Reason))
	}
	for _, r := range d.Redact {
		switch {
		case r.Path != "":
			lines = append(lines, fmt.Sprintf("redact path %s -> %q", r.Path, cmpOr(r.Replacement, DefaultReplacement)))
		default:
			lines = append(lines, fmt.Sprintf("redact pattern %q -> %q", r.Pattern, cmpOr(r.Replacement, DefaultReplacement)))
		}
	}
	return lines
}
