package upstream

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ctxgate/ctxgate/config"
)

// A process started as another user cannot be given its limits from the
// outside: prlimit on a process of another uid needs CAP_SYS_RESOURCE,
// which root in a container usually lacks (Docker drops it). So such a
// process is started through the gateway's own binary as a launcher: it
// runs already as that user, lowers its own limits (which needs no
// privilege) and execs the command, which so starts with them in force.

// stdioLauncher is the gateway's own binary as the forked child execs
// it: the link resolves in the child, still the gateway's image, to the
// running binary even if it was since replaced or deleted, and it needs
// no search permission on the binary's directory, only its x bit.
const stdioLauncher = "/proc/self/exe"

// StdioLaunchArg, as the first argument of the gateway's binary, makes it
// the stdio launcher (RunStdioLauncher) instead of the gateway.
const StdioLaunchArg = "__ctxgate-stdio-launch"

// RunStdioLauncher is main of the launcher. args: the address space, CPU
// seconds and open files limits (0: unchanged), the command's path, then
// its argv. It returns only if it cannot exec: with exit status 127 and
// the reason on stderr, which the gateway logs.
func RunStdioLauncher(args []string) {
	err := stdioLaunch(args)
	fmt.Fprintf(os.Stderr, "ctxgate stdio launcher: %v\n", err)
	os.Exit(127)
}

func stdioLaunch(args []string) error {
	if len(args) < 5 {
		return errors.New("want: <as bytes> <cpu seconds> <open files> <path> <argv...>")
	}
	for i, resource := range []int{unix.RLIMIT_AS, unix.RLIMIT_CPU, unix.RLIMIT_NOFILE} {
		v, err := strconv.ParseUint(args[i], 10, 64)
		if err != nil {
			return fmt.Errorf("limit %q: %w", args[i], err)
		}
		if v == 0 {
			continue
		}
		if err := unix.Setrlimit(resource, &unix.Rlimit{Cur: v, Max: v}); err != nil {
			return fmt.Errorf("setrlimit: %w", err)
		}
	}
	// The environment is the configured one: the gateway started the
	// launcher with exactly that.
	if err := unix.Exec(args[3], args[4:], os.Environ()); err != nil {
		return fmt.Errorf("exec %s as uid %d gid %d: %w", args[3], os.Getuid(), os.Getgid(), err)
	}
	return nil
}

// launchArgs is the launcher's command line for the command at path.
func launchArgs(self, path string, argv []string, l *config.StdioLimits) []string {
	var as, cpu, files uint64
	if l != nil {
		as, cpu, files = uint64(l.MemoryMB)<<20, uint64(l.CPUSeconds), uint64(l.OpenFiles)
	}
	out := []string{self, StdioLaunchArg, strconv.FormatUint(as, 10), strconv.FormatUint(cpu, 10), strconv.FormatUint(files, 10), path}
	return append(out, argv...)
}
