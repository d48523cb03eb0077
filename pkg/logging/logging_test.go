package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
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
