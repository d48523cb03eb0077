package rollout

import (
	"maps"
	"slices"

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
