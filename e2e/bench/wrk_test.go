package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestLuaString(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "abc-123.XYZ_", want: `"abc-123.XYZ_"`},
		{in: `a"b\c`, want: `"a\34b\92c"`},
		{in: "a\nb", want: `"a\10b"`},
		{in: "", want: `""`},
	}
	for _, tt := range tests {
		if got := luaString(tt.in); got != tt.want {
			t.Errorf("luaString(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestParseWrk(t *testing.T) {
	out := "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 4 connections\n" +
		"  1000 requests in 1.00s, 1.00MB read\nRequests/sec: 1000.00\n" +
		`{"requests":1000,"errors":2,"seconds":1.001234,"first_error":"404 session not found"}` + "\n"
	got, err := parseWrk([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if want := (loadResult{Requests: 1000, Errors: 2, Seconds: 1.001234, FirstError: "404 session not found"}); got != want {
		t.Errorf("parseWrk = %+v, want %+v", got, want)
	}
	if _, err := parseWrk([]byte("Running 1s test\n")); err == nil {
		t.Error("output without a result line was accepted")
	}
}

// TestWrkClosedLoop runs the wrk generator against the raw fixture when wrk
// is installed: every answer good on real sessions, and answers on an
// unknown session counted as errors. wrk is an optional generator (-closed
// wrk); without it this test only logs.
func TestWrkClosedLoop(t *testing.T) {
	if !optionalTool(t, "wrk") {
		return
	}
	srv := httptest.NewServer(newRawFixture(0, defaultShape))
	defer srv.Close()
	s, err := openSession(t.Context(), srv.Client(), srv.URL+"/", "", defaultShape)
	if err != nil {
		t.Fatal(err)
	}
	r, err := wrkClosedLoop(t.Context(), t.TempDir(), []*session{s}, 2, time.Second)
	if err != nil || r.Requests == 0 || r.Errors != 0 {
		t.Errorf("wrk on a good session: %+v, %v", r, err)
	}
	// Answers are tallied by their Ctxgate-Cache header.
	hits := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(cacheHeader, "hit")
		srv.Config.Handler.ServeHTTP(w, r)
	}))
	defer hits.Close()
	s.url = hits.URL + "/"
	r, err = wrkClosedLoop(t.Context(), t.TempDir(), []*session{s}, 2, time.Second)
	if err != nil || r.Requests == 0 || r.Errors != 0 || r.CacheHits == 0 || r.CacheMisses != 0 || r.CacheOther != 0 {
		t.Errorf("wrk through a cache that hits: %+v, %v; want only hits", r, err)
	}
	forged := &session{hc: srv.Client(), url: srv.URL + "/", id: "forged"}
	r, err = wrkClosedLoop(t.Context(), t.TempDir(), []*session{forged}, 2, time.Second)
	if err != nil || r.Requests == 0 || r.Errors != r.Requests || !strings.HasPrefix(r.FirstError, "404") {
		t.Errorf("wrk on an unknown session: %+v, %v; want every request an error", r, err)
	}
}
