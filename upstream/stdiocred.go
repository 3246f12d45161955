package upstream

import (
	"errors"
	"fmt"
	"strconv"
	"syscall"

	"github.com/ctxgate/ctxgate/config"
)

// ErrCannotSwitchUser: upstreams[].user or group names another account
// than the gateway's, and the gateway is not root, so it cannot start the
// process as that account.
var ErrCannotSwitchUser = errors.New("the gateway is not root, so it cannot run a process as another user or group")

// stdioCredential is the account a stdio upstream's processes run as: nil
// (the gateway's own) when user and group are unset or name the gateway's
// own account; otherwise the uid and gid with no supplementary groups, so
// the child keeps none of the gateway's. euid and egid are the gateway's.
func stdioCredential(c config.Upstream, euid, egid int) (*syscall.Credential, error) {
	if c.User == "" && c.Group == "" {
		return nil, nil
	}
	uid, gid := uint32(euid), uint32(egid)
	if c.User != "" {
		u, err := config.LookupUser(c.User)
		if err != nil {
			return nil, fmt.Errorf("user: %w", err)
		}
		if uid, err = parseID(u.Uid); err != nil {
			return nil, fmt.Errorf("user: %q: uid %q: %w", c.User, u.Uid, err)
		}
		if gid, err = parseID(u.Gid); err != nil {
			return nil, fmt.Errorf("user: %q: gid %q: %w", c.User, u.Gid, err)
		}
	}
	if c.Group != "" {
		g, err := config.LookupGroup(c.Group)
		if err != nil {
			return nil, fmt.Errorf("group: %w", err)
		}
		if gid, err = parseID(g.Gid); err != nil {
			return nil, fmt.Errorf("group: %q: gid %q: %w", c.Group, g.Gid, err)
		}
	}
	if euid != 0 {
		if uid != uint32(euid) || gid != uint32(egid) {
			return nil, fmt.Errorf("user: %w: %q/%q is uid %d gid %d, the gateway runs as uid %d gid %d; run the gateway as root or drop user and group",
				ErrCannotSwitchUser, c.User, c.Group, uid, gid, euid, egid)
		}
		// Already that account; setgroups would need root.
		return nil, nil
	}
	return &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}
