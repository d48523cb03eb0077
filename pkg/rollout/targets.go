package rollout

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/waves"
)

// A drain round looks for the registrations of the instances it drains with
// one DescribeTargetHealth per target group it is given (ELBv2 has no lookup
// from instance to target group). Given every target group of the plan, a
// step of a 10,000-instance fleet behind 400 target groups made 400 calls
// per step: ELBv2 throttles them (its buckets are not published; ec2sim
// assumes 40 and 10 per second), which cost over half a minute per step and
// pushed the run far over its bound (BenchmarkWorkflow10k). The state
// therefore keeps which target groups each plan group's members were in at
// start, and a round asks only those of the instances it drains.

// groupTargets maps each plan group with registrations to the indices in
// tgs of its members' target groups.
func groupTargets(plan *waves.Plan, tgs []string, regs map[string][]drain.Registration) map[int][]int {
	out := map[int][]int{}
	for id, rs := range regs {
		i, ok := plan.Slot(id)
		if !ok {
			continue
		}
		g := plan.Slots[i].Group
		for _, rg := range rs {
			if k, found := slices.BinarySearch(tgs, rg.Group); found && !slices.Contains(out[g], k) {
				out[g] = append(out[g], k)
			}
		}
	}
	for _, ks := range out {
		slices.Sort(ks)
	}
	return out
}

// drainTargets returns the target groups a drain round of slots looks at:
// those of their plan groups, or every target group of the plan for a
// state written before GroupTargets existed.
func drainTargets(st *State, plan *waves.Plan, slots []int) []string {
	if st.GroupTargets == nil {
		return st.TargetGroups
	}
	want := map[int]bool{}
	for _, i := range slots {
		for _, k := range st.GroupTargets[plan.Slots[i].Group] {
			if k >= 0 && k < len(st.TargetGroups) {
				want[k] = true
			}
		}
	}
	out := make([]string, 0, len(want))
	for _, k := range slices.Sorted(maps.Keys(want)) {
		out = append(out, st.TargetGroups[k])
	}
	return out
}

// When to look again. Most of a member's time out of service is spent
// waiting for ELBv2: its targets drain for the target group's
// deregistration delay, and once registered again they are healthy only
// after the health check passed HealthyThresholdCount times,
// HealthCheckIntervalSeconds apart. Looking every step meanwhile cost one
// DescribeTargetHealth per target group per step (plus the Auto Scaling and
// EC2 reads of the round): at 10,000 instances behind 400 target groups,
// 49,470 throttled DescribeTargetHealth calls and 9,592 s of the run spent
// in throttled retries (BenchmarkWorkflow10k). The state therefore keeps
// per target group its two timings (read once at start) and per member in
// flight the earliest time worth a look (State.Due), and a step leaves the
// others alone:
//   - draining: looked at in the step after its DeregisterTargets (a target
//     without in-flight requests completes its deregistration at once), then
//     not before its start plus the longest deregistration delay of its
//     group's target groups;
//   - returning: not before its registration plus the longest interval x
//     threshold of its group's target groups (registered by us in this
//     round, or by its Auto Scaling group since the previous step).
// A member is always looked at once its healthTimeout has passed, so a
// halt is decided on what AWS says at that step, as before.

// targetTimings takes each target group's interval x healthy threshold from
// healthy (DescribeTargetGroups), in seconds, in the order of tgs; the
// deregistration delays are not known yet (unknownDelay): readDelays reads
// them when a group first drains. Read here, at start, they cost 400
// DescribeTargetGroupAttributes calls in one go at 10,000 instances behind
// 400 target groups (360 throttled: 36 s before the first member could
// start, on the longest chain); read as the groups start, spread over the
// first reboot (heldBack), none is throttled.
func targetTimings(tgs []string, healthy map[string]int) (delay, ready []int) {
	delay, ready = make([]int, len(tgs)), make([]int, len(tgs))
	for k, arn := range tgs {
		ready[k] = healthy[arn]
		delay[k] = unknownDelay
	}
	return delay, ready
}

// unknownDelay marks a deregistration delay not read yet (State.TGDelay).
const unknownDelay = -1

// readDelays reads the deregistration delay (DescribeTargetGroupAttributes,
// deregistration_delay.timeout_seconds) of each target group of the slots'
// groups not read yet. A value out of range (0-3600, TargetGroupAttribute)
// or absent counts as 0: the member is looked at every step, as without
// timings.
func (r *Roller) readDelays(ctx context.Context, st *State, plan *waves.Plan, slots []int) error {
	for _, i := range slots {
		for _, k := range st.GroupTargets[plan.Slots[i].Group] {
			if k < 0 || k >= len(st.TGDelay) || k >= len(st.TargetGroups) || st.TGDelay[k] != unknownDelay {
				continue
			}
			arn := st.TargetGroups[k]
			out, err := r.ELB.DescribeTargetGroupAttributes(ctx, &elasticloadbalancingv2.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(arn)})
			if err != nil {
				return fmt.Errorf("describe target group attributes of %s: %w", arn, err)
			}
			st.TGDelay[k] = 0
			for _, a := range out.Attributes {
				if aws.ToString(a.Key) == "deregistration_delay.timeout_seconds" {
					if n, err := strconv.Atoi(aws.ToString(a.Value)); err == nil && n >= 0 && n <= 3600 {
						st.TGDelay[k] = n
					}
				}
			}
		}
	}
	return nil
}

