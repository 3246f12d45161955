package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// The tour: a scripted client walks a demo of its own through what the
// gateway adds (a tool hidden from one principal, a denial with its
// reason, redactions, cache hits, a stale answer when the server is down,
// the circuit breaker, both protocol eras) and prints each request, the
// answer and the decision-log lines it caused. Each step checks what it
// shows; a step that does not show it makes the tour fail.

// tourTimeout bounds one request of the tour.
const tourTimeout = 30 * time.Second

func cmdTour(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("demo tour", flag.ContinueOnError)
	flags.SetOutput(stderr)
	logFile := flags.String("log", "", "write the gateway's own log to this file (default: discarded)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	logOut := io.Discard
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		logOut = f
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type started struct {
		d *demo
		a demoAddrs
	}
	ready := make(chan started, 1)
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, "127.0.0.1:0", "", logOut, func(d *demo, a demoAddrs) { ready <- started{d, a} })
	}()
	var s started
	select {
	case s = <-ready:
	case err := <-done:
		return fmt.Errorf("tour: the demo did not start: %w", err)
	}
	t := &tour{out: stdout, endpoint: s.a.Endpoint, admin: s.a.Admin, log: &decisionTail{path: s.d.decisionLog}}
	fmt.Fprintf(stdout, "ctxgate demo tour: a gateway at %s in front of a sample MCP server.\nDecision log: %s\nEvery step: → the request, ← the answer, ⚖ the decision-log lines it caused.\n", s.a.Endpoint, s.d.decisionLog)
	t.run(ctx)
	fmt.Fprintf(stdout, "\nThe same in a browser: %s/status (upstreams, policy, cache, last decisions).\nRun it yourself: go run . demo   (keys and URLs in its banner)\n", s.a.Admin)
	cancel()
	<-done
	if t.failed {
		return errTourFailed
	}
	return nil
}

type tour struct {
	out             io.Writer
	endpoint, admin string
	log             *decisionTail
	step            int
	failed          bool
	ids             atomic.Int64
}

// tourClient is one principal's session with the gateway.
type tourClient struct {
	t             *tour
	name, key     string
	session       string
	version       string
	modern, quiet bool
}

