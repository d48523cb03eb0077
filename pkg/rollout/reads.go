package rollout

import (
	"cmp"
	"slices"

	"github.com/amibackup/amibackup/pkg/waves"
)

// A step's calls within ELBv2's and Auto Scaling's buckets. Every member of
// a group behind a target group costs about four DescribeTargetHealth calls
// per reboot (drain begun, drain over, registering, healthy again; a step's
// reads are shared per target group) and two calls to put it back
// (ExitStandby, then RegisterTargets). BenchmarkWorkflow10k's 400 groups
// need 5.4 reads a second, below the read bucket's refill of 10, but a step
// comes only every 7 s (the history budget) and the bucket holds 40: a
// step that needed more waited in throttled retries (4,666 of them, 466 s of
// a 12,334 s run), and every group's next look waited with it, the longest
// chain's too. The put-backs bunched the same way (443 throttled each).
//
// So a step estimates both buckets as it does CreateImage's
// (State.ReadTokens, State.ReturnTokens) and looks only at what they hold,
// except for the groups on the longest chain: those within one reboot of
// the most work left (critical) are always looked at, in the order of work
// left, and pay for an empty bucket in retries, which costs the run a
// tenth of a second per call; any other member that does not fit waits
// for the next step, which costs a group with a reboot or more of slack
// nothing. (Deferring the critical groups too made the run slower, 1.080 x
// its bound instead of 1.063: the groups just behind the longest chain fell
// behind it one deferred step at a time.) A look bigger than a full bucket
// is taken, so nothing waits forever.
//
// Reads: 40 tokens refilled at 10 per second, ELBv2's documented bucket for
// non-mutating actions ("Request throttling for the ELB API",
// https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/elb-api-throttling.html).
// Put-backs: ExitStandby and RegisterTargets each have a bucket of
// drainBucket (ec2sim's assumption, pacing.go) and a member's two rounds back
// call one each, so together they hold twice as much.
const (
	readBucket            = 40
	readRefillPerSecond   = 10
	returnBucket          = 2 * drainBucket
	returnRefillPerSecond = 2 * drainRefillPerSecond
)

// readTokens and returnTokens estimate the buckets at now (seconds after
// Progress.Start), as ciTokens does.
func readTokens(st *State, now int64) int {
	return int(min(int64(readBucket), int64(st.ReadTokens)+readRefillPerSecond*max(0, now-st.Prev)))
}

func returnTokens(st *State, now int64) int {
	return int(min(int64(returnBucket), int64(st.ReturnTokens)+returnRefillPerSecond*max(0, now-st.Prev)))
}

// stepBudget admits a step's looks while the estimates have tokens.
type stepBudget struct {
	reads, returns int
	read           map[string]bool // target groups this step reads already
	left           []int           // per plan group: reboots still to come, in chains of Max
	longest        int
}

func newStepBudget(st *State, plan *waves.Plan, now int64) *stepBudget {
	n := make([]int, len(plan.Groups))
	for i, s := range plan.Slots {
		if c := st.Progress.S[i]; c == waves.Pending || c == waves.Rebooting {
			n[s.Group]++
		}
	}
	b := &stepBudget{reads: readTokens(st, now), returns: returnTokens(st, now), read: map[string]bool{}, left: n}
	for g, grp := range plan.Groups {
		n[g] = (n[g] + grp.Max - 1) / grp.Max
		b.longest = max(b.longest, n[g])
	}
	return b
}

// critical reports whether plan group g is within one reboot of the most
// work left: on the longest chain, or about to be.
func (b *stepBudget) critical(g int) bool { return b.left[g] >= b.longest-1 }

// admit reports whether a look at a member of plan group g that reads the
// target groups arns and makes returns put-back calls fits, and if so
// counts them. Target groups read already this step are free.
func (b *stepBudget) admit(g int, arns []string, returns int) bool {
	cost := 0
	for _, arn := range arns {
		if !b.read[arn] {
			cost++
		}
	}
	if !b.critical(g) && (cost > b.reads && b.reads < readBucket || returns > b.returns && b.returns < returnBucket) {
		return false
	}
	b.reads -= cost
	b.returns -= returns
	for _, arn := range arns {
		b.read[arn] = true
	}
	return true
}

// save keeps what the estimates leave for the next step.
func (b *stepBudget) save(st *State) {
	st.ReadTokens, st.ReturnTokens = max(0, b.reads), max(0, b.returns)
}

// byWorkLeft orders slots by the work left in their groups, most first
// (then in plan order).
func (b *stepBudget) byWorkLeft(plan *waves.Plan, slots []int) {
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
