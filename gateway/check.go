package gateway

import (
	"fmt"
	"strings"

	"github.com/ctxgate/ctxgate/config"
	"github.com/ctxgate/ctxgate/identity"
	"github.com/ctxgate/ctxgate/upstream"
)

// CheckFiles reads and parses every file cfg names with the code New and
// upstream.NewPool use (server certificate and key, client CAs, CRL, pin
// files, upstream secret files), but one item at a time, so that every
// problem is reported, not only the first. It starts nothing and writes
// nothing. cfg should have passed Validate.
func CheckFiles(cfg *config.Config) []error {
	var problems []error
	if t := cfg.Server.TLS; t != nil {
		if t.CertFile != "" && t.KeyFile != "" {
			if _, err := identity.LoadServerCert(t.CertFile, t.KeyFile); err != nil {
				problems = append(problems, err)
			}
		}
		if t.ClientCAFile != "" {
			cas, err := identity.LoadClientCAs(t.ClientCAFile)
			if err != nil {
				problems = append(problems, err)
			} else if t.CRLFile != "" {
				if err := identity.CheckCRL(t.CRLFile, t.CRLGrace, cas); err != nil {
					problems = append(problems, err)
				}
			}
		}
	}
	for i, up := range cfg.Upstreams {
		one := []config.Upstream{up}
		// Both report the item as upstreams[0]: give it its own index.
		if _, err := newPinStore(one); err != nil {
			problems = append(problems, reindex(err, i))
		}
		if _, err := upstream.NewPool(one); err != nil {
			problems = append(problems, reindex(err, i))
		}
	}
	return problems
}

func reindex(err error, i int) error {
	return reindexed{strings.Replace(err.Error(), "upstreams[0]", fmt.Sprintf("upstreams[%d]", i), 1), err}
}

// reindexed is an error with its message corrected, still wrapping it.
type reindexed struct {
	msg string
	err error
}

func (e reindexed) Error() string { return e.msg }
func (e reindexed) Unwrap() error { return e.err }
