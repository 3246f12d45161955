package main

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// policyTemplate is what `ctxgate policy init` writes: a minimal,
// commented policy with the shipped policy's safety rules, and its tests.
//
//go:embed policyinit/authz.rego policyinit/authz_test.rego
var policyTemplate embed.FS

// cmdPolicyInit writes the template into dir, which may exist but must
// not hold a file of the same name: init never overwrites a policy.
func cmdPolicyInit(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("init: give the directory to write, e.g. ctxgate policy init policies")
	}
	dir := args[0]
	names, err := fs.Glob(policyTemplate, "policyinit/*.rego")
	if err != nil {
		return err
	}
	for _, name := range names {
		target := filepath.Join(dir, filepath.Base(name))
		if _, err := os.Lstat(target); err == nil {
			return fmt.Errorf("init: %s exists; choose a new directory or move it away (init never overwrites a policy)", target)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	for _, name := range names {
		data, err := policyTemplate.ReadFile(name)
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.Base(name))
		// O_EXCL: a file that appeared since the check is not overwritten.
		f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return fmt.Errorf("init: %w", err)
		}
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("init: write %s: %w", target, err)
		}
		fmt.Fprintln(stdout, "wrote", target)
	}
	fmt.Fprintf(stdout, "\nnext: ctxgate policy test %s    # run its tests\n      set policy: {dir: %s} in your configuration, then: ctxgate check --config FILE\n", dir, dir)
	return nil
}
