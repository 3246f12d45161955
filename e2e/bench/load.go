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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const protocolVersion = "2025-11-25"

// session is one established MCP session (legacy era: initialize, then
// every request carries Mcp-Session-Id).
type session struct {
	hc    *http.Client
	url   string
	token string // bearer token, or "" for anonymous
	id    string // Mcp-Session-Id
	// fresh, when set, gives a new token for every request after
	// initialization (-fresh): the gateway then verifies a signature per
	// request instead of answering from its verified-token cache.
	fresh *tokenCycler
	// want is what the fixture answers, to check answers by.
	want expected
	// tally counts the Ctxgate-Cache headers of the answers; the sessions
	// of a load generator share one.
	tally *cacheTally
}

// cacheTally counts where ctxgate says answers came from (the
// Ctxgate-Cache header): a hit, a miss, or anything else (stale, bypass).
// Answers without the header (every target but the cached one) are not
// counted.
type cacheTally struct {
	hits, misses, other atomic.Int64
}

func (c *cacheTally) count(header string) {
	switch {
	case c == nil || header == "":
	case header == "hit":
		c.hits.Add(1)
	case header == "miss":
		c.misses.Add(1)
	default:
		c.other.Add(1)
	}
}

// take returns the counts so far and starts again from zero.
func (c *cacheTally) take() (hits, misses, other int64) {
	return c.hits.Swap(0), c.misses.Swap(0), c.other.Swap(0)
}

// tokenCycler hands out tokens in turn, starting over when all are used.
type tokenCycler struct {
	tokens []string
	next   atomic.Int64
}

func (c *tokenCycler) token() string {
	return c.tokens[(c.next.Add(1)-1)%int64(len(c.tokens))]
}

// reused is how many tokens were handed out a second time or more.
func (c *tokenCycler) reused() int64 {
	if c == nil {
		return 0
	}
	return max(0, c.next.Load()-int64(len(c.tokens)))
}

// post sends one JSON-RPC message and returns the status and body.
func (s *session) post(ctx context.Context, body []byte) (int, http.Header, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.id != "" {
		req.Header.Set("Mcp-Session-Id", s.id)
		req.Header.Set("Mcp-Protocol-Version", protocolVersion)
	}
	switch {
	case s.fresh != nil:
		req.Header.Set("Authorization", "Bearer "+s.fresh.token())
	case s.token != "":
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b, err
}

// openSession initializes a session and lists the tools once, as a client
// does: the gateway learns the tools' annotations from the list, and the
// shipped policy lets only tools known to be read-only be called.
func openSession(ctx context.Context, hc *http.Client, url, token string, sh shape) (*session, error) {
	s := &session{hc: hc, url: url, token: token, want: sh.expected()}
	status, h, body, err := s.post(ctx, []byte(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"`+
		protocolVersion+`","capabilities":{},"clientInfo":{"name":"ctxgate-bench","version":"1"}}}`))
	if err != nil {
		return nil, fmt.Errorf("initialize: %w", err)
	}
	if status != http.StatusOK || h.Get("Mcp-Session-Id") == "" {
		return nil, fmt.Errorf("initialize: HTTP %d, session %q: %.300s", status, h.Get("Mcp-Session-Id"), body)
	}
	s.id = h.Get("Mcp-Session-Id")
	if status, _, body, err = s.post(ctx, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)); err != nil || status != http.StatusAccepted {
		return nil, fmt.Errorf("notifications/initialized: HTTP %d, %v: %.300s", status, err, body)
	}
	if err := s.call(ctx, 1); err != nil {
		return nil, fmt.Errorf("first tools/list: %w", err)
	}
	return s, nil
}

// The workload's mix, by request number n: n%mixEvery == listAt is a
// tools/list, n%mixEvery == readAt a resources/read of the fixture's
// resource, the others tools/call (3 : 1 : 1). Agents call tools more often
// than they list them or read a resource.
const (
	mixEvery = 5
	listAt   = 1
	readAt   = 3
)

