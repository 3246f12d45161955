package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func policyAllowing(tool string) string {
	return "package ctxgate.authz\n\ndefault allow := false\n\nallow if input.tool.name == \"" + tool + "\"\n"
}

func TestReload(t *testing.T) {
	dir := writeDir(t, map[string]string{"authz.rego": policyAllowing("a")})
	e := mustNew(t, Options{Dir: dir})
	ctx := context.Background()
	allows := func(tool string) bool { return e.Decide(ctx, toolCall(tool, nil)).Allow }
	rev1 := e.Revision()

	// Unchanged: nothing happens.
	if changed, err := e.Reload(ctx); changed || err != nil {
		t.Fatalf("Reload without change = %t, %v; want false, nil", changed, err)
	}

	// A valid change is applied.
	writeFiles(t, dir, map[string]string{"authz.rego": policyAllowing("b")})
	if changed, err := e.Reload(ctx); !changed || err != nil {
		t.Fatalf("Reload after a valid change = %t, %v; want true, nil", changed, err)
	}
	rev2 := e.Revision()
	if rev2 == rev1 || !allows("b") || allows("a") {
		t.Fatalf("after reload: revision %s (was %s), allows b %t, allows a %t", rev2, rev1, allows("b"), allows("a"))
	}

	// A broken change is rejected: the previous set keeps deciding.
	writeFiles(t, dir, map[string]string{"authz.rego": "package ctxgate.authz\n\nallow if {\n"})
	if changed, err := e.Reload(ctx); changed || err == nil {
		t.Fatalf("Reload after a broken change = %t, %v; want false and an error", changed, err)
	}
	st := e.Status()
	if e.Revision() != rev2 || !allows("b") || st.ReloadFailures != 1 || !strings.Contains(st.LastReloadError, "authz.rego") || st.Reloads != 1 {
		t.Fatalf("after a broken change: revision %s (want %s), allows b %t, status %+v", e.Revision(), rev2, allows("b"), st)
	}
	// The same broken set is not retried.
	if changed, err := e.Reload(ctx); changed || err != nil {
		t.Fatalf("Reload of the same broken set = %t, %v; want false, nil", changed, err)
	}

	// Fixed again: applied, and the error is cleared.
	writeFiles(t, dir, map[string]string{"authz.rego": policyAllowing("c")})
	if changed, err := e.Reload(ctx); !changed || err != nil {
		t.Fatalf("Reload after the fix = %t, %v; want true, nil", changed, err)
	}
	st = e.Status()
	if !allows("c") || st.Revision == rev2 || st.LastReloadError != "" || st.Reloads != 2 || st.ReloadFailures != 1 {
		t.Fatalf("after the fix: allows c %t, status %+v", allows("c"), st)
	}
}

func TestReloadData(t *testing.T) {
	dir := writeDir(t, testFiles())
	e := mustNew(t, Options{Dir: dir})
	ctx := context.Background()
	rev := e.Revision()
	if e.Decide(ctx, toolCall("new", nil)).Allow {
		t.Fatal("tool new allowed before the data change")
	}
	writeFiles(t, dir, map[string]string{"data.json": `{"tools": {"allowed": ["new"]}}`})
	if changed, err := e.Reload(ctx); !changed || err != nil {
		t.Fatalf("Reload after a data change = %t, %v; want true, nil", changed, err)
	}
	if !e.Decide(ctx, toolCall("new", nil)).Allow || e.Revision() == rev {
		t.Errorf("after the data change: tool new denied or revision unchanged (%s)", rev)
	}
	// Reformatting the data is not a new revision.
	rev = e.Revision()
	writeFiles(t, dir, map[string]string{"data.json": "{\n  \"tools\": {\"allowed\": [\"new\"]}\n}\n"})
	if changed, err := e.Reload(ctx); changed || err != nil || e.Revision() != rev {
		t.Errorf("Reload after reformatting = %t, %v, revision %s; want false, nil, %s", changed, err, e.Revision(), rev)
	}
}

func TestReloadRemovedFile(t *testing.T) {
	dir := writeDir(t, map[string]string{"a.rego": policyAllowing("a"), "b.rego": "package ctxgate.authz\n\nallow if input.tool.name == \"b\"\n"})
	e := mustNew(t, Options{Dir: dir})
	ctx := context.Background()
	if err := os.Remove(filepath.Join(dir, "b.rego")); err != nil {
		t.Fatal(err)
	}
	if changed, err := e.Reload(ctx); !changed || err != nil {
		t.Fatalf("Reload after removing a file = %t, %v; want true, nil", changed, err)
	}
	if e.Decide(ctx, toolCall("b", nil)).Allow {
		t.Error("the rule of a removed file still decides")
	}
}

// TestReloadLoop checks the loop itself: it picks a change up without a
// call to Reload.
func TestReloadLoop(t *testing.T) {
	dir := writeDir(t, map[string]string{"authz.rego": policyAllowing("a")})
	e := mustNew(t, Options{Dir: dir, ReloadInterval: 5 * time.Millisecond})
	rev := e.Revision()
	writeFiles(t, dir, map[string]string{"authz.rego": policyAllowing("b")})
	deadline := time.Now().Add(10 * time.Second)
	for e.Revision() == rev {
		if time.Now().After(deadline) {
			t.Fatal("the reload loop did not pick the change up within 10s")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline, not synchronisation
	}
	if !e.Decide(context.Background(), toolCall("b", nil)).Allow {
		t.Error("the reloaded policy does not decide")
	}
	e.Close()
	e.Close() // idempotent
}

// TestReloadHook checks OnReload hears of every applied and every rejected
// reload, not of unchanged ones, and may read Status (no deadlock).
func TestReloadHook(t *testing.T) {
	type call struct {
		Revision string
		Failed   bool
		Status   Status
	}
	var calls []call
	var e *Engine
	dir := writeDir(t, map[string]string{"authz.rego": policyAllowing("a")})
	e = mustNew(t, Options{Dir: dir, OnReload: func(revision string, err error) {
		calls = append(calls, call{Revision: revision, Failed: err != nil, Status: e.Status()})
	}})
	ctx := context.Background()
	rev1 := e.Revision()
	_, _ = e.Reload(ctx) // unchanged: not reported
	writeFiles(t, dir, map[string]string{"authz.rego": policyAllowing("b")})
	_, _ = e.Reload(ctx)
	rev2 := e.Revision()
	writeFiles(t, dir, map[string]string{"authz.rego": "package ctxgate.authz\n\nallow if {\n"})
	_, _ = e.Reload(ctx)
	if rev1 == rev2 {
		t.Fatal("the valid change did not change the revision")
	}
	got := make([]string, 0, len(calls))
	for _, c := range calls {
		got = append(got, fmt.Sprintf("%s failed=%t reloads=%d failures=%d", c.Revision, c.Failed, c.Status.Reloads, c.Status.ReloadFailures))
	}
	want := []string{rev2 + " failed=false reloads=1 failures=0", rev2 + " failed=true reloads=1 failures=1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OnReload calls (-want +got):\n%s", diff)
	}
}