// answer is what the tour reads of one exchange.
type answer struct {
	status int
	header http.Header
	msg    struct {
		Result json.RawMessage `json:"result"`
		Error  *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	err error
}

func (t *tour) run(ctx context.Context) {
	alice := &tourClient{t: t, name: "alice", key: demoAliceKey}
	bob := &tourClient{t: t, name: "bob", key: demoBobKey}

	t.title("alice (group mcp-admin) opens a session",
		"The gateway authenticates the API key, the policy allows initialize, the upstream's session is sealed into the gateway's own.")
	a := alice.initialize(ctx)
	t.expect(a.err == nil && a.msg.Result != nil && alice.session != "", "a session")

	t.title("alice lists the tools",
		"Lists are filtered item by item by the policy's visible rule; the raw upstream answer is cached.")
	a = alice.call(ctx, "tools/list", map[string]any{})
	t.expect(hasTools(a, "list_files", "read_file", "search"), "alice sees list_files, read_file and search")

	t.title("bob (no group) lists the tools: search is hidden from him",
		"data.json makes search admin-only; the list is filtered for bob (a legacy-era answer is cached per principal).")
	bob.initialize(ctx)
	a = bob.call(ctx, "tools/list", map[string]any{})
	t.expect(hasTools(a, "list_files", "read_file") && !hasTools(a, "search"), "search is hidden from bob")

	t.title("bob calls search anyway",
		"A hidden tool is answered exactly like one that does not exist, so a client cannot probe for names; nothing reaches the server.")
	a = bob.call(ctx, "tools/call", map[string]any{"name": "search", "arguments": map[string]any{"query": "key"}})
	t.expect(a.msg.Error != nil && a.msg.Error.Message == "tool not found or not permitted", "denied as unknown")

	t.title("bob reads .env: denied, with the policy's reason",
		"demo.rego adds an argument rule; the shipped policy reports it as the reason.")
	a = bob.call(ctx, "tools/call", map[string]any{"name": "read_file", "arguments": map[string]any{"path": ".env"}})
	t.expect(a.msg.Error != nil && strings.Contains(a.msg.Error.Message, "the demo policy keeps .env files private"), "the reason")

	t.title("alice reads notes/deploy.md: the AWS key id in it is redacted",
		"The shipped policy redacts access key ids (AKIA...) from every result, for everyone.")
	a = alice.call(ctx, "tools/call", map[string]any{"name": "read_file", "arguments": map[string]any{"path": "notes/deploy.md"}})
	t.expect(strings.Contains(string(a.msg.Result), "[REDACTED]") && !strings.Contains(string(a.msg.Result), "AKIAIOSFODNN7EXAMPLE"), "[REDACTED] in place of the key")

	t.title("bob reads README.md: e-mail addresses redacted for his team",
		"demo.rego redacts by who is asking: auth.api_keys[].attributes.team is support.")
	a = bob.call(ctx, "tools/call", map[string]any{"name": "read_file", "arguments": map[string]any{"path": "README.md"}})
	t.expect(strings.Contains(string(a.msg.Result), "[email]") && !strings.Contains(string(a.msg.Result), "dana@example.com"), "[email] in place of the address")

	t.title("alice reads a resource twice: the second answer comes from the cache",
		"resources/read is cached for 5m (upstreams[].cache.ttl); every hit is filtered by the policy in force.")
	alice.call(ctx, "resources/read", map[string]any{"uri": "project://files/README.md"})
	a = alice.call(ctx, "resources/read", map[string]any{"uri": "project://files/README.md"})
	t.expect(strings.HasPrefix(a.header.Get("Ctxgate-Cache"), "hit"), "a cache hit")

	t.title("bob speaks the 2026-07-28 era: no session, same policy",
		"A stateless modern request; the sample server speaks only the legacy era, so the gateway bridges it (upstreams[].bridge).")
	modern := &tourClient{t: t, name: "bob", key: demoBobKey, modern: true, version: "2026-07-28"}
	a = modern.call(ctx, "tools/list", map[string]any{})
	t.expect(hasTools(a, "read_file") && !hasTools(a, "search"), "the modern list, search still hidden")

	t.title("the sample server stops; time passes: tools/list is answered stale",
		"POST /demo/upstream/stop on the admin listener, and the demo clock moves 10m on, past the 5m TTL. The upstream fails, so the last good answer is served, marked stale (stale_if_error: 1h).")
	t.admincall(ctx, "/demo/upstream/stop")
	t.admincall(ctx, "/demo/clock/advance?by=10m")
	a = alice.call(ctx, "tools/list", map[string]any{})
	t.expect(strings.HasPrefix(a.header.Get("Ctxgate-Cache"), "stale"), "a stale answer")

	t.title("a call while the server is down: the circuit breaker is open",
		"The failed attempts opened the breaker (2 failures, circuit_breaker); calls are refused at once, nothing is sent.")
	a = alice.call(ctx, "tools/call", map[string]any{"name": "list_files", "arguments": map[string]any{}})
	t.expect(a.msg.Error != nil && a.msg.Error.Code == -31013, "-31013 circuit breaker open")

	t.title("the sample server starts again: the breaker lets a probe through and closes",
		"POST /demo/upstream/start; after the breaker's delay (2s) the next call is the probe.")
	t.admincall(ctx, "/demo/upstream/start")
	alice.quiet = true
	deadline := time.Now().Add(tourTimeout)
	for {
		a = alice.call(ctx, "tools/call", map[string]any{"name": "list_files", "arguments": map[string]any{}})
		if a.err == nil && a.msg.Error == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		t.log.skip()                       // the retries' decisions would bury the answer
		time.Sleep(200 * time.Millisecond) // the breaker's delay is real time
	}
	alice.quiet = false
	alice.print(a, "tools/call", map[string]any{"name": "list_files"})
	t.expect(a.err == nil && a.msg.Error == nil, "answered again")
}

func (t *tour) title(title, why string) {
	t.step++
	fmt.Fprintf(t.out, "\n── %d. %s\n   %s\n", t.step, title, why)
	t.log.skip() // only what this step causes
}

func (t *tour) expect(ok bool, what string) {
	if ok {
		fmt.Fprintf(t.out, "   ✓ %s\n", what)
		return
	}
	t.failed = true
	fmt.Fprintf(t.out, "   ✗ expected: %s\n", what)
}

func (t *tour) admincall(ctx context.Context, path string) {
	ctx, cancel := context.WithTimeout(ctx, tourTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, t.admin+path, nil)
	req.Header.Set("X-Ctxgate-Admin", "1") // state-changing admin calls say so (a CSRF defence)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(t.out, "→ admin POST %s  X-Ctxgate-Admin: 1\n← %v\n", path, err)
		t.failed = true
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(t.out, "→ admin POST %s  X-Ctxgate-Admin: 1\n← %d %s\n", path, resp.StatusCode, strings.TrimSpace(string(body)))
	if resp.StatusCode != http.StatusOK {
		t.failed = true
	}
}

func (c *tourClient) initialize(ctx context.Context) answer {
	a := c.send(ctx, "initialize", map[string]any{"protocolVersion": "2025-11-25", "capabilities": map[string]any{},
		"clientInfo": map[string]string{"name": "ctxgate-tour", "version": "1"}}, true)
	c.session = a.header.Get("Mcp-Session-Id")
	var r struct {
		ProtocolVersion string `json:"protocolVersion"`
	}
	_ = json.Unmarshal(a.msg.Result, &r)
	c.version = r.ProtocolVersion
	c.print(a, "initialize", nil)
	c.send(ctx, "notifications/initialized", nil, false)
	c.t.log.skip() // the notification's allow is plumbing
	return a
}

func (c *tourClient) call(ctx context.Context, method string, params map[string]any) answer {
	a := c.send(ctx, method, params, true)
	if !c.quiet {
		c.print(a, method, params)
	}
	return a
}

func (c *tourClient) send(ctx context.Context, method string, params map[string]any, withID bool) answer {
	ctx, cancel := context.WithTimeout(ctx, tourTimeout)
	defer cancel()
	msg := map[string]any{"jsonrpc": "2.0", "method": method}
	if withID {
		msg["id"] = c.t.ids.Add(1)
	}
	if c.modern {
		params["_meta"] = map[string]any{"io.modelcontextprotocol/protocolVersion": c.version, "io.modelcontextprotocol/clientCapabilities": map[string]any{},
			"io.modelcontextprotocol/clientInfo": map[string]string{"name": "ctxgate-tour", "version": "1"}}
	}
	if params != nil {
		msg["params"] = params
	}
	body, _ := json.Marshal(msg)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, c.t.endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+c.key)
	if c.session != "" {
		req.Header.Set("Mcp-Session-Id", c.session)
	}
	if c.version != "" {
		req.Header.Set("Mcp-Protocol-Version", c.version)
	}
	if c.modern {
		req.Header.Set("Mcp-Method", method)
		if name, ok := params["name"].(string); ok {
			req.Header.Set("Mcp-Name", name)
		}
	}
	var a answer
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	a.status, a.header = resp.StatusCode, resp.Header
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		a.err = err
		return a
	}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(answerJSON(resp.Header.Get("Content-Type"), raw), &a.msg); err != nil {
			a.err = fmt.Errorf("HTTP %d, not a JSON-RPC answer: %s", resp.StatusCode, clipLine(string(raw)))
		}
	}
	return a
}

