package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

// mtlsClock is an injected clock that handshake goroutines may read while
// the test moves it.
type mtlsClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *mtlsClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *mtlsClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// syncBuffer collects log output written from handshake goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls buf until it contains want; servers log a refused
// handshake after the client may already have seen it fail.
func waitFor(t *testing.T, buf *syncBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if strings.Contains(buf.String(), want) {
			return
		}
	}
	t.Fatalf("log never contained %q; log:\n%s", want, buf.String())
}

// testCA issues certificates and CRLs.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  time.Time
}

func newTestKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newTestCA(t *testing.T, name string, now time.Time) *testCA {
	t.Helper()
	ca := &testCA{key: newTestKey(t), now: now}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, ca.key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue signs tmpl with a fresh key. A zero validity means valid from an
// hour ago for a day; a nil serial, a random one.
func (ca *testCA) issue(t *testing.T, tmpl *x509.Certificate) tls.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		if err != nil {
			t.Fatal(err)
		}
		tmpl.SerialNumber = serial
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = ca.now.Add(-time.Hour), ca.now.Add(24*time.Hour)
	}
	key := newTestKey(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// crl returns a PEM CRL listing revoked, valid until nextUpdate.
func (ca *testCA) crl(t *testing.T, number int64, nextUpdate time.Time, revoked ...tls.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: ca.now.Add(-time.Minute), NextUpdate: nextUpdate}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.Leaf.SerialNumber, RevocationTime: ca.now.Add(-time.Minute)})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func keyPEM(t *testing.T, c tls.Certificate) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func clientTemplate(cn string, uris []string, dns []string, eku ...x509.ExtKeyUsage) *x509.Certificate {
	if len(eku) == 0 {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, DNSNames: dns, ExtKeyUsage: eku, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			panic(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	return tmpl
}

// mtlsFixture is a test PKI on disk: a CA, a second CA nobody trusts, a
// server certificate for 127.0.0.1 and localhost, and client certificates.
type mtlsFixture struct {
	clock       *mtlsClock
	dir         string
	ca, unknown *testCA
	cfg         config.TLS // client_auth require, no CRL
	roots       *x509.CertPool
	certs       map[string]tls.Certificate
	mtime       time.Time // of the last file written
}

func newMTLSFixture(t *testing.T) *mtlsFixture {
	t.Helper()
	now := time.Now().Truncate(time.Second)
	f := &mtlsFixture{clock: &mtlsClock{t: now}, dir: t.TempDir(), mtime: now}
	f.ca = newTestCA(t, "ctxgate test CA", now)
	f.unknown = newTestCA(t, "unknown CA", now)
	f.roots = x509.NewCertPool()
	f.roots.AddCert(f.ca.cert)
	server := f.ca.issue(t, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	})
	f.cfg = config.TLS{
		CertFile:     f.write(t, "server.pem", certPEM(server.Certificate[0])),
		KeyFile:      f.write(t, "server-key.pem", keyPEM(t, server)),
		ClientCAFile: f.write(t, "ca.pem", certPEM(f.ca.cert.Raw)),
		ClientAuth:   "require",
	}
	expired := clientTemplate("expired", nil, nil)
	expired.NotBefore, expired.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Hour)
	future := clientTemplate("future", nil, nil)
	future.NotBefore, future.NotAfter = now.Add(time.Hour), now.Add(48*time.Hour)
	f.certs = map[string]tls.Certificate{
		"spiffe":           f.ca.issue(t, clientTemplate("agent", []string{"spiffe://example.org/ns/prod/sa/agent"}, nil)),
		"dns":              f.ca.issue(t, clientTemplate("", nil, []string{"agent.example.org"})),
		"cn":               f.ca.issue(t, clientTemplate("agent-cn", nil, nil)),
		"expired":          f.ca.issue(t, expired),
		"not yet valid":    f.ca.issue(t, future),
		"server auth only": f.ca.issue(t, clientTemplate("server-only", nil, nil, x509.ExtKeyUsageServerAuth)),
		"unknown CA":       f.unknown.issue(t, clientTemplate("stranger", nil, nil)),
		"revoked":          f.ca.issue(t, clientTemplate("revoked", nil, nil)),
	}
	return f
}

