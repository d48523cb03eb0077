package rollout

import (
	"cmp"
	"slices"

	"github.com/amibackup/amibackup/pkg/waves"
)

// Target group reads within ELBv2's bucket. Every member of a group behind a
// target group costs about four DescribeTargetHealth calls per reboot (drain
// begun, drain over, registering, healthy again; a round's reads are shared
// per target group). BenchmarkWorkflow10k's 400 groups need 5.4 a second, far
// below the bucket's refill of 10, but a step comes only every 7 s (the
// history budget) and the bucket holds 40: any step that needed more than 40
// waited in throttled retries (4,666 of them, 466 s of a 12,334 s run), and
// every group's next look waited with it, including the longest chain's.
// So a step estimates the bucket as it does CreateImage's (State.ReadTokens)
// and looks at no more target groups than it holds, in order of the work
// left in each member's group (the longest chain first): a member that does
// not fit waits for the next step, and only groups with slack wait. A
// member whose target groups alone exceed a full bucket is looked at anyway
// (the SDK's retries wait for the tokens), so nothing waits forever.
//
// 40 tokens refilled at 10 per second: ELBv2's documented bucket for
// non-mutating actions ("Request throttling for the ELB API",
// https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/elb-api-throttling.html).
const (
	readBucket          = 40
	readRefillPerSecond = 10
)

// readTokens estimates the bucket at now (seconds after Progress.Start), as
// ciTokens does.
func readTokens(st *State, now int64) int {
	return int(min(int64(readBucket), int64(st.ReadTokens)+readRefillPerSecond*max(0, now-st.Prev)))
}

// The calls that put a member back (ExitStandby, then RegisterTargets)
// have buckets of their own (drainBucket: ec2sim's assumption, as for the
// calls that take it out). Held back by the read budget, members whose
// status checks passed came back in bunches: 2,800 throttled ExitStandby
// calls would have cost BenchmarkWorkflow10k 280 s. So the put-backs are
// paced like the starts (State.ReturnTokens): one token for each of a
// member's first two rounds back, none for a look at one whose due time
// came (registered, waiting for its health checks).

// returnTokens estimates the put-back calls' bucket at now, as drainTokens.
func returnTokens(st *State, now int64) int {
	return int(min(int64(drainBucket), int64(st.ReturnTokens)+drainRefillPerSecond*max(0, now-st.Prev)))
}

// readBudget admits a step's looks while the estimate has tokens.
type readBudget struct {
	tokens int
	read   map[string]bool // target groups this step reads already
	left   []int           // per plan group: reboots still to come, in chains of Max
}

func newReadBudget(st *State, plan *waves.Plan, now int64) *readBudget {
	n := make([]int, len(plan.Groups))
	for i, s := range plan.Slots {
		if c := st.Progress.S[i]; c == waves.Pending || c == waves.Rebooting {
			n[s.Group]++
		}
	}
	for g, grp := range plan.Groups {
		n[g] = (n[g] + grp.Max - 1) / grp.Max
	}
	return &readBudget{tokens: readTokens(st, now), read: map[string]bool{}, left: n}
}

// admit reports whether a look that reads the target groups arns fits, and
// if so counts them. Groups read already this step are free.
func (b *readBudget) admit(arns []string) bool {
	cost := 0
	for _, arn := range arns {
		if !b.read[arn] {
			cost++
		}
	}
	if cost > b.tokens && b.tokens < readBucket {
		return false
	}
	b.tokens -= cost
	for _, arn := range arns {
		b.read[arn] = true
	}
	return true
}

// remaining is what the estimate keeps for the next step.
func (b *readBudget) remaining() int { return max(0, b.tokens) }

// byWorkLeft orders slots by the work left in their groups, most first
// (then in plan order).
func (b *readBudget) byWorkLeft(plan *waves.Plan, slots []int) {
	slices.SortStableFunc(slots, func(x, y int) int {
		return cmp.Or(cmp.Compare(b.left[plan.Slots[y].Group], b.left[plan.Slots[x].Group]), cmp.Compare(x, y))
	})
}

// takenTargets lists the target groups this run took the instance out of:
// the ones putting it back reads.
func takenTargets(st *State, id string) []string {
	var out []string
	for _, t := range st.Taken {
		if t.InstanceID != id {
			continue
		}
		for _, tg := range t.Targets {
			if !slices.Contains(out, tg.Group) {
				out = append(out, tg.Group)
			}
		}
	}
	return out
}
