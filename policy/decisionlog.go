package policy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

type requestIDKey struct{}

// WithRequestID returns a context carrying the gateway's request id, which
// the decision log records as request_id and failure warnings repeat. An
// empty id is not recorded.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id set by WithRequestID, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

type delegationKey struct{}

// WithDelegation returns a context carrying the delegation chain of the
// upstream token obtained for the request (token exchange: the upstream,
// the issued token's sub and act claim), which the decision log records as
// delegation. It is an audit record, not policy input.
func WithDelegation(ctx context.Context, d any) context.Context {
	return context.WithValue(ctx, delegationKey{}, d)
}

// decisionLog writes decision records as JSON lines in the shape of OPA's
// decision logs, plus principal and request_id.
//
// Records: Decide writes one per call (so every tools/call has exactly
// one), Visible one per call, and FilterList one per call for the whole
// list, naming the items it removed, rather than one per item: a
// 1,000-tool list would otherwise bury the log.
type decisionLog struct {
	mu       sync.Mutex // one Write per record, never interleaved
	w        io.Writer
	mask     [][]string
	maskKeys [][]*ast.Term // mask as input document keys
	// masksPrincipalID: principal.id is masked, so the record's own
	// principal field is too.
	masksPrincipalID bool
	path             string // the package as a path: "ctxgate/authz"
	logger           *slog.Logger
	// ship, if set, hands each record to OPA's decision-log plugin
	// (opaRuntime.ship); w may then be nil.
	ship func(context.Context, *record)
}

// record is one line of the decision log.
type record struct {
	Labels     map[string]string `json:"labels"`
	DecisionID string            `json:"decision_id"`
	Path       string            `json:"path"`
	Input      any               `json:"input"`
	Result     any               `json:"result"`
	Error      string            `json:"error,omitempty"`
	Timestamp  string            `json:"timestamp"`
	Revision   string            `json:"revision"`
	Metrics    map[string]int64  `json:"metrics,omitempty"`
	Principal  string            `json:"principal"`
	RequestID  string            `json:"request_id,omitempty"`
	Delegation any               `json:"delegation,omitempty"`
	// MemoHit: the answer came from the decision memo (engine.go Decide)
	// or, for a list, from the list cache (listcache.go), not from an
	// evaluation; the input and result are what they would
	// have been.
	MemoHit bool `json:"memo_hit,omitempty"`
}

// decideResult is the result of a Decide record.
type decideResult struct {
	Allow   bool        `json:"allow"`
	Reason  string      `json:"reason,omitempty"`
	Redact  []Redaction `json:"redact,omitempty"`
	Failure string      `json:"failure,omitempty"`
}

// visibleResult is the result of a Visible record.
type visibleResult struct {
	Visible bool   `json:"visible"`
	Failure string `json:"failure,omitempty"`
}

// listResult is the result of a FilterList record.
type listResult struct {
	Total    int      `json:"total"`
	Removed  []string `json:"removed"`
	Failures int      `json:"failures,omitempty"`
}

var appLabels = map[string]string{"app": "ctxgate"}

func newDecisionLog(w io.Writer, mask []string, pkg ast.Ref, logger *slog.Logger) *decisionLog {
	l := &decisionLog{w: w, logger: logger}
	parts := make([]string, 0, len(pkg)-1)
	for _, t := range pkg[1:] {
		parts = append(parts, string(t.Value.(ast.String)))
	}
	l.path = strings.Join(parts, "/")
	for _, m := range mask {
		p := strings.Split(m, ".")
		keys := make([]*ast.Term, len(p))
		for i, k := range p {
			keys[i] = ast.StringTerm(k)
		}
		l.mask = append(l.mask, p)
		l.masksPrincipalID = l.masksPrincipalID || m == "principal.id"
		l.maskKeys = append(l.maskKeys, keys)
	}
	return l
}

