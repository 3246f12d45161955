package config_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/ctxgate/ctxgate/config"
)

// TestParseEnvCannotInjectStructure sets CTXGATE_TEST_PAYLOAD to text that
// would be YAML structure if it were pasted into the file, and checks that
// it lands verbatim in the one field that references it and nowhere else.
func TestParseEnvCannotInjectStructure(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		payload string
		want    func(c *config.Config, payload string) // changes from defaults()
		wantErr string                                 // a substring of Parse's error
	}{
		{
			name:    "newline and indented key in a plain value",
			yaml:    "log:\n  level: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "info\n  evil: x",
			want:    func(c *config.Config, p string) { c.Log.Level = p },
		},
		{
			name:    "newline and top-level key in a quoted value",
			yaml:    "server:\n  public_url: \"${CTXGATE_TEST_PAYLOAD}\"\n",
			payload: "https://mcp.example.com\nauth:\n  anonymous: true",
			want:    func(c *config.Config, p string) { c.Server.PublicURL = p },
		},
		{
			name:    "colon and space",
			yaml:    "admin:\n  listen: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "evil: x",
			want:    func(c *config.Config, p string) { c.Admin.Listen = p },
		},
		{
			name:    "flow mapping",
			yaml:    "auth:\n  api_key_header: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "{anonymous: true}",
			want:    func(c *config.Config, p string) { c.Auth.APIKeyHeader = p },
		},
		{
			name:    "flow sequence stays one list item",
			yaml:    "server:\n  allowed_hosts:\n    - ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "[a.example.com, b.example.com]",
			want:    func(c *config.Config, p string) { c.Server.AllowedHosts = []string{p} },
		},
		{
			name:    "new list item in a list",
			yaml:    "upstreams:\n  - name: docs\n    url: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "http://127.0.0.1:3001/mcp\n  - name: evil\n    url: http://evil.example.com/mcp",
			want: func(c *config.Config, p string) {
				c.Upstreams = []config.Upstream{upstream("docs", p, config.DefaultMaxIdleConns)}
			},
		},
		{
			name:    "tag, anchor and comment syntax",
			yaml:    "log:\n  level: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "!!binary &a *a # comment",
			want:    func(c *config.Config, p string) { c.Log.Level = p },
		},
		{
			name:    "a reference in the value is not expanded again",
			yaml:    "log:\n  level: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "${CTXGATE_TEST_HOST} ${CTXGATE_TEST_UNSET_X}",
			want:    func(c *config.Config, p string) { c.Log.Level = p },
		},
		{
			name:    "structure aimed at an int field is a type error, not a key",
			yaml:    "server:\n  max_body_bytes: ${CTXGATE_TEST_PAYLOAD}\n",
			payload: "1\nauth:\n  anonymous: true",
			wantErr: "server.max_body_bytes: line 2: the environment's value is not a whole number",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"CTXGATE_TEST_PAYLOAD": tt.payload, "CTXGATE_TEST_HOST": "mcp.example.com"}
			got, err := config.Parse([]byte(tt.yaml), lookup(env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "unknown key") {
					t.Fatalf("Parse error = %v, want one containing %q and no unknown key", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := defaults()
			tt.want(&want, tt.payload)
			if diff := cmp.Diff(&want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

// TestParseEnvExpansion pins the ${NAME} and ${NAME:-default} semantics,
// which follow the shell's.
func TestParseEnvExpansion(t *testing.T) {
	tests := []struct {
		name    string
		value   string // written as server.allowed_hosts[0], in double quotes
		want    string
		wantErr string
	}{
		{name: "set variable", value: "${CTXGATE_TEST_HOST}", want: "mcp.example.com"},
		{name: "set variable wins over its default", value: "${CTXGATE_TEST_HOST:-other.example.com}", want: "mcp.example.com"},
		{name: "unset variable takes its default", value: "${CTXGATE_TEST_UNSET_X:-other.example.com}", want: "other.example.com"},
		{name: "set but empty variable takes its default", value: "${CTXGATE_TEST_EMPTY:-other.example.com}", want: "other.example.com"},
		{
			name:    "set but empty variable without default is an error",
			value:   "a${CTXGATE_TEST_EMPTY}b",
			wantErr: "server.allowed_hosts[0]: line 3: environment variable CTXGATE_TEST_EMPTY is set but empty; give it a value or write ${CTXGATE_TEST_EMPTY:-} to allow empty",
		},
		{name: "empty default", value: "a${CTXGATE_TEST_UNSET_X:-}b", want: "ab"},
		{name: "default with colon, dash and space", value: "${CTXGATE_TEST_UNSET_X:-a b:-c}", want: "a b:-c"},
		{name: "a default ends at the first brace", value: "${CTXGATE_TEST_UNSET_X:-a}b}", want: "ab}"},
		{name: "several references", value: "${CTXGATE_TEST_HOST}:${CTXGATE_TEST_PORT}", want: "mcp.example.com:8443"},
		{name: "dollar without braces is literal", value: "$CTXGATE_TEST_HOST", want: "$CTXGATE_TEST_HOST"},
		{name: "braces without a valid name are literal", value: "${} ${1X} ${A-B}", want: "${} ${1X} ${A-B}"},
		{name: "names are case sensitive", value: "${ctxgate_test_host:-lower}", want: "lower"},
		{
			name:    "unset variable without default",
			value:   "${CTXGATE_TEST_UNSET_X}",
			wantErr: "server.allowed_hosts[0]: line 3: environment variable CTXGATE_TEST_UNSET_X is not set; set it or write ${CTXGATE_TEST_UNSET_X:-default}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "server:\n  allowed_hosts:\n    - \"" + tt.value + "\"\n"
			got, err := config.Parse([]byte(yaml), lookup(testEnv))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Parse error = %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff([]string{tt.want}, got.Server.AllowedHosts); diff != "" {
				t.Errorf("allowed_hosts (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	tests := []struct {
		name     string
		content  string // written to the file; "" leaves the file missing
		wantErr  []string
		wantNotf bool // the error wraps fs.ErrNotExist
	}{
		{
			name:     "missing file",
			wantErr:  []string{"read config"},
			wantNotf: true,
		},
		{
			name:    "unknown key",
			content: "server:\n  listne: \"127.0.0.1:8080\"\n",
			wantErr: []string{"server.listne: line 2: unknown key"},
		},
		{
			name:    "broken YAML",
			content: "server: [\n",
			wantErr: []string{"yaml: "},
		},
		{
			name:    "valid file",
			content: "auth: {anonymous: true}\npolicy: {dir: policies}\nupstreams: [{name: docs, url: \"http://127.0.0.1:3001/mcp\"}]\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ctxgate.yaml")
			if tt.content != "" {
				writeFile(t, path, []byte(tt.content))
			}
			cfg, err := config.Load(path)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if problems := cfg.Validate(); len(problems) > 0 {
					t.Errorf("Validate:\n%s", lines(problems))
				}
				return
			}
			if err == nil {
				t.Fatalf("Load returned no error and %+v", cfg)
			}
			// The path must be in the message, so the operator knows which file.
			for _, s := range append(tt.wantErr, path) {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Load error %q does not mention %q", err, s)
				}
			}
			if got := errors.Is(err, fs.ErrNotExist); got != tt.wantNotf {
				t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v", got, tt.wantNotf)
			}
			if cfg != nil {
				t.Errorf("Load returned a config with its error: %+v", cfg)
			}
		})
	}
}

// TestLoadMatchesParse guards against Load and Parse drifting
// apart: Load of a file must equal Parse of its bytes.
func TestLoadMatchesParse(t *testing.T) {
	path := "testdata/valid/full.yaml"
	fromLoad, err := config.Load(path)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fromParse, err := config.Parse(data, lookup(nil))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if diff := cmp.Diff(fromParse, fromLoad); diff != "" {
		t.Errorf("Load differs from Parse (-parse +load):\n%s", diff)
	}
}
