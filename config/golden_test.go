package config_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

var update = flag.Bool("update", false, "rewrite testdata/valid/*.golden.json and testdata/invalid/*.want from the current output")

// testEnv is the whole environment the testdata sees: tests never read the
// real one. CTXGATE_TEST_UNSET_* names are deliberately absent.
var testEnv = map[string]string{
	"CTXGATE_TEST_PORT":          "8443",
	"CTXGATE_TEST_HOST":          "mcp.example.com",
	"CTXGATE_TEST_MAX_BODY":      "1048576",
	"CTXGATE_TEST_EMPTY":         "",
	"CTXGATE_TEST_SESSION_KEY":   "env-session-key-0123456789abcdefghij",
	"CTXGATE_TEST_TTL":           "6h",
	"CTXGATE_TEST_CI_KEY_SHA256": "89f2a002bebe61bbae4cc87b61a1dcb12602668b44fcf476eba26aed2d5ca0b4",
	"CTXGATE_TEST_DOCS_URL":      "http://127.0.0.1:3001/mcp",
	// Set so that a wrongly expanded $HOME (no braces) would show.
	"HOME": "/wrongly/expanded",
}

// lookup turns a map into Parse's lookupEnv.
func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// TestValidConfigs parses each testdata/valid/NAME.yaml, requires Validate to
// find nothing, and compares the configuration (defaults applied) with
// NAME.golden.json.
func TestValidConfigs(t *testing.T) {
	for _, path := range yamlFiles(t, "testdata/valid") {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			cfg, err := config.Parse(readFile(t, path), lookup(testEnv))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if problems := cfg.Validate(); len(problems) > 0 {
				t.Errorf("Validate found problems in a valid config:\n%s", lines(problems))
			}
			got := marshal(t, cfg)
			golden := strings.TrimSuffix(path, ".yaml") + ".golden.json"
			if *update {
				writeFile(t, golden, got)
				return
			}
			if diff := cmp.Diff(string(readFile(t, golden)), string(got)); diff != "" {
				t.Errorf("config differs from %s (-want +got); if intended, run go test ./config -update\n%s", golden, diff)
			}
		})
	}
}

// TestInvalidConfigs checks each testdata/invalid/NAME.yaml against NAME.want:
// Parse's error, one line per problem, when Parse fails, otherwise every
// problem Validate reports. Files hold several problems each, so a loader or
// validator that stops at the first one fails here.
func TestInvalidConfigs(t *testing.T) {
	for _, path := range yamlFiles(t, "testdata/invalid") {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		t.Run(name, func(t *testing.T) {
			var got []string
			cfg, err := config.Parse(readFile(t, path), lookup(testEnv))
			switch {
			case err != nil && cfg != nil:
				t.Errorf("Parse returned both a config and an error")
			case err != nil:
				got = strings.Split(err.Error(), "\n")
			default:
				for _, p := range cfg.Validate() {
					got = append(got, p.Error())
				}
			}
			if len(got) == 0 {
				t.Fatal("the config is accepted: Parse and Validate report nothing")
			}
			want := strings.TrimSuffix(path, ".yaml") + ".want"
			if *update {
				writeFile(t, want, []byte(strings.Join(got, "\n")+"\n"))
				return
			}
			if diff := cmp.Diff(readLines(t, want), got); diff != "" {
				t.Errorf("problems differ from %s (-want +got):\n%s", want, diff)
			}
		})
	}
}

// TestTestdataPairs fails on a golden or want file whose YAML is gone, which
// would otherwise be dead weight that looks like coverage.
func TestTestdataPairs(t *testing.T) {
	tests := []struct {
		name   string
		dir    string
		suffix string
	}{
		{name: "valid goldens", dir: "testdata/valid", suffix: ".golden.json"},
		{name: "invalid wants", dir: "testdata/invalid", suffix: ".want"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs, err := filepath.Glob(filepath.Join(tt.dir, "*"+tt.suffix))
			if err != nil {
				t.Fatal(err)
			}
			if len(outs) == 0 {
				t.Fatalf("no %s files in %s", tt.suffix, tt.dir)
			}
			for _, out := range outs {
				src := strings.TrimSuffix(out, tt.suffix) + ".yaml"
				if _, err := os.Stat(src); err != nil {
					t.Errorf("%s has no %s: %v", out, src, err)
				}
			}
		})
	}
}

// marshal renders cfg as indented JSON, with & and < left readable.
func marshal(t *testing.T, cfg *config.Config) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(cfg); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func yamlFiles(t *testing.T, dir string) []string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no YAML files in %s", dir)
	}
	return paths
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	return strings.Split(strings.TrimSuffix(string(readFile(t, path)), "\n"), "\n")
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func lines(problems []config.Problem) string {
	var b strings.Builder
	for _, p := range problems {
		b.WriteString("  " + p.Error() + "\n")
	}
	return b.String()
}
