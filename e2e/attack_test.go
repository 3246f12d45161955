package e2e

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/tools/txtar"
)

// The attack corpus: one txtar file per case under testdata/attacks/<family>/.
// Each file's comment says what the attack is; its sections are
//
//	-- request --   the raw HTTP/1.1 request, sent as is over a TCP connection
//	                after these substitutions: every LF becomes CRLF (so the
//	                file is readable; a request without a body ends with an
//	                empty line), \xHH is that byte, {{REPEAT:n:text}} is text
//	                n times, {{LEN}} is the length of the body (after the
//	                blank line), and {{HOST}}, {{KEY_A}}, {{KEY_B}},
//	                {{SESSION_A}} (key A's session on route everything),
//	                {{SESSION_A_OTHER}} (key A's session on route other).
//	                The route modern has an upstream that serves 2026-07-28;
//	                /mcp/fed federates modern and everything.
//	-- want --      one assertion a line (the same variables are substituted):
//	                status: 400
//	                code: -32600              the JSON-RPC error code of the answer
//	                header: Name: value       a response header, exactly
//	                log: k=v k=v              fields of the request's access record
//	                                          (found by X-Request-Id); "log: none"
//	                                          means net/http refused the request
//	                                          before the gateway saw it
//	                decision: k=v k=v         fields (dotted paths) of the request's
//	                                          decision-log record; "decision: none"
//	                                          means the policy was never asked
//	                body-lacks: text          the answer's body must not contain text
//	                forwarded: 1              requests the upstream saw (default 0)
//	                upstream-header: N: v     a header of the last forwarded request
//	                upstream-noheader: N      a header it must not have
//	                closed: true              the answer says Connection: close and
//	                                          the gateway closes the connection
//	                                          after it (nothing after it is read as
//	                                          another request)
//
// Every case asserts what reached the upstream: nothing, unless it says so.
//
// Cases under admin/ are sent to the admin listener, whose host:port is
// {{ADMIN_HOST}}.

const (
	attackKeyA = "attack-key-alice-0123456789"
	attackKeyB = "attack-key-bob-9876543210"
	// attackUpstreamToken is the gateway's own credential for the upstream:
	// the one Authorization the upstream may ever see.
	attackUpstreamToken = "Bearer gateway-upstream-secret"
	attackMaxBody       = 65536
)

// attackEnv is the gateway under attack and what the cases may refer to.
type attackEnv struct {
	gw   *gatewayProc
	rec  *recorder // in front of the legacy upstream (routes everything, other)
	recM *recorder // in front of a stateless upstream serving 2026-07-28 too (route modern)
	host string
	vars map[string]string
	// dial is where send connects: the MCP listener (host), or the
	// admin listener for the case being run.
	dial string
}

