package runner

import (
	"context"
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
