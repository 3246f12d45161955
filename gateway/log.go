package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5/middleware"

	"github.com/ctxgate/ctxgate/policy"
)

// requestState is what the pipeline learns about one request, in the order
// it learns it. The access log writes it out as one record at the end.
type requestState struct {
	id        string
	log       *slog.Logger
	principal *Principal
	msg       *Message
	// rejectedID is the id of a message that failed strict decoding, when
	// it could still be read unambiguously, so the error can carry it.
	rejectedID any
	upstream   string
	session    bool   // the request carried a valid gateway session
	version    string // MCP protocol version in effect
	err        *Error // what writeError answered, with its internal cause
	// cache is where the answer came from (hit, miss, stale, bypass) for
	// a request the cache handled; cacheKey its entry, cacheAgeMs a stale
	// answer's age.
	cache      string
	cacheKey   string
	cacheAgeMs int64
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
func (s *Server) requestLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		st := &requestState{id: newRequestID()}
		st.log = s.log.With("request_id", st.id)
		w.Header().Set("X-Request-Id", st.id)
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		defer func() {
			s.accessRecord(r, st, ww.Status(), ww.BytesWritten(), time.Since(start))
		}()
		// The decision log carries the same request id as the access log.
		ctx := policy.WithRequestID(context.WithValue(r.Context(), stateKey{}, st), st.id)
		next.ServeHTTP(ww, r.WithContext(ctx))
	})
}

func (s *Server) accessRecord(r *http.Request, st *requestState, status, bytes int, d time.Duration) {
	attrs := []slog.Attr{
		slog.String("http_method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Int("bytes", bytes),
		slog.Duration("duration", d),
		slog.String("remote", r.RemoteAddr),
	}
	if st.principal != nil {
		attrs = append(attrs, slog.String("principal", st.principal.ID))
	}
	if st.msg != nil {
		if m := st.msg.Method(); m != "" {
			attrs = append(attrs, slog.String("rpc_method", m))
		}
	}
	if st.upstream != "" {
		attrs = append(attrs, slog.String("upstream", st.upstream))
	}
	if st.version != "" {
		attrs = append(attrs, slog.String("protocol_version", st.version))
	}
	if st.cache != "" {
		attrs = append(attrs, slog.String("cache", st.cache), slog.String("cache_key", st.cacheKey))
		if st.cache == "stale" {
			attrs = append(attrs, slog.Int64("cache_age_ms", st.cacheAgeMs))
		}
	}
	level := slog.LevelInfo
	if st.err != nil {
		attrs = append(attrs, slog.Int64("rpc_error", st.err.Code), slog.String("error", st.err.Error()))
		if st.err.Status >= 500 {
			level = slog.LevelError
		}
	}
	st.log.LogAttrs(r.Context(), level, "request", attrs...)
}
