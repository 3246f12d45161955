// Package upstreamtest provides a real MCP server, built with the official Go
// SDK, that describes a software project: the files of one directory. It is
// the context service behind `ctxgate demo` and a fixture for tests.
//
// It only ever reads below its root, through os.Root, so a path like
// "../../etc/passwd" or a symlink pointing outside cannot escape.
package upstreamtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const (
	maxListed    = 200      // entries list_files returns
	maxReadBytes = 64 << 10 // bytes read_file returns
	maxMatches   = 50       // lines search returns
	uriPrefix    = "project://files/"
)

// Project serves one directory as MCP tools, resources and prompts.
type Project struct {
	root *os.Root
	name string
}

// NewProject opens dir as the project root. Close the Project when done.
func NewProject(dir string) (*Project, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open project root: %w", err)
	}
	name := path.Base(strings.ReplaceAll(dir, "\\", "/"))
	if abs, err := os.Getwd(); err == nil && (dir == "." || dir == "") {
		name = path.Base(abs)
	}
	return &Project{root: root, name: name}, nil
}

// Close releases the root directory.
func (p *Project) Close() error { return p.root.Close() }

// Handler returns a Streamable HTTP handler (stateful sessions) for the
// project server.
func (p *Project) Handler() http.Handler {
	server := p.Server()
	return mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
}

// Server builds the MCP server.
func (p *Project) Server() *mcp.Server {
	s := mcp.NewServer(&mcp.Implementation{Name: "ctxgate-sample-project", Version: "1.0.0"}, nil)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "list_files",
		Description: "List the files of the project below a directory (default: the whole project).",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, p.listFiles)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "read_file",
		Description: "Read a text file of the project (first 64 KiB).",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, p.readFile)
	mcp.AddTool(s, &mcp.Tool{
		Name:        "search",
		Description: "Find lines containing a text in the project's files.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, p.search)
	s.AddResourceTemplate(&mcp.ResourceTemplate{
		Name:        "project-file",
		Description: "Any text file of the project.",
		URITemplate: uriPrefix + "{+path}",
		MIMEType:    "text/plain",
	}, p.readResource)
	for _, f := range p.topLevelFiles() {
		s.AddResource(&mcp.Resource{Name: f, URI: uriPrefix + f, MIMEType: "text/plain"}, p.readResource)
	}
	s.AddPrompt(&mcp.Prompt{
		Name:        "review_file",
		Description: "Ask for a code review of one file.",
		Arguments:   []*mcp.PromptArgument{{Name: "path", Description: "file to review", Required: true}},
	}, p.reviewPrompt)
	s.AddPrompt(&mcp.Prompt{
		Name:        "summarize_project",
		Description: "Ask for a summary of the project from its file list.",
	}, p.summaryPrompt)
	return s
}

type listArgs struct {
	Dir string `json:"dir,omitempty" jsonschema:"directory relative to the project root"`
}

type fileList struct {
	Files     []string `json:"files"`
	Truncated bool     `json:"truncated"`
}

func (p *Project) listFiles(_ context.Context, _ *mcp.CallToolRequest, in listArgs) (*mcp.CallToolResult, fileList, error) {
	dir, err := cleanPath(in.Dir)
	if err != nil {
		return nil, fileList{}, err
	}
	var out fileList
	err = fs.WalkDir(p.root.FS(), dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && skipDir(d.Name()) && name != dir {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			if len(out.Files) == maxListed {
				out.Truncated = true
				return fs.SkipAll
			}
			out.Files = append(out.Files, name)
		}
		return nil
	})
	if err != nil {
		return nil, fileList{}, fmt.Errorf("list %q: %w", dir, err)
	}
	return nil, out, nil
}

type readArgs struct {
	Path string `json:"path" jsonschema:"file path relative to the project root"`
}

