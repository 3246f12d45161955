package upstream

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/ctxgate/ctxgate/config"
)

// TestStdioCredential: which account a stdio process is started as, for
// a gateway running as root and as another user. Accounts are looked up
// for real: root (0) and nobody (65534 on Debian, read from the host).
func TestStdioCredential(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("this host has no user nobody: %v", err)
	}
	uid, gid := atoi(t, nobody.Uid), atoi(t, nobody.Gid)
	for _, tc := range []struct {
		name        string
		user, group string
		euid, egid  int
		want        *syscall.Credential
		wantErr     error  // errors.Is
		errContains string // and a word of the message
	}{
		{name: "unset: the gateway's own", euid: 0, egid: 0},
		{name: "root to nobody by name: its primary group, no supplementary groups",
			user: "nobody", want: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}},
		{name: "root to a numeric uid and gid",
			user: nobody.Uid, group: "0", want: &syscall.Credential{Uid: uid, Gid: 0, Groups: []uint32{}}},
		{name: "root: group alone keeps the uid",
			group: nobody.Gid, want: &syscall.Credential{Uid: 0, Gid: gid, Groups: []uint32{}}},
		{name: "not root, another user", user: "nobody", euid: 1000, egid: 1000,
			wantErr: ErrCannotSwitchUser, errContains: "user: "},
		{name: "not root, another group", group: "0", euid: int(uid), egid: int(gid),
			wantErr: ErrCannotSwitchUser, errContains: "run the gateway as root"},
		{name: "not root, its own account: nothing to switch", user: "nobody", euid: int(uid), egid: int(gid)},
		{name: "unknown user", user: "ctxgate-no-such-user", errContains: "user: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := config.Upstream{Name: "x", Transport: config.TransportStdio, User: tc.user, Group: tc.group}
			got, err := stdioCredential(c, tc.euid, tc.egid)
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if (err != nil) != (tc.errContains != "") || (err != nil && !strings.Contains(err.Error(), tc.errContains)) {
				t.Fatalf("err = %v, want one containing %q", err, tc.errContains)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("credential (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStdioCannotSwitchUserRefusesStart: a transport whose account it
// cannot switch to starts nothing and says which field.
func TestStdioCannotSwitchUserRefusesStart(t *testing.T) {
	s := NewStdio(config.Upstream{Name: "x", Transport: config.TransportStdio, Command: []string{"/bin/cat"}, MaxProcesses: 1, User: "ctxgate-no-such-user"})
	if err := s.CanRun(); err == nil || !strings.HasPrefix(err.Error(), "user: ") {
		t.Fatalf("CanRun = %v, want an error naming user", err)
	}
	if _, _, err := send(t, s, "", `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`); err == nil || s.Started.Load() != 0 {
		t.Errorf("initialize with an unusable user: err %v, %d started; want an error and nothing started", err, s.Started.Load())
	}
}

func atoi(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := parseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStdioLauncher: the launcher lowers its own limits, then execs the
// command with its argv and the environment it was given, nothing more.
func TestStdioLauncher(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := launchArgs(self, "/bin/sh", []string{"sh", "-c", `ulimit -n; ulimit -t; echo "$0" "$ONLY"; env | wc -l`}, &config.StdioLimits{OpenFiles: 48, CPUSeconds: 7})
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = []string{"ONLY=this"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("launcher: %v: %s", err, out)
	}
	// env itself lists PWD, which sh sets, beside ONLY.
	if diff := cmp.Diff("48\n7\nsh this\n2\n", string(out)); diff != "" {
		t.Errorf("the launched command saw (-want +got):\n%s", diff)
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"x", "0", "0", "/bin/true", "true"}, `ctxgate stdio launcher: limit "x"`},
		{[]string{"0", "0", "0", "/ctxgate-no-such-command", "x"}, "ctxgate stdio launcher: exec /ctxgate-no-such-command as uid "},
	} {
		out, err = exec.Command(self, append([]string{StdioLaunchArg}, bad.args...)...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 127 || !strings.Contains(string(out), bad.want) {
			t.Errorf("launcher %q: %v %s, want exit 127 and %q", bad.args, err, out, bad.want)
		}
	}
}

// TestStdioUserRunsAsThatUserWithLimits: with user set (the gateway
// root), the process runs as that user with no supplementary groups, and
// its limits still apply (set by the launcher, not prlimit).
func TestStdioUserRunsAsThatUserWithLimits(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("must run as root in CI: only root starts a process as another user")
		}
		t.Skip("needs root: only root starts a process as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary, the command, lives in a directory only root may
	// enter (the launcher, /proc/self/exe, needs no such search).
	bin := filepath.Join(t.TempDir(), "stdio.test")
	for _, dir := range []string{filepath.Dir(bin), filepath.Dir(filepath.Dir(bin))} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	c := config.Upstream{Name: "test", Transport: config.TransportStdio, Command: []string{bin}, Dir: "/", User: "nobody",
		Env:    map[string]string{"CTXGATE_STDIO_TEST_SERVER": "1"},
		Limits: &config.StdioLimits{MemoryMB: 4096, CPUSeconds: 60, OpenFiles: 64}, MaxProcesses: 1, IdleTimeout: time.Hour}
	s := NewStdio(c)
	if err := s.CanRun(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	_, pid := initialize(t, s)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("Uid:\t%s\t%[1]s\t%[1]s\t%[1]s\n", nobody.Uid),
		fmt.Sprintf("Gid:\t%s\t%[1]s\t%[1]s\t%[1]s\n", nobody.Gid),
		"Groups:\t \n",
	} {
		if !strings.Contains(string(status), want) {
			t.Errorf("/proc/%d/status lacks %q:\n%s", pid, want, status)
		}
	}
	// Read from /proc: prlimit on another user's process needs
	// CAP_SYS_RESOURCE, the very reason for the launcher.
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^Max open files +64 +64 +files`),
		regexp.MustCompile(`(?m)^Max cpu time +60 +60 +seconds`),
		regexp.MustCompile(`(?m)^Max address space +4294967296 +4294967296 +bytes`),
	} {
		if !want.Match(limits) {
			t.Errorf("the limits of a process run as nobody lack %s:\n%s", want, limits)
		}
	}
}

func copyFile(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

// TestCloseOnExec: a descriptor the gateway inherited (opened without
// close-on-exec) is marked close-on-exec before a process starts, by
// close_range and by the one-by-one fallback of older kernels.
func TestCloseOnExec(t *testing.T) {
	for _, tc := range []struct {
		name string
		mark func() error
	}{
		{"close_range", closeOnExec},
		{"one by one", closeOnExecEach},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY, 0) // no O_CLOEXEC
			if err != nil {
				t.Fatal(err)
			}
			defer syscall.Close(fd)
			if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC != 0 {
				t.Fatal("the descriptor is close-on-exec already: the test would prove nothing")
			}
			if err := tc.mark(); err != nil {
				t.Fatal(err)
			}
			if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
				t.Errorf("fd %d flags %#x (%v), want FD_CLOEXEC", fd, flags, err)
			}
		})
	}
}