// requestMethod is the method of request number n of the workload.
func requestMethod(n uint64) string {
	switch n % mixEvery {
	case listAt:
		return "tools/list"
	case readAt:
		return "resources/read"
	}
	return "tools/call"
}

// callKeys is how many different arguments the tools/call requests cycle
// through (key k0 to k15), as an agent repeats its lookups: a cache keyed
// by the arguments then holds every answer after warm-up.
const callKeys = 16

// call sends request number n of the workload and checks the answer.
func (s *session) call(ctx context.Context, n uint64) error {
	method := requestMethod(n)
	var body []byte
	switch method {
	case "tools/list":
		body = fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`, n)
	case "resources/read":
		body = fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":"resources/read","params":{"uri":%q}}`, n, fixtureResource)
	default:
		body = fmt.Appendf(nil, `{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":%q,"arguments":{"key":"k%d"}}}`, n, fixtureTool, n%callKeys)
	}
	status, h, resp, err := s.post(ctx, body)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("HTTP %d: %.300s", status, resp)
	}
	s.tally.count(h.Get(cacheHeader))
	return checkAnswer(h.Get("Content-Type"), resp, n, method, s.want)
}

// expected is what the fixture of a shape answers: its tools/list's
// length and its tools/call's text (computed once: it may be a MiB).
type expected struct {
	tools int
	text  string
}

func (sh shape) expected() expected { return expected{tools: sh.listSize, text: sh.text()} }

// answer is the part of a JSON-RPC response the check reads.
type answer struct {
	ID     json.RawMessage `json:"id"`
	Error  json.RawMessage `json:"error"`
	Result *struct {
		Tools    []struct{ Name string }      `json:"tools"`
		Content  []struct{ Text string }      `json:"content"`
		IsError  bool                         `json:"isError"`
		Contents []struct{ URI, Text string } `json:"contents"`
	} `json:"result"`
}

// checkAnswer checks that body is the fixture's answer to request n of
// method: the right id, a result, and the fixture's fixed tools, resource
// or text. A JSON answer or an event stream carrying one message are both
// accepted.
func checkAnswer(contentType string, body []byte, n uint64, method string, want expected) error {
	if strings.HasPrefix(contentType, "text/event-stream") {
		var err error
		if body, err = firstEventData(body); err != nil {
			return err
		}
	}
	var a answer
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("answer is not JSON: %w: %.300s", err, body)
	}
	switch {
	case string(a.ID) != strconv.FormatUint(n, 10):
		return fmt.Errorf("answer id %s to request %d", a.ID, n)
	case a.Error != nil || a.Result == nil:
		return fmt.Errorf("error answer: %.300s", body)
	}
	r := a.Result
	switch method {
	case "tools/list":
		if len(r.Tools) != want.tools {
			return fmt.Errorf("tools/list: %d tools, want %d: %.300s", len(r.Tools), want.tools, body)
		}
	case "resources/read":
		if len(r.Contents) != 1 || r.Contents[0].URI != fixtureResource || r.Contents[0].Text != fixtureText {
			return fmt.Errorf("resources/read: not the fixture's resource: %.300s", body)
		}
	default:
		if r.IsError || len(r.Content) != 1 || r.Content[0].Text != want.text {
			return fmt.Errorf("tools/call: not the fixture's answer: %.300s", body)
		}
	}
	return nil
}

// firstEventData returns the data of the first event of an SSE body.
func firstEventData(body []byte) ([]byte, error) {
	var data []byte
	for _, line := range bytes.Split(body, []byte("\n")) {
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 && data != nil {
			break
		}
		if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
			data = append(data, bytes.TrimPrefix(d, []byte(" "))...)
		}
	}
	if data == nil {
		return nil, fmt.Errorf("event stream without data: %.300s", body)
	}
	return data, nil
}

