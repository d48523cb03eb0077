// Package runner holds what every amibackup function does the same way:
// the job skeleton (Job, Run: clock, deadline margin, metrics from the
// summary), bounded concurrency that stops starting work before the Lambda
// deadline, and the run summary that is logged, returned and turned into
// an error.
package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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

// AddNotReached records, by ID, the items a run never started (what
// ForEach and Each return): the run fails and a retry finishes them.
func AddNotReached[T any](s *Summary, items []T, id func(T) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range items {
		s.NotReached = append(s.NotReached, id(it))
	}
}

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

// Bounds of what a summary shows. The in-memory lists stay complete (Go
// callers and tests read them); the returned JSON, the summary log line and
// the error are cut to these sizes, whatever the size of the run: Lambda's
// response (and errorMessage) may not exceed 6 MB (Function.ResponseSizeTooLarge)
// and a CloudWatch Logs event 256 KiB. Counts are always exact.
const (
	// MaxEntries is how many entries of each list (done, failed...) the
	// response and the summary log line show.
	MaxEntries = 50
	// MaxIDs is how many IDs of an ID-only list (notReached) they show.
	MaxIDs = 200
	// MaxReasons is how many distinct reasons are counted per list; the
	// rest are counted together under OtherReasons.
	MaxReasons = 20
	// MaxIDsPerReason is how many IDs each reason names.
	MaxIDsPerReason = 10
	// MaxDetail is the longest detail, warning or reason shown, in bytes.
	MaxDetail = 500
	// MaxErrorEntries is how many failures and not-reached IDs the returned
	// error (Lambda's errorMessage) names.
	MaxErrorEntries = 10
	// LogPage is how many entries (IDs: LogPage*10) a continuation log
	// record holds: at most MaxDetail bytes each, far below 256 KiB.
	LogPage = 100
)

// OtherReasons is the reason under which reasons beyond MaxReasons count.
const OtherReasons = "(other reasons)"

// Counts are the exact sizes of a summary's lists.
type Counts struct {
	Done       int `json:"done"`
	Existed    int `json:"alreadyDone"`
	Skipped    int `json:"skipped"`
	Failed     int `json:"failed"`
	NotReached int `json:"notReached"`
	Warnings   int `json:"warnings"`
}

// ReasonCount counts the entries of a list that share a reason (the
// detail with resource and request IDs blanked out).
type ReasonCount struct {
	Reason string   `json:"reason"`
	Count  int      `json:"count"`
	IDs    []string `json:"ids"`
}

// View is the bounded form of a Summary: what the function returns and
// logs. Lists hold at most MaxEntries (MaxIDs) items; Counts are exact;
// Truncated says that some list was cut (the full lists are in the log).
type View struct {
	Function        string        `json:"function"`
	Deployment      string        `json:"deployment"`
	Policy          string        `json:"policy,omitempty"`
	Trigger         string        `json:"trigger,omitempty"`
	Slot            time.Time     `json:"slot,omitzero"`
	DryRun          bool          `json:"dryRun"`
	Selected        int           `json:"selected"`
	Counts          Counts        `json:"counts"`
	Done            []Entry       `json:"done"`
	Existed         []Entry       `json:"alreadyDone"`
	Skipped         []Entry       `json:"skipped"`
	Failed          []Entry       `json:"failed"`
	NotReached      []string      `json:"notReached"`
	Warnings        []string      `json:"warnings"`
	SkippedByReason []ReasonCount `json:"skippedByReason,omitempty"`
	FailedByReason  []ReasonCount `json:"failedByReason,omitempty"`
	Truncated       bool          `json:"truncated,omitempty"`
	DurationMS      int64         `json:"durationMs"`
}

// View returns the bounded form of the summary.
func (s *Summary) View() View {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := View{Function: s.Function, Deployment: s.Deployment, Policy: s.Policy, Trigger: s.Trigger, Slot: s.Slot,
		DryRun: s.DryRun, Selected: s.Selected, DurationMS: s.DurationMS,
		Counts: Counts{Done: len(s.Done), Existed: len(s.Existed), Skipped: len(s.Skipped), Failed: len(s.Failed),
			NotReached: len(s.NotReached), Warnings: len(s.Warnings)},
		Done: CapEntries(s.Done, MaxEntries), Existed: CapEntries(s.Existed, MaxEntries),
		Skipped: CapEntries(s.Skipped, MaxEntries), Failed: CapEntries(s.Failed, MaxEntries),
		NotReached: CapIDs(s.NotReached, MaxIDs), Warnings: capStrings(s.Warnings, MaxEntries),
		SkippedByReason: ByReason(s.Skipped), FailedByReason: ByReason(s.Failed),
	}
	v.Truncated = len(s.Done) > MaxEntries || len(s.Existed) > MaxEntries || len(s.Skipped) > MaxEntries ||
		len(s.Failed) > MaxEntries || len(s.NotReached) > MaxIDs || len(s.Warnings) > MaxEntries
	return v
}

