package config

import (
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StdioLimits are a stdio process's resource limits. Zero is the default.
type StdioLimits struct {
	// MemoryMB bounds the process's address space (RLIMIT_AS), in MiB.
	MemoryMB int `yaml:"memory_mb"`
	// CPUSeconds bounds the CPU time the process may use (RLIMIT_CPU).
	CPUSeconds int `yaml:"cpu_seconds"`
	// OpenFiles bounds the file descriptors it may hold (RLIMIT_NOFILE).
	OpenFiles int `yaml:"open_files"`
}

// Stdio defaults: enough for a Node.js or Python MCP server, small enough
// that a runaway one cannot take the host.
const (
	// DefaultStdioMemoryMB: Node.js reserves a few GiB of address space
	// for its heap and code ranges before it allocates any.
	DefaultStdioMemoryMB   = 8192
	DefaultStdioCPUSeconds = 3600
	DefaultStdioOpenFiles  = 256
	DefaultMaxProcesses    = 16
	DefaultStdioIdle       = 10 * time.Minute
	DefaultStopGrace       = 5 * time.Second
)

// applyStdioDefaults fills a stdio upstream's unset limits; other
// transports keep theirs empty.
func (up *Upstream) applyStdioDefaults() {
	if up.Transport != TransportStdio {
		return
	}
	if up.Limits == nil {
		up.Limits = &StdioLimits{}
	}
	setDefault(&up.Limits.MemoryMB, DefaultStdioMemoryMB)
	setDefault(&up.Limits.CPUSeconds, DefaultStdioCPUSeconds)
	setDefault(&up.Limits.OpenFiles, DefaultStdioOpenFiles)
	setDefault(&up.MaxProcesses, DefaultMaxProcesses)
	setDefault(&up.IdleTimeout, DefaultStdioIdle)
	setDefault(&up.StopGrace, DefaultStopGrace)
}

// lookPath finds a command as the gateway will run it; a variable so
// tests need not depend on the host's PATH.
var lookPath = exec.LookPath

// stdio checks a stdio upstream's process.
func (v *validator) stdio(path string, up Upstream) {
	if up.URL != "" {
		v.add(path+".url", "a stdio upstream has no url; it runs command")
	}
	switch {
	case len(up.Command) == 0 || up.Command[0] == "":
		v.add(path+".command", "required for transport stdio: the program and its arguments, e.g. [npx, -y, @modelcontextprotocol/server-memory]")
	case !filepath.IsAbs(up.Command[0]) && strings.ContainsRune(up.Command[0], '/'):
		v.add(path+".command", "%q must be an absolute path or a name found on PATH", up.Command[0])
	default:
		if _, err := lookPath(up.Command[0]); err != nil {
			v.add(path+".command", "%q is not an executable file (absolute, or found on PATH): %v", up.Command[0], err)
		}
	}
	for name := range up.Env {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			v.add(path+".env", "%q is not an environment variable name", name)
		}
	}
	if up.Dir != "" && !filepath.IsAbs(up.Dir) {
		v.add(path+".dir", "must be an absolute path")
	}
	if l := up.Limits; l != nil && (l.MemoryMB < 0 || l.CPUSeconds < 0 || l.OpenFiles < 0) {
		v.add(path+".limits", "memory_mb, cpu_seconds and open_files must be positive")
	}
	if up.MaxProcesses < 0 {
		v.add(path+".max_processes", "must be positive")
	}
	if up.IdleTimeout < 0 {
		v.add(path+".idle_timeout", "must be positive")
	}
	if up.StopGrace < 0 {
		v.add(path+".stop_grace", "must be positive")
	}
	if up.User != "" {
		if _, err := LookupUser(up.User); err != nil {
			v.add(path+".user", "%s: give a user name or numeric uid this host has", lookupFailure(err))
		}
	}
	if up.Group != "" {
		if _, err := LookupGroup(up.Group); err != nil {
			v.add(path+".group", "%s: give a group name or numeric gid this host has", lookupFailure(err))
		}
	}
}

// lookupFailure says why an account did not resolve, without os/user's
// "user: " prefix (the field path already names it).
func lookupFailure(err error) string {
	msg := err.Error()
	for _, p := range []string{"user: ", "group: "} {
		msg = strings.TrimPrefix(msg, p)
	}
	return msg
}

// lookupUser and lookupGroup resolve accounts; variables so tests need
// not depend on the host's /etc/passwd.
var (
	lookupUser   = user.Lookup
	lookupUserID = user.LookupId
	lookupGroup  = user.LookupGroup
	lookupGID    = user.LookupGroupId
)

// LookupUser resolves upstreams[].user, a name or a numeric uid.
func LookupUser(name string) (*user.User, error) {
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		return lookupUserID(name)
	}
	return lookupUser(name)
}

// LookupGroup resolves upstreams[].group, a name or a numeric gid.
func LookupGroup(name string) (*user.Group, error) {
	if _, err := strconv.ParseUint(name, 10, 32); err == nil {
		return lookupGID(name)
	}
	return lookupGroup(name)
}

// notStdio refuses the stdio keys on an upstream of another transport,
// where they would silently do nothing.
func (v *validator) notStdio(path string, up Upstream) {
	s := up
	if len(s.Command) > 0 || s.Env != nil || s.Dir != "" || s.Limits != nil || s.MaxProcesses != 0 || s.IdleTimeout != 0 ||
		s.StopGrace != 0 || s.User != "" || s.Group != "" {
		v.add(path+".transport", "command, env, dir, limits, max_processes, idle_timeout, stop_grace, user and group need transport: stdio")
	}
}
