package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
)

// mtlsUpstream is an https reverse proxy in front of a real MCP server
// that requires a client certificate from the test CA and records the
// common name of every certificate it accepted. Keep-alive is off, so every
// request is a new handshake and shows the certificate in use now.
type mtlsUpstream struct {
	URL  string
	mu   sync.Mutex
	seen []string
}

func startMTLSUpstream(t *testing.T, pki *testPKI, target string) *mtlsUpstream {
	t.Helper()
	pki.issue(t, "upstream", &x509.Certificate{
		Subject: pkix.Name{CommonName: "docs.internal"}, DNSNames: []string{"docs.internal"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	})
	pair, err := tls.LoadX509KeyPair(pki.path("upstream.crt"), pki.path("upstream.key"))
	if err != nil {
		t.Fatal(err)
	}
	clients := x509.NewCertPool()
	clients.AddCert(pki.ca)
	u, _ := url.Parse(target)
	rp := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = u.Host }}
	m := &mtlsUpstream{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, r.TLS.PeerCertificates[0].Subject.CommonName)
		m.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clients}
	srv.Config.SetKeepAlivesEnabled(false)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are part of the test
	srv.StartTLS()
	t.Cleanup(srv.Close)
	m.URL = srv.URL + "/"
	return m
}

func (m *mtlsUpstream) last() (string, int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.seen) == 0 {
		return "", 0
	}
	return m.seen[len(m.seen)-1], len(m.seen)
}

// TestUpstreamMTLS: the real gateway reaches an upstream that requires a
// client certificate: accepted with the gateway's certificate, verified
// against the private CA; refused without one; and a certificate rotated
// on disk is presented from the next connection on, without a restart.
func TestUpstreamMTLS(t *testing.T) {
	pki := newTestPKI(t)
	client := func(name string) {
		pki.issue(t, "gateway", &x509.Certificate{
			Subject: pkix.Name{CommonName: name}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		})
	}
	client("gateway-before-rotation")
	up := startMTLSUpstream(t, pki, startEverything(t))
	gatewayConfig := func(tlsBlock string) string {
		return fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - name: docs
    url: %q
    tls: %s
`, up.URL, tlsBlock)
	}
	gw := startGateway(t, gatewayConfig(fmt.Sprintf(`{ca_file: %q, cert_file: %q, key_file: %q, server_name: docs.internal}`,
		pki.path("ca.crt"), pki.path("gateway.crt"), pki.path("gateway.key"))))
	c := &rpc{url: gw.URL + "/mcp/docs"}
	c.initialize(t)
	if cn, _ := up.last(); cn != "gateway-before-rotation" {
		t.Fatalf("upstream saw client certificate %q, want gateway-before-rotation\n%s", cn, gw.stderr.String())
	}

	client("gateway-after-rotation")
	resp := c.post(t, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tools/list after rotation: %s %s\n%s", resp.Status, body, gw.stderr.String())
	}
	if cn, _ := up.last(); cn != "gateway-after-rotation" {
		t.Errorf("after rotation the upstream saw %q, want gateway-after-rotation", cn)
	}

	t.Run("without a client certificate", func(t *testing.T) {
		gw := startGateway(t, gatewayConfig(fmt.Sprintf(`{ca_file: %q, server_name: docs.internal}`, pki.path("ca.crt"))))
		_, before := up.last()
		resp := (&rpc{url: gw.URL + "/mcp/docs"}).post(t, initializeBody)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("initialize without a client certificate: %s, want 502", resp.Status)
		}
		if _, after := up.last(); after != before {
			t.Errorf("the upstream accepted %d requests from a gateway without a certificate", after-before)
		}
	})

	t.Run("upstream not from the private CA", func(t *testing.T) {
		other := newTestPKI(t)
		gw := startGateway(t, gatewayConfig(fmt.Sprintf(`{ca_file: %q, cert_file: %q, key_file: %q}`,
			other.path("ca.crt"), pki.path("gateway.crt"), pki.path("gateway.key"))))
		_, before := up.last()
		resp := (&rpc{url: gw.URL + "/mcp/docs"}).post(t, initializeBody)
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("initialize to an upstream outside the CA: %s, want 502", resp.Status)
		}
		if _, after := up.last(); after != before {
			t.Errorf("%d requests were sent to an unverified upstream", after-before)
		}
	})
}
