package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// HTTP/2 attacks, on a TLS listener (the only one that offers h2): the
// rapid reset (CVE-2023-44487) and the CONTINUATION flood (CVE-2023-45288).
// Both are mitigated in Go's HTTP/2 server; these tests hold the gateway to
// it: its goroutines stay bounded, the flooding connection is closed, and
// other clients are served meanwhile.

// h2Gateway is a TLS gateway and a client that trusts it.
type h2Gateway struct {
	gw     *gatewayProc
	addr   string
	client *http.Client
	roots  *x509.CertPool
}

func startH2Gateway(t *testing.T) *h2Gateway {
	t.Helper()
	pki := newTestPKI(t)
	pki.issue(t, "server", &x509.Certificate{
		Subject: pkix.Name{CommonName: "ctxgate"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	})
	rec := startRecorder(t, startEverything(t))
	gw := startGateway(t, fmt.Sprintf(`
server:
  listen: "127.0.0.1:0"
  tls: {cert_file: %q, key_file: %q}
admin: {listen: "127.0.0.1:0"}
`+policyConfig()+`auth: {anonymous: true}
upstreams:
  - {name: everything, url: %q}
`, pki.path("server.crt"), pki.path("server.key"), rec.URL))
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	return &h2Gateway{gw: gw, addr: strings.TrimPrefix(gw.URL, "http://"), client: pki.client(t, ""), roots: roots}
}

// goroutines reads go_goroutines from the gateway's /metrics.
func (g *h2Gateway) goroutines(t *testing.T) int {
	t.Helper()
	resp, err := http.Get(g.gw.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			n, _ := strconv.ParseFloat(v, 64)
			return int(n)
		}
	}
	t.Fatal("no go_goroutines in /metrics")
	return 0
}

// responsive checks that a normal HTTP/2 client is served.
func (g *h2Gateway) responsive(t *testing.T) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx(t), http.MethodPost, "https://"+g.addr+"/mcp/everything", strings.NewReader(initializeBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatalf("a normal client beside the attack: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		t.Errorf("a normal client beside the attack: %s over %s, want 200 over HTTP/2", resp.Status, resp.Proto)
	}
}

// dial opens a raw HTTP/2 connection: TLS with ALPN h2, the preface and
// the client's SETTINGS. The server's frames are drained in the
// background; done is closed when the server ends the connection.
func (g *h2Gateway) dial(t *testing.T) (fr *http2.Framer, done chan struct{}) {
	t.Helper()
	conn, err := tls.Dial("tcp", g.addr, &tls.Config{RootCAs: g.roots, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN negotiated %q, want h2", p)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr = http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	reader := http2.NewFramer(io.Discard, conn)
	go func() {
		defer close(done)
		for {
			if _, err := reader.ReadFrame(); err != nil && !errors.Is(err, http2.ErrFrameTooLarge) {
				return
			}
		}
	}()
	return fr, done
}

// requestHeaders is the HPACK block of a POST to the route.
func (g *h2Gateway) requestHeaders() []byte {
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", g.addr}, {":path", "/mcp/everything"},
		{"content-type", "application/json"}, {"accept", "application/json, text/event-stream"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return b.Bytes()
}

// TestHTTP2RapidReset: a client opens and cancels thousands of streams
// without waiting. The gateway's goroutines stay bounded and other
// clients are served.
func TestHTTP2RapidReset(t *testing.T) {
	g := startH2Gateway(t)
	g.responsive(t)
	base := g.goroutines(t)
	fr, _ := g.dial(t)
	block := g.requestHeaders()
	peak, sent := 0, 0
	for i := range 5000 {
		id := uint32(2*i + 1)
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // the server closed the connection: a valid defence too
		}
		sent++
		if i%1000 == 999 {
			peak = max(peak, g.goroutines(t))
		}
	}
	g.responsive(t)
	t.Logf("%d streams opened and reset; goroutines: baseline %d, peak %d", sent, base, peak)
	// Bounded, not proportional to the 5,000 streams: Go's server runs at
	// most MaxConcurrentStreams (250) handlers per connection, each with a
	// few goroutines of its own (the upstream exchange) while it lasts, so
	// a loaded machine sees a few hundred. Unbounded would be thousands.
	if limit := base + 1200; peak > limit {
		t.Errorf("goroutines peaked at %d during the flood (baseline %d), want at most %d", peak, base, limit)
	}
	waitFor(t, "the gateway's goroutines to settle", 20*time.Second, func() bool { return g.goroutines(t) <= base+50 })
}

// TestHTTP2ContinuationFlood: a HEADERS frame followed by CONTINUATION
// frames that never end the header block. The server must close the
// connection once the block passes its header limit, without buffering
// the rest, and keep serving others.
func TestHTTP2ContinuationFlood(t *testing.T) {
	g := startH2Gateway(t)
	base := g.goroutines(t)
	fr, done := g.dial(t)
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: g.requestHeaders()}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := hpack.NewEncoder(&b)
	_ = enc.WriteField(hpack.HeaderField{Name: "x-flood", Value: strings.Repeat("a", 8000)})
	fragment := b.Bytes()
	sent := 0
	for sent < 64<<20 {
		if fr.WriteContinuation(1, false, fragment) != nil {
			break
		}
		sent += len(fragment)
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("after %d bytes of CONTINUATION the connection is still open", sent)
	}
	t.Logf("connection closed after %d bytes of CONTINUATION", sent)
	// The header limit is 64 KiB; what is in flight in socket buffers when
	// the server closes comes on top, but not megabytes more.
	if sent >= 16<<20 {
		t.Errorf("the server read %d bytes of one header block before closing, want it closed well before 16 MiB", sent)
	}
	g.responsive(t)
	waitFor(t, "the gateway's goroutines to settle", 20*time.Second, func() bool { return g.goroutines(t) <= base+50 })
}
