package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestFixtures: both upstream fixtures answer the workload as the load
// generator expects, in their default shape and a larger one (-list-size,
// -result-size), refuse unknown sessions, and count what they served.
func TestFixtures(t *testing.T) {
	shapes := map[string]shape{"default": defaultShape, "100 tools, 64 KiB": {listSize: 100, resultSize: 64 << 10}}
	for _, kind := range []string{fixtureSDK, fixtureRaw} {
		for name, sh := range shapes {
			t.Run(kind+"/"+name, func(t *testing.T) { testFixture(t, kind, sh) })
		}
	}
	if _, err := fixtureHandler("fast", 0, defaultShape); err == nil {
		t.Error("an unknown fixture kind was accepted")
	}
}

func testFixture(t *testing.T, kind string, sh shape) {
	h, err := fixtureHandler(kind, 0, sh)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(counted(h))
	defer srv.Close()
	s, err := openSession(t.Context(), srv.Client(), srv.URL+"/", "", sh)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(s.want.text); sh.resultSize > 0 && got != sh.resultSize {
		t.Errorf("expected text of %d bytes, want %d", got, sh.resultSize)
	}
	for n := uint64(2); n < 2+2*mixEvery; n++ { // calls, lists and reads
		if err := s.call(t.Context(), n); err != nil {
			t.Errorf("request %d: %v", n, err)
		}
	}
	// initialize, initialized, the first list, and 10 more.
	if got, err := upstreamRequests(srv.URL + "/"); err != nil || got != 3+2*mixEvery {
		t.Errorf("upstream count = %d, %v; want %d", got, err, 3+2*mixEvery)
	}
	if sh != defaultShape {
		// The check reads the shape: the default one refuses these answers.
		if _, err := openSession(t.Context(), srv.Client(), srv.URL+"/", "", defaultShape); err == nil {
			t.Error("a default-shape session accepted a larger fixture's tools/list")
		}
	}
	forged := &session{hc: srv.Client(), url: srv.URL + "/", id: "forged"}
	if status, _, body, err := forged.post(t.Context(), []byte(`{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)); err != nil || status != http.StatusNotFound {
		t.Errorf("unknown session: HTTP %d, %v: %s", status, err, body)
	}
}

// TestFixtureServiceTime: -service-time applies to every method of the
// workload, tools/list and resources/read as well as tools/call, so that a cached answer is
// compared with a forward to the same slow upstream. Only the lower bound
// is checked: a sleep is never shorter.
func TestFixtureServiceTime(t *testing.T) {
	const serviceTime = 20 * time.Millisecond
	for _, kind := range []string{fixtureSDK, fixtureRaw} {
		t.Run(kind, func(t *testing.T) {
			h, err := fixtureHandler(kind, serviceTime, defaultShape)
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			s, err := openSession(t.Context(), srv.Client(), srv.URL+"/", "", defaultShape)
			if err != nil {
				t.Fatal(err)
			}
			for n := uint64(1); n <= readAt; n++ { // a tools/list, a tools/call, a resources/read
				start := time.Now()
				if err := s.call(t.Context(), n); err != nil {
					t.Fatalf("request %d: %v", n, err)
				}
				if took := time.Since(start); took < serviceTime {
					t.Errorf("request %d took %v, less than the service time %v", n, took, serviceTime)
				}
			}
		})
	}
}
