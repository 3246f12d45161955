package config

import "os/exec"

// The example's stdio upstream runs npx, which a test host need not have:
// it resolves here as if installed; every other name is looked up for real.
func init() {
	lookPath = func(name string) (string, error) {
		if name == "npx" {
			return "/usr/local/bin/npx", nil
		}
		return exec.LookPath(name)
	}
}
