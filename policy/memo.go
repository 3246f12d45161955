package policy

import (
	"crypto/sha256"
	"slices"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/open-policy-agent/opa/v1/ast"
)

// decisionMemoSize bounds the decision memo of one policy set: the least
// recently used answers go first. A tools/call input holds its arguments,
// so most calls differ; what repeats (the list, initialize and ping
// requests of one principal, a call retried) fits.
const decisionMemoSize = 1 << 14

// timeDependent are built-ins OPA does not mark non-deterministic that
// read the evaluation's clock all the same: a token's exp and nbf, a
// certificate's validity. An answer that depends on the time cannot be
// memoized any more than one of time.now_ns.
var timeDependent = map[string]bool{
	ast.JWTDecodeVerify.Name:                                 true,
	ast.CryptoX509ParseAndVerifyCertificates.Name:            true,
	ast.CryptoX509ParseAndVerifyCertificatesWithOptions.Name: true,
}

// nondeterministicBuiltins returns, sorted, the built-ins called by the
// compiled modules whose answer for the same input and data may change
// between evaluations: those OPA marks ast.Builtin.Nondeterministic
// (time.now_ns, http.send, rand.intn, uuid.rfc4122, opa.runtime,
// net.lookup_ip_addr, ...) and timeDependent. It looks at every module,
// not only at what the gateway's rules reach: a helper that is not called
// today costs a memo, never a stale answer.
func nondeterministicBuiltins(c *ast.Compiler) []string {
	var names []string
	check := func(op ast.Ref) {
		name := op.String()
		if b, ok := ast.BuiltinMap[name]; (ok && b.Nondeterministic) || timeDependent[name] {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if x.IsCall() {
				check(x.Operator())
			}
			return false
		})
		// Calls nested in terms (compiled modules hoist most of them).
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
				if op, ok := call[0].Value.(ast.Ref); ok {
					check(op)
				}
			}
			return false
		})
	}
	slices.Sort(names)
	return names
}

// memoKey is inputDigest of an input with the revision that decided it.
type memoKey [sha256.Size]byte

// memoAnswer is what a decision memo keeps of a Decision: the policy's
// answer, never its id, never a failure.
type memoAnswer struct {
	allow  bool
	reason string
	redact []Redaction
}

// decisionMemo remembers the answers of one policy set, which is
// deterministic (nondeterministicBuiltins is empty): the same input and
// the same revision (modules and data) always evaluate to the same
// answer, so evaluating again would only cost time. It belongs to its set,
// so a reload starts with an empty memo. Safe for concurrent use.
type decisionMemo struct {
	c *lru.Cache[memoKey, memoAnswer]
}

// newDecisionMemo returns the memo of a set; nil when the set calls a
// non-deterministic built-in (nil memoizes nothing).
func newDecisionMemo(nondeterministic []string) *decisionMemo {
	if len(nondeterministic) > 0 {
		return nil
	}
	c, err := lru.New[memoKey, memoAnswer](decisionMemoSize)
	if err != nil {
		// lru.New fails only for a size <= 0.
		panic(err)
	}
	return &decisionMemo{c: c}
}

// key returns the memo key of in; false when in cannot be keyed or the
// memo is off.
func (m *decisionMemo) key(revision string, in *Input) (memoKey, bool) {
	if m == nil || in == nil {
		return memoKey{}, false
	}
	d, ok := inputDigest(revision, in)
	return memoKey(d), ok
}

func (m *decisionMemo) get(k memoKey) (memoAnswer, bool) {
	return m.c.Get(k)
}

// put remembers a decision that the policy answered: the caller never
// puts a failure (an error, a timeout, an undefined allow), which is
// evaluated again next time.
func (m *decisionMemo) put(k memoKey, d *Decision) {
	// Clipped: an append to a Decision's Redact never writes into the
	// memo's array.
	m.c.Add(k, memoAnswer{allow: d.Allow, reason: d.Reason, redact: slices.Clip(d.Redact)})
}
