package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestForEachBoundsConcurrency(t *testing.T) {
	for _, conc := range []int{1, 3, 8} {
		var inFlight, peak, calls atomic.Int32
		items := make([]int, 40)
		left := ForEach(context.Background(), items, conc, 0, func(context.Context, int) {
			n := inFlight.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			time.Sleep(2 * time.Millisecond)
			inFlight.Add(-1)
			calls.Add(1)
		})
		if len(left) != 0 || calls.Load() != 40 {
			t.Fatalf("conc %d: left %d, calls %d", conc, len(left), calls.Load())
		}
		if peak.Load() > int32(conc) || peak.Load() < 1 {
			t.Fatalf("conc %d: peak in flight %d", conc, peak.Load())
		}
	}
}

// TestForEachStopsBeforeDeadline: with a deadline closer than the margin
// after a few items, the rest are returned in order, never started.
func TestForEachStopsBeforeDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	items := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	var started []int
	left := ForEach(ctx, items, 1, 40*time.Millisecond, func(_ context.Context, i int) {
		started = append(started, i)
		time.Sleep(10 * time.Millisecond)
	})
	if len(left) == 0 || len(started) == 0 {
		t.Fatalf("started %v, left %v", started, left)
	}
	if len(started)+len(left) != len(items) || left[0] != len(started) {
		t.Fatalf("started %v and left %v do not partition the items", started, left)
	}
}

func TestSummaryErr(t *testing.T) {
	s := &Summary{Function: "backup"}
	if s.Err() != nil {
		t.Fatal("empty summary is an error")
	}
	s.AddSkipped(Entry{ID: "i-1", Detail: "stopped"})
	if s.Err() != nil {
		t.Fatal("a skip is not an error")
	}
	s.AddFailed(Entry{ID: "i-2", Detail: "IncorrectState"})
	s.NotReached = []string{"i-3"}
	err := s.Err()
	if err == nil || !strings.Contains(err.Error(), "i-2: IncorrectState") || !strings.Contains(err.Error(), "i-3") {
		t.Fatalf("err = %v", err)
	}
}

// TestForEachCutsStartedWorkBeforeDeadline: work already running sees its
// context end half a margin before the invocation's deadline, leaving time
// for the summary.
func TestForEachCutsStartedWorkBeforeDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	dl, _ := ctx.Deadline()
	margin := 200 * time.Millisecond
	var workerDL time.Time
	var cause error
	ForEach(ctx, []int{1}, 1, margin, func(wctx context.Context, _ int) {
		workerDL, _ = wctx.Deadline()
		<-wctx.Done() // a call stuck in retries
		cause = wctx.Err()
	})
	if want := dl.Add(-margin / 2); !workerDL.Equal(want) {
		t.Fatalf("worker deadline %v, want %v", workerDL, want)
	}
	if cause != context.DeadlineExceeded || ctx.Err() != nil {
		t.Fatalf("worker ended with %v, invocation context %v: want the worker cut off first", cause, ctx.Err())
	}
}

func TestSummaryLogCapsIDs(t *testing.T) {
	var buf bytes.Buffer
	s := &Summary{Function: "backup"}
	for i := range 250 {
		s.NotReached = append(s.NotReached, fmt.Sprintf("i-%08x", i))
	}
	s.Log(context.Background(), slog.New(slog.NewJSONHandler(&buf, nil)))
	var line struct {
		NotReached    int      `json:"notReached"`
		NotReachedIDs []string `json:"notReachedIds"`
		Level         string   `json:"level"`
	}
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("summary is not one JSON line: %v: %s", err, buf.String())
	}
	if line.NotReached != 250 || len(line.NotReachedIDs) != 201 || line.NotReachedIDs[200] != "... and 50 more" || line.Level != "ERROR" {
		t.Fatalf("summary line = %+v", line)
	}
}