// Draining fully. A target without in-flight requests completes its
// deregistration at once ("If a deregistering target has no in-flight
// requests and no active connections, Elastic Load Balancing immediately
// completes the deregistration process, without waiting for the
// deregistration delay to elapse", ELB user guide, Deregistration delay),
// which is why a draining member is looked at in the step after its
// DeregisterTargets. That look is one of a member's five target group
// reads, and reads are what bind at scale: at 10,000 instances behind 400
// target groups a step needed more than ELBv2's Describe bucket holds (40)
// and waited in throttled retries, 3,220 to 4,460 of them per run
// (BenchmarkWorkflow10k). A target group whose target was still draining
// a step after its deregistration has traffic that keeps its targets the
// whole delay; its later members skip that look (State.TGFull) and are
// looked at when the delay has passed, as they would be anyway.

// drainsFully reports whether every target group of plan group g was seen
// to keep a target draining for its delay (false without target groups).
func drainsFully(st *State, g int) bool {
	ks := st.GroupTargets[g]
	for _, k := range ks {
		if !bit(st.TGFull, k) {
			return false
		}
	}
	return len(ks) > 0
}

// learnFullDrain records that plan group g's target groups keep targets
// draining for the delay.
func learnFullDrain(st *State, g int) {
	for _, k := range st.GroupTargets[g] {
		if k >= 0 && k < len(st.TargetGroups) {
			st.TGFull = setBit(st.TGFull, k)
		}
	}
}

// bit and setBit read and set bit k of a hex string (4 bits a digit,
// lowest first; digits past the end are 0).
func bit(hex string, k int) bool {
	if k < 0 || k/4 >= len(hex) {
		return false
	}
	v, err := strconv.ParseUint(hex[k/4:k/4+1], 16, 8)
	return err == nil && v&(1<<(k%4)) != 0
}

func setBit(hex string, k int) string {
	b := []byte(hex)
	for len(b) <= k/4 {
		b = append(b, '0')
	}
	v, err := strconv.ParseUint(string(b[k/4]), 16, 8)
	if err != nil {
		v = 0
	}
	b[k/4] = strconv.FormatUint(v|1<<(k%4), 16)[0]
	return string(b)
}

// groupTiming is the longest of per (indexed like TargetGroups) over plan
// group g's target groups: 0 when unknown (a state without timings, or
// delays not read yet).
func groupTiming(st *State, g int, per []int) int64 {
	var out int64
	for _, k := range st.GroupTargets[g] {
		if k >= 0 && k < len(per) {
			out = max(out, int64(per[k]))
		}
	}
	return out
}

// dueNow removes from State.Due the slots whose time has come (or whose
// healthTimeout has passed: a halt is decided on a fresh look) and returns
// them; a slot still in Due is not looked at in this step.
func dueNow(st *State, now int64, timeout time.Duration) map[int]bool {
	out := map[int]bool{}
	for i, due := range st.Due {
		t, inFlight := st.Progress.T[i]
		if !inFlight || now >= due || time.Duration(now-t)*time.Second >= timeout {
			out[i] = true
			delete(st.Due, i)
		}
	}
	return out
}

// setDue records when slot i is next worth a look; a time not after now
// clears it.
func setDue(st *State, i int, due, now int64) {
	if due <= now {
		delete(st.Due, i)
		return
	}
	if st.Due == nil {
		st.Due = map[int]int64{}
	}
	st.Due[i] = due
}

// scheduleReturn sets when a member put back in this step (why: its restore
// round's "state detail") is next worth a look: registered now, not before
// its group's interval x threshold from now; registered since the previous
// step (by its Auto Scaling group), not before that from the previous step.
// Anything else (leaving Standby, a target failing its checks) is looked at
// in the next step.
// A member that was waited for (waited: its due time came) is looked at
// every step from then on: its registration is the one waited for.
func (r *Roller) scheduleReturn(l *loaded, id, why string, now int64, timeout time.Duration, waited map[int]bool) {
	st := l.st
	i, ok := l.plan.Slot(id)
	if !ok || st.Progress.S[i] != waves.Rebooting {
		return
	}
	ready := groupTiming(st, l.plan.Slots[i].Group, st.TGReady)
	var due int64
	switch detail := strings.TrimPrefix(why, drain.StateWaiting+" "); {
	case detail == drain.DetailRegistering:
		due = now + ready
	case strings.HasPrefix(detail, drain.DetailTarget+"initial") && !waited[i]:
		due = st.Prev + ready
	}
	setDue(st, i, min(due, st.Progress.T[i]+int64(timeout/time.Second)), now)
}