// write replaces a file atomically, with a modification time later than
// the last one written, as a CRL publisher would.
func (f *mtlsFixture) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(f.dir, name)
	tmp := path + ".tmp"
	f.mtime = f.mtime.Add(time.Second)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, f.mtime, f.mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// seenRequest is what the test server's handler learned of a request.
type seenRequest struct {
	tls        *tls.ConnectionState
	protoMajor int
}

// tlsTestServer serves a tls.Config on a tls.NewListener, as Serve does.
type tlsTestServer struct {
	url    string
	seen   chan seenRequest
	errLog *syncBuffer // http.Server's log: handshake errors and their reason
}

func serveTLS(t *testing.T, tc *tls.Config) *tlsTestServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsTestServer{url: "https://" + ln.Addr().String() + "/", seen: make(chan seenRequest, 1), errLog: &syncBuffer{}}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.seen <- seenRequest{tls: r.TLS, protoMajor: r.ProtoMajor}
			w.WriteHeader(http.StatusNoContent)
		}),
		ErrorLog: log.New(s.errLog, "", 0),
	}
	go func() { _ = srv.Serve(tls.NewListener(ln, tc)) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// client returns an HTTP client that trusts the test CA and presents the
// named certificate ("" for none) on fresh connections only.
func (f *mtlsFixture) client(t *testing.T, cert string, cache tls.ClientSessionCache) *http.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: f.roots, ClientSessionCache: cache}
	if cert != "" {
		c, ok := f.certs[cert]
		if !ok {
			t.Fatalf("no test certificate %q", cert)
		}
		// GetClientCertificate, not Certificates: crypto/tls withholds a
		// certificate the server's CA list does not name, and the server
		// must be shown the bad ones.
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
}

