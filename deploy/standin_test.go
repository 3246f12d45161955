package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// mountedPrefix is where the chart and the image mount everything the
// gateway reads: configuration, policies, TLS material and secrets.
const mountedPrefix = "/etc/ctxgate/"

// withStandIns writes cfg to a temporary file in which policy.dir is
// policies and every other path under /etc/ctxgate/ (TLS certificates and
// keys, CAs, secret files: what Kubernetes mounts from Secrets) points at a
// stand-in file of the right kind in a temporary root. `ctxgate check`
// reads and parses every file a configuration names, as serve does, and
// none of those mounts exist on the test machine.
func withStandIns(t *testing.T, cfg []byte, policies string) string {
	t.Helper()
	doc := yamlDoc(t, string(cfg))
	root := t.TempDir()
	pemCert, pemKey := standInCertificate(t)
	var walk func(n *yaml.Node, key string)
	walk = func(n *yaml.Node, key string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(n.Content[i+1], n.Content[i].Value)
			}
		case yaml.SequenceNode, yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, key)
			}
		case yaml.ScalarNode:
			if !strings.HasPrefix(n.Value, mountedPrefix) {
				return
			}
			if key == "dir" && strings.HasPrefix(n.Value, mountedPrefix+"policies") {
				n.Value = policies
				return
			}
			local := filepath.Join(root, strings.TrimPrefix(n.Value, mountedPrefix))
			if err := os.MkdirAll(filepath.Dir(local), 0o755); err != nil {
				t.Fatal(err)
			}
			data := []byte("stand-in-secret-value-0123456789abcdef\n")
			switch {
			case strings.HasSuffix(key, "key_file"):
				data = pemKey
			case strings.HasSuffix(key, "cert_file"), strings.HasSuffix(key, "ca_file"):
				data = pemCert
			}
			write(t, local, data)
			n.Value = local
		}
	}
	walk(doc, "")
	path := filepath.Join(t.TempDir(), "ctxgate.yaml")
	write(t, path, encodeYAML(t, doc))
	return path
}

// standInCertificate is a self-signed CA certificate and its key, in PEM:
// good as a server certificate and as a client CA.
func standInCertificate(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ctxgate stand-in"},
		DNSNames:              []string{"ctxgate"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}