// loadResult is what the load generator reports for one phase.
type loadResult struct {
	Requests   int64     `json:"requests"`
	Errors     int64     `json:"errors"`
	FirstError string    `json:"first_error,omitempty"`
	Seconds    float64   `json:"seconds"`
	Latency    latencies `json:"latency"`
	// ReusedTokens counts, with -fresh, requests so far that had to reuse
	// a token because the file had too few.
	ReusedTokens int64 `json:"reused_tokens,omitempty"`
	// The phase's answers by their Ctxgate-Cache header: hit, miss, and
	// anything else (stale, bypass); answers without it are not counted.
	CacheHits   int64 `json:"cache_hits,omitempty"`
	CacheMisses int64 `json:"cache_misses,omitempty"`
	CacheOther  int64 `json:"cache_other,omitempty"`
}

// cacheHeader is ctxgate's answer header saying whether its response
// cache answered.
const cacheHeader = "Ctxgate-Cache"

// errCount counts failed requests and keeps the first error.
type errCount struct {
	n     atomic.Int64
	once  sync.Once
	first string
}

func (e *errCount) add(err error) {
	e.n.Add(1)
	e.once.Do(func() { e.first = err.Error() })
}

// closedLoop keeps one request in flight per worker until the duration is
// over: saturation throughput. Worker w uses session w mod len(sessions).
func closedLoop(ctx context.Context, sessions []*session, workers int, d time.Duration) loadResult {
	var n atomic.Uint64
	n.Store(1 << 20) // ids far from the set-up requests'
	var errs errCount
	var done atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		s := sessions[w%len(sessions)]
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := s.call(ctx, n.Add(1)); err != nil {
					errs.add(err)
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return loadResult{Requests: done.Load(), Errors: errs.n.Load(), FirstError: errs.first, Seconds: time.Since(start).Seconds()}
}

// schedule is an open-loop plan: request i is due at start + i/rate,
// whether or not earlier requests have been answered.
type schedule struct {
	start time.Time
	rate  float64 // requests per second
	n     int     // requests in the plan
}

// due is request i's intended send time.
func (s schedule) due(i int) time.Time {
	return s.start.Add(time.Duration(float64(i) * float64(time.Second) / s.rate))
}

// openLoop sends the planned requests at their due times with up to workers
// in flight, and measures each latency from the due time, not from when it
// was actually sent: a request delayed because every worker was busy
// waiting for a slow answer counts that wait. Measuring from the send
// instead would hide exactly the stalls a latency test is for
// (coordinated omission).
func openLoop(ctx context.Context, plan schedule, workers int, do func(i int) error) ([]time.Duration, loadResult) {
	lat := make([]time.Duration, plan.n)
	var next atomic.Int64
	var errs errCount
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= plan.n {
					return
				}
				due := plan.due(i)
				if wait := time.Until(due); wait > 0 {
					time.Sleep(wait)
				}
				if err := do(i); err != nil {
					errs.add(err)
				}
				lat[i] = time.Since(due)
			}
		})
	}
	wg.Wait()
	sent := min(int(next.Load()), plan.n)
	return lat[:sent], loadResult{Requests: int64(sent), Errors: errs.n.Load(), FirstError: errs.first,
		Seconds: time.Since(plan.start).Seconds()}
}

// The closed-loop generators.
const (
	engineGo  = "go"
	engineWrk = "wrk"
)

// loadOptions are the load role's flags.
type loadOptions struct {
	url       string
	tokens    string // file with one bearer token per line; sessions take them in turn
	sessions  int
	conns     int
	warmup    time.Duration
	duration  time.Duration
	rate      float64
	maxFlight int
	engine    string // closed loop: go or wrk
	fresh     bool   // a new token from the file for every request
	shape     shape  // the fixture's answers, to check them
}

