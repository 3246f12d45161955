package policy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	opaconfig "github.com/open-policy-agent/opa/v1/config"
)

// bundleServer serves bundles by path, with ETags.
type bundleServer struct {
	*httptest.Server
	mu      sync.Mutex
	bundles map[string][]byte // by URL path
	etags   map[string]string
}

func newBundleServer(t *testing.T) *bundleServer {
	s := &bundleServer{bundles: map[string][]byte{}, etags: map[string]string{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b, etag := s.bundles[r.URL.Path], s.etags[r.URL.Path]
		s.mu.Unlock()
		switch {
		case b == nil:
			http.Error(w, "no bundle yet", http.StatusServiceUnavailable)
		case r.Header.Get("If-None-Match") == etag:
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("ETag", etag)
			w.Write(b)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// publish builds the policy bundle of files with Build, as revision rev.
func (s *bundleServer) publish(t *testing.T, rev string, files map[string]string) {
	t.Helper()
	s.publishAt(t, "/bundles/authz.tar.gz", rev, files)
}

func (s *bundleServer) publishAt(t *testing.T, path, rev string, files map[string]string) {
	t.Helper()
	var b bytes.Buffer
	if err := Build(context.Background(), BuildOptions{Dir: writeDir(t, files), Output: &b, Revision: rev}); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundles[path], s.etags[path] = b.Bytes(), `"`+rev+`"`
}

func (s *bundleServer) opaConfig() []byte {
	return fmt.Appendf(nil, `{"services": {"b": {"url": %q}},
		"bundles": {"authz": {"service": "b", "resource": "bundles/authz.tar.gz", "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1}}}}`, s.URL)
}

// waitUntil polls cond with a deadline: readiness, not sleeping.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBundleActivation: bundles activate through OPA's bundle plugin into
// sets compiled and prepared as a directory's; one that does not make a
// set is refused in OPA's activation, and the last good one decides.
func TestBundleActivation(t *testing.T) {
	srv := newBundleServer(t)
	var mu sync.Mutex
	var reloads []string
	e := mustNew(t, Options{OPA: srv.opaConfig(), OnReload: func(rev string, err error) {
		mu.Lock()
		defer mu.Unlock()
		reloads = append(reloads, fmt.Sprintf("%s %t", rev, err == nil))
	}})
	ctx := context.Background()

	// No bundle yet: fail closed.
	if st := e.Status(); st.Ready || st.Source != "bundles" {
		t.Errorf("Status before any bundle = %+v, want not ready, source bundles", st)
	}
	if d := e.Decide(ctx, toolCall("a", nil)); d.Allow || d.Failure != FailureUnavailable {
		t.Errorf("Decide before any bundle = %+v, want a deny with failure %q", d, FailureUnavailable)
	}
	if e.Visible(ctx, &Input{Method: "tools/list", Phase: PhaseListItem, Tool: &Tool{Name: "a"}}) {
		t.Error("Visible before any bundle = true, want hidden")
	}

	// Revision 1, with data deciding: partial evaluation folds it in.
	srv.publish(t, "r1", map[string]string{
		"authz.rego": "package ctxgate.authz\n\ndefault allow := false\n\nallow if data.allowed[input.tool.name]\n",
		"data.json":  `{"allowed": {"a": true}}`,
	})
	// OPA's bundle status catches up with the activation just after the
	// engine swaps in the revision: wait for both.
	waitUntil(t, "revision r1", func() bool { return e.Revision() == "r1" && e.Status().Bundles["authz"].ActiveRevision == "r1" })
	if d := e.Decide(ctx, toolCall("a", nil)); !d.Allow || d.Revision != "r1" {
		t.Errorf("Decide(a) under r1 = %+v, want allowed by data.allowed", d)
	}
	if st := e.Status(); !st.Ready || st.Bundles["authz"].ActiveRevision != "r1" {
		t.Errorf("Status under r1 = %+v, want ready, bundle authz active at r1", st)
	}

	// Revision 2 has no allow rule: it compiles in OPA, but the engine
	// refuses it, so OPA's activation fails and r1 stays.
	srv.publish(t, "r2", map[string]string{"authz.rego": "package ctxgate.authz\n\nvisible := true\n"})
	waitUntil(t, "revision r2 refused", func() bool {
		st := e.Status()
		return st.ReloadFailures > 0 && strings.Contains(st.Bundles["authz"].Error, "defines no allow rule")
	})
	st := e.Status()
	if e.Revision() != "r1" || !strings.Contains(st.LastReloadError, "defines no allow rule") ||
		st.Bundles["authz"].ActiveRevision != "r1" || !strings.Contains(st.Bundles["authz"].Error, "defines no allow rule") {
		t.Errorf("after r2: revision %s, status %+v; want r1 deciding, OPA reporting the refusal", e.Revision(), st)
	}
	if d := e.Decide(ctx, toolCall("a", nil)); !d.Allow || d.Revision != "r1" {
		t.Errorf("Decide(a) after r2 = %+v, want r1's allow", d)
	}

	// Revision 3 is good again.
	srv.publish(t, "r3", map[string]string{"authz.rego": policyAllowing("b")})
	waitUntil(t, "revision r3", func() bool { return e.Revision() == "r3" })
	if d := e.Decide(ctx, toolCall("b", nil)); !d.Allow {
		t.Errorf("Decide(b) under r3 = %+v, want allowed", d)
	}
	if st := e.Status(); st.LastReloadError != "" || st.Reloads != 1 {
		t.Errorf("Status under r3 = %+v, want the error cleared and one reload after the first activation", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reloads) < 3 || reloads[0] != "r1 true" || reloads[len(reloads)-1] != "r3 true" {
		t.Errorf("OnReload calls = %v, want r1 ok, r2 refused (r1), r3 ok", reloads)
	}
}

// TestBundleDiscovery: with OPA's discovery, the bundles come from the
// configuration a discovery bundle holds, and decide as configured ones do.
func TestBundleDiscovery(t *testing.T) {
	srv := newBundleServer(t)
	srv.publishAt(t, "/discovery.tar.gz", "d1", map[string]string{"data.json": `{"bundles": {"authz": {"service": "b",
		"resource": "bundles/authz.tar.gz", "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1}}}}`})
	srv.publish(t, "r1", map[string]string{"authz.rego": policyAllowing("a")})
	e := mustNew(t, Options{OPA: fmt.Appendf(nil, `{"services": {"b": {"url": %q}},
		"discovery": {"service": "b", "resource": "discovery.tar.gz", "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1}}}`, srv.URL)})
	waitUntil(t, "revision r1 from the discovered bundle", func() bool { return e.Revision() == "r1" })
	if d := e.Decide(context.Background(), toolCall("a", nil)); !d.Allow {
		t.Errorf("Decide(a) = %+v, want allowed by the discovered bundle", d)
	}
	waitUntil(t, "the discovered bundle's status", func() bool { return e.Status().Bundles["authz"].ActiveRevision == "r1" })
}

// TestRequireSignatures: with keys, every bundle and the discovery bundle
// must be signed; without keys nothing changes.
func TestRequireSignatures(t *testing.T) {
	tests := []struct {
		name                      string
		cfg                       string
		bootKeys                  bool
		wantBundles, wantDiscover string
	}{
		{
			name:        "keys: a signature is required",
			cfg:         `{"keys": {"k": {"key": "s", "algorithm": "HS256"}}, "bundles": {"a": {"service": "s"}, "b": {"service": "s", "signing": {"keyid": "k"}}}, "discovery": {"resource": "d"}}`,
			wantBundles: `{"a":{"service":"s","signing":{}},"b":{"service":"s","signing":{"keyid":"k"}}}`, wantDiscover: `{"resource":"d","signing":{}}`,
		},
		{
			name:        "keys of the boot configuration apply to a discovered one",
			cfg:         `{"bundles": {"a": {"service": "s"}}}`,
			bootKeys:    true,
			wantBundles: `{"a":{"service":"s","signing":{}}}`,
		},
		{
			name:        "no keys: unchanged",
			cfg:         `{"bundles": {"a": {"service": "s"}}}`,
			wantBundles: `{"a": {"service": "s"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c opaconfig.Config
			if err := json.Unmarshal([]byte(tt.cfg), &c); err != nil {
				t.Fatal(err)
			}
			if err := requireSignatures(&c, tt.bootKeys); err != nil {
				t.Fatal(err)
			}
			if got := string(c.Bundles); got != tt.wantBundles {
				t.Errorf("bundles = %s, want %s", got, tt.wantBundles)
			}
			if got := string(c.Discovery); got != tt.wantDiscover {
				t.Errorf("discovery = %s, want %s", got, tt.wantDiscover)
			}
		})
	}
}

// TestDecisionLogShipping: decision records reach the log service through
// OPA's decision-log plugin, masked, with the app label; a local log is
// not needed.
func TestDecisionLogShipping(t *testing.T) {
	var mu sync.Mutex
	var events []map[string]any
	logs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			t.Errorf("decision-log upload not gzipped: %v", err)
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(zr).Decode(&batch); err != nil {
			t.Errorf("decision-log upload: %v", err)
		}
		mu.Lock()
		events = append(events, batch...)
		mu.Unlock()
	}))
	t.Cleanup(logs.Close)
	e := mustNew(t, Options{
		Dir:  writeDir(t, map[string]string{"authz.rego": policyAllowing("a")}),
		Mask: []string{"tool.arguments.secret"},
		OPA: fmt.Appendf(nil, `{"services": {"logs": {"url": %q}}, "decision_logs": {"service": "logs",
			"reporting": {"buffer_type": "event", "min_delay_seconds": 1, "max_delay_seconds": 1}}}`, logs.URL),
	})
	if !e.ShipsDecisionLogs() {
		t.Fatal("ShipsDecisionLogs = false with decision_logs configured")
	}
	const n = 20
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() { e.Decide(context.Background(), toolCall("a", map[string]any{"secret": "s3cret", "q": "x"})) })
	}
	wg.Wait()
	// OPA counts an upload once the service has answered it, just after
	// the handler above has the events: wait for both.
	waitUntil(t, "every decision at the log service", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) >= n && e.DecisionLogStats().Uploaded > 0
	})
	mu.Lock()
	defer mu.Unlock()
	for _, ev := range events {
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), "s3cret") || !strings.Contains(string(b), `"secret":"***"`) ||
			ev["labels"].(map[string]any)["app"] != "ctxgate" || ev["revision"] != e.Revision() {
			t.Errorf("shipped record %s: want the secret masked, app label, revision %s", b, e.Revision())
		}
	}
	if st := e.DecisionLogStats(); st.Dropped["buffer_full"] != 0 || st.Uploaded == 0 {
		t.Errorf("DecisionLogStats = %+v, want nothing dropped, uploads counted", st)
	}
}
