package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/emf"
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("stdout closed") }

// TestFinish: a run ends with its duration on the job's clock, one metrics
// record per Policy value (stamped with the start), none for a dry run,
// the summary line, and the summary's error; a metrics failure is logged.
func TestFinish(t *testing.T) {
	start := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	report := func(s *Summary) Metrics {
		return Metrics{Policies: []string{"all", "nightly"}, Values: []emf.Metric{
			{Name: "Done", Unit: emf.Count, Value: float64(len(s.Done))},
			{Name: "Duration", Unit: emf.Milliseconds, Value: float64(s.DurationMS)}}}
	}
	for _, tc := range []struct {
		name       string
		dryRun     bool
		failed     bool
		badMetrics bool
		records    int
	}{
		{"ok", false, false, false, 2},
		{"failed", false, true, false, 2},
		{"dry run", true, false, false, 0},
		{"metrics not written", false, false, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := start
			var logs, out bytes.Buffer
			w := emf.New(&out)
			if tc.badMetrics {
				w = emf.New(failingWriter{})
			}
			j := &Job{Log: slog.New(slog.NewJSONHandler(&logs, nil)), Metrics: w, Now: func() time.Time { return now }}
			run := j.Start(4)
			if run.Margin() != DefaultMargin || !run.Began().Equal(start) {
				t.Fatalf("margin %v, began %v", run.Margin(), run.Began())
			}
			now = now.Add(1500 * time.Millisecond)
			sum := &Summary{Function: "f", DryRun: tc.dryRun}
			sum.AddDone(Entry{ID: "a"})
			if tc.failed {
				sum.AddFailed(Entry{ID: "b", Detail: "boom"})
			}
			err := run.Finish(context.Background(), j.Log, sum, report)
			if (err != nil) != tc.failed || sum.DurationMS != 1500 {
				t.Fatalf("err %v, duration %d", err, sum.DurationMS)
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if out.Len() == 0 {
				lines = nil
			}
			if len(lines) != tc.records {
				t.Fatalf("%d metrics records, want %d: %s", len(lines), tc.records, out.String())
			}
			for i, l := range lines {
				var rec map[string]any
				if err := json.Unmarshal([]byte(l), &rec); err != nil {
					t.Fatal(err)
				}
				aws := rec["_aws"].(map[string]any)
				if rec["Policy"] != []string{"all", "nightly"}[i] || rec["Done"] != 1.0 || rec["Duration"] != 1500.0 ||
					aws["Timestamp"] != float64(start.UnixMilli()) {
					t.Errorf("record %d: %s", i, l)
				}
			}
			if !strings.Contains(logs.String(), `"msg":"run summary"`) {
				t.Errorf("no summary line: %s", logs.String())
			}
			if got := strings.Count(logs.String(), `"msg":"emit metrics"`); got != map[bool]int{true: 2, false: 0}[tc.badMetrics] {
				t.Errorf("%d emit-metrics errors logged: %s", got, logs.String())
			}
		})
	}
}

// TestRunBoundsWork: a run's work context and Each stop before the
// deadline by the job's margin.
func TestRunBoundsWork(t *testing.T) {
	j := &Job{Margin: 2 * time.Second}
	run := j.Start(2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	wctx, wcancel := run.WorkContext(ctx)
	defer wcancel()
	dl, _ := ctx.Deadline()
	if wdl, ok := wctx.Deadline(); !ok || !wdl.Equal(dl.Add(-time.Second)) {
		t.Fatalf("work deadline %v, want %v", wdl, dl.Add(-time.Second))
	}
	called := 0
	left := Each(ctx, run, []int{1, 2, 3}, func(context.Context, int) { called++ })
	if called != 0 || len(left) != 3 {
		t.Fatalf("started %d items less than a margin before the deadline; left %v", called, left)
	}
}

func TestAddNotReached(t *testing.T) {
	sum := &Summary{Function: "f"}
	sum.NotReached = []string{"i-0"}
	AddNotReached(sum, []int{1, 2}, func(n int) string { return "i-" + string(rune('0'+n)) })
	AddNotReached(sum, nil, func(int) string { return "never" })
	if got := strings.Join(sum.NotReached, ","); got != "i-0,i-1,i-2" {
		t.Fatalf("NotReached = %s", got)
	}
	if err := sum.Err(); err == nil || !strings.Contains(err.Error(), "3 not reached") {
		t.Fatalf("Err = %v", err)
	}
}
