package session

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var (
	testSecretA = []byte("session secret A: 32 bytes or more, for tests only")
	testSecretB = []byte("session secret B: 32 bytes or more, for tests only")
)

// testClock is an injected clock the tests move by hand.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

func newTestSealer(t testing.TB, clock *testClock, ttl time.Duration, secrets ...[]byte) *Sealer {
	t.Helper()
	s, err := NewSealer(secrets, ttl, clock.now)
	if err != nil {
		t.Fatalf("NewSealer: %v", err)
	}
	return s
}

func mustSeal(t testing.TB, s *Sealer, c Claims) string {
	t.Helper()
	id, err := s.Seal(c)
	if err != nil {
		t.Fatalf("seal(%+v): %v", c, err)
	}
	return id
}

func TestNewSealerNeedsAKey(t *testing.T) {
	if _, err := NewSealer(nil, time.Hour, time.Now); err == nil {
		t.Error("NewSealer(no secrets) succeeded, want an error")
	}
}

func TestSealerRoundTrip(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(t, clock, time.Hour, testSecretA)
	tests := []struct {
		name   string
		claims Claims
	}{
		{name: "all claims", claims: Claims{Route: "/mcp/files", Principal: "api_key:ci", Upstream: "upstream-session-1", Version: "2025-06-18"}},
		{name: "minimal claims", claims: Claims{Route: "/mcp/a", Principal: "anonymous"}},
		{name: "non-ASCII upstream session", claims: Claims{Route: "/mcp/a", Principal: "anonymous", Upstream: "sé\"ssion\x00"}},
		{name: "caller IssuedAt is overwritten", claims: Claims{Route: "/mcp/a", Principal: "anonymous", IssuedAt: 42}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := mustSeal(t, s, tt.claims)
			got, err := s.Open(id)
			if err != nil {
				t.Fatalf("open(seal(%+v)) = %v", tt.claims, err)
			}
			want := tt.claims
			want.IssuedAt = clock.t.Unix()
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("open(seal(claims)) mismatch (-want +got):\n%s", diff)
			}
			if strings.Contains(id, tt.claims.Upstream) && tt.claims.Upstream != "" {
				t.Errorf("session id %q shows the upstream session %q", id, tt.claims.Upstream)
			}
		})
	}
}

func TestSealerSealsDiffer(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(t, clock, time.Hour, testSecretA)
	c := Claims{Route: "/mcp/a", Principal: "anonymous"}
	first, second := mustSeal(t, s, c), mustSeal(t, s, c)
	if first == second {
		t.Errorf("two seals of the same claims at the same time are equal (%q): the nonce is not random", first)
	}
}

func TestSealerRejectsEveryTamperedByte(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(t, clock, time.Hour, testSecretA)
	raw, err := base64.RawURLEncoding.DecodeString(mustSeal(t, s, Claims{Route: "/mcp/a", Principal: "api_key:ci"}))
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			tampered := bytes.Clone(raw)
			tampered[i] ^= mask
			c, err := s.Open(base64.RawURLEncoding.EncodeToString(tampered))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("byte %d ^ %#x: open = %+v, %v; want ErrInvalid", i, mask, c, err)
			}
		}
	}
}

func TestSealerRejectsOtherKey(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	a := newTestSealer(t, clock, time.Hour, testSecretA)
	b := newTestSealer(t, clock, time.Hour, testSecretB)
	id := mustSeal(t, a, Claims{Route: "/mcp/a", Principal: "anonymous"})
	if c, err := b.Open(id); !errors.Is(err, ErrInvalid) {
		t.Errorf("open with another key = %+v, %v; want ErrInvalid", c, err)
	}
}

func TestSealerRejectsWrongKeyWithSameKeyID(t *testing.T) {
	// A token naming key A's id but sealed with key B must not open: the
	// key id selects a key, it does not authenticate anything.
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	a := newTestSealer(t, clock, time.Hour, testSecretA)
	b := newTestSealer(t, clock, time.Hour, testSecretB)
	raw, err := base64.RawURLEncoding.DecodeString(mustSeal(t, b, Claims{Route: "/mcp/a", Principal: "anonymous"}))
	if err != nil {
		t.Fatal(err)
	}
	copy(raw[1:1+keyIDLen], a.keys[0].id[:])
	if c, err := a.Open(base64.RawURLEncoding.EncodeToString(raw)); !errors.Is(err, ErrInvalid) {
		t.Errorf("open of a token relabelled with key A's id = %+v, %v; want ErrInvalid", c, err)
	}
}

