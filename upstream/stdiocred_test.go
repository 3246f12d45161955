package upstream

import (
	"errors"
	"os/user"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

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
