// Package session seals and opens the gateway's session ids. A session id
// is not a key into server-side state: it is an AES-256-GCM box holding
// everything needed to serve the session, bound to the principal and the
// route it was issued for, so any replica with the key serves any session
// and nothing is kept in memory. It knows nothing of HTTP, of MCP messages
// or of who is calling: it seals what it is given.
//
// Wire form: base64url(format | key id (4) | nonce (12) | ciphertext+tag).
// The format and key id are authenticated as additional data.
package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

const (
	// FormatSession is the format byte of a session id. Boxes sealed with
	// SealAs under any other format byte never open as a session id.
	FormatSession = 1
	keyIDLen      = 4
	// MaxIDLen bounds what Open and OpenAs will even decode; a real
	// session id is ~200 bytes.
	MaxIDLen = 2048
)

// Claims is what a session id carries. The principal id (not token bytes)
// is sealed so a refreshed token keeps the session and another principal
// cannot use it.
type Claims struct {
	Route     string `json:"r"`
	Principal string `json:"p"`
	Upstream  string `json:"u,omitempty"` // the upstream's own session id; never shown to clients
	Version   string `json:"v,omitempty"` // negotiated MCP protocol version
	Caps      string `json:"c,omitempty"` // digest of the client's declared capabilities (cache key)
	// URLElicit: the client declared elicitation.url at initialize, so a
	// missing connected account is answered -32042 (gateway/credentials.go).
	URLElicit bool  `json:"e,omitempty"`
	IssuedAt  int64 `json:"iat"` // unix seconds
	// Members are a federated session's upstream sessions, by member
	// upstream name (gateway/federation.go); a member that is absent is not
	// part of the session.
	Members map[string]string `json:"m,omitempty"`
}

// ErrInvalid is what every failure to open a box wraps: to a client, a
// forged, expired or foreign session is simply unknown.
var ErrInvalid = errors.New("session id invalid")

type sealKey struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// Sealer seals and opens session ids. The first key seals; all keys open,
// which is how keys rotate. A Sealer is safe for concurrent use; the zero
// value has no key and is not usable: use NewSealer.
type Sealer struct {
	keys []sealKey
	ttl  time.Duration
	now  func() time.Time
}

// NewSealer derives one AES-256 key per secret, once (HKDF-SHA256; the
// secret may be any string of at least 32 bytes). The first secret seals,
// all of them open. A box older than ttl does not open. now is the clock
// (it must not be nil). No secret is an error.
func NewSealer(secrets [][]byte, ttl time.Duration, now func() time.Time) (*Sealer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no session key")
	}
	s := &Sealer{ttl: ttl, now: now}
	for i, secret := range secrets {
		key, err := hkdf.Key(sha256.New, secret, nil, "ctxgate session v1", 32)
		if err != nil {
			return nil, fmt.Errorf("derive session key %d: %w", i, err)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k := sealKey{aead: aead}
		// The key id is a one-way digest of the key: it names the key
		// without revealing anything about it.
		sum := sha256.Sum256(append([]byte("ctxgate session key id "), key...))
		copy(k.id[:], sum[:])
		s.keys = append(s.keys, k)
	}
	return s, nil
}

// RandomSecret is a fresh 32-byte secret, for when no key is configured:
// sessions sealed with it do not survive a restart.
func RandomSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// Now is the sealer's clock: what a box sealed with SealAs should carry as
// its issue time.
func (s *Sealer) Now() time.Time { return s.now() }

// Expired reports whether a box issued at issuedAt (unix seconds) is older
// than the session lifetime.
func (s *Sealer) Expired(issuedAt int64) bool {
	return s.now().Sub(time.Unix(issuedAt, 0)) > s.ttl
}

// Seal seals c as a session id, with IssuedAt set to now (whatever c held).
func (s *Sealer) Seal(c Claims) (string, error) {
	c.IssuedAt = s.now().Unix()
	return s.SealAs(FormatSession, c)
}

// SealAs seals any value (as JSON) under the first key. The format byte is
// authenticated, so a box sealed as one kind (a list cursor) never opens as
// another (a session); FormatSession is Seal's.
func (s *Sealer) SealAs(format byte, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	k := s.keys[0]
	header := append([]byte{format}, k.id[:]...)
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := append(header, nonce...)
	out = k.aead.Seal(out, nonce, plain, header)
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// Open verifies and decodes a session id. Every failure wraps ErrInvalid
// (with the reason, for the log): to the client, a forged, expired or
// foreign session is simply unknown.
func (s *Sealer) Open(id string) (Claims, error) {
	var c Claims
	if err := s.OpenAs(FormatSession, id, &c); err != nil {
		return Claims{}, err
	}
	if age := s.now().Sub(time.Unix(c.IssuedAt, 0)); age > s.ttl {
		return Claims{}, fmt.Errorf("%w: expired %s ago", ErrInvalid, (age - s.ttl).Round(time.Second))
	}
	return c, nil
}

// OpenAs verifies a box sealed with SealAs in the given format and decodes
// it into v. Every failure wraps ErrInvalid. It does not check the box's
// age: what v carries as its issue time is the caller's to check (Expired).
func (s *Sealer) OpenAs(format byte, id string, v any) error {
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: too long", ErrInvalid)
	}
	// Strict: one spelling per id, so nothing keyed on the id string can be
	// sidestepped with an equivalent encoding.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(id)
	if err != nil {
		return fmt.Errorf("%w: not base64url", ErrInvalid)
	}
	const headerLen = 1 + keyIDLen
	if len(raw) < headerLen || raw[0] != format {
		return fmt.Errorf("%w: unknown format", ErrInvalid)
	}
	header, rest := raw[:headerLen], raw[headerLen:]
	for _, k := range s.keys {
		if [keyIDLen]byte(header[1:]) != k.id {
			continue
		}
		ns := k.aead.NonceSize()
		if len(rest) < ns+k.aead.Overhead() {
			return fmt.Errorf("%w: truncated", ErrInvalid)
		}
		plain, err := k.aead.Open(nil, rest[:ns], rest[ns:], header)
		if err != nil {
			return fmt.Errorf("%w: authentication failed", ErrInvalid)
		}
		if err := json.Unmarshal(plain, v); err != nil {
			return fmt.Errorf("%w: payload: %v", ErrInvalid, err)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown key id", ErrInvalid)
}
