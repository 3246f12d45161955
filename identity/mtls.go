package identity

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/ctxgate/ctxgate/config"
)

// crlRecheck is how often, at most, a handshake looks at the CRL file for
// a change: often enough that a revocation takes effect within a second,
// rarely enough that a handshake flood is not a stat flood.
const crlRecheck = time.Second

// NewTLSConfig builds the public listener's TLS configuration: the server
// certificate, the client CAs and client_auth mode, and the CRL check.
// Every file problem is an error at start-up that names its config field.
// cfg must not be nil; an empty ClientAuth means none. A nil log discards;
// a nil now is time.Now. now is also the clock client certificates'
// validity (and session ticket age) is checked against.
func NewTLSConfig(cfg *config.TLS, log *slog.Logger, now func() time.Time) (*tls.Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	cert, err := LoadServerCert(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		Time:         now,
	}
	if tc.ClientAuth, err = clientAuthType(cfg.ClientAuth); err != nil {
		return nil, err
	}
	var cas []*x509.Certificate
	if cfg.ClientCAFile != "" {
		if cas, err = LoadClientCAs(cfg.ClientCAFile); err != nil {
			return nil, err
		}
		tc.ClientCAs = x509.NewCertPool()
		for _, ca := range cas {
			tc.ClientCAs.AddCert(ca)
		}
	} else if tc.ClientAuth != tls.NoClientCert {
		// Without ClientCAs crypto/tls verifies client certificates against
		// the system roots: any public CA's customer would get in.
		return nil, fmt.Errorf("server.tls.client_ca_file: required when client_auth is %s", cfg.ClientAuth)
	}
	if cfg.CRLFile != "" {
		w, err := newCRLWatcher(cfg.CRLFile, cfg.CRLGrace, cas, log, now)
		if err != nil {
			return nil, err
		}
		// VerifyConnection, not VerifyPeerCertificate: it also runs on
		// resumed sessions, so a revoked certificate cannot ride a ticket
		// issued before its revocation.
		tc.VerifyConnection = w.verifyConnection
	}
	return tc, nil
}

func clientAuthType(mode string) (tls.ClientAuthType, error) {
	switch mode {
	case "none", "":
		return tls.NoClientCert, nil
	case "optional":
		// A presented certificate is verified; a bad one fails the
		// handshake rather than being ignored.
		return tls.VerifyClientCertIfGiven, nil
	case "require":
		return tls.RequireAndVerifyClientCert, nil
	}
	return 0, fmt.Errorf("server.tls.client_auth: %q must be none, optional or require", mode)
}

// LoadServerCert reads the certificate chain and its key, attributing each
// problem to the field that holds it.
func LoadServerCert(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server.tls.cert_file: %w", err)
	}
	if _, err := parseCertificates(certPEM); err != nil {
		return tls.Certificate{}, fmt.Errorf("server.tls.cert_file: %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server.tls.key_file: %w", err)
	}
	// The certificates parsed, so what remains is the key: unreadable, or
	// not the private half of cert_file's first certificate.
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server.tls.key_file: %s (for cert_file %s): %w", keyFile, certFile, err)
	}
	return cert, nil
}

// LoadClientCAs parses the client CA bundle strictly: every PEM block must
// be a certificate that parses, and there must be at least one.
func LoadClientCAs(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("server.tls.client_ca_file: %w", err)
	}
	cas, err := parseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("server.tls.client_ca_file: %s: %w", path, err)
	}
	return cas, nil
}

// parseCertificates returns every CERTIFICATE block of a PEM bundle. Text
// between blocks (bundle comments) is allowed; any other block type, a
// certificate that does not parse, or no certificate at all is an error,
// where x509.CertPool.AppendCertsFromPEM would skip them silently.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q, want CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM CERTIFICATE block")
	}
	return certs, nil
}

