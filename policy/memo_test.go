package policy

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fresh decides in with set's rules directly: no memo, no log.
func fresh(t *testing.T, e *Engine, in *Input) Decision {
	t.Helper()
	set := e.set.Load()
	val, err := inputValue(in)
	if err != nil {
		t.Fatal(err)
	}
	var d Decision
	if failure, err := e.decide(context.Background(), set, val, &d); err != nil {
		d = Decision{Failure: failure}
	}
	return d
}

// memoHits returns, for each record of the log, whether it was a memo
// hit.
func memoHits(t *testing.T, log string) []bool {
	t.Helper()
	var hits []bool
	for _, rec := range logLines(t, log) {
		hit, _ := rec["memo_hit"].(bool)
		hits = append(hits, hit)
	}
	return hits
}

// TestMemoAgrees: over the shipped policies and the inputs that reach
// every rule family, the memoized answer is the answer of a fresh
// evaluation, and the second decision of an input is a memo hit with its
// own id and its own decision log record.
func TestMemoAgrees(t *testing.T) {
	principals, requests := shippedPolicyInputs()
	for _, pkg := range shippedPackages {
		var log bytes.Buffer
		e := mustNew(t, Options{Dir: "../policies", Package: pkg, DecisionLog: &log})
		if st := e.Status(); !st.Memo || len(st.NondeterministicBuiltins) > 0 {
			t.Fatalf("%s: Status memo %t, builtins %v; want the memo on", pkg, st.Memo, st.NondeterministicBuiltins)
		}
		ctx := context.Background()
		for _, p := range principals {
			for _, req := range requests {
				if req.Phase == PhaseListItem {
					continue // decided by FilterList, not Decide
				}
				in := req
				in.Principal, in.Route, in.Upstream = p, "docs", "docs"
				in.Protocol, in.Source = Protocol{Version: "2025-11-25", Era: "legacy"}, Source{IP: "192.0.2.1"}
				name := fmt.Sprintf("%s/%s/%s/%s", pkg, p.ID, in.Phase, in.Method)
				log.Reset()
				first, second := e.Decide(ctx, &in), e.Decide(ctx, &in)
				if diff := cmp.Diff(memoHits(t, log.String()), []bool{false, true}); diff != "" {
					t.Errorf("%s: memo hits of two decisions (-got +want):\n%s", name, diff)
				}
				if first.ID == second.ID {
					t.Errorf("%s: memo hit reused decision id %s", name, first.ID)
				}
				ignore := cmpopts.IgnoreFields(Decision{}, "Revision", "ID")
				want := fresh(t, e, &in)
				if diff := cmp.Diff(want, second, ignore, cmpopts.EquateEmpty()); diff != "" {
					t.Errorf("%s: memo hit (+) and fresh evaluation (-) differ:\n%s", name, diff)
				}
				if diff := cmp.Diff(first, second, ignore); diff != "" {
					t.Errorf("%s: memo hit (+) and first decision (-) differ:\n%s", name, diff)
				}
			}
		}
	}
}