// expectOK makes a request that must succeed and returns the server's view.
func (s *tlsTestServer) expectOK(t *testing.T, c *http.Client) seenRequest {
	t.Helper()
	resp, err := c.Get(s.url)
	if err != nil {
		t.Fatalf("GET: %v; server log:\n%s", err, s.errLog)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return <-s.seen
}

// expectRefused makes a request whose handshake must fail for reason.
func (s *tlsTestServer) expectRefused(t *testing.T, c *http.Client, reason string) {
	t.Helper()
	resp, err := c.Get(s.url)
	if err == nil {
		_ = resp.Body.Close()
		<-s.seen
		t.Fatalf("GET succeeded, want the handshake refused: %s", reason)
	}
	waitFor(t, s.errLog, reason)
}

func newTestTLSConfig(t *testing.T, cfg config.TLS, logs io.Writer, now func() time.Time) *tls.Config {
	t.Helper()
	tc, err := NewTLSConfig(&cfg, slog.New(slog.NewTextHandler(logs, nil)), now)
	if err != nil {
		t.Fatalf("NewTLSConfig: %v", err)
	}
	return tc
}

func certSHA256(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

func TestTLSClientCertificates(t *testing.T) {
	f := newMTLSFixture(t)
	cfg := f.cfg
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, f.clock.now().Add(time.Hour), f.certs["revoked"]))
	tc := newTestTLSConfig(t, cfg, io.Discard, f.clock.now)
	ids := NewCertIdentity(&config.MTLS{Identity: []string{"spiffe", "dns", "cn"}})
	tests := []struct {
		name   string
		cert   string
		reason string     // the server's reason for refusing; "" for success
		want   *Principal // for successes
	}{
		{name: "SPIFFE URI", cert: "spiffe", want: &Principal{ID: "mtls:spiffe://example.org/ns/prod/sa/agent", Kind: "mtls", Cert: &CertInfo{
			Subject: "CN=agent", URIs: []string{"spiffe://example.org/ns/prod/sa/agent"}, SHA256: certSHA256(f.certs["spiffe"])}}},
		{name: "DNS SAN only", cert: "dns", want: &Principal{ID: "mtls:dns:agent.example.org", Kind: "mtls", Cert: &CertInfo{
			DNSNames: []string{"agent.example.org"}, SHA256: certSHA256(f.certs["dns"])}}},
		{name: "CN only", cert: "cn", want: &Principal{ID: "mtls:cn:agent-cn", Kind: "mtls", Cert: &CertInfo{
			Subject: "CN=agent-cn", SHA256: certSHA256(f.certs["cn"])}}},
		{name: "expired", cert: "expired", reason: "is after"}, // x509: ... current time T is after NotAfter
		{name: "not yet valid", cert: "not yet valid", reason: "is before"},
		{name: "no clientAuth EKU", cert: "server auth only", reason: "x509: certificate specifies an incompatible key usage"},
		{name: "unknown CA", cert: "unknown CA", reason: "x509: certificate signed by unknown authority"},
		{name: "revoked", cert: "revoked", reason: `client certificate "CN=revoked" serial ` + f.certs["revoked"].Leaf.SerialNumber.String() + " is revoked"},
		{name: "no certificate", reason: "client didn't provide a certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serveTLS(t, tc) // its own log: the reason is this case's
			c := f.client(t, tt.cert, nil)
			if tt.reason != "" {
				srv.expectRefused(t, c, tt.reason)
				return
			}
			st := srv.expectOK(t, c).tls
			if st == nil || len(st.VerifiedChains) == 0 {
				t.Fatal("handler saw no verified chain")
			}
			got, err := ids.Identify(st.VerifiedChains[0])
			if err != nil {
				t.Fatalf("identify: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("principal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTLSClientAuthModes(t *testing.T) {
	f := newMTLSFixture(t)
	tests := []struct {
		name       string
		clientAuth string
		cert       string
		reason     string // refusal reason; "" for success
		wantChains bool
	}{
		{name: "none ignores a certificate", clientAuth: "none", cert: "spiffe"},
		{name: "none without certificate", clientAuth: "none"},
		{name: "optional without certificate", clientAuth: "optional"},
		{name: "optional verifies a certificate", clientAuth: "optional", cert: "spiffe", wantChains: true},
		{name: "optional refuses unknown CA", clientAuth: "optional", cert: "unknown CA", reason: "signed by unknown authority"},
		{name: "optional refuses expired", clientAuth: "optional", cert: "expired", reason: "is after"},
		{name: "require refuses no certificate", clientAuth: "require", reason: "client didn't provide a certificate"},
		{name: "require verifies a certificate", clientAuth: "require", cert: "dns", wantChains: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.cfg
			cfg.ClientAuth = tt.clientAuth
			srv := serveTLS(t, newTestTLSConfig(t, cfg, io.Discard, f.clock.now))
			c := f.client(t, tt.cert, nil)
			if tt.reason != "" {
				srv.expectRefused(t, c, tt.reason)
				return
			}
			st := srv.expectOK(t, c).tls
			if got := len(st.VerifiedChains) > 0; got != tt.wantChains {
				t.Errorf("verified chains present = %v, want %v", got, tt.wantChains)
			}
			if !tt.wantChains && len(st.PeerCertificates) > 0 {
				t.Errorf("server holds %d unverified peer certificates", len(st.PeerCertificates))
			}
		})
	}
}

func TestTLSServesHTTP2(t *testing.T) {
	f := newMTLSFixture(t)
	srv := serveTLS(t, newTestTLSConfig(t, f.cfg, io.Discard, f.clock.now))
	c := f.client(t, "spiffe", nil)
	tr := c.Transport.(*http.Transport)
	tr.DisableKeepAlives, tr.ForceAttemptHTTP2 = false, true
	defer tr.CloseIdleConnections()
	seen := srv.expectOK(t, c)
	if seen.protoMajor != 2 || seen.tls.NegotiatedProtocol != "h2" {
		t.Errorf("protocol HTTP/%d, ALPN %q; want HTTP/2 over h2", seen.protoMajor, seen.tls.NegotiatedProtocol)
	}
}

func TestNewTLSConfig(t *testing.T) {
	f := newMTLSFixture(t)
	tests := []struct {
		clientAuth string
		want       tls.ClientAuthType
	}{
		{clientAuth: "none", want: tls.NoClientCert},
		{clientAuth: "", want: tls.NoClientCert},
		{clientAuth: "optional", want: tls.VerifyClientCertIfGiven},
		{clientAuth: "require", want: tls.RequireAndVerifyClientCert},
	}
	for _, tt := range tests {
		t.Run("client_auth "+tt.clientAuth, func(t *testing.T) {
			cfg := f.cfg
			cfg.ClientAuth = tt.clientAuth
			tc := newTestTLSConfig(t, cfg, io.Discard, nil)
			if tc.ClientAuth != tt.want {
				t.Errorf("ClientAuth = %v, want %v", tc.ClientAuth, tt.want)
			}
			if tc.MinVersion != tls.VersionTLS12 {
				t.Errorf("MinVersion = %#x, want TLS 1.2", tc.MinVersion)
			}
			if diff := cmp.Diff([]string{"h2", "http/1.1"}, tc.NextProtos); diff != "" {
				t.Errorf("NextProtos (-want +got):\n%s", diff)
			}
			if tc.ClientCAs == nil || tc.VerifyConnection != nil {
				t.Errorf("ClientCAs set = %v, VerifyConnection set = %v; want a pool and no CRL check", tc.ClientCAs != nil, tc.VerifyConnection != nil)
			}
		})
	}
}

func TestNewTLSConfigErrors(t *testing.T) {
	f := newMTLSFixture(t)
	other := f.ca.issue(t, clientTemplate("other", nil, nil))
	impostor := newTestCA(t, "ctxgate test CA", f.clock.now()) // same name, other key
	next := f.clock.now().Add(time.Hour)
	missing := filepath.Join(f.dir, "missing.pem")
	tests := []struct {
		name      string
		edit      func(c *config.TLS)
		field     string // the error's prefix
		wantInErr string
	}{
		{name: "missing cert file", edit: func(c *config.TLS) { c.CertFile = missing }, field: "server.tls.cert_file: ", wantInErr: "no such file"},
		{name: "cert file without certificate", edit: func(c *config.TLS) { c.CertFile = c.KeyFile }, field: "server.tls.cert_file: ", wantInErr: `"PRIVATE KEY"`},
		{name: "missing key file", edit: func(c *config.TLS) { c.KeyFile = missing }, field: "server.tls.key_file: ", wantInErr: "no such file"},
		{name: "key of another certificate", edit: func(c *config.TLS) { c.KeyFile = f.write(t, "other-key.pem", keyPEM(t, other)) }, field: "server.tls.key_file: ", wantInErr: "does not match"},
		{name: "missing client CA file", edit: func(c *config.TLS) { c.ClientCAFile = missing }, field: "server.tls.client_ca_file: ", wantInErr: "no such file"},
		{name: "client CA file without certificate", edit: func(c *config.TLS) { c.ClientCAFile = f.write(t, "empty-ca.pem", []byte("# no certificates here\n")) }, field: "server.tls.client_ca_file: ", wantInErr: "no PEM CERTIFICATE block"},
		{name: "client CA file holding a key", edit: func(c *config.TLS) { c.ClientCAFile = c.KeyFile }, field: "server.tls.client_ca_file: ", wantInErr: `"PRIVATE KEY"`},
		{name: "client CA file with a broken certificate", edit: func(c *config.TLS) {
			c.ClientCAFile = f.write(t, "broken-ca.pem", append(certPEM(f.ca.cert.Raw), certPEM([]byte("junk"))...))
		}, field: "server.tls.client_ca_file: ", wantInErr: "certificate 2"},
		{name: "require without client CAs", edit: func(c *config.TLS) { c.ClientCAFile = "" }, field: "server.tls.client_ca_file: ", wantInErr: "require"},
		{name: "unknown client_auth", edit: func(c *config.TLS) { c.ClientAuth = "request" }, field: "server.tls.client_auth: ", wantInErr: `"request"`},
		{name: "missing CRL", edit: func(c *config.TLS) { c.CRLFile = missing }, field: "server.tls.crl_file: ", wantInErr: "no such file"},
		{name: "garbage CRL", edit: func(c *config.TLS) { c.CRLFile = f.write(t, "garbage.crl", []byte("not a CRL")) }, field: "server.tls.crl_file: ", wantInErr: "x509"},
		{name: "CRL file holding a certificate", edit: func(c *config.TLS) { c.CRLFile = c.ClientCAFile }, field: "server.tls.crl_file: ", wantInErr: `"CERTIFICATE"`},
		{name: "CRL from an unknown CA", edit: func(c *config.TLS) { c.CRLFile = f.write(t, "unknown.crl", f.unknown.crl(t, 1, next)) }, field: "server.tls.crl_file: ", wantInErr: "not a CA in server.tls.client_ca_file"},
		{name: "CRL with a forged signature", edit: func(c *config.TLS) { c.CRLFile = f.write(t, "forged.crl", impostor.crl(t, 1, next)) }, field: "server.tls.crl_file: ", wantInErr: "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.cfg
			tt.edit(&cfg)
			_, err := NewTLSConfig(&cfg, nil, nil)
			if err == nil {
				t.Fatal("NewTLSConfig succeeded, want an error")
			}
			if !strings.HasPrefix(err.Error(), tt.field) || !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q; want prefix %q containing %q", err, tt.field, tt.wantInErr)
			}
		})
	}
}

func TestCRLEncodings(t *testing.T) {
	f := newMTLSFixture(t)
	crl := f.ca.crl(t, 1, f.clock.now().Add(time.Hour), f.certs["revoked"])
	block, _ := pem.Decode(crl)
	for name, data := range map[string][]byte{"PEM": crl, "DER": block.Bytes} {
		t.Run(name, func(t *testing.T) {
			cfg := f.cfg
			cfg.CRLFile = f.write(t, "crl."+name, data)
			srv := serveTLS(t, newTestTLSConfig(t, cfg, io.Discard, f.clock.now))
			srv.expectRefused(t, f.client(t, "revoked", nil), "is revoked")
			srv.expectOK(t, f.client(t, "cn", nil))
		})
	}
}

func TestCRLReload(t *testing.T) {
	f := newMTLSFixture(t)
	next := f.clock.now().Add(time.Hour)
	cfg := f.cfg
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, next))
	logs := &syncBuffer{}
	srv := serveTLS(t, newTestTLSConfig(t, cfg, logs, f.clock.now))
	revoked := f.client(t, "revoked", nil)

	srv.expectOK(t, revoked) // CRL 1 is empty
	f.write(t, "crl.pem", f.ca.crl(t, 2, next, f.certs["revoked"]))
	srv.expectOK(t, revoked) // the file is not looked at again within a second

	f.clock.add(crlRecheck)
	srv.expectRefused(t, revoked, "is revoked by server.tls.crl_file (CRL number 2)")
	srv.expectOK(t, f.client(t, "spiffe", nil))

	f.write(t, "crl.pem", []byte("-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n"))
	f.clock.add(crlRecheck)
	srv.expectRefused(t, revoked, "(CRL number 2)") // the previous list is kept
	f.clock.add(crlRecheck)
	srv.expectRefused(t, revoked, "(CRL number 2)")
	const failed = "server.tls.crl_file reload failed: keeping the previous revocation list"
	if n := strings.Count(logs.String(), failed); n != 1 {
		t.Errorf("log has %d lines %q, want 1 (once per change); log:\n%s", n, failed, logs)
	}

	f.write(t, "crl.pem", f.ca.crl(t, 3, next))
	f.clock.add(crlRecheck)
	srv.expectOK(t, revoked) // a good file after a bad one is loaded
	if !strings.Contains(logs.String(), "crl_number=3") {
		t.Errorf("no reload of CRL 3 logged; log:\n%s", logs)
	}
}

