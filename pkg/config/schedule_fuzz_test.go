package config

import (
	"strings"
	"testing"
)

// FuzzScheduleExpression: the validator never panics, and whatever it
// accepts has the documented shape.
func FuzzScheduleExpression(f *testing.F) {
	for _, s := range []string{"cron(0 3 * * ? *)", "rate(1 hour)", "cron(0 9 ? * 2#1 *)", "cron(0 3 15W * ? *)", "at(2026-01-01T00:00:00)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		if ScheduleExpressionProblems(expr) != nil {
			return
		}
		if !strings.HasPrefix(expr, "cron(") && !strings.HasPrefix(expr, "rate(") || len(expr) > maxExpressionLength {
			t.Fatalf("accepted %q", expr)
		}
	})
}
