package upstream

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/oauth2"

	"github.com/ctxgate/ctxgate/config"
)

// GrantStore keeps users' connected-account grants (user_oauth): one file
// per (principal, upstream) under a directory, sealed with AES-256-GCM.
// The file name is a hash, so a listing names no one; the principal and
// upstream are the sealing's additional data, so a file copied under
// another name does not open; without the keys a stolen directory holds
// no usable token. The first key seals; every key opens, so keys rotate
// by putting a new one first (a grant is re-sealed with it when it is
// next refreshed).
//
// It is a local file store: replicas do not share it (a shared store such
// as Redis is not built yet).
type GrantStore struct {
	dir  string
	keys []grantKey
}

type grantKey struct {
	id   [8]byte
	aead cipher.AEAD
}

// ErrNoGrant is returned by GrantStore.Get when the user has not connected.
var ErrNoGrant = errors.New("no grant stored")

const grantVersion = 1

// NewGrantStore opens (creating, mode 0700) the store cfg describes.
func NewGrantStore(cfg *config.Grants) (*GrantStore, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("grants.dir: %w", err)
	}
	s := &GrantStore{dir: cfg.Dir}
	for i, secret := range cfg.Keys {
		// Independent of the session keys even when an operator reuses a
		// secret: the derivation's label differs.
		k, err := hkdf.Key(sha256.New, []byte(secret), nil, "ctxgate grants v1", 32)
		if err != nil {
			return nil, fmt.Errorf("grants.keys[%d]: %w", i, err)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("grants.keys[%d]: %w", i, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("grants.keys[%d]: %w", i, err)
		}
		sum := sha256.Sum256(k)
		gk := grantKey{aead: aead}
		copy(gk.id[:], sum[:8])
		s.keys = append(s.keys, gk)
	}
	if len(s.keys) == 0 {
		return nil, errors.New("grants.keys: at least one key is required")
	}
	return s, nil
}

// storedGrant is what is sealed.
type storedGrant struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	TokenType    string    `json:"token_type,omitempty"`
	Expiry       time.Time `json:"expiry,omitzero"`
}

func (s *GrantStore) path(principal, upstream string) string {
	sum := sha256.Sum256([]byte(principal + "\x00" + upstream))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:])+".grant")
}

func grantAAD(principal, upstream string) []byte {
	return []byte("ctxgate-grant\x00" + principal + "\x00" + upstream)
}

// Put seals and writes the grant, replacing any previous one atomically.
func (s *GrantStore) Put(principal, upstream string, tok *oauth2.Token) error {
	plain, err := json.Marshal(storedGrant{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, TokenType: tok.TokenType, Expiry: tok.Expiry})
	if err != nil {
		return err
	}
	k := s.keys[0]
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	out := append([]byte{grantVersion}, k.id[:]...)
	out = append(out, nonce...)
	out = k.aead.Seal(out, nonce, plain, grantAAD(principal, upstream))
	path := s.path(principal, upstream)
	tmp, err := os.CreateTemp(s.dir, ".grant-*")
	if err != nil {
		return fmt.Errorf("store grant: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(out); err != nil {
		tmp.Close()
		return fmt.Errorf("store grant: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store grant: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("store grant: %w", err)
	}
	return nil
}

// Get opens the grant, or returns ErrNoGrant.
func (s *GrantStore) Get(principal, upstream string) (*oauth2.Token, error) {
	b, err := os.ReadFile(s.path(principal, upstream))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoGrant
	}
	if err != nil {
		return nil, fmt.Errorf("read grant: %w", err)
	}
	if len(b) < 1+8 || b[0] != grantVersion {
		return nil, errors.New("grant file is not a sealed grant")
	}
	for _, k := range s.keys {
		if string(k.id[:]) != string(b[1:9]) {
			continue
		}
		ns := k.aead.NonceSize()
		if len(b) < 9+ns {
			break
		}
		plain, err := k.aead.Open(nil, b[9:9+ns], b[9+ns:], grantAAD(principal, upstream))
		if err != nil {
			return nil, fmt.Errorf("open grant: %w", err)
		}
		var g storedGrant
		if err := json.Unmarshal(plain, &g); err != nil {
			return nil, fmt.Errorf("decode grant: %w", err)
		}
		return &oauth2.Token{AccessToken: g.AccessToken, RefreshToken: g.RefreshToken, TokenType: g.TokenType, Expiry: g.Expiry}, nil
	}
	return nil, errors.New("grant sealed with a key no longer configured in grants.keys")
}

// Delete removes the grant; it reports whether there was one.
func (s *GrantStore) Delete(principal, upstream string) (bool, error) {
	err := os.Remove(s.path(principal, upstream))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete grant: %w", err)
	}
	return true, nil
}
