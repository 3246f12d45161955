package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5/middleware"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"go.opentelemetry.io/otel/trace"

	"github.com/ctxgate/ctxgate/mcpwire"
	"github.com/ctxgate/ctxgate/policy"
	"github.com/ctxgate/ctxgate/upstream"
)

// requestState is what the pipeline learns about one request, in the order
// it learns it. The access log writes it out as one record at the end.
type requestState struct {
	id        string
	log       *slog.Logger
	principal *Principal
	// caller is principal as the upstream credential sources see it; it
	// records the tokens obtained for it (their act claims).
	caller *upstream.Caller
	msg    *mcpwire.Message
	// rejectedID is the id of a message that failed strict decoding, when
	// it could still be read unambiguously, so the error can carry it.
	rejectedID any
	upstream   string
	// slot is the request's admission slot (admission.go), kept here so
	// that admitting costs no allocation.
	slot    ticket
	route   string // the route's name, e.g. docs (as metrics label it; path has /mcp/docs)
	session bool   // the request carried a valid gateway session
	version string // MCP protocol version in effect
	err     *Error // what writeError answered, with its internal cause
	// target is the tool, prompt or resource a single message names, and
	// toolLabel its bounded form for metrics (see Server.toolLabel).
	target    target
	toolLabel string
	// decision is the policy's verdict on the request: decisionAllow,
	// decisionDeny, or "" when none was asked.
	decision string
	// rpcError is the JSON-RPC error code of the upstream's answer, when
	// the gateway read it.
	rpcError string
	// cache is where the answer came from (hit, miss, stale, bypass) for
	// a request the cache handled; cacheKey its entry, cacheAgeMs the age
	// of a hit or stale answer.
	cache      string
	cacheKey   string
	cacheAgeMs int64
	redactions int // values redacted in what the client was sent (enforce.go)
	// relayed: an HTTP+SSE POST whose message the route's handler served
	// as a request of its own (oldclient.go), which is the one the
	// metrics count.
	relayed bool
}

// Policy verdicts in requestState.decision and the access log.
const (
	decisionAllow = "allow"
	decisionDeny  = "deny"
)

// target is what one MCP message names: kind "tool", "prompt", "resource"
// or "skill" with its name (or URI); zero for other methods.
type target struct{ kind, name string }

// targetOf reads the target of a strictly decoded request, as its params
// check kept it. A request whose params failed the check (its target is
// still logged) is read leniently.
func targetOf(req *jsonrpc.Request) target {
	t, ok := mcpwire.TargetOf(req.Method)
	if !ok {
		return target{}
	}
	p, checked := req.Extra.(*mcpwire.Params)
	if !checked {
		return lenientTarget(t.Kind, req.Params)
	}
	return target{kind: t.Kind, name: p.Named()}
}

// lenientTarget is the target of params that failed the check, as
// encoding/json reads them; none if it cannot.
func lenientTarget(kind string, params json.RawMessage) target {
	var p struct {
		Name string `json:"name"`
		URI  string `json:"uri"`
	}
	if json.Unmarshal(params, &p) != nil {
		return target{}
	}
	return target{kind: kind, name: p.Name + p.URI}
}

// logClip bounds a client-supplied string in the access record: what is
// cut is marked with the original size, so a huge name or method costs a
// short line and still says how huge it was.
func logClip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…[truncated: " + strconv.Itoa(len(s)) + " bytes]"
}

type stateKey struct{}

func stateOf(ctx context.Context) *requestState {
	st, _ := ctx.Value(stateKey{}).(*requestState)
	return st
}

// logger returns the request's logger (with its request id), or base.
func loggerOf(ctx context.Context, base *slog.Logger) *slog.Logger {
	if st := stateOf(ctx); st != nil {
		return st.log
	}
	return base
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestLog gives every request an id (echoed as X-Request-Id), a logger
// that carries it on every line, and one access record when it ends. The id
// is always the gateway's own: a client-chosen id could forge log lines.
//
// It also starts the request's span (continuing an incoming trace) and, when
// the request ends, records its metrics from the same state.
func (s *Server) requestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, span := s.startRequestSpan(r)
		st := &requestState{id: newRequestID()}
		st.log = s.log.With("request_id", st.id)
		if sc := span.SpanContext(); sc.IsValid() {
			// Every line about the request can be found from its trace.
			st.log = st.log.With("trace_id", sc.TraceID().String())
		}
		w.Header().Set("X-Request-Id", st.id)
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			status, d := ww.Status(), time.Since(start)
			s.metrics.observeRequest(st, status, d)
			s.endRequestSpan(span, st, status)
			s.accessRecord(r, st, span.SpanContext(), status, ww.BytesWritten(), d)
		}()
		// The decision log carries the same request id as the access log.
		ctx = policy.WithRequestID(context.WithValue(ctx, stateKey{}, st), st.id)
		next.ServeHTTP(ww, r.WithContext(ctx))
	})
}

// accessRecord writes the one record of a finished request. Only what the
// gateway decided or verified is written, and never a credential: no
// request header is logged at all.
func (s *Server) accessRecord(r *http.Request, st *requestState, sc trace.SpanContext, status, bytes int, d time.Duration) {
	attrs := []slog.Attr{
		slog.String("http_method", r.Method),
		slog.String("path", logClip(r.URL.Path, 1024)),
		slog.Int("status", status),
		slog.Int("bytes", bytes),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
	}
	if sc.IsValid() {
		attrs = append(attrs, slog.String("span_id", sc.SpanID().String()))
	}
	if st.principal != nil {
		attrs = append(attrs, slog.String("principal", st.principal.ID))
	}
	if st.msg != nil {
		if m := st.msg.Method(); m != "" {
			attrs = append(attrs, slog.String("rpc_method", logClip(m, 256)))
		}
	}
	if st.target.kind != "" {
		attrs = append(attrs, slog.String(st.target.kind, logClip(st.target.name, 256)))
	}
	if st.route != "" {
		attrs = append(attrs, slog.String("route", st.route))
	}
	if st.upstream != "" {
		attrs = append(attrs, slog.String("upstream", st.upstream))
	}
	if st.decision != "" {
		attrs = append(attrs, slog.String("decision", st.decision))
	}
	if st.caller != nil {
		attrs = append(attrs, delegationAttrs(st.caller)...)
	}
	if st.version != "" {
		attrs = append(attrs, slog.String("protocol_version", st.version))
	}
	if st.cache != "" {
		attrs = append(attrs, slog.String("cache", st.cache), slog.String("cache_key", st.cacheKey))
		if st.cache == "hit" || st.cache == "stale" {
			attrs = append(attrs, slog.Int64("cache_age_ms", st.cacheAgeMs))
		}
	}
	if st.redactions > 0 {
		attrs = append(attrs, slog.Int("redactions", st.redactions))
	}
	level := slog.LevelInfo
	if st.err != nil {
		attrs = append(attrs, slog.Int64("rpc_error", st.err.Code), slog.String("error", logClip(st.err.Error(), 1024)))
		if st.err.Status >= 500 {
			level = slog.LevelError
		}
	}
	st.log.LogAttrs(r.Context(), level, "request", attrs...)
}
