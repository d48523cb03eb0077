package rollout

import (
	"time"

	"github.com/amibackup/amibackup/pkg/waves"
)

// Step pacing. A group's next member starts in the step that sees the
// previous one back in service, and every member passes three such
// observations (drain complete, status checks ok, back in service), each
// found on average half a wait (plus an invocation) after it happened. At a
// fixed 15 s that cost 8% over the bound at 10,000 instances
// (BenchmarkWorkflow10k); the waits are therefore as short as Step
// Functions' history allows: the remaining checks of the budget
// (waves.MaxChecks: 9 history events each, well inside the 25,000 of an
// execution) spread over the remaining run as estimated now, never shorter
// than MinStepWait. The estimate is made again at every step, so a run that
// is slower than estimated spaces its remaining checks out instead of
// running out of history.
const (
	// MinStepWait: below it, invocations grow faster than the run shrinks
	// (each check also costs an invocation's latency).
	MinStepWait = 5 // seconds
	// MaxStepWait: once the budget is spent (a run far slower than its
	// estimate), the wait that leaves room for hours of further checks.
	MaxStepWait = 300 // seconds
)

// stepWait is the wait before the next step, checks steps into the run.
func stepWait(p *waves.Plan, pr *waves.Progress, checks int) int {
	left := waves.MaxChecks - checks
	if left <= 0 {
		return MaxStepWait
	}
	per := (remaining(p, pr) + time.Duration(left)*time.Second - 1) / (time.Duration(left) * time.Second) // whole seconds, rounded up
	return min(MaxStepWait, max(MinStepWait, int(per)))
}

// remaining estimates the rest of the run as waves.Plan.MinDuration does
// for the whole: the longest chain of members still to reboot in one group
// (one in flight counts whole) at waves.DefaultReboot each, or the
// CreateImage bucket's pace for the members not started, whichever is
// longer. Groups with a member that did not come back are halted: their
// pending members are skipped, not rebooted.
func remaining(p *waves.Plan, pr *waves.Progress) time.Duration {
	left := make([]int, len(p.Groups))
	halted := make([]bool, len(p.Groups))
	pending := 0
	for i, s := range p.Slots {
		switch pr.S[i] {
		case waves.Pending:
			left[s.Group]++
			pending++
		case waves.Rebooting:
			left[s.Group]++
		case waves.Unhealthy:
			halted[s.Group] = true
		}
	}
	chain := 0
	for g, n := range left {
		if !halted[g] && n > 0 {
			chain = max(chain, (n+p.Groups[g].Max-1)/p.Groups[g].Max)
		}
	}
	bucket := time.Duration(max(0, pending-waves.CreateImageBucket)) * time.Second / waves.CreateImageRefillPerSecond
	return max(bucket, time.Duration(chain)*waves.DefaultReboot*time.Second)
}
