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
	"unicode/utf8"

	"github.com/amibackup/amibackup/pkg/logging"
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
	// The summary line comes first; the IDs it leaves out follow in
	// continuation records.
	if err := json.NewDecoder(&buf).Decode(&line); err != nil {
		t.Fatalf("summary is not a JSON line: %v: %s", err, buf.String())
	}
	if line.NotReached != 250 || len(line.NotReachedIDs) != 201 || line.NotReachedIDs[200] != "... and 50 more" || line.Level != "ERROR" {
		t.Fatalf("summary line = %+v", line)
	}
}

// bigSummary has n failures, skips, warnings and not-reached IDs whose
// details are as long as real SDK errors (request IDs differ per entry).
func bigSummary(n int) *Summary {
	s := &Summary{Function: "backup", Deployment: "prod", Policy: "nightly", Selected: 3 * n}
	for i := range n {
		id := fmt.Sprintf("i-%017x", i)
		s.AddFailed(Entry{ID: id, Name: "amibackup-nightly-" + id + "-20261124T030000Z", Detail: fmt.Sprintf(
			"create image for %s: operation error EC2: CreateImage, https response error StatusCode: 403, RequestID: %08x-0000-4000-8000-%012x, api error UnauthorizedOperation: You are not authorized to perform this operation. %s",
			id, i, i, strings.Repeat("Encoded authorization failure message ", 10))})
		s.AddSkipped(Entry{ID: fmt.Sprintf("ami-%017x", i), Detail: `policy "legacy" is not in the configuration: kept`})
		s.Warn("%s: deprecation not set (RequestLimitExceeded); prune sets it later", id)
		s.NotReached = append(s.NotReached, fmt.Sprintf("i-%017x", n+i))
	}
	return s
}

// TestSummaryStaysBounded: a summary of any size marshals, logs and
// errors within fixed bounds, with exact counts, and the log holds every
// entry across the summary line and its continuation records.
func TestSummaryStaysBounded(t *testing.T) {
	sizes := []int{3, 1000}
	if !testing.Short() {
		sizes = append(sizes, 5000)
	}
	for _, n := range sizes {
		s := bigSummary(n)
		body, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var v View
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatal(err)
		}
		if v.Counts.Failed != n || v.Counts.Skipped != n || v.Counts.NotReached != n || v.Counts.Warnings != n ||
			len(v.Failed) != min(n, MaxEntries) || len(v.NotReached) != min(n, MaxIDs) || v.Truncated != (n > MaxEntries) {
			t.Fatalf("n=%d: view counts %+v, %d failures, %d not reached, truncated %v", n, v.Counts, len(v.Failed), len(v.NotReached), v.Truncated)
		}
		if len(v.FailedByReason) != 1 || v.FailedByReason[0].Count != n || len(v.FailedByReason[0].IDs) != min(n, MaxIDsPerReason) ||
			!strings.Contains(v.FailedByReason[0].Reason, "UnauthorizedOperation") {
			t.Fatalf("n=%d: failures by reason %+v", n, v.FailedByReason)
		}
		if len(body) > 200<<10 {
			t.Fatalf("n=%d: response %d bytes", n, len(body))
		}
		if msg := s.Err().Error(); len(msg) > 16<<10 || !strings.Contains(msg, fmt.Sprintf("%d failed", n)) {
			t.Fatalf("n=%d: error message of %d bytes: %.300s", n, len(msg), msg)
		}

		var buf bytes.Buffer
		s.Log(context.Background(), slog.New(slog.NewJSONHandler(&buf, nil)))
		seen := map[string]map[string]bool{"failures": {}, "skips": {}, "notReachedIds": {}}
		warnings := 0
		for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
			if len(line) >= 256<<10 {
				t.Fatalf("n=%d: log line of %d bytes", n, len(line))
			}
			var rec struct {
				Failures, Skips []Entry
				NotReachedIDs   []string `json:"notReachedIds"`
				Warnings        []string
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatal(err)
			}
			for _, e := range rec.Failures {
				seen["failures"][e.ID] = true
			}
			for _, e := range rec.Skips {
				seen["skips"][e.ID] = true
			}
			for _, id := range rec.NotReachedIDs {
				if !strings.HasPrefix(id, "...") {
					seen["notReachedIds"][id] = true
				}
			}
			warnings += len(rec.Warnings)
		}
		for k, m := range seen {
			if len(m) != n {
				t.Errorf("n=%d: the log holds %d distinct %s", n, len(m), k)
			}
		}
		if warnings != n {
			t.Errorf("n=%d: the log holds %d warnings", n, warnings)
		}
	}
}

func TestByReason(t *testing.T) {
	var list []Entry
	add := func(n int, id, detail string) {
		for i := range n {
			list = append(list, Entry{ID: fmt.Sprintf("%s%d", id, i), Detail: detail})
		}
	}
	add(3, "a", "deregister image ami-0123456789abcdef0: RequestID: 0a1b2c3d-0000-4000-8000-000000000001, InvalidAMIID.Unavailable")
	add(5, "b", "deregister image ami-00000000000000001: RequestID: 0a1b2c3d-0000-4000-8000-000000000002, UnauthorizedOperation")
	list[1].Detail = "deregister image ami-0fedcba9876543210: RequestID: 0a1b2c3d-0000-4000-8000-000000000003, InvalidAMIID.Unavailable"
	for i := range MaxReasons + 5 {
		add(1, fmt.Sprintf("c%d-", i), fmt.Sprintf("reason %d", i))
	}
	got := ByReason(list)
	if len(got) != MaxReasons+1 || got[0].Count != 5 || got[1].Count != 3 || !strings.Contains(got[1].Reason, "ami-*") ||
		got[len(got)-1].Reason != OtherReasons || got[len(got)-1].Count != 7 {
		t.Fatalf("by reason: %+v", got)
	}
	if ByReason(nil) != nil {
		t.Fatal("empty list has reasons")
	}
	if s := Truncate(strings.Repeat("é", 400), MaxDetail); len(s) > MaxDetail || !utf8.ValidString(s) {
		t.Fatalf("truncate: %d bytes, valid %v", len(s), utf8.ValidString(s))
	}
}

// TestSummaryLineHasEachKeyOnce: the functions' loggers carry function,
// policy, trigger and dryRun (coldstart, then the run's With) and are bound
// to the invocation with logging.BindContext; the summary line must still
// hold each key once.
func TestSummaryLineHasEachKeyOnce(t *testing.T) {
	var buf bytes.Buffer
	inner := slog.NewJSONHandler(&buf, nil).WithAttrs([]slog.Attr{slog.String("function", "backup")})
	log := slog.New(logging.BindContext(inner, context.Background())).With("policy", "nightly", "slot", "2026-11-24T03:00:00Z", "trigger", "schedule", "dryRun", true)
	s := &Summary{Function: "backup", Deployment: "prod", Policy: "nightly", Trigger: "schedule", DryRun: true}
	s.AddFailed(Entry{ID: "i-1", Detail: "x"})
	s.Log(context.Background(), log)
	keys, err := topLevelKeys(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, k := range keys {
		count[k]++
	}
	for k, n := range count {
		if n != 1 {
			t.Errorf("key %q appears %d times in %s", k, n, buf.String())
		}
	}
	for _, k := range []string{"function", "policy", "trigger", "dryRun", "slot", "deployment", "failures"} {
		if count[k] != 1 {
			t.Errorf("key %q missing from %s", k, buf.String())
		}
	}
}

// topLevelKeys returns the keys of a JSON object in order, duplicates included.
func topLevelKeys(b []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
