package config_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/ctxgate/ctxgate/config"
)

const exampleFile = "example.yaml"

// TestExample loads example.yaml as an operator would, with and without the
// optional old session key, and requires it to be valid.
func TestExample(t *testing.T) {
	const key = "example-session-key-0123456789abcdef"
	const oldKey = "example-old-session-key-0123456789ab"
	const grantKey = "example-grant-key-0123456789abcdefgh"
	tests := []struct {
		name     string
		env      map[string]string
		wantKeys []string
	}{
		{
			name:     "current key only",
			env:      map[string]string{"CTXGATE_GRANT_KEY": grantKey, "CTXGATE_SESSION_KEY": key},
			wantKeys: []string{key},
		},
		{
			name:     "old key set but empty",
			env:      map[string]string{"CTXGATE_GRANT_KEY": grantKey, "CTXGATE_SESSION_KEY": key, "CTXGATE_SESSION_KEY_OLD": ""},
			wantKeys: []string{key},
		},
		{
			name:     "current and old key",
			env:      map[string]string{"CTXGATE_GRANT_KEY": grantKey, "CTXGATE_SESSION_KEY": key, "CTXGATE_SESSION_KEY_OLD": oldKey},
			wantKeys: []string{key, oldKey},
		},
	}
	data := readFile(t, exampleFile)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse(data, lookup(tt.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if problems := cfg.Validate(); len(problems) > 0 {
				t.Errorf("Validate found problems in %s:\n%s", exampleFile, lines(problems))
			}
			if diff := cmp.Diff(tt.wantKeys, cfg.Sessions.Keys); diff != "" {
				t.Errorf("sessions.keys (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExampleNeedsSessionKey checks that the example does not run without
// CTXGATE_SESSION_KEY: it has no default on purpose.
func TestExampleNeedsSessionKey(t *testing.T) {
	_, err := config.Parse(readFile(t, exampleFile), lookup(nil))
	if err == nil || !strings.Contains(err.Error(), "environment variable CTXGATE_SESSION_KEY is not set") {
		t.Fatalf("Parse error = %v, want CTXGATE_SESSION_KEY is not set", err)
	}
}

// TestExampleCoversEveryKey fails when a field is added to Config but not
// documented in example.yaml.
func TestExampleCoversEveryKey(t *testing.T) {
	var root yaml.Node
	if err := yaml.Unmarshal(readFile(t, exampleFile), &root); err != nil {
		t.Fatal(err)
	}
	present := map[string]bool{}
	yamlPaths(root.Content[0], "", present)
	var missing []string
	for _, p := range typePaths(reflect.TypeFor[config.Config](), "") {
		if !present[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s does not show these keys: %s", exampleFile, strings.Join(missing, ", "))
	}
	if len(present) < 20 {
		t.Errorf("found only %d keys in %s: the walk is broken", len(present), exampleFile)
	}
}

// typePaths lists every key a configuration can have, list items as [].
func typePaths(t reflect.Type, prefix string) []string {
	var paths []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := prefix + name
		paths = append(paths, p)
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft, p = ft.Elem(), p+"[]"
		}
		if ft.Kind() == reflect.Struct && ft.PkgPath() == t.PkgPath() {
			paths = append(paths, typePaths(ft, p+".")...)
		}
	}
	return slices.Sorted(slices.Values(paths))
}

// yamlPaths records every key of a YAML tree in typePaths' notation.
func yamlPaths(n *yaml.Node, prefix string, present map[string]bool) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			p := prefix + n.Content[i].Value
			present[p] = true
			yamlPaths(n.Content[i+1], p+".", present)
		}
	case yaml.SequenceNode:
		for _, item := range n.Content {
			yamlPaths(item, strings.TrimSuffix(prefix, ".")+"[].", present)
		}
	}
}