// TestMemoKeyIsTheWholeInput: inputs that differ anywhere are decided
// afresh, never answered for one another.
func TestMemoKeyIsTheWholeInput(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": `package ctxgate.authz

default allow := false

allow if input.principal.claims.tier == "gold"

allow if input.tool.arguments.x.y == 1

allow if input.source.ip == "10.0.0.1"
`}), DecisionLog: &log})
	base := func() *Input {
		in := toolCall("t", map[string]any{"x": map[string]any{"y": 2.0}})
		in.Principal.Claims = map[string]any{"tier": "silver"}
		return in
	}
	tests := []struct {
		name   string
		change func(*Input)
	}{
		{"a claim", func(in *Input) { in.Principal.Claims["tier"] = "gold" }},
		{"a nested argument", func(in *Input) { in.Tool.Arguments["x"] = map[string]any{"y": 1.0} }},
		{"the source address", func(in *Input) { in.Source.IP = "10.0.0.1" }},
	}
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := e.Decide(ctx, base()); d.Allow {
				t.Fatalf("base input allowed: %+v", d)
			}
			in := base()
			tt.change(in)
			log.Reset()
			if d := e.Decide(ctx, in); !d.Allow {
				t.Errorf("changed input answered %+v, want allow", d)
			}
			if hits := memoHits(t, log.String()); len(hits) != 1 || hits[0] {
				t.Errorf("changed input: memo hits %v, want one fresh decision", hits)
			}
		})
	}
}

func TestInputDigest(t *testing.T) {
	base := func() *Input {
		in := toolCall("t", map[string]any{"a": "b", "n": 1.0, "list": []any{"x", true, nil}})
		in.Principal.Claims = map[string]any{"roles": []any{"dev"}}
		return in
	}
	tests := []struct {
		name   string
		change func(*Input)
		same   bool
	}{
		{name: "nothing", change: func(*Input) {}, same: true},
		{name: "an empty map is an absent one (omitempty)", change: func(in *Input) { in.Params = map[string]any{} }, same: true},
		{name: "another revision", change: nil},
		{name: "a string for an array", change: func(in *Input) { in.Tool.Arguments["a"] = []any{"b"} }},
		{name: "a string for a number", change: func(in *Input) { in.Tool.Arguments["n"] = "1" }},
		{name: "a dotted key for a nested one", change: func(in *Input) {
			delete(in.Tool.Arguments, "a")
			in.Tool.Arguments["x"] = map[string]any{"a": "b"}
		}},
		{name: "a null for false", change: func(in *Input) { in.Tool.Arguments["list"] = []any{"x", true, false} }},
		{name: "names moved between fields", change: func(in *Input) { in.Principal.ID, in.Route = in.Principal.ID+in.Route, "" }},
		{name: "an empty tool for none", change: func(in *Input) { in.Tool, in.Resource = nil, &Resource{} }},
		{name: "a group", change: func(in *Input) { in.Principal.Groups = append(in.Principal.Groups, "x") }},
		{name: "a claim", change: func(in *Input) { in.Principal.Claims["roles"] = []any{"admin"} }},
	}
	want, ok := inputDigest("r1", base())
	if !ok {
		t.Fatal("base input not digested")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, rev := base(), "r1"
			if tt.change == nil {
				rev = "r2"
			} else {
				tt.change(in)
			}
			got, ok := inputDigest(rev, in)
			if !ok || (got == want) != tt.same {
				t.Errorf("digest equal %t (ok %t), want %t", got == want, ok, tt.same)
			}
		})
	}
}

// TestMemoOffForNondeterministicPolicies: a policy that calls a built-in
// whose answer may change for the same input decides every time afresh,
// and says so in Status.
func TestMemoOffForNondeterministicPolicies(t *testing.T) {
	tests := []struct {
		name, rule, builtin string
	}{
		{"time.now_ns", `allow if time.now_ns() > 0`, "time.now_ns"},
		{"http.send", `allow if { input.method == "never"; http.send({"method": "GET", "url": "http://127.0.0.1:9"}).status_code == 200 }`, "http.send"},
		{"rand.intn", `allow if rand.intn("x", 10) >= 0`, "rand.intn"},
		{"uuid.rfc4122", `allow if uuid.rfc4122("x") != ""`, "uuid.rfc4122"},
		{"an unused helper", "allow := true\n\nnow := time.now_ns()", "time.now_ns"},
		{"a token's expiry", `allow if { input.method == "never"; io.jwt.decode_verify("x", {"secret": "k"})[0] }`, "io.jwt.decode_verify"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log, logs bytes.Buffer
			e := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": "package ctxgate.authz\n\ndefault allow := false\n\n" + tt.rule + "\n"}),
				DecisionLog: &log, Logger: testLogger(&logs)})
			st := e.Status()
			if st.Memo || !cmp.Equal(st.NondeterministicBuiltins, []string{tt.builtin}) {
				t.Errorf("Status memo %t, builtins %v; want off for %s", st.Memo, st.NondeterministicBuiltins, tt.builtin)
			}
			if !bytes.Contains(logs.Bytes(), []byte("memo off")) {
				t.Errorf("no log line says the memo is off:\n%s", logs.String())
			}
			in := toolCall("echo", nil)
			e.Decide(context.Background(), in)
			e.Decide(context.Background(), in)
			if diff := cmp.Diff([]bool{false, false}, memoHits(t, log.String())); diff != "" {
				t.Errorf("memo hits (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMemoDroppedOnReload: a new revision starts with an empty memo, even
// when it brings back a revision decided before.
func TestMemoDroppedOnReload(t *testing.T) {
	dir := writeDir(t, map[string]string{"authz.rego": policyAllowing("echo")})
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: dir, DecisionLog: &log})
	ctx := context.Background()
	in := toolCall("echo", nil)
	decide := func(want bool) {
		t.Helper()
		if d := e.Decide(ctx, in); d.Allow != want {
			t.Fatalf("Decide = %+v, want allow %t", d, want)
		}
	}
	reload := func(tool string) {
		t.Helper()
		writeFiles(t, dir, map[string]string{"authz.rego": policyAllowing(tool)})
		if changed, err := e.Reload(ctx); !changed || err != nil {
			t.Fatalf("Reload = %t, %v", changed, err)
		}
	}
	decide(true)
	decide(true) // memoized
	reload("search")
	decide(false)
	reload("echo") // the first revision again, in a new set
	decide(true)
	if diff := cmp.Diff([]bool{false, true, false, false}, memoHits(t, log.String())); diff != "" {
		t.Errorf("memo hits (-want +got):\n%s", diff)
	}
}

// TestMemoNeverHoldsFailures: a decision that failed (an evaluation
// error, a timeout, a cancelled request, an undefined allow) is never
// answered from the memo: the next decision evaluates again.
func TestMemoNeverHoldsFailures(t *testing.T) {
	var log bytes.Buffer
	e := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": `package ctxgate.authz

allow if input.tool.name != "undefined"

allow := false if input.tool.name == "conflict"

allow if input.tool.name == "conflict"
`}), DecisionLog: &log})
	past, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	defer cancel()
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	tests := []struct {
		name    string
		tool    string
		ctx     context.Context
		failure string
	}{
		{"an evaluation error", "conflict", context.Background(), FailureError},
		{"an undefined allow", "undefined", context.Background(), FailureUndefined},
		{"a timeout", "echo", past, FailureTimeout},
		{"a cancelled request", "echo", cancelled, FailureError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log.Reset()
			in := toolCall(tt.tool, nil)
			in.Source.IP = tt.name // an input of its own
			for range 2 {
				if d := e.Decide(tt.ctx, in); d.Failure != tt.failure {
					t.Fatalf("Decide = %+v, want failure %q", d, tt.failure)
				}
			}
			if tt.ctx != context.Background() {
				// The same input decides when the request can be decided.
				if d := e.Decide(context.Background(), in); d.Failure != "" || !d.Allow {
					t.Fatalf("Decide after the failure = %+v, want allow", d)
				}
			}
			for i, hit := range memoHits(t, log.String()) {
				if hit {
					t.Errorf("decision %d answered from the memo after a failure", i+1)
				}
			}
		})
	}
}

// TestVisibilityCacheKeptWhileRevisionDecides: with a deterministic
// policy a list's answers are reused past visibilityTTL, for as long as
// the revision decides; with a non-deterministic one they expire.
func TestVisibilityCacheKeptWhileRevisionDecides(t *testing.T) {
	tests := []struct {
		name    string
		visible string
		expires bool
	}{
		{"deterministic", `visible if input.tool.name != "hidden"`, false},
		{"time.now_ns", `visible if { input.tool.name != "hidden"; time.now_ns() > 0 }`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			e := mustNew(t, Options{Dir: writeDir(t, map[string]string{"authz.rego": "package ctxgate.authz\n\ndefault allow := false\n\n" + tt.visible + "\n"}),
				Now: func() time.Time { return now }})
			list := []byte(`{"tools":[{"name":"echo"},{"name":"hidden"}]}`)
			if _, removed, err := e.FilterList(context.Background(), listBase("tools/list"), list); err != nil || removed != 1 {
				t.Fatalf("FilterList = %d removed, %v", removed, err)
			}
			set := e.set.Load()
			base := listBase("tools/list")
			base.Phase = PhaseListItem
			digest := baseDigest(set.revision, base)
			keys := []visibilityKey{itemKey(digest, []byte(`{"name":"echo"}`)), itemKey(digest, []byte(`{"name":"hidden"}`))}
			now = now.Add(time.Hour)
			_, hit := set.vis.getAll(keys, now)
			want := []bool{!tt.expires, !tt.expires}
			if diff := cmp.Diff(want, hit); diff != "" {
				t.Errorf("cache hits an hour later (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInputDigestCoversEveryField: every field of the input document,
// however deep, changes the digest, so that a field added to Input later
// cannot be left out of the memo key (two inputs differing only there
// would share one answer).
func TestInputDigestCoversEveryField(t *testing.T) {
	var in Input
	digest := func() [32]byte {
		d, ok := inputDigest("r", &in)
		if !ok {
			t.Fatal("input not digested")
		}
		return d
	}
	// set sets v (a leaf) and says whether the digest changed.
	set := func(path string, v reflect.Value) {
		before := digest()
		switch v.Kind() {
		case reflect.String:
			v.SetString("x")
		case reflect.Slice:
			v.Set(reflect.ValueOf([]string{"x"}))
		case reflect.Map:
			m := reflect.MakeMap(v.Type())
			m.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf("x").Convert(v.Type().Elem()))
			v.Set(m)
		default:
			t.Fatalf("%s: a %s field the test does not know", path, v.Kind())
		}
		if digest() == before {
			t.Errorf("%s set: the digest does not change", path)
		}
		v.Set(reflect.Zero(v.Type()))
	}
	// walk descends the structs and pointers to every leaf, setting one
	// at a time.
	var walk func(path string, v reflect.Value)
	walk = func(path string, v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				walk(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
		case reflect.Pointer:
			before := digest()
			v.Set(reflect.New(v.Type().Elem()))
			if digest() == before {
				t.Errorf("%s set: the digest does not change", path)
			}
			walk(path, v.Elem())
			v.Set(reflect.Zero(v.Type()))
		default:
			set(path, v)
		}
	}
	walk("Input", reflect.ValueOf(&in).Elem())
}
