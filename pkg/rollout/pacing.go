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
	// (each check also costs an invocation's latency). It binds only runs
	// whose history budget allows shorter waits (the 500-instance run of
	// TestWorkflowAtScale: 1.058 x its bound at 5 s, 1.050 at 3 s, with
	// 0.40 and 0.60 invocations per instance); at 10,000 instances the
	// budget's wait is longer.
	MinStepWait = 3 // seconds
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

// CreateImage's bucket (50, refilled 5 per second) is shared by every
// CreateImage of the account. A member whose group has nothing to drain
// (ungrouped, or no Auto Scaling group or target group) is imaged in the
// step that starts it, so starting more of them than the bucket holds
// makes the step wait in throttled retries, and with it every group's
// next observation: 330 throttled CreateImage calls in the 500-instance
// run (TestWorkflowAtScale), 3% of its bound. The state therefore keeps
// what the previous step left in the bucket (State.CITokens), and a step
// starts such members only while the estimate has tokens; members that
// drain first do not take its tokens (the bucket refills while they drain).

// ciTokens estimates the bucket at now (seconds after Progress.Start): what
// the previous step left plus the refill since.
func ciTokens(st *State, now int64) int {
	return int(min(int64(waves.CreateImageBucket), int64(st.CITokens)+waves.CreateImageRefillPerSecond*max(0, now-st.Prev)))
}

// imagedAtOnce reports whether plan group g's members are imaged in the
// step that starts them: nothing to drain first (no target group, no Auto
// Scaling group: members of one are put in Standby first, whatever key
// names their group).
func imagedAtOnce(plan *waves.Plan, st *State, drains bool, g int) bool {
	return !drains || len(st.GroupTargets[g]) == 0 && !plan.Groups[g].InAutoScaling()
}

// The same holds for the members that drain, at the pace of the Auto
// Scaling and ELBv2 calls: each costs one EnterStandby and one
// DeregisterTargets when it starts (and one ExitStandby and RegisterTargets
// when it returns), one call per group, nothing batches. Started as fast as
// CreateImage allows, the 400 groups of BenchmarkWorkflow10k sent their
// first members out together, the steps waited for the buckets (7,900
// throttled calls of each action), and the groups stayed in step for the
// whole night: every member's return and the next member's start fell into
// the same few steps. Starting them at the buckets' pace spreads the groups
// over the cycle once, at the beginning, largest groups first (plan order),
// so nothing on the longest chain waits. Neither Auto Scaling nor ELBv2
// publishes the size of these buckets (the ELB API throttling page gives
// only the Describe* one, 40 and 10 per second): drainBucket and
// drainRefillPerSecond are ec2sim's assumption. A bucket that is in fact
// larger only costs the first minutes some pace; a smaller one, the SDK's
// retries, as before.
const (
	drainBucket          = 20
	drainRefillPerSecond = 4
)

// drainTokens estimates the drain calls' bucket at now, as ciTokens.
func drainTokens(st *State, now int64) int {
	return int(min(int64(drainBucket), int64(st.DrainTokens)+drainRefillPerSecond*max(0, now-st.Prev)))
}

// Spreading the groups over a cycle. Paced by the buckets alone, the
// groups' first members go out as fast as the drain bucket refills (4 per
// second, at most its 20 per step): 400 groups within 100 s when steps come
// every 5 s, and every group keeps its phase all night (each member's
// return starts the next), so all of a cycle's drain, return and target
// reads would fall into a third of it, asking more of ELBv2's Describe
// bucket (40, 10 per second) than it refills. The groups that drain
// therefore start spread evenly over one reboot (waves.DefaultReboot), in
// plan order (largest first, so the longest chains start at once), each by
// no more than half the slack its chain leaves against the longest one: a
// spread start does not lengthen the run. (At 6.5 s steps the bucket's 20
// per step had spread BenchmarkWorkflow10k's starts over 290 s already:
// there the spread changed nothing measurable; it keeps the spread when
// steps are shorter.)

// heldBack reports, per plan group, whether its members must wait for their
// group's start offset at now (seconds after Progress.Start); nil when no
// group waits.
func heldBack(plan *waves.Plan, st *State, drains bool, now int64) []bool {
	if now >= waves.DefaultReboot {
		return nil // every offset is shorter than one cycle
	}
	longest := 0
	var spread []int
	for g, grp := range plan.Groups {
		longest = max(longest, grp.Chain())
		if !imagedAtOnce(plan, st, drains, g) {
			spread = append(spread, g)
		}
	}
	var held []bool
	for k, g := range spread {
		grp := plan.Groups[g]
		slack := (longest - grp.Chain()) * waves.DefaultReboot
		if off := min(k*waves.DefaultReboot/len(spread), slack/2); now < int64(off) {
			if held == nil {
				held = make([]bool, len(plan.Groups))
			}
			held[g] = true
		}
	}
	return held
}

// paceStarts keeps of ready (Progress.Ready, plan order) the slots that fit
// the buckets: a member imaged at once takes a CreateImage token (ci), one
// that drains a drain token (dr); a group whose member is held back starts
// no later member. It returns the slots and the drain tokens they took.
func paceStarts(plan *waves.Plan, st *State, drains bool, ready []int, ci, dr int) ([]int, int) {
	var out []int
	took := 0
	held := map[int]bool{}
	for _, i := range ready {
		g := plan.Slots[i].Group
		if held[g] {
			continue
		}
		tokens := &ci
		if !imagedAtOnce(plan, st, drains, g) {
			tokens = &dr
		}
		if *tokens <= 0 {
			held[g] = true
			continue
		}
		*tokens--
		if tokens == &dr {
			took++
		}
		out = append(out, i)
	}
	return out, took
}
