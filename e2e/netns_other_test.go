//go:build !linux

package e2e

import "testing"

// startInPrivateNetns needs Linux network namespaces: elsewhere it starts
// nothing and the caller falls back.
func startInPrivateNetns(*testing.T, *proc, string) (string, bool) { return "", false }
