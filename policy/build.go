package policy

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opacompile "github.com/open-policy-agent/opa/v1/compile"
)

// BuildOptions configure Build.
type BuildOptions struct {
	// Dir is the policy directory, read as Options.Dir is (tests and
	// hidden files left out).
	Dir string
	// Output receives the bundle (a gzipped tarball).
	Output io.Writer
	// Revision is the manifest revision (e.g. a git commit), reported in
	// decision logs, /readyz and status. Empty means none: the engine then
	// names the revision by a hash of the contents.
	Revision string
	// SigningKey, if set, signs the bundle: a PEM private key (or a file
	// holding one, or an HMAC secret) for SigningAlg. Empty builds an
	// unsigned bundle.
	SigningKey string
	// SigningAlg is the JWT algorithm; empty means RS256.
	SigningAlg string
	// KeyID is the kid of the signature: the name of the verifying key in
	// policy.opa.keys.
	KeyID string
}

// Build writes a bundle of a policy directory, optionally signed, with
// OPA's own compiler and signer: what `opa build -b` (and `opa sign`) make,
// so any OPA bundle service can serve it. The policy is compiled first
// (Rego v1), so a bundle that would be refused is never written.
func Build(ctx context.Context, opts BuildOptions) error {
	c := opacompile.New().
		WithRegoVersion(ast.RegoV1).
		// Relative to Dir, as Options.Dir reads it: module paths in the
		// bundle do not depend on where it was built.
		WithFS(os.DirFS(opts.Dir)).
		WithPaths(".").
		WithFilter(engineFilter).
		WithRevision(opts.Revision).
		WithOutput(opts.Output)
	if opts.SigningKey != "" {
		c = c.WithBundleSigningConfig(bundle.NewSigningConfig(opts.SigningKey, opts.SigningAlg, "")).
			WithBundleVerificationKeyID(opts.KeyID)
	}
	if err := c.Build(ctx); err != nil {
		return fmt.Errorf("build bundle of %s: %w", opts.Dir, err)
	}
	return nil
}
