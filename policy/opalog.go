package policy

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/open-policy-agent/opa/v1/logging"
)

// opaLogger gives OPA's plugins the engine's *slog.Logger, so that their
// messages (bundle downloads and activations, upload failures) are records
// of the gateway's log like every other, not a second format on stderr.
type opaLogger struct {
	l *slog.Logger
}

var _ logging.Logger = opaLogger{}

func (o opaLogger) log(level slog.Level, format string, a []any) {
	if o.l.Enabled(context.Background(), level) {
		o.l.Log(context.Background(), level, fmt.Sprintf(format, a...))
	}
}

func (o opaLogger) Debug(format string, a ...any) { o.log(slog.LevelDebug, format, a) }
func (o opaLogger) Info(format string, a ...any)  { o.log(slog.LevelInfo, format, a) }
func (o opaLogger) Warn(format string, a ...any)  { o.log(slog.LevelWarn, format, a) }
func (o opaLogger) Error(format string, a ...any) { o.log(slog.LevelError, format, a) }

// WithFields adds OPA's fields (plugin, name) as attributes, in a stable
// order.
func (o opaLogger) WithFields(fields map[string]any) logging.Logger {
	args := make([]any, 0, 2*len(fields))
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		args = append(args, "opa_"+k, fields[k])
	}
	return opaLogger{l: o.l.With(args...)}
}

// GetLevel reports the most verbose level the slog handler passes, so OPA
// does not build messages that would be dropped.
func (o opaLogger) GetLevel() logging.Level {
	ctx := context.Background()
	switch {
	case o.l.Enabled(ctx, slog.LevelDebug):
		return logging.Debug
	case o.l.Enabled(ctx, slog.LevelInfo):
		return logging.Info
	case o.l.Enabled(ctx, slog.LevelWarn):
		return logging.Warn
	}
	return logging.Error
}

// SetLevel is ignored: the level is the gateway's log.level.
func (opaLogger) SetLevel(logging.Level) {}
