package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// startInPrivateNetns starts p in a network namespace of its own (what
// `unshare -n` does, CLONE_NEWNET, without the unshare binary), in which
// the only interface is the loopback: a server in it that listens on every
// interface is reachable from nowhere but the namespace itself. It returns
// a loopback address on the test's side that forwards each connection to
// port on the namespace's loopback, for the gateway to reach the server.
// ok is false, and nothing is started, when this process may not create
// network namespaces (EPERM: it needs CAP_SYS_ADMIN, which root has
// outside a container that drops it) or the kernel has none (EINVAL).
func startInPrivateNetns(t *testing.T, p *proc, port string) (addr string, ok bool) {
	t.Helper()
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := tryStartCmd(t, p); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			return "", false
		}
		t.Fatalf("start %s in a private network namespace: %v", p.name, err)
	}
	d, ifaces, err := joinNetns(p.cmd.Process.Pid)
	if err != nil {
		t.Fatalf("join %s's network namespace: %v", p.name, err)
	}
	t.Cleanup(d.Close)
	if !slices.Equal(ifaces, []string{"lo"}) {
		t.Fatalf("%s's network namespace has interfaces %v, want only lo", p.name, ifaces)
	}
	return forwardInto(t, d, net.JoinHostPort("127.0.0.1", port)), true
}

// netnsDialer dials TCP inside the network namespace of a process: one
// goroutine, locked to its OS thread, joins the namespace (setns) and
// creates every socket there. The thread never leaves the namespace; it
// ends with the goroutine (a locked goroutine's thread is not reused).
type netnsDialer struct {
	dial chan netnsDial
	stop chan struct{} // closed by Close
	done chan struct{} // closed when the goroutine ends
}

type netnsDial struct {
	addr  string
	reply chan netnsConn
}

type netnsConn struct {
	conn net.Conn
	err  error
}

// joinNetns starts the dialer in pid's network namespace, brings its
// loopback up (a new namespace's is down) and returns the namespace's
// interface names, so the caller can assert what the server is exposed on.
func joinNetns(pid int) (*netnsDialer, []string, error) {
	d := &netnsDialer{dial: make(chan netnsDial), stop: make(chan struct{}), done: make(chan struct{})}
	ready := make(chan error, 1)
	var ifaces []string
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		defer close(d.done)
		if err := enterNetns(pid); err != nil {
			ready <- err
			return
		}
		all, err := net.Interfaces()
		if err != nil {
			ready <- fmt.Errorf("interfaces in the namespace: %w", err)
			return
		}
		for _, i := range all {
			ifaces = append(ifaces, i.Name)
		}
		ready <- nil
		for {
			select {
			case req := <-d.dial:
				c, err := net.Dial("tcp", req.addr)
				req.reply <- netnsConn{c, err}
			case <-d.stop:
				return
			}
		}
	}()
	if err := <-ready; err != nil {
		return nil, nil, err
	}
	return d, ifaces, nil
}

// enterNetns moves the calling thread into pid's network namespace and
// sets its loopback up.
func enterNetns(pid int) error {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("setns: %w", err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// Dial connects to addr in the namespace.
func (d *netnsDialer) Dial(addr string) (net.Conn, error) {
	reply := make(chan netnsConn, 1)
	select {
	case d.dial <- netnsDial{addr, reply}:
	case <-d.done:
		return nil, net.ErrClosed
	}
	r := <-reply
	return r.conn, r.err
}

// Close ends the dialer's goroutine, and with it its thread.
func (d *netnsDialer) Close() { close(d.stop) }

// forwardInto listens on the test's loopback and copies each connection
// to target dialed by d.
func forwardInto(t *testing.T, d *netnsDialer, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := d.Dial(target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					_, _ = io.Copy(up, c)
					_ = up.(*net.TCPConn).CloseWrite() // the client's EOF, passed on
				}()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}
