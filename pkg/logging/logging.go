// Package logging builds the JSON slog loggers the functions use. The
// Lambda request ID comes from aws-lambda-go's lambdacontext handler, which
// the functions' main packages (the only ones importing aws-lambda-go) hand
// in; BindContext makes it apply to every line of an invocation.
package logging

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
)

// New returns a JSON logger writing to w at the level named by the
// AMIBACKUP_LOG_LEVEL environment variable (debug, info, warn, error; default
// info). The functions use it only outside Lambda's JSON log format.
func New(w io.Writer, attrs ...slog.Attr) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(os.Getenv("AMIBACKUP_LOG_LEVEL")))); err != nil {
		level = slog.LevelInfo
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h.WithAttrs(attrs))
}

// BindContext returns a handler that handles every record with ctx instead
// of the context of the logging call. Context-aware handlers such as
// lambdacontext's (which adds the request ID from the invocation's context)
// then apply to the many log calls that carry no context.
func BindContext(h slog.Handler, ctx context.Context) slog.Handler {
	return boundHandler{next: h, ctx: ctx}
}

type boundHandler struct {
	next slog.Handler
	ctx  context.Context
}

func (b boundHandler) Enabled(_ context.Context, l slog.Level) bool { return b.next.Enabled(b.ctx, l) }

func (b boundHandler) Handle(_ context.Context, r slog.Record) error { return b.next.Handle(b.ctx, r) }

func (b boundHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return boundHandler{next: b.next.WithAttrs(attrs), ctx: b.ctx}
}

func (b boundHandler) WithGroup(name string) slog.Handler {
	return boundHandler{next: b.next.WithGroup(name), ctx: b.ctx}
}
