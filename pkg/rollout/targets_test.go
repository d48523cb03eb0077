package rollout_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/rollout"
)

// countingELB counts DescribeTargetHealth calls per target group.
type countingELB struct {
	rollout.ELB
	mu    *sync.Mutex
	calls map[string]int
}

func (c countingELB) DescribeTargetHealth(ctx context.Context, in *elbv2.DescribeTargetHealthInput, opts ...func(*elbv2.Options)) (*elbv2.DescribeTargetHealthOutput, error) {
	c.mu.Lock()
	c.calls[aws.ToString(in.TargetGroupArn)]++
	c.mu.Unlock()
	return c.ELB.DescribeTargetHealth(ctx, in, opts...)
}

// TestRolloutDrainAsksOwnTargetGroups: a drain round describes the target
// groups of the instances it drains, not every target group of the plan
// (with 400 target groups that was 400 throttled calls per step). Ten more
// selected instances, each alone behind a target group of its own: each of
// those groups is described at start, in its own instance's drain and
// restore rounds, and never in the rounds of the others.
func TestRolloutDrainAsksOwnTargetGroups(t *testing.T) {
	f := newFleet(t)
	var extra []string
	for i := range 10 {
		ids := f.env.Sim.SeedFleet("", "", 1, map[string]string{"Backup": "yes"})
		extra = append(extra, f.env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: fmt.Sprintf("extra-%d", i), Instances: ids,
			DeregistrationDelay: 60 * time.Second, HealthyAfter: 30 * time.Second}))
	}
	var mu sync.Mutex
	calls := map[string]int{}
	f.wrap = func(r *rollout.Roller) { r.ELB = countingELB{ELB: r.ELB, mu: &mu, calls: calls} }
	_, err, _ := f.execute(t, 0)
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	for id, n := range f.imagesPer() {
		if n != 1 {
			t.Errorf("%s: %d images", id, n)
		}
	}
	if len(f.imagesPer()) != 17 {
		t.Errorf("%d instances imaged, want 17", len(f.imagesPer()))
	}
	// Start: 1. Its own drain rounds: until the 60 s delay ends, one per
	// step (MinStepWait apart at most), and its restore rounds: until
	// healthy 30 s after registering. Every target group of the plan in
	// every drain round of the run (the old behaviour) is over twice that.
	own := 1 + (60/rollout.MinStepWait + 1) + (30/rollout.MinStepWait + 2)
	for _, arn := range extra {
		if calls[arn] > own {
			t.Errorf("%s described %d times, its own rounds are at most %d: drain rounds of other instances ask it", arn, calls[arn], own)
		}
	}
	t.Logf("DescribeTargetHealth per target group: %v", calls)
}

// TestRolloutLooksWhenDue: a draining member is looked at the step after
// its DeregisterTargets and then not before its deregistration delay has
// passed, a returning one not before its target can pass its health checks
// (interval x threshold): the ELBv2 and Auto Scaling reads of a run grow
// with its members, not with its steps. Before, every step described every
// in-flight member's target groups: 110 DescribeTargetHealth calls for the
// 3 members of this fleet (120 s of drain and 50 s of return, 5 s steps),
// now 20.
// The safety invariants hold as before, with the group attached to its
// Auto Scaling group (which registers on ExitStandby) or not.
func TestRolloutLooksWhenDue(t *testing.T) {
	for _, attach := range []bool{false, true} {
		t.Run(map[bool]string{false: "registered by the run", true: "attached"}[attach], func(t *testing.T) {
			f := newFleetWith(t, false, simtest.WavesOptions{DeregistrationDelay: 120 * time.Second, HealthyAfter: 50 * time.Second, Attach: attach})
			sum, err, _ := f.execute(t, 0)
			if err != nil {
				t.Fatalf("finish: %v", err)
			}
			if c := sum.Counts; c.Healthy != 7 || c.Created != 7 || c.NotRestored != 0 {
				t.Errorf("counts %+v", c)
			}
			if mu := simtest.MaxUnavailable(t, f.env.Sim); mu["autoscaling:web"] != 1 || mu["targetgroup:web"] != 1 {
				t.Errorf("at most %v unavailable at once, want 1", mu)
			}
			f.inService(t)
			calls := f.env.Sim.Calls()
			// Per member of "web": drain (first round, the step after,
			// the delay), return (registered, healthy), at most one more
			// each; plus start's listing and the restore loop.
			dth, dasi := calls.Count("DescribeTargetHealth"), calls.Count("DescribeAutoScalingInstances")
			t.Logf("DescribeTargetHealth %d, DescribeAutoScalingInstances %d, %v", dth, dasi, calls.ByAction)
			if limit := 3*7 + 4; dth > limit {
				t.Errorf("%d DescribeTargetHealth calls for 3 members behind a target group, want at most %d", dth, limit)
			}
			// The first member's target is still draining the step after
			// its deregistration: the other two skip that look (15 calls
			// without the skip).
			if dth > 13 {
				t.Errorf("%d DescribeTargetHealth calls: the members after the first still look the step after their deregistration", dth)
			}
			// The deregistration delay: read once, when the group first
			// drains (not at start, for every target group at once).
			if n := calls.Count("DescribeTargetGroupAttributes"); n != 1 {
				t.Errorf("%d DescribeTargetGroupAttributes calls for one target group, want 1", n)
			}
		})
	}
}

// TestRolloutStartLeavesDelaysUnread: start reads no deregistration delay
// (at 10,000 instances behind 400 target groups, 400 calls in one go, 360
// of them throttled: 36 s before the first member could start); each is
// read when its group first drains (TestRolloutLooksWhenDue: once).
func TestRolloutStartLeavesDelaysUnread(t *testing.T) {
	f := newFleetWith(t, false, simtest.WavesOptions{DeregistrationDelay: 120 * time.Second, HealthyAfter: 50 * time.Second})
	var st rollout.State
	if err := json.Unmarshal(f.start(t).State, &st); err != nil {
		t.Fatal(err)
	}
	if n := f.env.Sim.Calls().Count("DescribeTargetGroupAttributes"); n != 0 {
		t.Errorf("start made %d DescribeTargetGroupAttributes calls, want 0", n)
	}
	if len(st.TGDelay) == 0 || slices.ContainsFunc(st.TGDelay, func(d int) bool { return d != -1 }) {
		t.Errorf("delays after start %v, want each unknown (-1)", st.TGDelay)
	}
}