// MarshalJSON writes the bounded View: a Lambda response stays far below
// 6 MB for any number of resources.
func (s *Summary) MarshalJSON() ([]byte, error) { return json.Marshal(s.View()) }

// CapEntries returns at most n entries, each with its detail cut to MaxDetail.
func CapEntries(list []Entry, n int) []Entry {
	out := make([]Entry, 0, min(len(list), n))
	for _, e := range list[:min(len(list), n)] {
		e.Detail = Truncate(e.Detail, MaxDetail)
		out = append(out, e)
	}
	return out
}

// CapIDs returns at most n IDs.
func CapIDs(ids []string, n int) []string {
	return slices.Clone(ids[:min(len(ids), n)])
}

func capStrings(list []string, n int) []string {
	out := make([]string, 0, min(len(list), n))
	for _, w := range list[:min(len(list), n)] {
		out = append(out, Truncate(w, MaxDetail))
	}
	return out
}

// Truncate cuts s to at most n bytes (on a rune boundary), marking the cut.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "...(truncated)"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// idRE matches what differs between entries failing for the same reason:
// EC2 resource IDs, request IDs (UUIDs) and ARNs' resource parts.
var (
	resourceIDRE = regexp.MustCompile(`\b(ami|i|snap|vol|eni|sg|subnet|vpc|import-ami|export-ami)-[0-9a-f]{8,17}\b`)
	requestIDRE  = regexp.MustCompile(`\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b`)
)

// Reason is the detail with resource and request IDs blanked out, so
// entries that fail (or are skipped) for the same reason count together.
func Reason(detail string) string {
	r := resourceIDRE.ReplaceAllString(detail, "$1-*")
	r = requestIDRE.ReplaceAllString(r, "*")
	return Truncate(r, MaxDetail)
}

// ByReason counts entries by Reason, most frequent first (ties: first
// seen), with the first MaxIDsPerReason IDs of each; at most MaxReasons
// reasons, the rest counted under OtherReasons. Nil for an empty list.
func ByReason(list []Entry) []ReasonCount {
	if len(list) == 0 {
		return nil
	}
	var out []ReasonCount
	index := map[string]int{}
	other := -1
	for _, e := range list {
		r := Reason(e.Detail)
		i, ok := index[r]
		if !ok {
			if len(out) < MaxReasons {
				i = len(out)
				index[r] = i
				out = append(out, ReasonCount{Reason: r})
			} else {
				if other < 0 {
					other = len(out)
					out = append(out, ReasonCount{Reason: OtherReasons})
				}
				i = other
			}
		}
		out[i].Count++
		if len(out[i].IDs) < MaxIDsPerReason {
			out[i].IDs = append(out[i].IDs, e.ID)
		}
	}
	slices.SortStableFunc(out, func(a, b ReasonCount) int {
		if (a.Reason == OtherReasons) != (b.Reason == OtherReasons) {
			if a.Reason == OtherReasons {
				return 1
			}
			return -1
		}
		return b.Count - a.Count
	})
	return out
}

// Err is non-nil when anything failed or was not reached, so the invocation
// fails, alarms fire and the (idempotent) trigger is retried. It names at
// most MaxErrorEntries failures and IDs (Lambda's errorMessage is part of
// the bounded response); the summary log line has the counts by reason.
func (s *Summary) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if n := len(s.Failed); n > 0 {
		var parts []string
		for _, f := range s.Failed[:min(n, MaxErrorEntries)] {
			parts = append(parts, f.ID+": "+Truncate(f.Detail, MaxDetail))
		}
		msg := fmt.Sprintf("%s: %d failed: %s", s.Function, n, strings.Join(parts, "; "))
		if n > MaxErrorEntries {
			reasons := ByReason(s.Failed)
			msg += fmt.Sprintf("; ... and %d more (%d distinct reasons; counts by reason in the run summary log line)", n-MaxErrorEntries, len(reasons))
		}
		errs = append(errs, errors.New(msg))
	}
	if n := len(s.NotReached); n > 0 {
		ids := strings.Join(s.NotReached[:min(n, MaxErrorEntries)], ", ")
		if n > MaxErrorEntries {
			ids += fmt.Sprintf(", ... and %d more", n-MaxErrorEntries)
		}
		errs = append(errs, fmt.Errorf("%s: %d not reached before the deadline (re-run the same trigger to finish them): %s",
			s.Function, n, ids))
	}
	return errors.Join(errs...)
}

