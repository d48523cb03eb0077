package drain

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
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

// Short reports, per Auto Scaling group (key "asg:<name>") and target group
// (key "tg:<arn>") asked, why it is short right now: a member other than
// ours that is not InService and Healthy (Pending, Pending:Wait, Terminating,
// an operator's Standby, Unhealthy), or a target other than ours that is
// not healthy (initial, unhealthy, draining). Whole groups, and Auto
// Scaling groups that do not exist, are absent. A reboot started in a short
// group would take it below its maxUnavailable: the caller waits instead.
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
