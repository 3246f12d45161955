package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// skillsPeer is an MCP server with the Skills extension (SEP-2640): the Go
// SDK serves the skill files as resources and declares the extension;
// skills/list and skills/get, which the SDK's method table does not know
// (go-sdk v1.8.0), are answered in front of it. files are skill name ->
// file path -> content.
func skillsPeer(t *testing.T, files map[string]map[string]string) string {
	t.Helper()
	caps := &mcp.ServerCapabilities{Resources: &mcp.ResourceCapabilities{}}
	caps.AddExtension("io.modelcontextprotocol/skills", map[string]any{"directoryRead": true})
	server := mcp.NewServer(&mcp.Implementation{Name: "skills", Version: "1"}, &mcp.ServerOptions{Capabilities: caps})
	entries := map[string]map[string]any{}
	for name, skill := range files {
		var resources []map[string]any
		for _, path := range slices.Sorted(mapKeys(skill)) {
			uri, content := "skill://"+name+"/"+path, skill[path]
			sum := sha256.Sum256([]byte(content))
			resources = append(resources, map[string]any{"uri": uri, "digest": "sha256:" + hex.EncodeToString(sum[:]), "size": len(content)})
			server.AddResource(&mcp.Resource{URI: uri, Name: name + "/" + path, MIMEType: "text/markdown"},
				func(context.Context, *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
					return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "text/markdown", Text: content}}}, nil
				})
		}
		_, desc, _ := strings.Cut(skill["SKILL.md"], "description: ")
		desc, _, _ = strings.Cut(desc, "\n")
		entries["skill://"+name+"/SKILL.md"] = map[string]any{"uri": "skill://" + name + "/SKILL.md", "frontmatter": map[string]any{"name": name, "description": desc}, "resources": resources}
	}
	// Stateless: it serves 2026-07-28, the revision the suite asks for.
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{Stateless: true})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
			Params struct {
				URI  string                     `json:"uri"`
				Meta map[string]json.RawMessage `json:"_meta"`
			} `json:"params"`
		}
		if r.Method != http.MethodPost || json.Unmarshal(body, &req) != nil || !strings.HasPrefix(req.Method, "skills/") && req.Method != "resources/directory/read" {
			r.Body = io.NopCloser(bytes.NewReader(body))
			sdk.ServeHTTP(w, r)
			return
		}
		result := map[string]any{}
		switch req.Method {
		case "skills/list":
			list := []any{}
			for _, uri := range slices.Sorted(mapKeys(entries)) {
				list = append(list, entries[uri])
			}
			result["skills"] = list
		case "skills/get":
			e, ok := entries[req.Params.URI]
			if !ok {
				writeRPC(w, req.ID, "error", map[string]any{"code": -32602, "message": "unknown skill"})
				return
			}
			result["skill"] = e
		case "resources/directory/read":
			children := directory(files, req.Params.URI)
			if len(children) == 0 {
				writeRPC(w, req.ID, "error", map[string]any{"code": -32602, "message": "not a directory"})
				return
			}
			result["resources"] = children
		default:
			writeRPC(w, req.ID, "error", map[string]any{"code": -32601, "message": "method not found"})
			return
		}
		if _, modern := req.Params.Meta["io.modelcontextprotocol/protocolVersion"]; modern {
			// Required from 2026-07-28 (SEP-2549), as on the other lists.
			result["resultType"], result["ttlMs"], result["cacheScope"] = "complete", 0, "private"
		}
		writeRPC(w, req.ID, "result", result)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// directory is the children of the directory uri among the skills' files:
// files, and subdirectories as inode/directory; none when uri is no
// directory.
func directory(files map[string]map[string]string, uri string) []map[string]any {
	prefix := strings.TrimSuffix(uri, "/") + "/"
	seen := map[string]bool{}
	var out []map[string]any
	for name, skill := range files {
		for _, path := range slices.Sorted(mapKeys(skill)) {
			rest, ok := strings.CutPrefix("skill://"+name+"/"+path, prefix)
			if !ok {
				continue
			}
			child, _, deeper := strings.Cut(rest, "/")
			if seen[child] {
				continue
			}
			seen[child] = true
			c := map[string]any{"uri": prefix + child, "name": child, "mimeType": "text/markdown"}
			if deeper {
				c["mimeType"] = "inode/directory"
			}
			out = append(out, c)
		}
	}
	return out
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func writeRPC(w http.ResponseWriter, id json.RawMessage, member string, v any) {
	raw, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"jsonrpc":"2.0","id":%s,%q:%s}`, id, member, raw)
}

func skillFile(name, description string) string {
	return "---\nname: " + name + "\ndescription: " + description + "\n---\n\nUse the " + name + " tools.\n"
}

// TestSkillsConformance runs the conformance suite's SEP-2640 enumeration
// and directory scenarios against a skills server directly, through its single route and
// through a federated route of two skills servers, under the shipped
// policy: every check that passes directly passes through the gateway.
func TestSkillsConformance(t *testing.T) {
	requireNodeTool(t, conformanceJS)
	a := skillsPeer(t, map[string]map[string]string{
		"pdf-processing": {"SKILL.md": skillFile("pdf-processing", "Extract PDF text"), "references/FORMS.md": "Forms.\n"},
	})
	b := skillsPeer(t, map[string]map[string]string{"csv-tools": {"SKILL.md": skillFile("csv-tools", "Read CSV files")}})
	policies, err := filepath.Abs(filepath.Join("..", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0"}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: off}
auth: {anonymous: true}
upstreams:
  - {name: a, url: %q}
  - {name: b, url: %q}
routes: [{path: /mcp, upstreams: [a, b], prefix: collision}]
`, policies, a, b))
	scenario := func(url string) map[string]string {
		out := runSuite(t, "server", "--url", url, "--scenario", "sep-2640-skills-enumeration")
		maps.Copy(out, runSuite(t, "server", "--url", url, "--scenario", "sep-2640-skills-directory"))
		return out
	}
	direct := scenario(a)
	for _, route := range []string{"/mcp/a", "/mcp"} {
		via := scenario(gw.URL + route)
		requireSamePasses(t, direct, via, func(string) bool { return false })
		t.Logf("sep-2640-skills-enumeration and -directory: %d checks pass directly, %d through %s", countPassed(direct), countPassed(via), route)
	}
}
