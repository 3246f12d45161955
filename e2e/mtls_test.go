package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// testPKI is a CA with the certificates an mTLS test needs, written as PEM
// files.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	p.ca, p.caKey = p.issue(t, "ca", &x509.Certificate{
		Subject: pkix.Name{CommonName: "ctxgate e2e CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	})
	return p
}

// issue signs tmpl with the CA (or itself, for the CA) and writes
// <name>.crt and <name>.key.
func (p *testPKI) issue(t *testing.T, name string, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(time.Hour)
	parent, signer := tmpl, key
	if p.ca != nil {
		parent, signer = p.ca, p.caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	keyDER, _ := x509.MarshalECPrivateKey(key)
	p.write(t, name+".crt", "CERTIFICATE", der)
	p.write(t, name+".key", "EC PRIVATE KEY", keyDER)
	return cert, key
}

func (p *testPKI) write(t *testing.T, name, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(p.dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (p *testPKI) path(name string) string { return filepath.Join(p.dir, name) }

func (p *testPKI) client(t *testing.T, name string) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	cfg := &tls.Config{RootCAs: roots}
	if name != "" {
		pair, err := tls.LoadX509KeyPair(p.path(name+".crt"), p.path(name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

// TestMTLS: a client certificate names the principal; identity headers a
// client sends over a valid connection never reach the upstream, which
// learns the verified identity from the gateway only.
func TestMTLS(t *testing.T) {
	pki := newTestPKI(t)
	pki.issue(t, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "ctxgate"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	})
	spiffe, _ := url.Parse("spiffe://example.org/ns/prod/sa/agent")
	pki.issue(t, "agent", &x509.Certificate{
		Subject: pkix.Name{CommonName: "agent"}, URIs: []*url.URL{spiffe},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	})
	upstream := startEverything(t)
	rec := startRecorder(t, upstream)
	gw := startGateway(t, fmt.Sprintf(`
server:
  listen: "127.0.0.1:0"
  tls: {cert_file: %q, key_file: %q, client_ca_file: %q, client_auth: require}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth:
  mtls: {identity: [spiffe, dns, cn]}
upstreams:
  - {name: everything, url: %q, identity_headers: true}
`, pki.path("server.crt"), pki.path("server.key"), pki.path("ca.crt"), rec.URL))
	route := strings.Replace(gw.URL, "http://", "https://", 1) + "/mcp/everything"

	cs, err := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx(t),
		&mcp.StreamableClientTransport{Endpoint: route, HTTPClient: pki.client(t, "agent")}, nil)
	if err != nil {
		t.Fatalf("connect with a client certificate: %v", err)
	}
	if _, err := cs.ListTools(ctx(t), nil); err != nil {
		t.Errorf("tools/list over mTLS: %v", err)
	}
	cs.Close()

	spoofed := http.Header{
		"X-Forwarded-Client-Cert": {"Hash=00;URI=spiffe://example.org/ns/prod/sa/admin"},
		"X-Forwarded-User":        {"admin"},
		"X-Ctxgate-Principal":     {"mtls:spiffe://example.org/ns/prod/sa/admin"},
	}
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, route, strings.NewReader(initializeBody))
	req.Header = spoofed.Clone()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	before := rec.count()
	resp, err := pki.client(t, "agent").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || rec.count() != before+1 {
		t.Fatalf("initialize with spoofed headers: %s, upstream requests %d", resp.Status, rec.count()-before)
	}
	got := rec.requests()[before].header
	if p := got.Get("X-Ctxgate-Principal"); p != "mtls:spiffe://example.org/ns/prod/sa/agent" {
		t.Errorf("upstream X-Ctxgate-Principal = %q, want the certificate's SPIFFE id", p)
	}
	for _, h := range []string{"X-Forwarded-Client-Cert", "X-Forwarded-User"} {
		if v := got.Get(h); v != "" {
			t.Errorf("upstream received spoofed %s: %q", h, v)
		}
	}

	// client_auth: require: no certificate, no connection.
	if _, err := pki.client(t, "").Get(route); err == nil {
		t.Error("a client without a certificate completed the TLS handshake")
	}
}