// TestCRLPastNextUpdate: within crl_grace past its nextUpdate the CRL is
// still enforced and nobody else is refused (a late publisher is not an
// outage); past the grace every client certificate is refused (the list
// may lack revocations) until a fresh CRL is published.
func TestCRLPastNextUpdate(t *testing.T) {
	f := newMTLSFixture(t)
	cfg := f.cfg
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, f.clock.now().Add(time.Hour), f.certs["revoked"]))
	cfg.CRLGrace = 30 * time.Minute
	logs := &syncBuffer{}
	srv := serveTLS(t, newTestTLSConfig(t, cfg, logs, f.clock.now))
	const stale, expired = "server.tls.crl_file is past its next update: still enforcing", "past its next update plus crl_grace: refusing every client certificate"

	f.clock.add(80 * time.Minute) // past nextUpdate, within the grace
	srv.expectRefused(t, f.client(t, "revoked", nil), "is revoked")
	srv.expectOK(t, f.client(t, "spiffe", nil))
	f.clock.add(crlRecheck)
	srv.expectOK(t, f.client(t, "cn", nil))
	if n := strings.Count(logs.String(), stale); n != 1 {
		t.Errorf("log has %d warnings %q, want 1; log:\n%s", n, stale, logs)
	}

	f.clock.add(20 * time.Minute) // past the grace: fail closed
	srv.expectRefused(t, f.client(t, "spiffe", nil), "plus crl_grace 30m0s: client certificates are refused until a fresh CRL is published")
	f.clock.add(crlRecheck)
	srv.expectRefused(t, f.client(t, "cn", nil), "plus crl_grace")
	if n := strings.Count(logs.String(), expired); n != 1 {
		t.Errorf("log has %d errors %q, want 1; log:\n%s", n, expired, logs)
	}

	f.ca.now = f.clock.now() // a fresh CRL, issued now
	f.write(t, "crl.pem", f.ca.crl(t, 2, f.clock.now().Add(time.Hour), f.certs["revoked"]))
	f.clock.add(crlRecheck)
	srv.expectOK(t, f.client(t, "spiffe", nil))
	srv.expectRefused(t, f.client(t, "revoked", nil), "(CRL number 2)")
}

