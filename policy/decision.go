package policy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// decideQuery evaluates allow, reason and redact of the package in one
// query (Explain; decisions evaluate the rules one by one). Each rule is
// wrapped in an array comprehension so that one undefined rule does not
// make the others undefined: [] means undefined.
func decideQuery(pkg ast.Ref) string {
	return fmt.Sprintf("allow := [x | x := %s]; reason := [x | x := %s]; redact := [x | x := %s]",
		rule(pkg, "allow"), rule(pkg, "reason"), rule(pkg, "redact"))
}

// decisionQuery is the query of a decision: allow and, in the same
// evaluation, redact when allow is true or reason when it is not (an
// allowed request's reason and a denied one's redact would never be used,
// so they are not evaluated, as the contract in policies/README.md says).
// refs maps each rule to the reference that evaluates it (its partial
// result, load.go). One query rather than one per rule: an evaluation has
// a fixed cost (a transaction, an evaluation context, the result's
// conversion) that is a large part of a decision. Each rule is wrapped in
// an array comprehension so that an undefined one does not make the
// others undefined: [] means undefined.
func decisionQuery(refs map[string]ast.Ref) string {
	return fmt.Sprintf("allow := [x | x := %s]; redact := [x | allow == [true]; x := %s]; reason := [x | allow != [true]; x := %s]",
		refs["allow"], refs["redact"], refs["reason"])
}

// visibleQuery evaluates visible; [] means undefined.
func visibleQuery(pkg ast.Ref) string {
	return fmt.Sprintf("visible := [x | x := %s]", rule(pkg, "visible"))
}

func rule(pkg ast.Ref, name string) ast.Ref {
	return pkg.Append(ast.StringTerm(name))
}

var errUndefined = errors.New("allow is undefined: the policy has no answer for this input (add `default allow := false`)")

// fill sets Allow, Reason and Redact from the decide query's bindings. An
// undefined allow, or a value of the wrong type anywhere, is a failure:
// the caller denies.
func (d *Decision) fill(b rego.Vars) (string, error) {
	allow, _ := b["allow"].([]any)
	if len(allow) == 0 {
		return FailureUndefined, errUndefined
	}
	ok := false
	if d.Allow, ok = allow[0].(bool); !ok {
		return FailureError, fmt.Errorf("allow is %T, want boolean", allow[0])
	}
	var err error
	if d.Reason, err = reasonValue(b["reason"]); err != nil {
		return FailureError, err
	}
	if d.Redact, err = redactValue(b["redact"]); err != nil {
		return FailureError, err
	}
	return "", nil
}

// reasonValue accepts a string, or a set or array of strings (a partial
// rule `reason contains msg if ...`), joined with "; ".
func reasonValue(v any) (string, error) {
	vs, _ := v.([]any)
	if len(vs) == 0 {
		return "", nil
	}
	switch r := vs[0].(type) {
	case string:
		return r, nil
	case []any:
		parts := make([]string, 0, len(r))
		for _, p := range r {
			s, ok := p.(string)
			if !ok {
				return "", fmt.Errorf("reason contains a %T, want strings", p)
			}
			parts = append(parts, s)
		}
		slices.Sort(parts)
		return strings.Join(parts, "; "), nil
	default:
		return "", fmt.Errorf("reason is %T, want string or set of strings", r)
	}
}

// redactValue accepts a set or array of objects {path|pattern,
// replacement}. A malformed instruction is an error, not skipped: a
// redaction the gateway cannot apply must deny rather than leak.
func redactValue(v any) ([]Redaction, error) {
	vs, _ := v.([]any)
	if len(vs) == 0 {
		return nil, nil
	}
	items, ok := vs[0].([]any)
	if !ok {
		return nil, fmt.Errorf("redact is %T, want a set or array of objects", vs[0])
	}
	if len(items) == 0 {
		return nil, nil
	}
	rs := make([]Redaction, 0, len(items))
	for i, it := range items {
		r, err := redactionValue(it)
		if err != nil {
			return nil, fmt.Errorf("redact[%d]: %w", i, err)
		}
		rs = append(rs, r)
	}
	if _, err := compileRedactions(rs); err != nil {
		return nil, err
	}
	return rs, nil
}

func redactionValue(v any) (Redaction, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Redaction{}, fmt.Errorf("is %T, want an object {path|pattern, replacement}", v)
	}
	var r Redaction
	for k, x := range m {
		s, ok := x.(string)
		if !ok {
			return Redaction{}, fmt.Errorf("%s is %T, want string", k, x)
		}
		switch k {
		case "path":
			r.Path = s
		case "pattern":
			r.Pattern = s
		case "key":
			r.Key = s
		case "replacement":
			r.Replacement = s
		default:
			return Redaction{}, fmt.Errorf("unknown key %q (want path, pattern, key, replacement)", k)
		}
	}
	if n := btoi(r.Path != "") + btoi(r.Pattern != "") + btoi(r.Key != ""); n != 1 {
		return Redaction{}, errors.New("set exactly one of path, pattern and key")
	}
	return r, nil
}

// newDecisionID returns a random UUID (version 4), the form OPA uses for
// decision ids.
func newDecisionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