func (p *Project) readFile(_ context.Context, _ *mcp.CallToolRequest, in readArgs) (*mcp.CallToolResult, any, error) {
	text, err := p.read(in.Path)
	if err != nil {
		return nil, nil, err
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
}

type searchArgs struct {
	Query string `json:"query" jsonschema:"text to look for (case-sensitive)"`
}

func (p *Project) search(_ context.Context, _ *mcp.CallToolRequest, in searchArgs) (*mcp.CallToolResult, any, error) {
	if in.Query == "" {
		return nil, nil, errors.New("query must not be empty")
	}
	var matches []string
	_ = fs.WalkDir(p.root.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || len(matches) >= maxMatches {
			return fs.SkipAll
		}
		if d.IsDir() && name != "." && skipDir(d.Name()) {
			return fs.SkipDir
		}
		if d.Type().IsRegular() {
			matches = append(matches, p.grep(name, in.Query, maxMatches-len(matches))...)
		}
		return nil
	})
	text := strings.Join(matches, "\n")
	if text == "" {
		text = "no matches"
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: text}}}, nil, nil
}

func (p *Project) grep(name, query string, limit int) []string {
	f, err := p.root.Open(name)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for n := 1; sc.Scan() && len(out) < limit; n++ {
		if line := sc.Text(); strings.Contains(line, query) && utf8.ValidString(line) {
			out = append(out, fmt.Sprintf("%s:%d: %s", name, n, strings.TrimSpace(line)))
		}
	}
	return out
}

func (p *Project) readResource(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
	rel, ok := strings.CutPrefix(req.Params.URI, uriPrefix)
	if !ok {
		return nil, mcp.ResourceNotFoundError(req.Params.URI)
	}
	text, err := p.read(rel)
	if err != nil {
		return nil, mcp.ResourceNotFoundError(req.Params.URI)
	}
	return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: req.Params.URI, MIMEType: "text/plain", Text: text}}}, nil
}

func (p *Project) reviewPrompt(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	name := req.Params.Arguments["path"]
	text, err := p.read(name)
	if err != nil {
		return nil, err
	}
	return &mcp.GetPromptResult{
		Description: "Review of " + name,
		Messages: []*mcp.PromptMessage{{
			Role:    "user",
			Content: &mcp.TextContent{Text: "Review this file for bugs and unclear code.\n\n" + name + ":\n" + text},
		}},
	}, nil
}

func (p *Project) summaryPrompt(ctx context.Context, _ *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
	_, list, err := p.listFiles(ctx, nil, listArgs{})
	if err != nil {
		return nil, err
	}
	return &mcp.GetPromptResult{
		Description: "Summary of " + p.name,
		Messages: []*mcp.PromptMessage{{
			Role:    "user",
			Content: &mcp.TextContent{Text: "Summarize the project " + p.name + " from its files:\n" + strings.Join(list.Files, "\n")},
		}},
	}, nil
}

func (p *Project) read(name string) (string, error) {
	clean, err := cleanPath(name)
	if err != nil {
		return "", err
	}
	f, err := p.root.Open(clean)
	if err != nil {
		return "", fmt.Errorf("open %q: %w", name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReadBytes))
	if err != nil {
		return "", fmt.Errorf("read %q: %w", name, err)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%q is not a text file", name)
	}
	return string(b), nil
}

func (p *Project) topLevelFiles() []string {
	entries, err := fs.ReadDir(p.root.FS(), ".")
	if err != nil {
		return nil
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	if len(files) > 50 {
		files = files[:50]
	}
	return files
}

// cleanPath turns a client path into an fs.FS path; os.Root still refuses
// anything that escapes.
func cleanPath(p string) (string, error) {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		p = "."
	}
	if !fs.ValidPath(p) {
		return "", fmt.Errorf("invalid path %q", p)
	}
	return p, nil
}

func skipDir(name string) bool {
	return strings.HasPrefix(name, ".") || name == "node_modules" || name == "vendor"
}