// print shows one exchange and the decision-log lines it caused.
func (c *tourClient) print(a answer, method string, params map[string]any) {
	shown := map[string]any{}
	for k, v := range params {
		if k != "_meta" {
			shown[k] = v
		}
	}
	p, _ := json.Marshal(shown)
	era := "session"
	if c.modern {
		era = "stateless"
	}
	fmt.Fprintf(c.t.out, "→ %-5s POST /mcp/project  %s %s  (%s, %s)\n", c.name, method, p, cmpOr(c.version, "no version yet"), era)
	switch {
	case a.err != nil:
		fmt.Fprintf(c.t.out, "← %v\n", a.err)
	default:
		line := fmt.Sprintf("← %d", a.status)
		if v := a.header.Get("Ctxgate-Cache"); v != "" {
			line += "  Ctxgate-Cache: " + v
		}
		fmt.Fprintln(c.t.out, line+"  "+summary(method, a))
	}
	for _, l := range c.t.log.next() {
		fmt.Fprintln(c.t.out, "⚖ "+l)
	}
}

// summary is one line about an answer.
func summary(method string, a answer) string {
	if e := a.msg.Error; e != nil {
		return fmt.Sprintf("error %d: %s", e.Code, e.Message)
	}
	var r struct {
		ProtocolVersion string `json:"protocolVersion"`
		ServerInfo      struct{ Name, Version string }
		Tools           []struct{ Name string }
		Content         []struct{ Text string }
		Contents        []struct{ Text string }
	}
	_ = json.Unmarshal(a.msg.Result, &r)
	switch {
	case method == "initialize":
		return fmt.Sprintf("protocol %s, server %s %s", r.ProtocolVersion, r.ServerInfo.Name, r.ServerInfo.Version)
	case method == "tools/list":
		var names []string
		for _, t := range r.Tools {
			names = append(names, t.Name)
		}
		return "tools: " + strings.Join(names, ", ")
	case len(r.Content) > 0:
		return "text: " + clipLine(r.Content[0].Text)
	case len(r.Contents) > 0:
		return "text: " + clipLine(r.Contents[0].Text)
	}
	return clipLine(string(a.msg.Result))
}

func clipLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "..."
	}
	return s
}

func hasTools(a answer, names ...string) bool {
	var r struct{ Tools []struct{ Name string } }
	if a.msg.Result == nil || json.Unmarshal(a.msg.Result, &r) != nil {
		return false
	}
	for _, n := range names {
		found := false
		for _, t := range r.Tools {
			found = found || t.Name == n
		}
		if !found {
			return false
		}
	}
	return true
}

// answerJSON is the JSON-RPC message of an answer: the body, or the first
// SSE event's data.
func answerJSON(contentType string, raw []byte) []byte {
	if !strings.HasPrefix(contentType, "text/event-stream") {
		return raw
	}
	var data []byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data:"); ok {
			data = append(data, strings.TrimPrefix(d, " ")...)
		} else if sc.Text() == "" && len(data) > 0 {
			break
		}
	}
	return data
}

// decisionTail reads the decision-log lines written since the last read.
type decisionTail struct {
	path   string
	offset int64
}

// next returns the new complete lines, each summarised.
func (d *decisionTail) next() []string {
	f, err := os.Open(d.path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(d.offset, io.SeekStart); err != nil {
		return nil
	}
	b, _ := io.ReadAll(f)
	end := bytes.LastIndexByte(b, '\n') + 1 // a line still being written waits for the next read
	d.offset += int64(end)
	var out []string
	for line := range strings.SplitSeq(string(b[:end]), "\n") {
		if line != "" {
			out = append(out, summariseDecision(line))
		}
	}
	return out
}

func (d *decisionTail) skip() { d.next() }

// summariseDecision shortens one decision-log record to what a reader
// needs: the rule, who, what, and the result.
func summariseDecision(line string) string {
	var rec struct {
		Path      string          `json:"path"`
		Principal string          `json:"principal"`
		Result    json.RawMessage `json:"result"`
		Input     struct {
			Method string `json:"method"`
			Phase  string `json:"phase"`
			Tool   *struct {
				Name string `json:"name"`
			} `json:"tool"`
			Resource *struct {
				URI string `json:"uri"`
			} `json:"resource"`
		} `json:"input"`
	}
	if json.Unmarshal([]byte(line), &rec) != nil {
		return clipLine(line)
	}
	what := rec.Input.Method
	if rec.Input.Tool != nil {
		what += " " + rec.Input.Tool.Name
	}
	if rec.Input.Resource != nil {
		what += " " + rec.Input.Resource.URI
	}
	var res struct {
		Allow   *bool    `json:"allow"`
		Reason  string   `json:"reason"`
		Redact  []any    `json:"redact"`
		Failure string   `json:"failure"`
		Total   *int     `json:"total"`
		Removed []string `json:"removed"`
	}
	_ = json.Unmarshal(rec.Result, &res)
	verdict := clipLine(string(rec.Result))
	switch {
	case res.Allow != nil && *res.Allow:
		verdict = "allow"
		if len(res.Redact) > 0 {
			verdict += fmt.Sprintf(", %d redaction(s) for the result", len(res.Redact))
		}
	case res.Allow != nil:
		verdict = "deny: " + cmpOr(res.Reason, res.Failure)
	case res.Total != nil:
		verdict = fmt.Sprintf("%d item(s), hidden: %s", *res.Total, cmpOr(strings.Join(res.Removed, ", "), "none"))
	}
	return fmt.Sprintf("%-8s %-14s %s  →  %s", strings.TrimPrefix(rec.Path, "ctxgate/authz/"), rec.Principal, what, verdict)
}
