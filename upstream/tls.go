package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/ctxgate/ctxgate/config"
)

// newTLSConfig builds the client TLS configuration of an upstream with a
// tls block. The client certificate and the CA bundle are read now (so a
// missing or bad file fails start-up) and again whenever one of the files
// changes: each handshake stats them, which is cheap next to a handshake,
// and a rotated certificate is used from the next connection on.
func newTLSConfig(c *config.UpstreamTLS) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.MinVersion == "1.3" {
		cfg.MinVersion = tls.VersionTLS13
	}
	if c.CertFile != "" {
		pair := &certFiles{certFile: c.CertFile, keyFile: c.KeyFile}
		if _, err := pair.get(); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return pair.get() }
	}
	if c.CAFile != "" {
		roots := &caFile{path: c.CAFile}
		if _, err := roots.get(); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		// Verification is done by VerifyConnection against the current CA
		// bundle: crypto/tls reads RootCAs only once. InsecureSkipVerify
		// only turns off the built-in check; VerifyConnection runs on
		// every handshake, resumed ones included, and fails closed.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyPeer(cs, roots) }
	}
	return cfg, nil
}

// verifyPeer is the standard chain and name check, against the CA bundle
// as it is now. cs.ServerName is the configured server_name or the URL's
// host (an IP address is checked against the certificate's IP SANs).
func verifyPeer(cs tls.ConnectionState, roots *caFile) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("upstream presented no certificate")
	}
	pool, err := roots.get()
	if err != nil {
		return err
	}
	opts := x509.VerifyOptions{DNSName: cs.ServerName, Roots: pool, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verify upstream certificate: %w", err)
	}
	return nil
}

// stamp identifies a version of a file cheaply.
type stamp struct {
	mod  time.Time
	size int64
}

func (s stamp) equal(o stamp) bool { return s.mod.Equal(o.mod) && s.size == o.size }

func stat(path string) (stamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return stamp{}, err
	}
	return stamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

// certFiles is a certificate and key pair, reloaded when either changes.
// A pair that does not load (a rotation half written: new certificate, old
// key) leaves the last good pair in use; the next handshake tries again.
type certFiles struct {
	certFile, keyFile string
	mu                sync.Mutex
	cert              *tls.Certificate
	certStamp         stamp
	keyStamp          stamp
}

func (p *certFiles) get() (*tls.Certificate, error) {
	cs, err1 := stat(p.certFile)
	ks, err2 := stat(p.keyFile)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cert != nil && (err1 != nil || err2 != nil || cs.equal(p.certStamp) && ks.equal(p.keyStamp)) {
		return p.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(p.certFile, p.keyFile)
	if err != nil {
		if p.cert != nil {
			return p.cert, nil
		}
		return nil, fmt.Errorf("load client certificate %s: %w", p.certFile, err)
	}
	p.cert, p.certStamp, p.keyStamp = &cert, cs, ks
	return p.cert, nil
}

// caFile is a PEM CA bundle, reloaded when it changes. A bundle that no
// longer parses keeps the last good one, as for certFiles.
type caFile struct {
	path  string
	mu    sync.Mutex
	pool  *x509.CertPool
	stamp stamp
}

func (c *caFile) get() (*x509.CertPool, error) {
	st, statErr := stat(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pool != nil && (statErr != nil || st.equal(c.stamp)) {
		return c.pool, nil
	}
	pem, err := os.ReadFile(c.path)
	pool := x509.NewCertPool()
	if err == nil && !pool.AppendCertsFromPEM(pem) {
		err = errors.New("no PEM certificate in it")
	}
	if err != nil {
		if c.pool != nil {
			return c.pool, nil
		}
		return nil, fmt.Errorf("load CA file %s: %w", c.path, err)
	}
	c.pool, c.stamp = pool, st
	return c.pool, nil
}
