package runner

import (
	"context"
	"log/slog"
	"time"

	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/metrics"
)

// DefaultMargin is how long before the Lambda deadline a job starts no new
// work: enough for calls in flight to finish their retries and for the
// summary to be logged and the metrics emitted.
const DefaultMargin = 60 * time.Second

// FunctionTimeout is every amibackup function's timeout, Lambda's maximum
// (900 s); the stacks set it (infra/stacks function.go).
const FunctionTimeout = 15 * time.Minute

// Job is the skeleton every function's job embeds (backup.Backuper,
// prune.Pruner, share.Sharer, drcopy.Copier): its logger, metrics writer,
// deadline margin and clock. A run of it (Start) bounds the EC2 work by
// the deadline and the concurrency, and ends (Finish) with the duration,
// the metrics derived from the summary, the summary log line and the error.
type Job struct {
	Log     *slog.Logger
	Metrics *emf.Writer
	// Margin before the context deadline (default DefaultMargin).
	Margin time.Duration
	// Now is the clock of trigger-time bounds, durations and metric
	// timestamps (default time.Now).
	Now func() time.Time
}

// Clock returns the job's clock.
func (j *Job) Clock() func() time.Time {
	if j.Now != nil {
		return j.Now
	}
	return time.Now
}

// Run is one invocation of a job.
type Run struct {
	job         *Job
	start       time.Time
	margin      time.Duration
	concurrency int
}

// Start begins a run that keeps at most concurrency EC2 calls of its items
// in flight (Each).
func (j *Job) Start(concurrency int) *Run {
	margin := j.Margin
	if margin == 0 {
		margin = DefaultMargin
	}
	return &Run{job: j, start: j.Clock()(), margin: margin, concurrency: concurrency}
}

// Began is when the run started.
func (r *Run) Began() time.Time { return r.start }

// Margin is the run's deadline margin.
func (r *Run) Margin() time.Duration { return r.margin }

// WorkContext is the context of the run's listings and other EC2 work
// outside Each (see WorkContext).
func (r *Run) WorkContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return WorkContext(ctx, r.margin)
}

// Each runs fn for the items with the run's concurrency and margin (see
// ForEach) and returns the items it never started.
func Each[T any](ctx context.Context, r *Run, items []T, fn func(context.Context, T)) (notReached []T) {
	return ForEach(ctx, items, r.concurrency, r.margin, fn)
}

// Metrics are what a run reports: the same values once for each value of
// the Policy dimension.
type Metrics struct {
	Policies []string
	Values   []emf.Metric
}

// Finish ends the run: it sets the summary's duration, emits the metrics
// that report derives from the summary (none for a dry run, which changes
// nothing: its counts would mislead dashboards and alarms; a failure to
// write them is logged), logs the summary and returns its error.
func (r *Run) Finish(ctx context.Context, log *slog.Logger, sum *Summary, report func(*Summary) Metrics) error {
	sum.DurationMS = r.job.Clock()().Sub(r.start).Milliseconds()
	if r.job.Metrics != nil && report != nil && !sum.DryRun {
		m := report(sum)
		for _, p := range m.Policies {
			if err := r.job.Metrics.Emit(r.start, map[string]string{metrics.Dimension: p}, m.Values...); err != nil {
				log.Error("emit metrics", "error", err.Error())
			}
		}
	}
	sum.Log(ctx, log)
	return sum.Err()
}
