package config_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ctxgate/ctxgate/config"
)

// TestParseAll: an unknown key, a type error and a validation problem are
// reported together, a type error by its field path, and a validation
// finding that only repeats a type error is left out.
func TestParseAll(t *testing.T) {
	yaml := "server:\n  listne: x\n  max_body_bytes: lots\nauth:\n  anonymous: maybe\npolicy: {dir: p}\nupstreams: [{name: docs, url: 'ftp://x'}]\nsessions:\n  ttl: ${CTXGATE_TEST_TTL}\n"
	cfg, problems := config.ParseAll([]byte(yaml), lookup(map[string]string{"CTXGATE_TEST_TTL": "forever"}))
	if cfg == nil {
		t.Fatal("ParseAll returned no configuration")
	}
	var got []string
	for _, p := range problems {
		got = append(got, p.Error())
	}
	want := []string{
		"server.listne: line 2: unknown key; known keys here: allowed_hosts, allowed_origins, idle_timeout, listen, max_body_bytes, max_header_bytes, max_inflight, max_json_string_bytes, max_json_values, max_streams, public_url, read_body_timeout, read_header_timeout, shutdown_timeout, tls",
		`server.max_body_bytes: line 3: "lots" is not a whole number, e.g. 1048576`,
		`auth.anonymous: line 5: "maybe" is not a boolean: true or false`,
		// An expanded value may be a secret: never echoed.
		"sessions.ttl: line 9: the environment's value is not a duration: a number with a unit, e.g. 10s, 500ms or 2m",
		"upstreams[0].url: scheme must be http or https",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if _, problems := config.ParseAll([]byte("server: [\n"), lookup(nil)); len(problems) != 1 {
		t.Errorf("a YAML syntax error gave %d problems, want 1", len(problems))
	}
}