func TestSealerKeyRotation(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	old := newTestSealer(t, clock, time.Hour, testSecretA)
	rotated := newTestSealer(t, clock, time.Hour, testSecretB, testSecretA)
	newOnly := newTestSealer(t, clock, time.Hour, testSecretB)
	c := Claims{Route: "/mcp/a", Principal: "api_key:ci", Version: "2025-11-25"}
	want := c
	want.IssuedAt = clock.t.Unix()

	oldID := mustSeal(t, old, c)
	got, err := rotated.Open(oldID)
	if err != nil {
		t.Fatalf("[new, old] cannot open a token sealed with [old]: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rotated open mismatch (-want +got):\n%s", diff)
	}

	newID := mustSeal(t, rotated, c)
	if _, err := old.Open(newID); !errors.Is(err, ErrInvalid) {
		t.Errorf("[old] opened a token sealed by [new, old] (err %v): new tokens must be sealed with the first key", err)
	}
	if _, err := newOnly.Open(newID); err != nil {
		t.Errorf("[new] cannot open a token sealed by [new, old]: %v", err)
	}
}

func TestSealerExpiry(t *testing.T) {
	const ttl = time.Hour
	issued := time.Unix(1_700_000_000, 0)
	tests := []struct {
		name    string
		age     time.Duration
		wantErr bool
	}{
		{name: "fresh", age: 0},
		{name: "one second before ttl", age: ttl - time.Second},
		{name: "exactly ttl", age: ttl},
		{name: "ttl plus one second", age: ttl + time.Second, wantErr: true},
		{name: "long expired", age: 30 * 24 * time.Hour, wantErr: true},
		{name: "issued in the future (clock skew between replicas)", age: -time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &testClock{t: issued}
			s := newTestSealer(t, clock, ttl, testSecretA)
			id := mustSeal(t, s, Claims{Route: "/mcp/a", Principal: "anonymous"})
			clock.t = issued.Add(tt.age)
			_, err := s.Open(id)
			switch {
			case tt.wantErr && !errors.Is(err, ErrInvalid):
				t.Errorf("open at age %v = %v, want ErrInvalid", tt.age, err)
			case !tt.wantErr && err != nil:
				t.Errorf("open at age %v = %v, want success", tt.age, err)
			}
		})
	}
}

func TestSealerRejectsMalformed(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(t, clock, time.Hour, testSecretA)
	valid := mustSeal(t, s, Claims{Route: "/mcp/a", Principal: "anonymous"})
	raw, err := base64.RawURLEncoding.DecodeString(valid)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	withFormat := func(f byte) string {
		b := bytes.Clone(raw)
		b[0] = f
		return enc(b)
	}
	// sealRaw boxes an arbitrary payload with the real key, to reach the
	// checks after authentication.
	sealRaw := func(plain []byte) string {
		k := s.keys[0]
		header := append([]byte{FormatSession}, k.id[:]...)
		nonce := make([]byte, k.aead.NonceSize())
		out := append(bytes.Clone(header), nonce...)
		return enc(k.aead.Seal(out, nonce, plain, header))
	}
	headerLen := 1 + keyIDLen
	tests := []struct {
		name       string
		id         string
		wantReason string
	}{
		{name: "empty", id: "", wantReason: "unknown format"},
		{name: "too long", id: strings.Repeat("A", MaxIDLen+1), wantReason: "too long"},
		{name: "too long even when the prefix is valid", id: valid + strings.Repeat("A", MaxIDLen), wantReason: "too long"},
		{name: "not base64", id: "not a session!", wantReason: "not base64url"},
		{name: "standard alphabet", id: strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+/", wantReason: "not base64url"},
		{name: "padded", id: valid + "=", wantReason: "not base64url"},
		{name: "non-canonical final character", id: nonCanonical(valid), wantReason: "not base64url"},
		{name: "format byte 0", id: withFormat(0), wantReason: "unknown format"},
		{name: "format byte 2", id: withFormat(2), wantReason: "unknown format"},
		{name: "header only, truncated", id: enc(raw[:headerLen-1]), wantReason: "unknown format"},
		{name: "header without nonce", id: enc(raw[:headerLen]), wantReason: "truncated"},
		{name: "nonce without tag", id: enc(raw[:headerLen+12+15]), wantReason: "truncated"},
		{name: "last byte cut", id: enc(raw[:len(raw)-1]), wantReason: "authentication failed"},
		{name: "byte appended", id: enc(append(bytes.Clone(raw), 0)), wantReason: "authentication failed"},
		{name: "unknown key id", id: enc(append([]byte{FormatSession, 1, 2, 3, 4}, raw[headerLen:]...)), wantReason: "unknown key id"},
		{name: "authentic but not JSON", id: sealRaw([]byte("not json")), wantReason: "payload"},
		{name: "authentic but wrong types", id: sealRaw([]byte(`{"r":1,"p":"anonymous","iat":0}`)), wantReason: "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.Open(tt.id)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("open(%q) = %+v, %v; want ErrInvalid", tt.id, c, err)
			}
			if !strings.Contains(err.Error(), tt.wantReason) {
				t.Errorf("open(%q) = %v, want the reason %q", tt.id, err, tt.wantReason)
			}
		})
	}
}