// crlWatcher enforces a CRL file and re-reads it when it changes. A reload
// that fails keeps the previous list: failing open would admit revoked
// certificates, and failing every handshake would turn a bad file into an
// outage. So does a reload older than the loaded list (rollback). A list
// past its nextUpdate plus grace fails closed: it may miss revocations.
type crlWatcher struct {
	path  string
	grace time.Duration       // past nextUpdate, how long the list is still trusted
	cas   []*x509.Certificate // the client CAs a CRL must be signed by
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	list    *revocationList
	modTime time.Time // of the file last read, good or bad
	size    int64
	checked time.Time // when the file was last looked at
	warned  bool      // the current list's staleness has been logged
	expired bool      // the current list is past nextUpdate + grace
}

// revocationList is a parsed and verified CRL.
type revocationList struct {
	issuer     []byte // the CA's raw subject
	serials    map[string]bool
	number     string   // the CRL number, for logs
	num        *big.Int // the CRL number; nil: the CRL has none
	thisUpdate time.Time
	nextUpdate time.Time
}

// CheckCRL reads and checks the CRL file at path as NewTLSConfig would
// (issued by one of cas, parseable, not past its next update plus grace at
// start-up), without watching it. It is for "ctxgate check".
func CheckCRL(path string, grace time.Duration, cas []*x509.Certificate) error {
	_, err := newCRLWatcher(path, grace, cas, slog.New(slog.DiscardHandler), time.Now)
	return err
}

func newCRLWatcher(path string, grace time.Duration, cas []*x509.Certificate, log *slog.Logger, now func() time.Time) (*crlWatcher, error) {
	w := &crlWatcher{path: path, grace: grace, cas: cas, log: log, now: now, checked: now()}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("server.tls.crl_file: %w", err)
	}
	if w.list, err = w.read(); err != nil {
		return nil, fmt.Errorf("server.tls.crl_file: %s: %w", path, err)
	}
	w.modTime, w.size = fi.ModTime(), fi.Size()
	w.warnIfStale(w.checked)
	return w, nil
}

// verifyConnection refuses a handshake whose verified chains hold a
// certificate the CRL revokes. Without verified chains (no certificate, or
// client_auth none) there is nothing to check.
func (w *crlWatcher) verifyConnection(cs tls.ConnectionState) error {
	if len(cs.VerifiedChains) == 0 {
		return nil
	}
	list, expired := w.current()
	if expired {
		// Fail closed: a list this old may lack revocations published since.
		return fmt.Errorf("server.tls.crl_file (CRL number %s) is past its next update %s plus crl_grace %s: client certificates are refused until a fresh CRL is published",
			list.number, list.nextUpdate.UTC().Format(time.RFC3339), w.grace)
	}
	for _, chain := range cs.VerifiedChains {
		// The last certificate is the trust anchor itself; it is not
		// revoked by its own CRL.
		for _, c := range chain[:len(chain)-1] {
			if list.revokes(c) {
				return fmt.Errorf("client certificate %q serial %s is revoked by server.tls.crl_file (CRL number %s)",
					c.Subject, c.SerialNumber, list.number)
			}
		}
	}
	return nil
}

func (l *revocationList) revokes(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, l.issuer) && l.serials[c.SerialNumber.String()]
}

// current returns the list to enforce, and whether it is past nextUpdate
// plus grace, first re-reading the file if it changed and the last look
// was at least crlRecheck ago.
func (w *crlWatcher) current() (*revocationList, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := w.now()
	if now.Sub(w.checked) < crlRecheck {
		return w.list, w.expired
	}
	w.checked = now
	w.reloadIfChanged()
	w.warnIfStale(now)
	return w.list, w.expired
}

func (w *crlWatcher) reloadIfChanged() {
	fi, err := os.Stat(w.path)
	if err != nil {
		if !w.modTime.IsZero() {
			w.log.Error("server.tls.crl_file unreadable: keeping the previous revocation list", "path", w.path, "error", err)
			w.modTime = time.Time{} // log once until the file is back
		}
		return
	}
	if fi.ModTime().Equal(w.modTime) && fi.Size() == w.size {
		return
	}
	// Record the file as seen even if it is bad, so a bad file is logged
	// once per change, not once per second.
	w.modTime, w.size = fi.ModTime(), fi.Size()
	list, err := w.read()
	if err == nil {
		err = w.list.rollback(list)
	}
	if err != nil {
		w.log.Error("server.tls.crl_file reload failed: keeping the previous revocation list", "path", w.path, "error", err)
		return
	}
	w.list, w.warned, w.expired = list, false, false
	w.log.Info("server.tls.crl_file reloaded", "path", w.path, "crl_number", list.number, "revoked", len(list.serials))
}

