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
	"slices"
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
//
// It also keeps every key once per record: attributes added with
// Logger.With after binding (a run's policy, trigger, dryRun...) are held
// here and written with each record unless the record sets the same key,
// whose value then wins. JSON handlers would otherwise write both
// ({"policy":"a",...,"policy":"a"}), which many JSON readers reject or
// resolve arbitrarily.
func BindContext(h slog.Handler, ctx context.Context) slog.Handler {
	return boundHandler{next: h, ctx: ctx}
}

type boundHandler struct {
	next slog.Handler
	ctx  context.Context
	// attrs are the top-level attributes added since binding, each key
	// once (a later With replaces an earlier value).
	attrs []slog.Attr
}

func (b boundHandler) Enabled(_ context.Context, l slog.Level) bool { return b.next.Enabled(b.ctx, l) }

func (b boundHandler) Handle(_ context.Context, r slog.Record) error {
	if len(b.attrs) == 0 {
		return b.next.Handle(b.ctx, r)
	}
	own := map[string]bool{}
	r.Attrs(func(a slog.Attr) bool {
		own[a.Key] = true
		return true
	})
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	for _, a := range b.attrs {
		if !own[a.Key] {
			out.AddAttrs(a)
		}
	}
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return b.next.Handle(b.ctx, out)
}

func (b boundHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	held := slices.Clone(b.attrs)
	for _, a := range attrs {
		if i := slices.IndexFunc(held, func(h slog.Attr) bool { return h.Key == a.Key }); i >= 0 {
			held[i] = a
		} else {
			held = append(held, a)
		}
	}
	return boundHandler{next: b.next, ctx: b.ctx, attrs: held}
}

// WithGroup hands the held attributes to the next handler first: they
// belong outside the group, and records' attributes inside it cannot
// collide with them.
func (b boundHandler) WithGroup(name string) slog.Handler {
	next := b.next
	if len(b.attrs) > 0 {
		next = next.WithAttrs(b.attrs)
	}
	return boundHandler{next: next.WithGroup(name), ctx: b.ctx}
}
