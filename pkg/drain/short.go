package drain

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// targetUp reports whether a target leaves its group with the capacity it
// has: healthy; unavailable (health checks disabled: it serves); unused
// because it is not registered any more (Target.NotRegistered) or its
// Availability Zone is not enabled for the load balancer (Target.NotInUse:
// it served nothing before either). initial, unhealthy, draining, and
// unused because the instance is not running (Target.InvalidState) are a
// target down (ELBv2 API reference, TargetHealth).
func targetUp(h *elbtypes.TargetHealth) bool {
	switch h.State {
	case elbtypes.TargetHealthStateEnumHealthy, elbtypes.TargetHealthStateEnumUnavailable:
		return true
	case elbtypes.TargetHealthStateEnumUnused:
		return h.Reason == elbtypes.TargetHealthReasonEnumNotRegistered || h.Reason == elbtypes.TargetHealthReasonEnumNotInUse
	}
	return false
}

// countsToDesired reports whether a member in lifecycle state lc fills a
// place of its group's desired capacity. Launched (Pending, Pending:Wait,
// Pending:Proceed) and InService members do. A member in Standby does not:
// "If you choose to decrement the desired capacity of the Auto Scaling
// group, the instances can enter standby as long as the desired capacity
// ... after the instances are placed into standby is equal to or greater
// than the minimum capacity of the group. If you choose not to decrement
// the desired capacity of the Auto Scaling group, the Auto Scaling group
// launches new instances to replace the instances on standby" (Auto Scaling
// API reference, EnterStandby; ExitStandby: "After you put the instances
// back in service, the desired capacity is incremented"), so either the
// desired capacity left out its place or a replacement takes it. Nor does
// a member leaving (Terminating*, Detaching, whose replacement is launched
// or whose place the desired capacity gave up), nor a warm pool's (Warmed:*,
// outside the desired capacity).
func countsToDesired(lc string) bool {
	return lc == lcInService || lc == lcPending || strings.HasPrefix(lc, lcPending+":")
}

// weight is what a member fills of the desired capacity: its
// WeightedCapacity, 1 without one. "When a Spot or On-Demand Instance is
// launched, the capacity units count toward the desired capacity" and with
// weights "you must specify these sizes with the same units that you use
// for weighting instances" (Auto Scaling API reference,
// LaunchTemplateOverrides.WeightedCapacity); "By default, all instance
// types have equal weight" (user guide, asg-instance-weighting).
func weight(m types.Instance) int {
	if n, err := strconv.Atoi(aws.ToString(m.WeightedCapacity)); err == nil && n > 0 {
		return n
	}
	return 1
}

// belowDesired reports whether the members of g that fill a place of its
// desired capacity (countsToDesired), by weight, fill less than its
// DesiredCapacity. A desired capacity in units (the default: "units, which
// translates into number of instances", or the weights' units) is
// compared; one in vCPUs or MiB of memory (DesiredCapacityType vcpu,
// memory-mib: attribute-based instance type selection) cannot be from the
// listing (WeightedCapacity is 1-999), so such a group is never below by
// this count: its members are still checked one by one.
func belowDesired(g types.AutoScalingGroup) (filled, desired int, below bool) {
	if t := aws.ToString(g.DesiredCapacityType); t != "" && t != "units" {
		return 0, 0, false
	}
	for _, m := range g.Instances {
		if countsToDesired(string(m.LifecycleState)) {
			filled += weight(m)
		}
	}
	desired = int(aws.ToInt32(g.DesiredCapacity))
	return filled, desired, filled < desired
}

