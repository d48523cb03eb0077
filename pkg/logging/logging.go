// Package logging builds the JSON slog logger every function uses. The
// Lambda request ID is attached by the function's main package (the only
// place that imports aws-lambda-go) with Logger.With.
package logging

import (
	"io"
	"log/slog"
	"os"
	"strings"
)

// New returns a JSON logger writing to w at the level named by the
// AMIBACKUP_LOG_LEVEL environment variable (debug, info, warn, error; default info).
func New(w io.Writer, attrs ...slog.Attr) *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(strings.ToUpper(os.Getenv("AMIBACKUP_LOG_LEVEL")))); err != nil {
		level = slog.LevelInfo
	}
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})
	return slog.New(h.WithAttrs(attrs))
}