// decision records a Decide. val is the evaluated input (nil on a memo
// hit: converted only if a mask needs it), convErr why in did not convert,
// err why the decision failed.
func (l *decisionLog) decision(ctx context.Context, d *Decision, in *Input, val ast.Value, convErr, err error, memoHit bool, start, end time.Time) {
	rec := l.newRecord(ctx, d.ID, "allow", d.Revision, in, val, convErr, start, end)
	rec.Result = decideResult{Allow: d.Allow, Reason: d.Reason, Redact: d.Redact, Failure: d.Failure}
	rec.MemoHit = memoHit
	if err != nil {
		rec.Error = err.Error()
	}
	l.write(ctx, rec)
}

func (l *decisionLog) visible(ctx context.Context, id, rev string, in *Input, val ast.Value, convErr error, visible bool, failure string, err error, start, end time.Time) {
	rec := l.newRecord(ctx, id, "visible", rev, in, val, convErr, start, end)
	rec.Result = visibleResult{Visible: visible, Failure: failure}
	if err != nil {
		rec.Error = err.Error()
	}
	l.write(ctx, rec)
}

// list records a FilterList; err is why the list could not be filtered
// (an item the policy could not decide); memoHit marks a list answered
// from the list cache (listcache.go). val may be nil.
func (l *decisionLog) list(ctx context.Context, rev string, base *Input, val ast.Value, res listResult, err error, memoHit bool, start, end time.Time) {
	rec := l.newRecord(ctx, newDecisionID(), "visible", rev, base, val, nil, start, end)
	rec.Result = res
	rec.MemoHit = memoHit
	if err != nil {
		rec.Error = err.Error()
	}
	l.write(ctx, rec)
}

func (l *decisionLog) newRecord(ctx context.Context, id, rule, rev string, in *Input, val ast.Value, convErr error, start, end time.Time) *record {
	rec := &record{
		Labels:     appLabels,
		DecisionID: id,
		Path:       l.path + "/" + rule,
		Input:      l.maskedInput(in, val, convErr),
		Timestamp:  start.UTC().Format(time.RFC3339Nano),
		Revision:   rev,
		Metrics:    map[string]int64{"timer_rego_query_eval_ns": end.Sub(start).Nanoseconds()},
		RequestID:  RequestID(ctx),
		Delegation: ctx.Value(delegationKey{}),
	}
	if in != nil {
		rec.Principal = in.Principal.ID
		if l.masksPrincipalID {
			rec.Principal = "***"
		}
	}
	return rec
}

// maskedInput returns the input document to log: the document the policy
// saw, with every Mask path replaced by "***", cut to the log's limits
// (logclip.go). The caller's Input and the
// evaluated value are never modified. The Input struct is encoded (a
// shallow copy, with copied maps along masked paths), which is three times
// cheaper than converting the evaluated value back; a mask path outside
// the input's maps (e.g. source.ip) takes that slower way. val may be nil
// (a memo hit): it is converted from in only for such a path. convErr set
// means in does not convert.
func (l *decisionLog) maskedInput(in *Input, val ast.Value, convErr error) any {
	switch {
	case in == nil:
		return nil
	case convErr != nil:
		// The input could not be converted for evaluation: log what
		// encoding/json makes of it.
		var doc any
		if b, err := json.Marshal(in); err == nil {
			_ = json.Unmarshal(b, &doc)
		}
		l.maskDoc(doc)
		return clippedDocument(doc)
	}
	doc := documentOf(in)
	for i, p := range l.mask {
		if maskStruct(doc, p) {
			continue
		}
		if val == nil {
			if val, convErr = inputValue(in); convErr != nil {
				return l.maskedInput(in, nil, convErr)
			}
		}
		if present(val, l.maskKeys[i]) {
			generic, _ := ast.JSON(val)
			l.maskDoc(generic)
			return clippedDocument(generic)
		}
	}
	return clippedInput(doc)
}

