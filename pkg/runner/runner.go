// Package runner holds what every amibackup function does the same way:
// bounded concurrency that stops starting work before the Lambda deadline,
// and the run summary that is logged, returned and turned into an error.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"
)

// ForEach calls fn for each item with at most concurrency calls in flight.
// It stops starting new items once the context's deadline is less than
// margin away (or the context is done) and returns the items it never
// started, in order, so the caller can report them; a re-run of the same
// trigger picks them up. Items already started get a context that ends
// half a margin before the deadline, so a call stuck in retries is cut off
// while there is still time to log the summary and emit metrics.
func ForEach[T any](ctx context.Context, items []T, concurrency int, margin time.Duration, fn func(context.Context, T)) (notReached []T) {
	if concurrency < 1 {
		concurrency = 1
	}
	wctx, cancel := WorkContext(ctx, margin)
	defer cancel()
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return items[i:]
		}
		if tooLate(ctx, margin) {
			<-sem
			wg.Wait()
			return items[i:]
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(wctx, it)
		}()
	}
	wg.Wait()
	return nil
}

// WorkContext returns the context that EC2 work of an invocation runs on:
// it ends half a margin before ctx's deadline, so a call stuck in retries
// (a hung listing, a throttled worker) is cut off while there is still time
// to log the summary and emit metrics. Without a deadline it is ctx itself.
func WorkContext(ctx context.Context, margin time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok {
		return context.WithDeadline(ctx, dl.Add(-margin/2))
	}
	return context.WithCancel(ctx)
}

func tooLate(ctx context.Context, margin time.Duration) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && time.Until(dl) < margin
}

// Entry is one resource in a summary.
type Entry struct {
	ID      string `json:"id"`
	ImageID string `json:"imageId,omitempty"`
	Name    string `json:"name,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// Summary is the result of one invocation. Its lists are safe to append to
// from concurrent workers through the Add methods.
type Summary struct {
	mu         sync.Mutex
	Function   string    `json:"function"`
	Deployment string    `json:"deployment"`
	Policy     string    `json:"policy,omitempty"`
	Trigger    string    `json:"trigger,omitempty"`
	Slot       time.Time `json:"slot,omitzero"`
	DryRun     bool      `json:"dryRun"`
	Selected   int       `json:"selected"`
	Done       []Entry   `json:"done"`
	Existed    []Entry   `json:"alreadyDone"`
	Skipped    []Entry   `json:"skipped"`
	Failed     []Entry   `json:"failed"`
	NotReached []string  `json:"notReached"`
	Warnings   []string  `json:"warnings"`
	DurationMS int64     `json:"durationMs"`
}

// AddDone records a resource that was acted on (created, deleted, shared...).
func (s *Summary) AddDone(e Entry) { s.add(&s.Done, e) }

// AddExisted records a resource found already done (e.g. a retried trigger).
func (s *Summary) AddExisted(e Entry) { s.add(&s.Existed, e) }

// AddSkipped records a resource deliberately left alone, with the reason in Detail.
func (s *Summary) AddSkipped(e Entry) { s.add(&s.Skipped, e) }

// AddFailed records a failure, with the error in Detail.
func (s *Summary) AddFailed(e Entry) { s.add(&s.Failed, e) }

// Warn records a warning.
func (s *Summary) Warn(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Warnings = append(s.Warnings, fmt.Sprintf(format, args...))
}

func (s *Summary) add(list *[]Entry, e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*list = append(*list, e)
}

// Err is non-nil when anything failed or was not reached, so the invocation
// fails, alarms fire and the (idempotent) trigger is retried.
func (s *Summary) Err() error {
	var parts []string
	for _, f := range s.Failed {
		parts = append(parts, f.ID+": "+f.Detail)
	}
	var errs []error
	if len(parts) > 0 {
		errs = append(errs, fmt.Errorf("%s: %d failed: %s", s.Function, len(parts), strings.Join(parts, "; ")))
	}
	if len(s.NotReached) > 0 {
		errs = append(errs, fmt.Errorf("%s: %d not reached before the deadline (re-run the same trigger to finish them): %s",
			s.Function, len(s.NotReached), strings.Join(s.NotReached, ", ")))
	}
	return errors.Join(errs...)
}

// Log writes the summary as one JSON log line.
func (s *Summary) Log(ctx context.Context, log *slog.Logger) {
	level := slog.LevelInfo
	if len(s.Failed) > 0 || len(s.NotReached) > 0 {
		level = slog.LevelError
	} else if len(s.Warnings) > 0 {
		level = slog.LevelWarn
	}
	log.Log(ctx, level, "run summary",
		slog.String("function", s.Function), slog.String("deployment", s.Deployment),
		slog.String("policy", s.Policy), slog.String("trigger", s.Trigger), slog.Bool("dryRun", s.DryRun),
		slog.Int("selected", s.Selected), slog.Int("done", len(s.Done)), slog.Int("alreadyDone", len(s.Existed)),
		slog.Int("skipped", len(s.Skipped)), slog.Int("failed", len(s.Failed)), slog.Int("notReached", len(s.NotReached)),
		slog.Any("failures", s.Failed), slog.Any("skips", s.Skipped), slog.Any("notReachedIds", capped(s.NotReached, maxLoggedIDs)),
		slog.Any("warnings", s.Warnings),
		slog.Int64("durationMs", s.DurationMS))
}

// maxLoggedIDs keeps the summary line well below CloudWatch Logs' 256 KiB
// event limit; the returned summary always holds the full lists.
const maxLoggedIDs = 200

func capped(ids []string, n int) []string {
	if len(ids) <= n {
		return ids
	}
	return append(slices.Clone(ids[:n]), fmt.Sprintf("... and %d more", len(ids)-n))
}
