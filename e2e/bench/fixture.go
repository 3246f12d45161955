package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The fixture's fixed answers, which the load generator checks.
const (
	fixtureTool = "lookup"
	fixtureText = "ctxgate bench fixture: a fixed answer of a realistic size for a small lookup tool, " +
		"long enough that relaying it is not free and short enough that the proxies, not the bytes, dominate."
)

// fixtureResource is the URI of the fixture's one resource, whose text is
// fixtureText. The shipped policy lets anyone read it (it is not under a
// restricted prefix such as secret://).
const fixtureResource = "bench://fixture/readme"

// fixtureTools are the tools the fixture lists; every one is annotated
// read-only, so the shipped policy lets any principal see and call them.
var fixtureTools = []string{fixtureTool, "search_docs", "get_ticket", "list_projects"}

// shape is the size of the fixture's answers (-list-size, -result-size),
// so the per-item and per-byte costs can be measured as a curve.
type shape struct {
	// listSize is how many tools tools/list has: fixtureTools first, then
	// tool_0004, tool_0005, ...; every one read-only.
	listSize int
	// resultSize is the length of a tools/call result's text, in bytes;
	// 0 is fixtureText.
	resultSize int
}

// defaultShape is the fixture as it always was: four tools, fixtureText.
var defaultShape = shape{listSize: len(fixtureTools)}

// flags registers -list-size and -result-size on fs.
func (sh *shape) flags(fs *flag.FlagSet) {
	fs.IntVar(&sh.listSize, "list-size", len(fixtureTools), "tools the fixture lists (the workload calls the first)")
	fs.IntVar(&sh.resultSize, "result-size", 0, fmt.Sprintf("bytes of text in a tools/call result (0: the fixture's %d-byte answer)", len(fixtureText)))
}

func (sh shape) check() error {
	if sh.listSize < 1 || sh.resultSize < 0 {
		return fmt.Errorf("-list-size must be at least 1 and -result-size not negative")
	}
	return nil
}

// args passes the shape on to a role.
func (sh shape) args() []string {
	return []string{"-list-size", strconv.Itoa(sh.listSize), "-result-size", strconv.Itoa(sh.resultSize)}
}

// tools are the names tools/list has.
func (sh shape) tools() []string {
	names := slices.Clone(fixtureTools[:min(sh.listSize, len(fixtureTools))])
	for i := len(names); i < sh.listSize; i++ {
		names = append(names, fmt.Sprintf("tool_%04d", i))
	}
	return names
}

// text is a tools/call result's text: fixtureText repeated to resultSize
// bytes.
func (sh shape) text() string {
	if sh.resultSize == 0 {
		return fixtureText
	}
	return strings.Repeat(fixtureText, sh.resultSize/len(fixtureText)+1)[:sh.resultSize]
}

type lookupArgs struct {
	Key string `json:"key" jsonschema:"what to look up"`
}

// servicedMethods are the methods that take -service-time: every method of
// the workload, so that the cached target's hits are compared with a
// forward to the same slow upstream.
var servicedMethods = []string{"tools/list", "tools/call", "resources/read"}

// newFixture is the upstream MCP server: the official Go SDK's Streamable
// HTTP handler (stateful sessions, JSON answers rather than SSE) with fixed
// tools and one fixed resource, as many tools and as long a result as sh
// says. serviceTime is slept in every request of a servicedMethods method
// to model a slower service.
func newFixture(serviceTime time.Duration, sh shape) http.Handler {
	s := mcp.NewServer(&mcp.Implementation{Name: "ctxgate-bench-fixture", Version: "1.0.0"}, nil)
	text := sh.text()
	for _, name := range sh.tools() {
		mcp.AddTool(s, &mcp.Tool{
			Name:        name,
			Description: "Fixture tool " + name + ": answers every call with the same text.",
			Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
		}, func(context.Context, *mcp.CallToolRequest, lookupArgs) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
		})
	}
	s.AddResource(&mcp.Resource{URI: fixtureResource, Name: "readme", MIMEType: "text/plain"},
		func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: fixtureResource, MIMEType: "text/plain", Text: fixtureText}}}, nil
		})
	if serviceTime > 0 {
		s.AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
			return func(ctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
				if slices.Contains(servicedMethods, method) {
					select {
					case <-time.After(serviceTime):
					case <-ctx.Done():
						return nil, ctx.Err()
					}
				}
				return next(ctx, method, req)
			}
		})
	}
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s },
		&mcp.StreamableHTTPOptions{JSONResponse: true})
}

// countingPath is where the fixture tells how many MCP requests it has
// served, so the harness can see whether a proxy sends more upstream
// requests than it receives.
const countingPath = "/bench/requests"

// counted serves h, counting its requests, and the count at countingPath.
func counted(h http.Handler) http.Handler {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == countingPath {
			fmt.Fprintln(w, n.Load())
			return
		}
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

// upstreamRequests reads the fixture's request count.
func upstreamRequests(upstream string) (int64, error) {
	resp, err := http.Get(strings.TrimSuffix(upstream, "/") + countingPath)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// The fixtures -fixture chooses from.
const (
	fixtureSDK = "sdk"
	fixtureRaw = "raw"
)

func fixtureHandler(kind string, serviceTime time.Duration, sh shape) (http.Handler, error) {
	switch kind {
	case fixtureSDK:
		return newFixture(serviceTime, sh), nil
	case fixtureRaw:
		return newRawFixture(serviceTime, sh), nil
	}
	return nil, fmt.Errorf("-fixture %q: want %s or %s", kind, fixtureSDK, fixtureRaw)
}

// runUpstream is the "upstream" role: it serves the fixture on a loopback
// port and prints "listening <addr>".
func runUpstream(args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	serviceTime := fs.Duration("service-time", 0, "time every tools/list, tools/call and resources/read takes")
	kind := fs.String("fixture", fixtureSDK, "sdk (the official Go SDK server) or raw (a minimal handler)")
	var sh shape
	sh.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	h, err := fixtureHandler(*kind, *serviceTime, sh)
	if err != nil {
		return err
	}
	return serveAndAnnounce(counted(h))
}

// serveAndAnnounce serves h on a free loopback port, announcing the address
// on stdout, until the process is killed.
func serveAndAnnounce(h http.Handler) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return srv.Serve(ln)
}