// Log writes the summary as one bounded JSON log line (at most MaxEntries
// failures, skips and warnings, MaxIDs not-reached IDs, counts by reason),
// then the rest of the failures, skips, warnings and not-reached IDs in
// continuation records of LogPage entries ("run summary (continued)"), so
// nothing is lost and no record comes near CloudWatch Logs' 256 KiB limit.
//
// The summary line carries no "function" attribute: every function's logger
// has it already (pkg/coldstart), and a key must appear once per record.
// Policy, trigger and dryRun, which the functions' loggers may carry too,
// are deduplicated by logging.BindContext's handler (the record's value wins).
func (s *Summary) Log(ctx context.Context, log *slog.Logger) {
	v := s.View()
	level := slog.LevelInfo
	if v.Counts.Failed > 0 || v.Counts.NotReached > 0 {
		level = slog.LevelError
	} else if v.Counts.Warnings > 0 {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{slog.String("deployment", v.Deployment),
		slog.String("policy", v.Policy), slog.String("trigger", v.Trigger), slog.Bool("dryRun", v.DryRun),
		slog.Int("selected", v.Selected), slog.Int("done", v.Counts.Done), slog.Int("alreadyDone", v.Counts.Existed),
		slog.Int("skipped", v.Counts.Skipped), slog.Int("failed", v.Counts.Failed), slog.Int("notReached", v.Counts.NotReached),
		slog.Any("failures", v.Failed), slog.Any("skips", v.Skipped), slog.Any("notReachedIds", capped(s.NotReached, MaxIDs)),
		slog.Any("warnings", v.Warnings)}
	if v.FailedByReason != nil {
		attrs = append(attrs, slog.Any("failuresByReason", v.FailedByReason))
	}
	if v.SkippedByReason != nil {
		attrs = append(attrs, slog.Any("skipsByReason", v.SkippedByReason))
	}
	if v.Truncated {
		attrs = append(attrs, slog.Bool("truncated", true))
	}
	attrs = append(attrs, slog.Int64("durationMs", v.DurationMS))
	log.LogAttrs(ctx, level, "run summary", attrs...)

	s.mu.Lock()
	failed, skipped, warnings, notReached := slices.Clone(s.Failed), slices.Clone(s.Skipped), slices.Clone(s.Warnings), slices.Clone(s.NotReached)
	s.mu.Unlock()
	logRest(ctx, log, level, "failures", failed, MaxEntries, LogPage, func(e []Entry) any { return CapEntries(e, len(e)) })
	logRest(ctx, log, level, "skips", skipped, MaxEntries, LogPage, func(e []Entry) any { return CapEntries(e, len(e)) })
	logRest(ctx, log, level, "warnings", warnings, MaxEntries, LogPage, func(w []string) any { return capStrings(w, len(w)) })
	logRest(ctx, log, level, "notReachedIds", notReached, MaxIDs, 10*LogPage, func(ids []string) any { return ids })
}

// logRest logs list[shown:] in pages of page items, each as its own record.
func logRest[T any](ctx context.Context, log *slog.Logger, level slog.Level, key string, list []T, shown, page int, conv func([]T) any) {
	if len(list) <= shown {
		return
	}
	for i := shown; i < len(list); i += page {
		end := min(i+page, len(list))
		log.LogAttrs(ctx, level, "run summary (continued)", slog.String("list", key),
			slog.Int("from", i), slog.Int("to", end), slog.Int("of", len(list)), slog.Any(key, conv(list[i:end])))
	}
}

func capped(ids []string, n int) []string {
	if len(ids) <= n {
		return slices.Clone(ids)
	}
	return append(slices.Clone(ids[:n]), fmt.Sprintf("... and %d more", len(ids)-n))
}
