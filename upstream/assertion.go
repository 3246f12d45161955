package upstream

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/ctxgate/ctxgate/config"
)

// assertionLifetime is how long a client assertion is valid: long enough
// for one token request, short enough that a captured one is soon useless.
const assertionLifetime = time.Minute

// assertionSigner signs private_key_jwt client assertions (RFC 7523
// section 2.2): iss = sub = client_id, aud = the token endpoint, a fresh
// jti each time.
type assertionSigner struct {
	clientID, audience string
	signer             jose.Signer
}

func newAssertionSigner(clientID string, a *config.ClientAssertion) (*assertionSigner, error) {
	key, err := loadPrivateKey(a.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client_assertion: %w", err)
	}
	alg, err := assertionAlgorithm(key, a.Algorithm)
	if err != nil {
		return nil, fmt.Errorf("client_assertion: %w", err)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if a.KeyID != "" {
		opts = opts.WithHeader("kid", a.KeyID)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		return nil, fmt.Errorf("client_assertion: %w", err)
	}
	return &assertionSigner{clientID: clientID, audience: a.Audience, signer: signer}, nil
}

func (s *assertionSigner) sign(now time.Time) (string, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", err
	}
	claims := jwt.Claims{
		Issuer: s.clientID, Subject: s.clientID, Audience: jwt.Audience{s.audience},
		ID: hex.EncodeToString(id[:]), IssuedAt: jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(assertionLifetime)),
	}
	out, err := jwt.Signed(s.signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return out, nil
}

// loadPrivateKey reads a PEM private key: PKCS #8, SEC 1 (EC) or PKCS #1.
func loadPrivateKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%s: not a PKCS #8, EC or PKCS #1 private key", path)
}

// assertionAlgorithm checks a configured algorithm against the key, or
// picks the key's natural one.
func assertionAlgorithm(key crypto.Signer, configured string) (jose.SignatureAlgorithm, error) {
	var natural jose.SignatureAlgorithm
	allowed := map[jose.SignatureAlgorithm]bool{}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		natural, allowed[jose.RS256], allowed[jose.PS256] = jose.RS256, true, true
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			natural = jose.ES256
		case elliptic.P384():
			natural = jose.ES384
		default:
			return "", errors.New("EC keys must be P-256 or P-384")
		}
		allowed[natural] = true
	case ed25519.PrivateKey:
		natural, allowed[jose.EdDSA] = jose.EdDSA, true
	default:
		return "", fmt.Errorf("unsupported key type %T", key)
	}
	if configured == "" {
		return natural, nil
	}
	if !allowed[jose.SignatureAlgorithm(configured)] {
		return "", fmt.Errorf("algorithm %s does not fit the key (use %s)", configured, natural)
	}
	return jose.SignatureAlgorithm(configured), nil
}
