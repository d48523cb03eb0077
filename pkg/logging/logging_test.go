package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

type requestKey struct{}

// ctxHandler adds the request ID it finds in the record's context, as
// lambdacontext's handler does.
type ctxHandler struct{ slog.Handler }

func (h ctxHandler) Handle(ctx context.Context, r slog.Record) error {
	if id, ok := ctx.Value(requestKey{}).(string); ok {
		r.AddAttrs(slog.String("requestId", id))
	}
	return h.Handler.Handle(ctx, r)
}

func (h ctxHandler) WithAttrs(a []slog.Attr) slog.Handler { return ctxHandler{h.Handler.WithAttrs(a)} }

func TestBindContextAppliesToCallsWithoutContext(t *testing.T) {
	var buf bytes.Buffer
	ctx := context.WithValue(context.Background(), requestKey{}, "req-1")
	log := slog.New(BindContext(ctxHandler{slog.NewJSONHandler(&buf, nil)}, ctx)).With("function", "backup")
	log.Info("no context here")
	log.InfoContext(context.Background(), "another context")
	dec := json.NewDecoder(&buf)
	for range 2 {
		var rec map[string]any
		if err := dec.Decode(&rec); err != nil {
			t.Fatal(err)
		}
		if rec["requestId"] != "req-1" || rec["function"] != "backup" {
			t.Errorf("record %v lacks the bound request ID or the attribute", rec)
		}
	}
}

// TestBindContextKeepsEachKeyOnce: an attribute set with With after
// binding and again on the record appears once, with the record's value;
// attributes added inside a group stay in the group.
func TestBindContextKeepsEachKeyOnce(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(BindContext(slog.NewJSONHandler(&buf, nil), context.Background())).
		With("policy", "nightly", "dryRun", true).With("policy", "weekly")
	log.Info("summary", "dryRun", false, "done", 3)
	log.WithGroup("g").Info("grouped", "policy", "inner")
	var lines []string
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		lines = append(lines, line)
	}
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	for _, want := range []struct{ line, sub string }{
		{lines[0], `"policy":"weekly","dryRun":false,"done":3}`},
		{lines[1], `"policy":"weekly","dryRun":true,"g":{"policy":"inner"}}`},
	} {
		if !strings.HasSuffix(want.line, want.sub) || strings.Count(want.line, `"policy"`) != strings.Count(want.sub, `"policy"`) {
			t.Errorf("line %s, want it to end with %s", want.line, want.sub)
		}
	}
}
