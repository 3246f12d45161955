package upstream_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/upstream"
)

// pki is a test CA that issues server and client certificates.
type pki struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64 = 1

func newCA(t *testing.T, name string) *pki {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	certPEM, _, cert, key := sign(t, tmpl, nil)
	return &pki{cert: cert, key: key, pem: certPEM}
}

// issue returns PEM certificate and key signed by the CA.
func (ca *pki) issue(t *testing.T, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, _, _ := sign(t, tmpl, ca)
	return c, k
}

func sign(t *testing.T, tmpl *x509.Certificate, ca *pki) ([]byte, []byte, *x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	parent, signer := tmpl, key
	if ca != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), cert, key
}

func writeFiles(t *testing.T, files map[string][]byte) {
	t.Helper()
	for path, data := range files {
		// Written aside and renamed, as a rotation tool would: a handshake
		// never reads a half-written file.
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// mtlsServer is an https test upstream that requires a client certificate
// from clientCA and records the subject of each one it accepted. Keep-alive
// is off so every request is a new handshake.
type mtlsServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string
}

func newMTLSServer(t *testing.T, serverCA, clientCA *pki, dnsName string) *mtlsServer {
	t.Helper()
	certPEM, keyPEM := serverCA.issue(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	s := &mtlsServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		s.mu.Unlock()
	}))
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	s.Config.SetKeepAlivesEnabled(false)
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *mtlsServer) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		return ""
	}
	return s.seen[len(s.seen)-1]
}

func clientCert(t *testing.T, ca *pki, cn string) (certPEM, keyPEM []byte) {
	return ca.issue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

func tlsPool(t *testing.T, url string, c *config.UpstreamTLS) (*upstream.Pool, error) {
	t.Helper()
	return upstream.NewPool([]config.Upstream{{Name: "secure", URL: url, MaxIdleConns: 4, TLS: c}})
}

func roundTrip(t *testing.T, up *upstream.Upstream) error {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, up.URL.String(), strings.NewReader("{}"))
	resp, err := up.Transport.RoundTrip(req)
	if err == nil {
		resp.Body.Close()
	}
	return err
}

// TestUpstreamMTLS: the gateway verifies the upstream against the private
// CA and presents its client certificate; without one the upstream refuses
// it; a rotated certificate or CA bundle is used without a new pool.
func TestUpstreamMTLS(t *testing.T) {
	serverCA, clientCA := newCA(t, "upstreams CA"), newCA(t, "gateway clients CA")
	srv := newMTLSServer(t, serverCA, clientCA, "docs.internal")
	dir := t.TempDir()
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "gw.crt"), filepath.Join(dir, "gw.key")
	c1, k1 := clientCert(t, clientCA, "gateway-one")
	writeFiles(t, map[string][]byte{caFile: serverCA.pem, certFile: c1, keyFile: k1})

	pool, err := tlsPool(t, srv.URL, &config.UpstreamTLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile, ServerName: "docs.internal", MinVersion: "1.3"})
	if err != nil {
		t.Fatal(err)
	}
	up := pool.Get("secure")
	if err := roundTrip(t, up); err != nil {
		t.Fatalf("with client certificate: %v", err)
	}
	if got := srv.last(); got != "gateway-one" {
		t.Fatalf("upstream saw client %q, want gateway-one", got)
	}

	t.Run("rotated certificate", func(t *testing.T) {
		c2, k2 := clientCert(t, clientCA, "gateway-rotated-two")
		writeFiles(t, map[string][]byte{certFile: c2, keyFile: k2})
		if err := roundTrip(t, up); err != nil {
			t.Fatal(err)
		}
		if got := srv.last(); got != "gateway-rotated-two" {
			t.Fatalf("after rotation the upstream saw %q, want gateway-rotated-two", got)
		}
	})

	t.Run("half-written rotation keeps the last good pair", func(t *testing.T) {
		c3, _ := clientCert(t, clientCA, "gateway-three")
		writeFiles(t, map[string][]byte{certFile: c3}) // key not yet replaced
		if err := roundTrip(t, up); err != nil {
			t.Fatal(err)
		}
		if got := srv.last(); got != "gateway-rotated-two" {
			t.Fatalf("upstream saw %q, want the last good pair gateway-rotated-two", got)
		}
		writeFiles(t, map[string][]byte{certFile: c1, keyFile: k1})
	})

	t.Run("without a client certificate", func(t *testing.T) {
		pool, err := tlsPool(t, srv.URL, &config.UpstreamTLS{CAFile: caFile, ServerName: "docs.internal"})
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(t, pool.Get("secure")); err == nil {
			t.Fatal("an upstream requiring a client certificate accepted the gateway without one")
		}
	})

	t.Run("wrong server name", func(t *testing.T) {
		pool, err := tlsPool(t, srv.URL, &config.UpstreamTLS{CAFile: caFile, CertFile: certFile, KeyFile: keyFile, ServerName: "other.internal"})
		if err != nil {
			t.Fatal(err)
		}
		if err := roundTrip(t, pool.Get("secure")); err == nil || !strings.Contains(err.Error(), "other.internal") {
			t.Fatalf("certificate for docs.internal accepted as other.internal: %v", err)
		}
	})

	t.Run("CA rotation", func(t *testing.T) {
		otherCA := newCA(t, "another CA")
		caFile2 := filepath.Join(dir, "ca2.pem")
		writeFiles(t, map[string][]byte{caFile2: otherCA.pem})
		pool, err := tlsPool(t, srv.URL, &config.UpstreamTLS{CAFile: caFile2, CertFile: certFile, KeyFile: keyFile, ServerName: "docs.internal"})
		if err != nil {
			t.Fatal(err)
		}
		up := pool.Get("secure")
		if err := roundTrip(t, up); err == nil {
			t.Fatal("an upstream from an untrusted CA was accepted")
		}
		writeFiles(t, map[string][]byte{caFile2: append(otherCA.pem, serverCA.pem...)})
		if err := roundTrip(t, up); err != nil {
			t.Fatalf("after adding the upstream's CA: %v", err)
		}
	})
}

func TestUpstreamTLSBadFiles(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	writeFiles(t, map[string][]byte{junk: []byte("not pem")})
	tests := []struct {
		name string
		tls  config.UpstreamTLS
		want string
	}{
		{"missing CA", config.UpstreamTLS{CAFile: filepath.Join(dir, "none.pem")}, "load CA file"},
		{"CA without certificates", config.UpstreamTLS{CAFile: junk}, "no PEM certificate"},
		{"bad pair", config.UpstreamTLS{CertFile: junk, KeyFile: junk}, "load client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tlsPool(t, "https://127.0.0.1:1/mcp", &tt.tls)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "upstreams[0].tls") {
				t.Fatalf("got %v, want an error naming upstreams[0].tls and %q", err, tt.want)
			}
		})
	}
}