// TestCRLRollback: a reloaded CRL older than the loaded one (a lower CRL
// number, or an earlier thisUpdate) is refused, so putting back an earlier
// list cannot un-revoke a certificate; the loaded list stays in force.
func TestCRLRollback(t *testing.T) {
	f := newMTLSFixture(t)
	next := f.clock.now().Add(24 * time.Hour)
	cfg := f.cfg
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, next))
	logs := &syncBuffer{}
	srv := serveTLS(t, newTestTLSConfig(t, cfg, logs, f.clock.now))
	revoked := f.client(t, "revoked", nil)
	emptyCRL1 := f.ca.crl(t, 1, next)

	f.write(t, "crl.pem", f.ca.crl(t, 5, next, f.certs["revoked"]))
	f.clock.add(crlRecheck)
	srv.expectRefused(t, revoked, "(CRL number 5)")

	f.write(t, "crl.pem", emptyCRL1) // the earlier list, validly signed
	f.clock.add(crlRecheck)
	srv.expectRefused(t, revoked, "(CRL number 5)")
	waitFor(t, logs, "CRL number 1 is lower than the loaded 5: refusing a rollback")

	f.ca.now = f.ca.now.Add(-time.Hour) // same number, issued earlier
	f.write(t, "crl.pem", f.ca.crl(t, 5, next))
	f.clock.add(crlRecheck)
	srv.expectRefused(t, revoked, "(CRL number 5)")
	waitFor(t, logs, "is earlier than the loaded list's")

	f.ca.now = f.ca.now.Add(2 * time.Hour)
	f.write(t, "crl.pem", f.ca.crl(t, 6, next))
	f.clock.add(crlRecheck)
	srv.expectOK(t, revoked) // a newer list that lifts the revocation is the CA's word
}

