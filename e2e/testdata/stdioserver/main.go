// Command stdioserver is the e2e tests' own stdio MCP server: a real MCP
// server (the Go SDK over mcp.StdioTransport) whose tools misbehave on
// request, so that each part of the gateway's stdio sandbox can be shown
// to hold. Only the e2e tests build and run it.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

type none struct{}

type echoIn struct {
	Text string `json:"text"`
}

type floodIn struct {
	Lines int `json:"lines"`
}

type spawnIn struct {
	// Escape: the child leaves the process group (setsid) and inherits
	// stdout and stderr, the gateway's pipes, as a daemonizing helper does.
	Escape bool `json:"escape,omitempty"`
}

type allocateIn struct {
	MB int `json:"mb"`
}

// identity is what the whoami tool reports.
type identity struct {
	PID    int   `json:"pid"`
	UID    int   `json:"uid"`
	GID    int   `json:"gid"`
	Groups []int `json:"groups"`
	// OpenFiles is its RLIMIT_NOFILE.
	OpenFiles uint64 `json:"open_files"`
}

func text(format string, args ...any) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf(format, args...)}}}
}

// sleeperEnv makes the program the child the spawn tool starts: it
// sleeps until killed.
const sleeperEnv = "STDIOSERVER_SLEEPER"

func main() {
	if os.Getenv(sleeperEnv) != "" {
		for {
			time.Sleep(time.Hour)
		}
	}
	// Set by ignore_sigterm: the process then outlives its stdin, as a
	// server that hangs on shutdown does, so only SIGKILL ends it.
	var stubborn atomic.Bool

	s := mcp.NewServer(&mcp.Implementation{Name: "ctxgate-e2e-stdioserver", Version: "1"}, nil)
	mcp.AddTool(s, &mcp.Tool{Name: "echo", Description: "answers its text"},
		func(_ context.Context, _ *mcp.CallToolRequest, in echoIn) (*mcp.CallToolResult, any, error) {
			return text("%s", in.Text), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "env", Description: "its whole environment, as a JSON array"},
		func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
			b, err := json.Marshal(os.Environ())
			return text("%s", b), nil, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "whoami", Description: "its pid, uid, gid, supplementary groups and open files limit, as JSON"},
		func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
			groups, err := os.Getgroups()
			if err != nil {
				return nil, nil, err
			}
			var files syscall.Rlimit
			if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &files); err != nil {
				return nil, nil, err
			}
			b, err := json.Marshal(identity{PID: os.Getpid(), UID: os.Getuid(), GID: os.Getgid(), Groups: groups, OpenFiles: files.Cur})
			return text("%s", b), nil, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "fds", Description: "its open file descriptors and what each is, as a JSON object"},
		func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
			entries, err := os.ReadDir("/proc/self/fd")
			if err != nil {
				return nil, nil, err
			}
			fds := map[string]string{}
			for _, e := range entries {
				// The directory being read is one of them, gone by now.
				if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil {
					fds[e.Name()] = target
				}
			}
			b, err := json.Marshal(fds)
			return text("%s", b), nil, err
		})
	mcp.AddTool(s, &mcp.Tool{Name: "garbage", Description: "writes a line that is not JSON-RPC to stdout, then waits"},
		func(ctx context.Context, _ *mcp.CallToolRequest, _ none) (*mcp.CallToolResult, any, error) {
			// Straight to the file, past the SDK's framing: what a server
			// that prints debug output to stdout does.
			if _, err := os.Stdout.WriteString("this is not JSON-RPC\n"); err != nil {
				return nil, nil, err
			}
			<-ctx.Done() // the gateway ends the process; never answered
			return nil, nil, ctx.Err()
		})
	mcp.AddTool(s, &mcp.Tool{Name: "flood", Description: "writes lines to stderr"},
		func(_ context.Context, _ *mcp.CallToolRequest, in floodIn) (*mcp.CallToolResult, any, error) {
			var b strings.Builder
			for i := range in.Lines {
				fmt.Fprintf(&b, "flood line %d\n", i)
			}
			if _, err := os.Stderr.WriteString(b.String()); err != nil {
				return nil, nil, err
			}
			return text("wrote %d lines to stderr", in.Lines), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "allocate", Description: "allocates and touches mb MiB"},
		func(_ context.Context, _ *mcp.CallToolRequest, in allocateIn) (*mcp.CallToolResult, any, error) {
			// No soft limit: the runtime must ask the kernel for the memory,
			// where RLIMIT_AS refuses it and the runtime dies.
			debug.SetMemoryLimit(math.MaxInt64)
			b := make([]byte, in.MB<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			return text("allocated and touched %d MiB", len(b)>>20), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "ignore_sigterm", Description: "ignores SIGTERM from now on and outlives its stdin; answers its pid"},
		func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
			signal.Ignore(syscall.SIGTERM)
			stubborn.Store(true)
			return text("%d", os.Getpid()), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "spawn", Description: "starts a child of its own that sleeps (stdio on /dev/null, so it holds none of the gateway's pipes; with escape, in a session of its own holding stdout and stderr); answers its pid"},
		func(_ context.Context, _ *mcp.CallToolRequest, in spawnIn) (*mcp.CallToolResult, any, error) {
			self, err := os.Executable()
			if err != nil {
				return nil, nil, err
			}
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), sleeperEnv+"=1")
			if in.Escape {
				cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
				cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			}
			if err := cmd.Start(); err != nil {
				return nil, nil, err
			}
			go func() { _ = cmd.Wait() }()
			return text("%d", cmd.Process.Pid), nil, nil
		})
	mcp.AddTool(s, &mcp.Tool{Name: "crash", Description: "exits with status 3 in the middle of the call"},
		func(context.Context, *mcp.CallToolRequest, none) (*mcp.CallToolResult, any, error) {
			os.Exit(3)
			return nil, nil, nil
		})

	err := s.Run(context.Background(), &mcp.StdioTransport{})
	for stubborn.Load() {
		time.Sleep(time.Hour) // until SIGKILL
	}
	if err != nil {
		log.Fatal(err)
	}
}
