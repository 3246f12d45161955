package config

import (
	"os/exec"
	"os/user"
)

// The example's stdio upstream runs npx as ctxgate-mcp, which a test host
// need not have: they resolve here as if installed; every other name is
// looked up for real.
func init() {
	lookPath = func(name string) (string, error) {
		if name == "npx" {
			return "/usr/local/bin/npx", nil
		}
		return exec.LookPath(name)
	}
	lookupUser = func(name string) (*user.User, error) {
		if name == "ctxgate-mcp" {
			return &user.User{Uid: "990", Gid: "990", Username: name}, nil
		}
		return user.Lookup(name)
	}
	lookupGroup = func(name string) (*user.Group, error) {
		if name == "ctxgate-mcp" {
			return &user.Group{Gid: "990", Name: name}, nil
		}
		return user.LookupGroup(name)
	}
}
