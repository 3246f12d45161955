package upstream

import (
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// TestTokenCacheExpiry: a token is reused until margin before it expires,
// then fetched anew; one without an expiry is never reused; expired
// entries are swept.
func TestTokenCacheExpiry(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := newTokenCache(func() time.Time { return now })
	fetches := 0
	fetch := func(expiresIn time.Duration) func() (*oauth2.Token, error) {
		return func() (*oauth2.Token, error) {
			fetches++
			tok := &oauth2.Token{AccessToken: "t"}
			if expiresIn > 0 {
				tok.Expiry = now.Add(expiresIn)
			}
			return tok, nil
		}
	}
	steps := []struct {
		name        string
		advance     time.Duration
		key         string
		expiresIn   time.Duration
		wantFetches int
	}{
		{name: "first use fetches", key: "a", expiresIn: time.Minute, wantFetches: 1},
		{name: "reused while fresh", advance: 29 * time.Second, key: "a", expiresIn: time.Minute, wantFetches: 1},
		{name: "inside the margin: fetched anew", advance: 2 * time.Second, key: "a", expiresIn: time.Minute, wantFetches: 2},
		{name: "another key fetches its own", key: "b", expiresIn: time.Minute, wantFetches: 3},
		{name: "no expiry: not cached", key: "c", wantFetches: 4},
		{name: "no expiry: fetched again", key: "c", wantFetches: 5},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if _, err := c.get(s.key, 30*time.Second, fetch(s.expiresIn)); err != nil {
			t.Fatal(err)
		}
		if fetches != s.wantFetches {
			t.Fatalf("%s: %d fetches, want %d", s.name, fetches, s.wantFetches)
		}
	}
	now = now.Add(2 * time.Hour)
	if _, err := c.get("d", 0, fetch(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n := c.len(); n != 1 {
		t.Errorf("%d entries after the sweep, want 1 (only the fresh one)", n)
	}
}

// FuzzJWTClaims: whatever a token service returns, reading its claims
// never panics, and a non-JWT yields no delegation chain.
func FuzzJWTClaims(f *testing.F) {
	f.Add("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSIsImFjdCI6eyJzdWIiOiJndyJ9fQ.c2ln")
	f.Add("opaque-token")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, token string) {
		d := delegationOf("u", "token_exchange", token)
		if d.Upstream != "u" {
			t.Fatal("delegation lost its upstream")
		}
	})
}
