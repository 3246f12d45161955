package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// ParseAll is Parse for `ctxgate check`: instead of stopping at the first
// kind of problem, it returns the configuration as far as it could be read
// (nil only when the YAML itself does not parse) together with every
// problem: unknown and duplicate keys, environment references, values of
// the wrong type (each with its field path), and Validate's findings. A
// Validate finding about a field whose value had the wrong type is left
// out: it would only repeat that problem.
func ParseAll(data []byte, lookupEnv func(string) (string, bool)) (*Config, []error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, []error{err}
	}
	cfg := &Config{}
	var problems []error
	typed := map[string]bool{} // paths with a type problem
	if len(root.Content) > 0 {
		doc := root.Content[0]
		t := reflect.TypeOf(*cfg)
		checkKeys(doc, t, "", &problems)
		expandEnv(doc, "", lookupEnv, &problems)
		n := len(problems)
		checkTypes(doc, t, "", &problems)
		for _, p := range problems[n:] {
			var tp typeProblem
			if errors.As(p, &tp) {
				typed[tp.path] = true
			}
		}
		// Decode what can be decoded; the problems above already say what
		// could not (yaml.v3 keeps decoding past a type error).
		_ = doc.Decode(cfg)
	}
	cfg.applyDefaults()
	for _, p := range cfg.Validate() {
		if !derived(p.Path, typed) {
			problems = append(problems, p)
		}
	}
	return cfg, problems
}

// derived reports whether a Validate finding at path is about a field with
// a type problem, or a block holding one (auth: no method configured, when
// auth.anonymous was not a boolean).
func derived(path string, typed map[string]bool) bool {
	for t := range typed {
		if t == path || strings.HasPrefix(t, path+".") || strings.HasPrefix(t, path+"[") {
			return true
		}
	}
	return false
}

// typeProblem is a value YAML cannot decode into its field.
type typeProblem struct {
	path, msg string
}

func (p typeProblem) Error() string { return p.path + ": " + p.msg }

var durationType = reflect.TypeOf(time.Duration(0))

// checkTypes walks the (expanded) YAML tree beside the Go type and reports
// every value that does not decode into its field, with the field's path:
// yaml.v3's own TypeError names only a line.
func checkTypes(node *yaml.Node, t reflect.Type, path string, problems *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case node.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		for i := 0; i+1 < len(node.Content); i += 2 {
			if ft, ok := fields[node.Content[i].Value]; ok {
				checkTypes(node.Content[i+1], ft, join(path, node.Content[i].Value), problems)
			}
		}
		return
	case node.Kind == yaml.SequenceNode && t.Kind() == reflect.Slice:
		for i, item := range node.Content {
			checkTypes(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), problems)
		}
		return
	case node.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(node.Content); i += 2 {
			checkTypes(node.Content[i+1], t.Elem(), join(path, node.Content[i].Value), problems)
		}
		return
	case node.Kind == yaml.AliasNode:
		return // decoded (and checked) where the anchor is
	}
	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return // null leaves the default in place
	}
	if err := node.Decode(reflect.New(t).Interface()); err != nil {
		// An expanded value (its tag cleared by expandEnv) may be a
		// secret: say where it came from, never what it is.
		what := fmt.Sprintf("%q", truncate(node.Value, 40))
		switch {
		case node.Kind != yaml.ScalarNode:
			what = "a " + map[yaml.Kind]string{yaml.MappingNode: "mapping", yaml.SequenceNode: "list"}[node.Kind]
		case node.Tag == "":
			what = "the environment's value"
		}
		*problems = append(*problems, typeProblem{path, fmt.Sprintf("line %d: %s is not %s", node.Line, what, typeHint(t))})
	}
}

// typeHint describes what a field of type t accepts, with an example.
func typeHint(t reflect.Type) string {
	if t == durationType {
		return "a duration: a number with a unit, e.g. 10s, 500ms or 2m"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "a boolean: true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, e.g. 1048576"
	case reflect.Float32, reflect.Float64:
		return "a number, e.g. 0.5"
	case reflect.String:
		return "a string (quote it)"
	case reflect.Slice:
		return "a list, e.g. [a, b]"
	case reflect.Struct, reflect.Map:
		return "a mapping of keys to values"
	}
	return "a " + t.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
