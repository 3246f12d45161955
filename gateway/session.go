package gateway

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

// Session ids are sealed, not stored: the id the gateway hands a client is
// an AES-256-GCM box holding everything needed to serve the session, so any
// replica with the key serves any session and nothing is kept in memory.
//
// Wire form: base64url(version | key id (4) | nonce (12) | ciphertext+tag).
// The version and key id are authenticated as additional data.

const (
	sessionFormat   = 1
	sessionKeyIDLen = 4
	// maxSessionIDLen bounds what open will even decode; a real id is ~200.
	maxSessionIDLen = 2048
)

// sessionClaims is what a session id carries. The principal id (not token
// bytes) is sealed so a refreshed token keeps the session and another
// principal cannot use it.
type sessionClaims struct {
	Route     string `json:"r"`
	Principal string `json:"p"`
	Upstream  string `json:"u,omitempty"` // the upstream's own session id; never shown to clients
	Version   string `json:"v,omitempty"` // negotiated MCP protocol version
	Caps      string `json:"c,omitempty"` // digest of the client's declared capabilities (cache key)
	// URLElicit: the client declared elicitation.url at initialize, so a
	// missing connected account is answered -32042 (credentials.go).
	URLElicit bool  `json:"e,omitempty"`
	IssuedAt  int64 `json:"iat"` // unix seconds
	// Members are a federated session's upstream sessions, by member
	// upstream name (federation.go); a member that is absent is not part of
	// the session.
	Members map[string]string `json:"m,omitempty"`
}

var errSessionInvalid = errors.New("session id invalid")

type sealKey struct {
	id   [sessionKeyIDLen]byte
	aead cipher.AEAD
}

// sealer seals and opens session ids. The first key seals; all keys open,
// which is how keys rotate.
type sealer struct {
	keys []sealKey
	ttl  time.Duration
	now  func() time.Time
}

// newSealer derives one AES-256 key per secret, once (HKDF-SHA256; the
// secret may be any string of at least 32 bytes).
func newSealer(secrets [][]byte, ttl time.Duration, now func() time.Time) (*sealer, error) {
	if len(secrets) == 0 {
		return nil, errors.New("no session key")
	}
	s := &sealer{ttl: ttl, now: now}
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

// randomSessionSecret is used when no key is configured.
func randomSessionSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

func (s *sealer) seal(c sessionClaims) (string, error) {
	c.IssuedAt = s.now().Unix()
	return s.sealAs(sessionFormat, c)
}

// sealAs seals any value under the first key. The format byte is
// authenticated, so a box sealed as one kind (a list cursor) never opens as
// another (a session).
func (s *sealer) sealAs(format byte, v any) (string, error) {
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

// open verifies and decodes a session id. Every failure is errSessionInvalid
// (wrapped with the reason for the log): to the client, a forged, expired or
// foreign session is simply unknown.
func (s *sealer) open(id string) (sessionClaims, error) {
	var c sessionClaims
	if err := s.openAs(sessionFormat, id, &c); err != nil {
		return sessionClaims{}, err
	}
	if age := s.now().Sub(time.Unix(c.IssuedAt, 0)); age > s.ttl {
		return sessionClaims{}, fmt.Errorf("%w: expired %s ago", errSessionInvalid, (age - s.ttl).Round(time.Second))
	}
	return c, nil
}

// openAs verifies a box sealed with sealAs in the given format and decodes
// it into v.
func (s *sealer) openAs(format byte, id string, v any) error {
	if len(id) > maxSessionIDLen {
		return fmt.Errorf("%w: too long", errSessionInvalid)
	}
	// Strict: one spelling per id, so nothing keyed on the id string can be
	// sidestepped with an equivalent encoding.
	raw, err := base64.RawURLEncoding.Strict().DecodeString(id)
	if err != nil {
		return fmt.Errorf("%w: not base64url", errSessionInvalid)
	}
	const headerLen = 1 + sessionKeyIDLen
	if len(raw) < headerLen || raw[0] != format {
		return fmt.Errorf("%w: unknown format", errSessionInvalid)
	}
	header, rest := raw[:headerLen], raw[headerLen:]
	for _, k := range s.keys {
		if [sessionKeyIDLen]byte(header[1:]) != k.id {
			continue
		}
		ns := k.aead.NonceSize()
		if len(rest) < ns+k.aead.Overhead() {
			return fmt.Errorf("%w: truncated", errSessionInvalid)
		}
		plain, err := k.aead.Open(nil, rest[:ns], rest[ns:], header)
		if err != nil {
			return fmt.Errorf("%w: authentication failed", errSessionInvalid)
		}
		if err := json.Unmarshal(plain, v); err != nil {
			return fmt.Errorf("%w: payload: %v", errSessionInvalid, err)
		}
		return nil
	}
	return fmt.Errorf("%w: unknown key id", errSessionInvalid)
}
