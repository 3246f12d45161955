package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// benchAudience is the aud of the harness's tokens, configured as the
// gateway's accepted audience (the gateway's port is not known when the
// configuration is written).
const benchAudience = "https://ctxgate.bench.invalid"

// issuer is a minimal OpenID provider for the full-pipeline targets:
// discovery metadata and a JWKS with one ES256 and one RS256 key, served on
// loopback, and access tokens (typ at+jwt, RFC 9068) signed with either.
// The gateway fetches and verifies against these keys for real; only the
// provider, which is outside the system, is this small.
type issuer struct {
	URL     string
	srv     *http.Server
	signers map[jose.SignatureAlgorithm]jose.Signer
}

func startIssuer() (*issuer, error) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	is := &issuer{URL: "http://" + ln.Addr().String(), signers: map[jose.SignatureAlgorithm]jose.Signer{}}
	var jwks jose.JSONWebKeySet
	for _, k := range []struct {
		alg  jose.SignatureAlgorithm
		priv any
		pub  any
	}{{jose.ES256, ec, &ec.PublicKey}, {jose.RS256, rs, &rs.PublicKey}} {
		kid := "bench-" + string(k.alg)
		opts := (&jose.SignerOptions{}).WithType("at+jwt").WithHeader(jose.HeaderKey("kid"), kid)
		if is.signers[k.alg], err = jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts); err != nil {
			ln.Close()
			return nil, err
		}
		jwks.Keys = append(jwks.Keys, jose.JSONWebKey{Key: k.pub, KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/jwks",
			"id_token_signing_alg_values_supported": []string{"ES256", "RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, jwks) })
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = is.srv.Serve(ln) }()
	return is, nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// token signs an access token for subject sub, valid for ttl.
func (is *issuer) token(alg jose.SignatureAlgorithm, sub string, ttl time.Duration) (string, error) {
	signer, ok := is.signers[alg]
	if !ok {
		return "", fmt.Errorf("no %s key", alg)
	}
	now := time.Now()
	claims, err := json.Marshal(map[string]any{
		"iss": is.URL, "sub": sub, "aud": benchAudience, "client_id": sub,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(ttl).Unix(),
		"scope": "docs.read", "groups": []string{"engineering"}, "jti": fmt.Sprintf("%s-%d", sub, now.UnixNano()),
	})
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(claims)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Close stops the provider.
func (is *issuer) Close() error { return is.srv.Close() }