// runLoad is the "load" role. It opens the sessions, warms up, prints
// "ready", then runs one phase per line read on stdin ("closed" or "open"),
// printing each phase's loadResult as a JSON line. It runs in its own
// process so that its CPU is not the system under test's.
func runLoad(args []string) error {
	var o loadOptions
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.StringVar(&o.url, "url", "", "MCP endpoint")
	fs.StringVar(&o.tokens, "tokens", "", "file of bearer tokens, one per line")
	fs.IntVar(&o.sessions, "sessions", 16, "MCP sessions")
	fs.IntVar(&o.conns, "conns", 16, "closed-loop concurrency")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "closed-loop warm-up before ready")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each phase")
	fs.Float64Var(&o.rate, "rate", 200, "open-loop requests per second")
	fs.IntVar(&o.maxFlight, "max-inflight", 256, "open-loop concurrency limit")
	fs.StringVar(&o.engine, "engine", engineGo, "closed-loop generator: go or wrk")
	fs.BoolVar(&o.fresh, "fresh", false, "a new token from -tokens for every request after the sessions are open")
	o.shape.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx := context.Background()
	sessions, err := openSessions(ctx, o)
	if err != nil {
		return err
	}
	if r := closedLoop(ctx, sessions, o.conns, o.warmup); r.Errors > 0 {
		return fmt.Errorf("warm-up: %d of %d requests failed, first: %s", r.Errors, r.Requests, r.FirstError)
	}
	sessions[0].tally.take() // the warm-up's answers are not a phase's
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		r, err := runPhase(ctx, o, sessions, in.Text())
		if err != nil {
			return err
		}
		r.ReusedTokens = sessions[0].fresh.reused()
		if o.engine != engineWrk || in.Text() != "closed" {
			r.CacheHits, r.CacheMisses, r.CacheOther = sessions[0].tally.take()
		}
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return in.Err()
}

// runPhase runs the closed or the open loop once.
func runPhase(ctx context.Context, o loadOptions, sessions []*session, name string) (loadResult, error) {
	switch name {
	case "closed":
		if o.engine == engineWrk {
			return wrkClosedLoop(ctx, os.TempDir(), sessions, o.conns, o.duration)
		}
		return closedLoop(ctx, sessions, o.conns, o.duration), nil
	case "open":
		var n atomic.Uint64
		n.Store(1 << 40) // ids apart from the closed loop's
		plan := schedule{start: time.Now(), rate: o.rate, n: int(o.rate * o.duration.Seconds())}
		lat, r := openLoop(ctx, plan, o.maxFlight, func(i int) error {
			return sessions[i%len(sessions)].call(ctx, n.Add(1))
		})
		r.Latency = summarize(lat)
		return r, nil
	}
	return loadResult{}, fmt.Errorf("unknown phase %q", name)
}

func openSessions(ctx context.Context, o loadOptions) ([]*session, error) {
	var tokens []string
	if o.tokens != "" {
		b, err := os.ReadFile(o.tokens)
		if err != nil {
			return nil, err
		}
		tokens = strings.Fields(string(b))
	}
	hc := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        o.maxFlight + o.conns,
		MaxIdleConnsPerHost: o.maxFlight + o.conns,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}, Timeout: 30 * time.Second}
	sessions := make([]*session, max(o.sessions, 1))
	tally := &cacheTally{}
	for i := range sessions {
		token := ""
		if len(tokens) > 0 {
			token = tokens[i%len(tokens)]
		}
		s, err := openSession(ctx, hc, o.url, token, o.shape)
		if err != nil {
			return nil, fmt.Errorf("session %d: %w", i, err)
		}
		s.tally = tally
		sessions[i] = s
	}
	if o.fresh && len(tokens) > 0 {
		c := &tokenCycler{tokens: tokens}
		c.next.Store(int64(len(sessions))) // the ones initialization used
		for _, s := range sessions {
			s.fresh = c
		}
	}
	return sessions, nil
}
