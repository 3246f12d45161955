package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the YAML file at path and returns the configuration with
// defaults applied. It does not validate: call Validate for that.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes YAML strictly: unknown keys, duplicate keys, references
// to unset environment variables and values of the wrong type are errors,
// each reported with its field path. ${NAME} and ${NAME:-default} are expanded inside scalar values only,
// after parsing, so an environment value can never add YAML structure.
// lookupEnv is os.LookupEnv outside tests.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	cfg := &Config{}
	if len(root.Content) > 0 {
		doc := root.Content[0]
		var problems []error
		checkKeys(doc, reflect.TypeOf(*cfg), "", &problems)
		expandEnv(doc, "", lookupEnv, &problems)
		checkTypes(doc, reflect.TypeOf(*cfg), "", &problems)
		if len(problems) > 0 {
			return nil, errors.Join(problems...)
		}
		if err := doc.Decode(cfg); err != nil {
			return nil, err
		}
	}
	cfg.applyDefaults()
	return cfg, nil
}

// checkKeys walks the YAML tree beside the Go type and reports every mapping
// key that has no field, so a typo like `listne:` is an error, not a silently
// ignored setting.
func checkKeys(node *yaml.Node, t reflect.Type, path string, problems *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case node.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		seen := map[string]bool{}
		for i := 0; i+1 < len(node.Content); i += 2 {
			key, value := node.Content[i], node.Content[i+1]
			p := join(path, key.Value)
			if seen[key.Value] {
				*problems = append(*problems, fmt.Errorf("%s: line %d: duplicate key; keep only one", p, key.Line))
				continue
			}
			seen[key.Value] = true
			ft, ok := fields[key.Value]
			if !ok {
				*problems = append(*problems, fmt.Errorf("%s: line %d: unknown key; known keys here: %s", p, key.Line, knownKeys(fields)))
				continue
			}
			checkKeys(value, ft, p, problems)
		}
	case node.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range node.Content {
			checkKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), problems)
		}
	case node.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(node.Content); i += 2 {
			checkKeys(node.Content[i+1], t.Elem(), join(path, node.Content[i].Value), problems)
		}
	}
}

func yamlFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			fields[name] = f.Type
		}
	}
	return fields
}

func knownKeys(fields map[string]reflect.Type) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}`)

// expandEnv replaces ${NAME} and ${NAME:-default} in every scalar value. An
// unset variable without a default is an error: an empty secret or URL must
// never be used silently.
func expandEnv(node *yaml.Node, path string, lookupEnv func(string) (string, bool), problems *[]error) {
	switch node.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(node.Value, "${") {
			return
		}
		node.Value = envRef.ReplaceAllStringFunc(node.Value, func(ref string) string {
			m := envRef.FindStringSubmatch(ref)
			v, ok := lookupEnv(m[1])
			switch {
			case ok && v != "":
				return v
			case m[2] != "":
				// As in the shell and Compose, ":-" also replaces a variable
				// that is set but empty.
				return strings.TrimPrefix(m[2], ":-")
			case ok:
				// An exported-but-empty secret or URL is a mistake, not a value.
				*problems = append(*problems, fmt.Errorf("%s: line %d: environment variable %s is set but empty; give it a value or write ${%s:-} to allow empty", path, node.Line, m[1], m[1]))
			default:
				*problems = append(*problems, fmt.Errorf("%s: line %d: environment variable %s is not set; set it or write ${%s:-default}", path, node.Line, m[1], m[1]))
			}
			return ""
		})
		// Let YAML resolve the expanded text as if it had been written there,
		// so ${PORT} can fill an int field and ${KEY} a string.
		node.Tag = ""
	case yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			expandEnv(node.Content[i+1], join(path, node.Content[i].Value), lookupEnv, problems)
		}
	case yaml.SequenceNode:
		for i, item := range node.Content {
			expandEnv(item, fmt.Sprintf("%s[%d]", path, i), lookupEnv, problems)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