func startAttackEnv(t *testing.T) *attackEnv {
	t.Helper()
	rec := startRecorder(t, startEverything(t))
	recM := startRecorder(t, startEverythingMode(t, true))
	gw := startGateway(t, fmt.Sprintf(`
server: {listen: "127.0.0.1:0", max_body_bytes: %d, max_header_bytes: 16384, read_header_timeout: 2s, read_body_timeout: 2s,
  max_json_values: 20000, max_json_string_bytes: 32768}
admin: {listen: "127.0.0.1:0"}
policy: {dir: %q, decision_log: stderr}
auth:
  api_keys:
    - {name: alice, sha256: %q}
    - {name: bob, sha256: %q}
upstreams:
  - name: everything
    url: %q
    identity_headers: true
    credentials: {header: {name: Authorization, value: %q}}
  - {name: other, url: %q}
  - {name: modern, url: %q}
routes:
  - {path: /mcp/fed, upstreams: [modern, everything]}
`, attackMaxBody, allowAllPolicy, hashKey(attackKeyA), hashKey(attackKeyB), rec.URL, attackUpstreamToken, rec.URL, recM.URL))
	env := &attackEnv{gw: gw, rec: rec, recM: recM, host: strings.TrimPrefix(gw.URL, "http://")}
	env.vars = map[string]string{"{{HOST}}": env.host, "{{ADMIN_HOST}}": strings.TrimPrefix(gw.Admin, "http://"), "{{KEY_A}}": attackKeyA, "{{KEY_B}}": attackKeyB}
	for _, s := range []struct{ v, route string }{{"{{SESSION_A}}", "everything"}, {"{{SESSION_A_OTHER}}", "other"}} {
		c := &rpc{url: gw.URL + "/mcp/" + s.route, header: http.Header{"Authorization": {"Bearer " + attackKeyA}}}
		c.initialize(t)
		env.vars[s.v] = c.session
	}
	// The first modern request on a route makes the gateway probe the
	// upstream's eras; done here so that no case sees a probe.
	for _, route := range []string{"everything", "modern"} {
		probe := &rpc{url: gw.URL + "/mcp/" + route, header: http.Header{
			"Authorization": {"Bearer " + attackKeyA}, "Mcp-Protocol-Version": {"2026-07-28"}, "Mcp-Method": {"tools/list"}}}
		resp := probe.post(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`)
		_, _ = io.Copy(io.Discard, resp.Body)
	}
	return env
}

var (
	hexEscape = regexp.MustCompile(`\\x([0-9a-fA-F]{2})`)
	repeat    = regexp.MustCompile(`\{\{REPEAT:(\d+):([^}]*)\}\}`)
)

// forwarded counts the requests both upstreams received.
func (env *attackEnv) forwarded() int { return env.rec.count() + env.recM.count() }

// substitute replaces the {{NAME}} variables.
func (env *attackEnv) substitute(s string) string {
	for k, v := range env.vars {
		s = strings.ReplaceAll(s, k, v)
	}
	return s
}

// rawRequest turns a case's request section into the bytes to send.
func (env *attackEnv) rawRequest(t *testing.T, section []byte) []byte {
	t.Helper()
	s := env.substitute(strings.ReplaceAll(string(section), "\n", "\r\n"))
	s = repeat.ReplaceAllStringFunc(s, func(m string) string {
		sub := repeat.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sub[1])
		return strings.Repeat(sub[2], n)
	})
	s = hexEscape.ReplaceAllStringFunc(s, func(m string) string {
		b, _ := hex.DecodeString(m[2:])
		return string(b)
	})
	if _, body, ok := strings.Cut(s, "\r\n\r\n"); ok {
		s = strings.ReplaceAll(s, "{{LEN}}", strconv.Itoa(len(body)))
	}
	return []byte(s)
}

// send writes raw on a new connection and reads one response. The write
// runs beside the read: the gateway may answer (413) before it has read
// all of an oversized body.
func (env *attackEnv) send(t *testing.T, raw []byte) (*http.Response, []byte, func() bool) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", env.dial, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(15 * time.Second))
	go func() { _, _ = conn.Write(raw) }()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	// closed reports whether the gateway ends the connection after the
	// answer: the answer says Connection: close (which ReadResponse turns
	// into resp.Close), and then EOF, rather than another response or the
	// deadline.
	closed := func() bool {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := br.ReadByte()
		return resp.Close && errors.Is(err, io.EOF)
	}
	return resp, body, closed
}

func TestAttackCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "attacks", "*", "*.txtar"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no attack cases: %v", err)
	}
	env := startAttackEnv(t)
	for _, file := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(file, filepath.Join("testdata", "attacks")+string(filepath.Separator)), ".txtar")
		t.Run(name, func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sections := map[string][]byte{}
			for _, f := range ar.Files {
				sections[f.Name] = f.Data
			}
			if sections["request"] == nil || sections["want"] == nil {
				t.Fatalf("%s: needs a request and a want section", file)
			}
			env.dial = env.host
			if strings.HasPrefix(name, "admin"+string(filepath.Separator)) {
				env.dial = env.vars["{{ADMIN_HOST}}"]
			}
			before := env.forwarded()
			resp, body, closed := env.send(t, env.rawRequest(t, sections["request"]))
			env.check(t, env.substitute(string(sections["want"])), resp, body, closed, before)
		})
	}
	t.Run("slow/headers", env.testSlowHeaders)
	t.Run("slow/body", env.testSlowBody)
	t.Run("mcp/id-collision", env.testIDCollision)
}

// testIDCollision: two principals use the same JSON-RPC id at the same
// time on one upstream; each gets the answer to its own request, never the
// other's (text content for Alice's tool, image content for Bob's).
func (env *attackEnv) testIDCollision(t *testing.T) {
	const body = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":%q,"arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}`
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := range 40 {
		key, tool, want := attackKeyA, "test_simple_text", `"type":"text"`
		if i%2 == 1 {
			key, tool, want = attackKeyB, "test_image_content", `"type":"image"`
		}
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, env.gw.URL+"/mcp/modern", strings.NewReader(fmt.Sprintf(body, tool)))
			req.Header = http.Header{"Authorization": {"Bearer " + key}, "Content-Type": {"application/json"},
				"Accept": {"application/json, text/event-stream"}, "Mcp-Protocol-Version": {"2026-07-28"},
				"Mcp-Method": {"tools/call"}, "Mcp-Name": {tool}}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(got), want) || !strings.Contains(string(got), `"id":1`) {
				errs <- fmt.Sprintf("%s called %s: %s %.200s", key, tool, resp.Status, got)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// stalled opens n connections that each send raw and then nothing more.
func (env *attackEnv) stalled(t *testing.T, n int, raw string) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := net.DialTimeout("tcp", env.host, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns
}

// responsive checks that a well-behaved client is served meanwhile.
func (env *attackEnv) responsive(t *testing.T) {
	t.Helper()
	c := &rpc{url: env.gw.URL + "/mcp/everything", session: env.vars["{{SESSION_A}}"], header: http.Header{"Authorization": {"Bearer " + attackKeyA}}}
	if resp := c.post(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`); resp.StatusCode != http.StatusOK {
		t.Errorf("a normal request beside the slow clients: %s", resp.Status)
	}
}

// testSlowHeaders: slowloris. Connections that never finish their headers
// are closed after server.read_header_timeout (2s here) without an answer,
// and the gateway serves other clients meanwhile.
func (env *attackEnv) testSlowHeaders(t *testing.T) {
	before := env.forwarded()
	conns := env.stalled(t, 50, "POST /mcp/everything HTTP/1.1\r\nHost: "+env.host+"\r\nX-Slow: a")
	env.responsive(t)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 512))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a connection stalled in its headers was not closed: read %d bytes, %v", n, err)
		}
	}
	if got := env.forwarded() - before; got != 1 {
		t.Errorf("the upstream received %d requests, want 1 (the normal one)", got)
	}
}

// testSlowBody: headers in time, then a body that stops coming. The
// request is answered 408 after server.read_body_timeout (2s here) and
// nothing is forwarded.
func (env *attackEnv) testSlowBody(t *testing.T) {
	before := env.forwarded()
	head := "POST /mcp/everything HTTP/1.1\r\nHost: " + env.host + "\r\nAuthorization: Bearer " + attackKeyA +
		"\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: " +
		env.vars["{{SESSION_A}}"] + "\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":"
	conns := env.stalled(t, 20, head)
	env.responsive(t)
	for _, c := range conns {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("a stalled body got no answer: %v", err)
		}
		e := decodeError(t, resp)
		if resp.StatusCode != http.StatusRequestTimeout || e.Error.Code != -31006 {
			t.Errorf("stalled body: %s %d, want 408 -31006", resp.Status, e.Error.Code)
		}
	}
	if got := env.forwarded() - before; got != 1 {
		t.Errorf("the upstream received %d requests, want 1 (the normal one)", got)
	}
}

// check asserts every line of a case's want section.
func (env *attackEnv) check(t *testing.T, want string, resp *http.Response, body []byte, closed func() bool, before int) {
	t.Helper()
	forwarded := 0
	for line := range strings.Lines(want) {
		line = strings.TrimSpace(line)
		key, val, ok := strings.Cut(line, ":")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !ok {
			t.Fatalf("want line %q: not key: value", line)
		}
		val = strings.TrimSpace(val)
		switch key {
		case "status":
			if got := strconv.Itoa(resp.StatusCode); got != val {
				t.Errorf("status %s, want %s; body %q", got, val, body)
			}
		case "code":
			var e rpcError
			if err := json.Unmarshal(body, &e); err != nil || strconv.FormatInt(e.Error.Code, 10) != val {
				t.Errorf("JSON-RPC error code %d, want %s; body %q", e.Error.Code, val, body)
			}
		case "header":
			name, v, _ := strings.Cut(val, ":")
			if got := resp.Header.Get(name); got != strings.TrimSpace(v) {
				t.Errorf("header %s = %q, want %q", name, got, strings.TrimSpace(v))
			}
		case "log":
			env.checkLog(t, resp, val)
		case "decision":
			env.checkDecision(t, resp, val)
		case "body-lacks":
			if strings.Contains(string(body), val) {
				t.Errorf("body contains %q: %q", val, body)
			}
		case "forwarded":
			forwarded, _ = strconv.Atoi(val)
		case "closed":
			if !closed() {
				t.Errorf("the connection stayed open after the answer (or sent more)")
			}
		case "upstream-header", "upstream-noheader":
			env.checkUpstreamHeader(t, key == "upstream-header", val)
		default:
			t.Fatalf("want line %q: unknown key %q", line, key)
		}
	}
	if got := env.forwarded() - before; got != forwarded {
		t.Errorf("the upstream received %d requests, want %d", got, forwarded)
	}
}

// checkLog finds the request's access record and compares fields.
func (env *attackEnv) checkLog(t *testing.T, resp *http.Response, want string) {
	t.Helper()
	id := resp.Header.Get("X-Request-Id")
	if want == "none" {
		if id != "" {
			t.Errorf("X-Request-Id %q: the gateway's handler ran; want net/http to refuse the request", id)
		}
		return
	}
	if id == "" {
		t.Fatalf("no X-Request-Id: the request never reached the gateway's handler")
	}
	var rec map[string]any
	waitFor(t, "the access record of "+id, readyDeadline, func() bool {
		for _, r := range logRecords(env.gw.stderr.String()) {
			if r["request_id"] == id && r["msg"] == "request" {
				rec = r
				return true
			}
		}
		return false
	})
	for _, kv := range strings.Fields(want) {
		k, v, _ := strings.Cut(kv, "=")
		if got := fmt.Sprint(rec[k]); got != v {
			t.Errorf("access record %s = %q, want %q (record %v)", k, got, v, rec)
		}
	}
}

// checkDecision finds the request's decision-log record (by request id,
// once its access record is written; the request-phase one, the first) and
// compares fields.
func (env *attackEnv) checkDecision(t *testing.T, resp *http.Response, want string) {
	t.Helper()
	id := resp.Header.Get("X-Request-Id")
	env.checkLog(t, resp, "request_id="+id) // the access record comes after any decision
	var rec map[string]any
	for _, r := range logRecords(env.gw.stderr.String()) {
		if r["request_id"] == id && r["decision_id"] != nil {
			rec = r
			break
		}
	}
	if want == "none" {
		if rec != nil {
			t.Errorf("the policy was asked: %v", rec)
		}
		return
	}
	if rec == nil {
		t.Fatalf("no decision record for request %s", id)
	}
	for _, kv := range strings.Fields(want) {
		k, v, _ := strings.Cut(kv, "=")
		var got any = rec
		for _, part := range strings.Split(k, ".") {
			m, _ := got.(map[string]any)
			got = m[part]
		}
		if fmt.Sprint(got) != v {
			t.Errorf("decision record %s = %q, want %q", k, fmt.Sprint(got), v)
		}
	}
}

func (env *attackEnv) checkUpstreamHeader(t *testing.T, present bool, val string) {
	t.Helper()
	reqs := env.rec.requests()
	if len(reqs) == 0 {
		t.Fatalf("nothing reached the upstream")
	}
	last := reqs[len(reqs)-1]
	if !present {
		if vs := last.header.Values(val); len(vs) > 0 {
			t.Errorf("upstream received %s: %q", val, vs)
		}
		return
	}
	name, v, _ := strings.Cut(val, ":")
	if got := last.header.Values(name); len(got) != 1 || got[0] != strings.TrimSpace(v) {
		t.Errorf("upstream header %s = %q, want exactly [%q]", name, got, strings.TrimSpace(v))
	}
}

// TestAttackCorpusSize keeps the corpus at the size issue 11 asks for.
func TestAttackCorpusSize(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "attacks", "*", "*.txtar"))
	if len(files) < 50 {
		t.Errorf("%d attack cases, want at least 50", len(files))
	}
}