// maskStruct masks path p in doc, a documentOf copy, where p leads into
// one of the input's maps (true as well when p's struct part is absent:
// nothing to mask); false means it cannot.
func maskStruct(doc *Input, p []string) bool {
	if len(p) < 2 {
		return false
	}
	var m *map[string]any
	rest := p[2:]
	switch p[0] + "." + p[1] {
	case "principal.claims":
		m = &doc.Principal.Claims
	case "tool.arguments", "tool.annotations":
		if doc.Tool == nil {
			return true // absent: nothing to mask
		}
		t := *doc.Tool
		doc.Tool = &t
		m = &t.Arguments
		if p[1] == "annotations" {
			m = &t.Annotations
		}
	case "prompt.arguments":
		if doc.Prompt == nil {
			return true
		}
		pr := *doc.Prompt
		doc.Prompt = &pr
		m = &pr.Arguments
	default:
		switch p[0] {
		case "params":
			m = &doc.Params
		case "result":
			m = &doc.Result
		default:
			return false
		}
		rest = p[1:]
	}
	if len(rest) == 0 {
		return false
	}
	*m = maskMap(*m, rest)
	return true
}

// maskMap returns m with path p masked, copying the maps on the way.
func maskMap(m map[string]any, p []string) map[string]any {
	v, ok := m[p[0]]
	if !ok {
		return m
	}
	c := maps.Clone(m)
	if len(p) == 1 {
		c[p[0]] = "***"
		return c
	}
	sub, ok := v.(map[string]any)
	if !ok {
		return m
	}
	c[p[0]] = maskMap(sub, p[1:])
	return c
}

func (l *decisionLog) maskDoc(doc any) {
	for _, p := range l.mask {
		maskPath(doc, p)
	}
}

// present reports whether the path of keys exists in val.
func present(val ast.Value, keys []*ast.Term) bool {
	v := val
	for _, k := range keys {
		obj, ok := v.(ast.Object)
		if !ok {
			return false
		}
		t := obj.Get(k)
		if t == nil {
			return false
		}
		v = t.Value
	}
	return true
}

// documentOf returns a shallow copy of in that encoding/json encodes as
// exactly the document inputValue builds: nil string slices become empty
// arrays, not null.
func documentOf(in *Input) *Input {
	doc := *in
	doc.Principal.Scopes = nonNil(doc.Principal.Scopes)
	doc.Principal.Groups = nonNil(doc.Principal.Groups)
	if c := doc.Principal.Cert; c != nil && (c.URIs == nil || c.DNSNames == nil) {
		cert := *c
		cert.URIs, cert.DNSNames = nonNil(cert.URIs), nonNil(cert.DNSNames)
		doc.Principal.Cert = &cert
	}
	return &doc
}

func nonNil(ss []string) []string {
	if ss == nil {
		return []string{}
	}
	return ss
}

func maskPath(doc any, path []string) {
	for i, k := range path {
		m, ok := doc.(map[string]any)
		if !ok {
			return
		}
		v, ok := m[k]
		if !ok {
			return
		}
		if i == len(path)-1 {
			m[k] = "***"
			return
		}
		doc = v
	}
}

// write encodes rec (appendRecord: control characters such as CR and LF
// escaped, so no input value can break a line or forge a record); one
// Write under the mutex keeps concurrent records whole.
func (l *decisionLog) write(ctx context.Context, rec *record) {
	if l.ship != nil {
		l.ship(ctx, rec)
	}
	if l.w == nil {
		return
	}
	bp := recordBufs.Get().(*[]byte)
	b := append(appendRecord((*bp)[:0], rec), '\n')
	l.mu.Lock()
	_, err := l.w.Write(b)
	l.mu.Unlock()
	if cap(b) <= maxPooledRecord {
		*bp = b
		recordBufs.Put(bp)
	}
	if err != nil {
		l.logger.ErrorContext(ctx, "decision log write failed", "decision_id", rec.DecisionID, "error", err.Error())
	}
}

// recordBufs hold records while they are written: io.Writer must not
// retain what it is given, so a buffer serves the next record.
var recordBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// maxPooledRecord keeps a large record's buffer out of the pool; the
// log's limits (logclip.go) bound a record to far less than this.
const maxPooledRecord = 256 << 10