// warnIfStale logs, once per list, that the CRL is past its NextUpdate,
// and marks it expired once crl_grace has passed too. Within the grace it
// is still enforced, so a CRL publisher a little late is not an outage;
// after it every client certificate is refused, since the list may lack
// revocations. A CRL without nextUpdate (RFC 5280 requires one) never
// expires.
func (w *crlWatcher) warnIfStale(now time.Time) {
	next := w.list.nextUpdate
	if next.IsZero() || !now.After(next) {
		return
	}
	if !w.warned {
		w.warned = true
		w.log.Warn("server.tls.crl_file is past its next update: still enforcing it within crl_grace; publish a fresh CRL",
			"path", w.path, "crl_number", w.list.number, "next_update", next, "crl_grace", w.grace)
	}
	if !w.expired && now.After(next.Add(w.grace)) {
		w.expired = true
		w.log.Error("server.tls.crl_file is past its next update plus crl_grace: refusing every client certificate until a fresh CRL is published",
			"path", w.path, "crl_number", w.list.number, "next_update", next, "crl_grace", w.grace)
	}
}

// rollback refuses next when it is older than l: a lower CRL number, or
// (between lists without numbers) an earlier thisUpdate. An attacker (or
// a stale mirror) that can write the file could otherwise un-revoke a
// certificate by putting back an earlier CRL (RFC 5280 section 5.2.3: CRL
// numbers increase).
func (l *revocationList) rollback(next *revocationList) error {
	switch {
	case !bytes.Equal(l.issuer, next.issuer):
		// The file holds one CA's list: another CA's would leave the
		// first CA's certificates unchecked. A CA change is a restart.
		return errors.New("the new CRL is from another CA than the loaded one: restart the gateway to switch CAs")
	case l.num != nil && next.num == nil:
		return fmt.Errorf("the new CRL has no CRL number, the loaded one has %s: refusing a possible rollback", l.number)
	case l.num != nil && next.num.Cmp(l.num) < 0:
		return fmt.Errorf("CRL number %s is lower than the loaded %s: refusing a rollback", next.number, l.number)
	case next.thisUpdate.Before(l.thisUpdate):
		return fmt.Errorf("CRL thisUpdate %s is earlier than the loaded list's %s: refusing a rollback",
			next.thisUpdate.UTC().Format(time.RFC3339), l.thisUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// read parses the CRL file (PEM "X509 CRL" or DER) and verifies it was
// signed by a client CA.
func (w *crlWatcher) read() (*revocationList, error) {
	data, err := os.ReadFile(w.path)
	if err != nil {
		return nil, err
	}
	der := data
	if block, _ := pem.Decode(data); block != nil {
		if block.Type != "X509 CRL" {
			return nil, fmt.Errorf("unexpected PEM block %q, want X509 CRL", block.Type)
		}
		der = block.Bytes
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, err
	}
	if err := w.checkIssuer(crl); err != nil {
		return nil, err
	}
	list := &revocationList{issuer: crl.RawIssuer, serials: map[string]bool{}, number: "none", thisUpdate: crl.ThisUpdate, nextUpdate: crl.NextUpdate}
	if crl.Number != nil {
		list.number, list.num = crl.Number.String(), crl.Number
	}
	for _, e := range crl.RevokedCertificateEntries {
		list.serials[e.SerialNumber.String()] = true
	}
	return list, nil
}

// checkIssuer accepts a CRL only with a valid signature of a client CA of
// its issuer's name: a list the CA did not sign is not the CA's word, and a
// CRL from the wrong CA would leave its certificates unchecked.
func (w *crlWatcher) checkIssuer(crl *x509.RevocationList) error {
	var lastErr error
	for _, ca := range w.cas {
		if !bytes.Equal(ca.RawSubject, crl.RawIssuer) {
			continue
		}
		if lastErr = crl.CheckSignatureFrom(ca); lastErr == nil {
			return nil
		}
	}
	if lastErr != nil {
		return fmt.Errorf("signature does not verify with client CA %q: %w", crl.Issuer, lastErr)
	}
	return fmt.Errorf("issuer %q is not a CA in server.tls.client_ca_file", crl.Issuer)
}

// CertIdentity names principals from verified client certificates. It
// implements CertIdentifier; the zero value names no one (use
// NewCertIdentity).
type CertIdentity struct {
	order  []string // of "spiffe", "dns", "cn"
	groups []string // of "ou", "o": subject fields that become groups
}

var _ CertIdentifier = (*CertIdentity)(nil)

// NewCertIdentity returns the identifier for cfg. A nil cfg or an empty
// Identity means the default order: spiffe, dns, cn.
func NewCertIdentity(cfg *config.MTLS) *CertIdentity {
	if cfg == nil || len(cfg.Identity) == 0 {
		return &CertIdentity{order: []string{"spiffe", "dns", "cn"}}
	}
	return &CertIdentity{order: slices.Clone(cfg.Identity), groups: slices.Clone(cfg.Groups)}
}

// Identify names the principal of a chain that crypto/tls has verified, by
// its leaf: the first kind in the configured order that the leaf has.
func (c *CertIdentity) Identify(chain []*x509.Certificate) (*Principal, error) {
	if len(chain) == 0 {
		return nil, errors.New("empty certificate chain")
	}
	leaf := chain[0]
	for _, kind := range c.order {
		id, err := leafID(leaf, kind)
		if err != nil {
			return nil, err
		}
		if id != "" {
			return &Principal{ID: id, Kind: "mtls", Cert: certInfo(leaf), Groups: c.certGroups(leaf)}, nil
		}
	}
	return nil, fmt.Errorf("client certificate %q has no name of the kinds %v (auth.mtls.identity)", leaf.Subject, c.order)
}

// certGroups are the values of the configured subject fields of a leaf
// the CA signed: what the CA vouches for, like a token's groups claim.
func (c *CertIdentity) certGroups(leaf *x509.Certificate) []string {
	var out []string
	for _, f := range c.groups {
		switch f {
		case "ou":
			out = append(out, leaf.Subject.OrganizationalUnit...)
		case "o":
			out = append(out, leaf.Subject.Organization...)
		}
	}
	return out
}

// leafID returns the principal id of the given kind, or "" if the leaf has
// no name of that kind.
func leafID(leaf *x509.Certificate, kind string) (string, error) {
	switch kind {
	case "spiffe":
		for _, u := range leaf.URIs {
			if u.Scheme != "spiffe" {
				continue
			}
			// A malformed SPIFFE ID is refused, not skipped: falling
			// through to a DNS name or CN would silently name a different
			// principal than the CA meant.
			if err := checkSPIFFEID(u); err != nil {
				return "", err
			}
			return "mtls:" + u.String(), nil
		}
	case "dns":
		if len(leaf.DNSNames) > 0 && leaf.DNSNames[0] != "" {
			return "mtls:dns:" + leaf.DNSNames[0], nil
		}
	case "cn":
		if leaf.Subject.CommonName != "" {
			return "mtls:cn:" + leaf.Subject.CommonName, nil
		}
	}
	return "", nil
}

// checkSPIFFEID applies the SPIFFE ID rules (SPIFFE-ID spec, section 2): a
// trust domain and nothing but a path after it.
func checkSPIFFEID(u *url.URL) error {
	if u.Host == "" || u.User != nil || u.Port() != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("malformed SPIFFE ID %q: want spiffe://<trust domain>/<path>", u)
	}
	return nil
}

func certInfo(leaf *x509.Certificate) *CertInfo {
	sum := sha256.Sum256(leaf.Raw)
	info := &CertInfo{
		Subject:  leaf.Subject.String(),
		DNSNames: slices.Clone(leaf.DNSNames),
		SHA256:   hex.EncodeToString(sum[:]),
	}
	for _, u := range leaf.URIs {
		info.URIs = append(info.URIs, u.String())
	}
	return info
}