// Short reports, per Auto Scaling group (key "asg:<name>") and target group
// (key "tg:<arn>") asked, why it is short right now: a member other than
// ours that is not InService and Healthy (Pending, Pending:Wait, Terminating,
// an operator's Standby, Unhealthy), an Auto Scaling group below its
// desired capacity, or a target other than ours that is not healthy
// (initial, unhealthy, draining). Whole groups, and Auto Scaling groups that
// do not exist, are absent. A reboot started in a short group would take
// it below its maxUnavailable: the caller waits instead.
//
// Below its desired capacity (belowDesired): that is a member Auto Scaling
// has terminated whose replacement is not listed yet (the launch is a second
// scaling activity, seconds to minutes after the termination: "By default,
// Amazon EC2 Auto Scaling creates a new scaling activity for terminating the
// unhealthy instance and then terminates it. While the instance is
// terminating, another scaling activity launches a new instance", user
// guide, replace-unhealthy-instance), or a desired capacity raised before
// the launch: every listed member may be InService and Healthy then. The
// count needs no knowledge of ours, so it holds with any number of ours in
// flight (maxUnavailable > 1), whatever each is doing: ours in Standby are
// left out of both sides (our drain's EnterStandby always decrements the
// desired capacity, its ExitStandby gives the place back as the member turns
// Pending), ours rebooting while InService (no drain) or just due count on
// both sides, as the run already counts them in flight. A member terminated
// while ours (its group replaces it) leaves its place empty until the
// replacement is listed: short, as the group is. (With weights, EnterStandby
// decrements "by the number of instances moved": should that be one per
// instance whatever its weight, a second of ours due while a heavier one is
// in Standby would wait for it: slower, never less safe.)
//
// One DescribeAutoScalingGroups per 50 names (paged), and the target
// groups' DescribeTargetHealth answers, shared with the step's drain
// rounds after ShareReads.
func (d *Drainer) Short(ctx context.Context, asgs, tgs []string, ours map[string]bool) (map[string]string, error) {
	out := map[string]string{}
	for _, batch := range chunks(slices.Compact(slices.Sorted(slices.Values(asgs))), asgDescribeBatch) {
		in := &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: batch, MaxRecords: aws.Int32(100)}
		for {
			res, err := d.AutoScaling.DescribeAutoScalingGroups(ctx, in)
			if err != nil {
				return nil, fmt.Errorf("describe Auto Scaling groups %s: %w", strings.Join(batch, ","), err)
			}
			for _, g := range res.AutoScalingGroups {
				var why []string
				if filled, desired, below := belowDesired(g); below {
					// First: the reason no member names.
					why = append(why, fmt.Sprintf("actual capacity %d of desired %d", filled, desired))
				}
				for _, m := range g.Instances {
					id := aws.ToString(m.InstanceId)
					if ours[id] {
						continue
					}
					lc, hs := string(m.LifecycleState), aws.ToString(m.HealthStatus)
					if lc != lcInService || !strings.EqualFold(hs, "Healthy") {
						why = append(why, id+" "+lc+"/"+hs)
					}
				}
				if len(why) > 0 {
					out["asg:"+aws.ToString(g.AutoScalingGroupName)] = shortWhy(why)
				}
			}
			if aws.ToString(res.NextToken) == "" {
				break
			}
			in.NextToken = res.NextToken
		}
	}
	for _, arn := range slices.Compact(slices.Sorted(slices.Values(tgs))) {
		ths, err := d.targetHealth(ctx, arn)
		if err != nil {
			return nil, err
		}
		var why []string
		for _, th := range ths {
			if th.Target == nil || th.TargetHealth == nil || ours[aws.ToString(th.Target.Id)] {
				continue
			}
			if !targetUp(th.TargetHealth) {
				w := aws.ToString(th.Target.Id) + " " + string(th.TargetHealth.State)
				if th.TargetHealth.State == elbtypes.TargetHealthStateEnumUnused {
					w += "/" + string(th.TargetHealth.Reason)
				}
				why = append(why, w)
			}
		}
		if len(why) > 0 {
			out["tg:"+arn] = shortWhy(why)
		}
	}
	return out, nil
}

// shortWhy names the first two members down and counts the rest: the
// reason goes into the state, per group.
func shortWhy(why []string) string {
	s := strings.Join(why[:min(2, len(why))], ", ")
	if len(why) > 2 {
		s += fmt.Sprintf(" and %d more", len(why)-2)
	}
	return s
}

// targetHealth is a target group's DescribeTargetHealth answer, shared
// after ShareReads.
func (d *Drainer) targetHealth(ctx context.Context, arn string) ([]elbtypes.TargetHealthDescription, error) {
	if ths, shared := d.reads[arn]; shared {
		return ths, nil
	}
	res, err := d.ELB.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		return nil, fmt.Errorf("describe target health of %s: %w", arn, err)
	}
	if d.reads != nil {
		d.reads[arn] = res.TargetHealthDescriptions
	}
	return res.TargetHealthDescriptions, nil
}