func TestCRLAppliesToResumedSessions(t *testing.T) {
	f := newMTLSFixture(t)
	next := f.clock.now().Add(time.Hour)
	cfg := f.cfg
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, next))
	srv := serveTLS(t, newTestTLSConfig(t, cfg, io.Discard, f.clock.now))
	c := f.client(t, "revoked", tls.NewLRUClientSessionCache(4))

	srv.expectOK(t, c)
	if st := srv.expectOK(t, c).tls; !st.DidResume {
		t.Fatal("second connection did not resume its session; the test cannot show the CRL applies to resumption")
	}
	f.write(t, "crl.pem", f.ca.crl(t, 2, next, f.certs["revoked"]))
	f.clock.add(crlRecheck)
	srv.expectRefused(t, c, "is revoked")
}

func TestIdentify(t *testing.T) {
	f := newMTLSFixture(t)
	type cert struct {
		leaf *x509.Certificate
		info *CertInfo
	}
	issue := func(cn string, uris, dns []string) cert {
		c := f.ca.issue(t, clientTemplate(cn, uris, dns))
		info := &CertInfo{URIs: uris, DNSNames: dns, SHA256: certSHA256(c)}
		if cn != "" {
			info.Subject = "CN=" + cn
		}
		return cert{leaf: c.Leaf, info: info}
	}
	all := issue("agent", []string{"https://example.org/agent", "spiffe://example.org/ns/prod/sa/agent"}, []string{"agent.example.org", "alt.example.org"})
	dnsCN := issue("agent", nil, []string{"agent.example.org"})
	httpsCN := issue("web", []string{"https://example.org/web"}, nil)
	nothing := issue("", nil, nil)
	badSPIFFE := issue("agent", []string{"spiffe://example.org/agent?x=1"}, nil)
	noTrustDomain := issue("agent", []string{"spiffe:///agent"}, nil)
	tests := []struct {
		name   string
		order  []string // nil: the default
		cert   cert
		wantID string // "" wants an error
	}{
		{name: "default order prefers SPIFFE", cert: all, wantID: "mtls:spiffe://example.org/ns/prod/sa/agent"},
		{name: "spiffe dns cn", order: []string{"spiffe", "dns", "cn"}, cert: all, wantID: "mtls:spiffe://example.org/ns/prod/sa/agent"},
		{name: "cn only", order: []string{"cn"}, cert: all, wantID: "mtls:cn:agent"},
		{name: "dns only takes the first DNS SAN", order: []string{"dns"}, cert: all, wantID: "mtls:dns:agent.example.org"},
		{name: "dns before spiffe", order: []string{"dns", "spiffe"}, cert: all, wantID: "mtls:dns:agent.example.org"},
		{name: "falls through to dns", cert: dnsCN, wantID: "mtls:dns:agent.example.org"},
		{name: "spiffe only, none present", order: []string{"spiffe"}, cert: dnsCN},
		{name: "non-SPIFFE URI is not an identity", order: []string{"spiffe", "cn"}, cert: httpsCN, wantID: "mtls:cn:web"},
		{name: "no name of any kind", cert: nothing},
		{name: "malformed SPIFFE ID is refused, not skipped", order: []string{"spiffe", "cn"}, cert: badSPIFFE},
		{name: "SPIFFE ID without trust domain", cert: noTrustDomain},
		{name: "malformed SPIFFE ID not consulted", order: []string{"dns", "cn"}, cert: badSPIFFE, wantID: "mtls:cn:agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NewCertIdentity(&config.MTLS{Identity: tt.order}).Identify([]*x509.Certificate{tt.cert.leaf, f.ca.cert})
			if tt.wantID == "" {
				if err == nil {
					t.Fatalf("identify = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("identify: %v", err)
			}
			want := &Principal{ID: tt.wantID, Kind: "mtls", Cert: tt.cert.info}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("principal (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := NewCertIdentity(nil).Identify(nil); err == nil {
		t.Error("identify(empty chain) succeeded, want an error")
	}
	// auth.mtls.groups: the subject's OU and O values become groups.
	tmpl := clientTemplate("svc", nil, nil)
	tmpl.Subject.OrganizationalUnit = []string{"payments", "oncall"}
	tmpl.Subject.Organization = []string{"Example Corp"}
	leaf, err := x509.ParseCertificate(f.ca.issue(t, tmpl).Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := NewCertIdentity(&config.MTLS{Identity: []string{"cn"}, Groups: []string{"ou", "o"}}).Identify([]*x509.Certificate{leaf, f.ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	// (A DER SET of attributes is sorted: oncall before payments.)
	if diff := cmp.Diff([]string{"oncall", "payments", "Example Corp"}, got.Groups); diff != "" {
		t.Errorf("groups from the certificate (-want +got):\n%s", diff)
	}
}

func TestCRLRevokesOnlyItsIssuersCertificates(t *testing.T) {
	f := newMTLSFixture(t)
	second := newTestCA(t, "second test CA", f.clock.now())
	revoked := f.certs["revoked"]
	twin := clientTemplate("twin", nil, nil)
	twin.SerialNumber = revoked.Leaf.SerialNumber // same serial, other issuer
	f.certs["twin"] = second.issue(t, twin)
	cfg := f.cfg
	cfg.ClientCAFile = f.write(t, "cas.pem", append(certPEM(f.ca.cert.Raw), certPEM(second.cert.Raw)...))
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, f.clock.now().Add(time.Hour), revoked))
	srv := serveTLS(t, newTestTLSConfig(t, cfg, io.Discard, f.clock.now))
	srv.expectRefused(t, f.client(t, "revoked", nil), "is revoked")
	srv.expectOK(t, f.client(t, "twin", nil))
}

func TestTLSChecksValidityWithInjectedClock(t *testing.T) {
	f := newMTLSFixture(t)
	srv := serveTLS(t, newTestTLSConfig(t, f.cfg, io.Discard, f.clock.now))
	c := f.client(t, "spiffe", nil)
	srv.expectOK(t, c)
	f.clock.add(25 * time.Hour) // past the certificate's NotAfter
	srv.expectRefused(t, c, "is after")
}

// TestCRLExpiredAtStart: a CRL already past nextUpdate plus crl_grace when
// the gateway starts does not stop it (clients without a certificate are
// still served) but refuses every client certificate.
func TestCRLExpiredAtStart(t *testing.T) {
	f := newMTLSFixture(t)
	cfg := f.cfg
	cfg.ClientAuth = "optional"
	f.ca.now = f.clock.now().Add(-24 * time.Hour) // issued a day ago, due two hours ago
	cfg.CRLFile = f.write(t, "crl.pem", f.ca.crl(t, 1, f.clock.now().Add(-2*time.Hour)))
	cfg.CRLGrace = time.Hour
	logs := &syncBuffer{}
	srv := serveTLS(t, newTestTLSConfig(t, cfg, logs, f.clock.now))
	srv.expectRefused(t, f.client(t, "spiffe", nil), "plus crl_grace 1h0m0s")
	srv.expectOK(t, f.client(t, "", nil))
	if !strings.Contains(logs.String(), "past its next update plus crl_grace") {
		t.Errorf("no error logged for the expired CRL; log:\n%s", logs)
	}
}
