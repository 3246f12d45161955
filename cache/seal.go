package cache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Sealer seals entries for the second level, where they leave the
// process (Redis): AES-256-GCM under keys derived from
// cache.encryption_keys, bound to the entry's cache key, so a value copied
// to another key (another principal's) does not open. The first key
// seals; every key opens, which is how keys rotate. Safe for concurrent
// use.
type Sealer struct {
	keys []sealKey
}

type sealKey struct {
	id   [4]byte // names the key in each box, without revealing it
	aead cipher.AEAD
}

// sealFormat is the first byte of every box: a box of another format is
// refused rather than misread.
const sealFormat = 1

// ErrUnsealable: a value that is not a box this Sealer opens (another
// key, another cache key, corrupt).
var ErrUnsealable = errors.New("cache entry does not open with cache.encryption_keys")

// NewSealer derives one key per non-empty secret (HKDF-SHA256). No secret
// is an error.
func NewSealer(secrets []string) (*Sealer, error) {
	s := &Sealer{}
	for i, secret := range secrets {
		if secret == "" {
			continue
		}
		key, err := hkdf.Key(sha256.New, []byte(secret), nil, "ctxgate cache v1", 32)
		if err != nil {
			return nil, fmt.Errorf("derive cache key %d: %w", i, err)
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
		sum := sha256.Sum256(append([]byte("ctxgate cache key id "), key...))
		copy(k.id[:], sum[:])
		s.keys = append(s.keys, k)
	}
	if len(s.keys) == 0 {
		return nil, errors.New("no cache encryption key")
	}
	return s, nil
}

// Seal encodes e (its value, times and tags) and seals it under the first
// key, for the cache key it is stored under.
func (s *Sealer) Seal(key string, e *Entry) []byte {
	k := s.keys[0]
	out := make([]byte, 0, 1+len(k.id)+k.aead.NonceSize()+len(e.Value)+128)
	out = append(out, sealFormat)
	out = append(out, k.id[:]...)
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, encode(e), aad(out[:1+len(k.id)], key))
}

// Open opens a box sealed for key. The entry's invalidation sequence is
// zero: the caller stores it with a token of its own.
func (s *Sealer) Open(key string, box []byte) (*Entry, error) {
	if len(box) < 1+4 || box[0] != sealFormat {
		return nil, ErrUnsealable
	}
	header := box[:1+4]
	for _, k := range s.keys {
		if [4]byte(box[1:5]) != k.id {
			continue
		}
		rest := box[5:]
		if len(rest) < k.aead.NonceSize() {
			return nil, ErrUnsealable
		}
		plain, err := k.aead.Open(nil, rest[:k.aead.NonceSize()], rest[k.aead.NonceSize():], aad(header, key))
		if err != nil {
			return nil, ErrUnsealable
		}
		e, err := decode(plain)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnsealable, err)
		}
		e.seq = 0
		return e, nil
	}
	return nil, ErrUnsealable
}

// aad binds a box to its format, key id and cache key.
func aad(header []byte, key string) []byte {
	return append(append([]byte("ctxgate cache entry\x00"), header...), key...)
}