// resealWithNonce is seal with a chosen nonce: the exact bytes seal produces
// for claims c (IssuedAt included) when crypto/rand yields nonce. It pins
// the documented wire form and lets a fuzz worker recognise a genuine token
// whichever process sealed it.
func resealWithNonce(t testing.TB, s *Sealer, c Claims, nonce []byte) []byte {
	t.Helper()
	plain, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	k := s.keys[0]
	header := append([]byte{FormatSession}, k.id[:]...)
	return k.aead.Seal(append(bytes.Clone(header), nonce...), nonce, plain, header)
}

func TestSealerWireFormat(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(t, clock, time.Hour, testSecretA)
	c := Claims{Route: "/mcp/a", Principal: "api_key:ci", Upstream: "u-1", Version: "2025-11-25"}
	id := mustSeal(t, s, c)
	raw, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		t.Fatalf("session id %q is not unpadded base64url: %v", id, err)
	}
	const headerLen = 1 + keyIDLen
	nonce := raw[headerLen : headerLen+s.keys[0].aead.NonceSize()]
	c.IssuedAt = clock.t.Unix()
	if want := resealWithNonce(t, s, c, nonce); !bytes.Equal(raw, want) {
		t.Errorf("sealed bytes = %x, want version|key id|nonce|AES-GCM(claims) = %x", raw, want)
	}
}

// FuzzOpenSession checks that open never panics and opens nothing but what
// seal produced.
func FuzzOpenSession(f *testing.F) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(f, clock, time.Hour, testSecretA, testSecretB)
	claims := []Claims{
		{Route: "/mcp/a", Principal: "anonymous"},
		{Route: "/mcp/files", Principal: "api_key:ci", Upstream: "u-1", Version: "2025-06-18"},
	}
	for _, c := range claims {
		id := mustSeal(f, s, c)
		f.Add(id)
		f.Add(id[:len(id)-1])
		f.Add(id[1:])
		f.Add(id + "A")
		f.Add(strings.ToUpper(id))
		f.Add("A" + id[1:])
	}
	f.Add("")
	f.Add("AQ")
	f.Add(strings.Repeat("_", 300))
	f.Fuzz(func(t *testing.T, id string) {
		got, err := s.Open(id)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("open(%q) = %v, want it to wrap ErrInvalid", id, err)
			}
			return
		}
		// Seeds come from other processes' seal calls (random nonces), so a
		// genuine token is recognised by resealing: its bytes must be exactly
		// what seal makes of one of the claims with the token's nonce.
		// Decoded bytes, not the string, are compared: unpadded base64
		// ignores the unused low bits of the last character (see the report).
		raw, decErr := base64.RawURLEncoding.DecodeString(id)
		const nonceAt = 1 + keyIDLen
		nonceEnd := nonceAt + s.keys[0].aead.NonceSize()
		if decErr != nil || len(raw) < nonceEnd {
			t.Fatalf("open(%q) = %+v: opened an id that is not a sealed box", id, got)
		}
		for _, c := range claims {
			c.IssuedAt = clock.t.Unix()
			if bytes.Equal(raw, resealWithNonce(t, s, c, raw[nonceAt:nonceEnd])) {
				if diff := cmp.Diff(c, got); diff != "" {
					t.Fatalf("open(%q) claims mismatch (-want +got):\n%s", id, diff)
				}
				return
			}
		}
		t.Fatalf("open(%q) = %+v: opened a session id seal never produced", id, got)
	})
}

// nonCanonical respells a base64url string by setting the unused low bits
// of its last character: a lenient decoder yields the same bytes.
func nonCanonical(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	unused := map[int]int{2: 4, 3: 2}[len(s)%4] // bits of the last character that carry nothing
	if unused == 0 {
		return s + "A=" // not a multiple of a whole byte; still not canonical
	}
	last := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[last|1])
}

// TestNonCanonicalIsAVariant guards the test above: the respelled id must
// differ from the real one yet decode leniently to the same bytes.
func TestNonCanonicalIsAVariant(t *testing.T) {
	clock := &testClock{t: time.Unix(1_700_000_000, 0)}
	s := newTestSealer(t, clock, time.Hour, testSecretA)
	for range 8 { // several seals, each with a fresh nonce
		valid := mustSeal(t, s, Claims{Route: "/mcp/a", Principal: "anonymous"})
		variant := nonCanonical(valid)
		a, _ := base64.RawURLEncoding.DecodeString(valid)
		b, err := base64.RawURLEncoding.DecodeString(variant)
		if variant == valid || err != nil || !bytes.Equal(a, b) {
			t.Fatalf("nonCanonical(%q) = %q: not an equivalent spelling (err %v)", valid, variant, err)
		}
	}
}
