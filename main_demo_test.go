package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestDemoClockControl: a bad duration is refused and moves nothing; a good
// one moves the demo clock by exactly that much.
func TestDemoClockControl(t *testing.T) {
	d := &demo{}
	h := d.controls()
	for _, bad := range []string{"", "x", "-1m", "0s", "48h"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/clock/advance?by="+bad, nil))
		if rec.Code != http.StatusBadRequest || d.offset.Load() != 0 {
			t.Errorf("by=%q: %d, offset %v; want 400 and no change", bad, rec.Code, time.Duration(d.offset.Load()))
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/clock/advance?by=10m", nil))
	if rec.Code != http.StatusOK || time.Duration(d.offset.Load()) != 10*time.Minute {
		t.Errorf("by=10m: %d, offset %v", rec.Code, time.Duration(d.offset.Load()))
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/clock/advance?by=10m", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d, want 405 (state changes are POST only)", rec.Code)
	}
}
