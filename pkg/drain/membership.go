package drain

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
)

// Auto Scaling lifecycle states the package acts on (AutoScalingInstanceDetails).
const (
	lcInService       = "InService"
	lcEnteringStandby = "EnteringStandby"
	lcStandby         = "Standby"
	lcPending         = "Pending"
	lcTerminating     = "Terminating"
	lcTerminated      = "Terminated"
)

// ELBv2 target health states and the reason of an unregistered target.
const (
	thHealthy       = "healthy"
	thDraining      = "draining"
	thUnused        = "unused"
	reasonNotRegged = "Target.NotRegistered"
)

// Membership is an instance's Auto Scaling group and lifecycle state.
type Membership struct {
	Group     string `json:"group"`
	Lifecycle string `json:"lifecycle"`
}

// Registration is one target group registration of an instance and its health.
type Registration struct {
	Target
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`
}

// AutoScalingMembership returns the Auto Scaling group and lifecycle state
// of each instance that belongs to one (others are absent: Auto Scaling
// ignores unknown IDs). One DescribeAutoScalingInstances call per 50.
func (d *Drainer) AutoScalingMembership(ctx context.Context, ids []string) (map[string]Membership, error) {
	out := map[string]Membership{}
	for _, batch := range chunks(ids, asgDescribeBatch) {
		in := &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: batch, MaxRecords: aws.Int32(asgDescribeBatch)}
		for {
			res, err := d.AutoScaling.DescribeAutoScalingInstances(ctx, in)
			if err != nil {
				return nil, fmt.Errorf("describe Auto Scaling instances %s: %w", strings.Join(batch, ","), err)
			}
			for _, a := range res.AutoScalingInstances {
				out[aws.ToString(a.InstanceId)] = Membership{Group: aws.ToString(a.AutoScalingGroupName), Lifecycle: aws.ToString(a.LifecycleState)}
			}
			if aws.ToString(res.NextToken) == "" {
				break
			}
			in.NextToken = res.NextToken
		}
	}
	return out, nil
}

// TargetRegistrations returns, per instance, its registrations (registered
// or still draining) in the given target groups: one DescribeTargetHealth
// per group (the action is not paginated; a group holds at most 1,000
// instance targets by default).
func (d *Drainer) TargetRegistrations(ctx context.Context, ids, groups []string) (map[string][]Registration, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	out := map[string][]Registration{}
	for _, arn := range groups {
		ths, err := d.targetHealth(ctx, arn)
		if err != nil {
			return nil, err
		}
		for _, th := range ths {
			if th.Target == nil {
				continue
			}
			id := aws.ToString(th.Target.Id)
			if !want[id] {
				continue
			}
			r := Registration{Target: Target{Group: arn, Port: aws.ToInt32(th.Target.Port)}}
			if th.TargetHealth != nil {
				r.State, r.Reason = string(th.TargetHealth.State), string(th.TargetHealth.Reason)
			}
			if r.State == thUnused && r.Reason == reasonNotRegged {
				continue // gone: listed only while it was still draining
			}
			out[id] = append(out[id], r)
		}
	}
	return out, nil
}

// drainTags returns the TagKey value of each instance that has one.
// DescribeInstances with an instance-id filter (unknown IDs are left out,
// not an error) and MaxResults (the paginated, larger throttling bucket).
func (d *Drainer) drainTags(ctx context.Context, ids []string) (map[string]string, error) {
	out := map[string]string{}
	for _, batch := range chunks(ids, ec2Batch) {
		in := &ec2.DescribeInstancesInput{
			Filters:    []ec2types.Filter{{Name: aws.String("instance-id"), Values: batch}, {Name: aws.String("tag-key"), Values: []string{TagKey}}},
			MaxResults: aws.Int32(1000),
		}
		if err := d.eachInstance(ctx, in, func(i ec2types.Instance) {
			if v, ok := awsclient.TagMap(i.Tags)[TagKey]; ok {
				out[aws.ToString(i.InstanceId)] = v
			}
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (d *Drainer) eachInstance(ctx context.Context, in *ec2.DescribeInstancesInput, fn func(ec2types.Instance)) error {
	for {
		res, err := d.EC2.DescribeInstances(ctx, in)
		if err != nil {
			return fmt.Errorf("describe instances tagged %s: %w", TagKey, err)
		}
		for _, r := range res.Reservations {
			for _, i := range r.Instances {
				fn(i)
			}
		}
		if aws.ToString(res.NextToken) == "" {
			return nil
		}
		in.NextToken = res.NextToken
	}
}

// tagValue is the TagKey value: the run and what it took, with target
// groups by name (unique per account and Region, at most 32 characters)
// so that it fits EC2's 256 characters; Stranded resolves the names
// against the plan's target group ARNs.
type tagValue struct {
	Run string   `json:"run"`
	ASG bool     `json:"asg,omitempty"`
	TG  []string `json:"tg,omitempty"` // "<name>:<port>"
}

func encodeTag(run string, t Taken) (string, error) {
	v := tagValue{Run: run, ASG: t.AutoScalingGroup != ""}
	for _, tg := range t.Targets {
		name, err := targetGroupName(tg.Group)
		if err != nil {
			return "", err
		}
		v.TG = append(v.TG, name+":"+strconv.Itoa(int(tg.Port)))
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	if len(b) > tagValueMax {
		return "", fmt.Errorf("what is taken from %s does not fit a tag value (%d of at most %d characters): a shorter run name or fewer target groups per instance", t.InstanceID, len(b), tagValueMax)
	}
	return string(b), nil
}

func decodeTag(s string) (tagValue, error) {
	var v tagValue
	if err := json.Unmarshal([]byte(s), &v); err != nil || v.Run == "" {
		return tagValue{}, fmt.Errorf("tag %s=%q is not a drain record", TagKey, s)
	}
	return v, nil
}

// taken turns a tag back into what was taken; names resolves target group
// names to ARNs and ms gives the Auto Scaling group. Unresolvable target
// groups are returned as problems.
func (v tagValue) taken(id string, names map[string]string, m Membership, isMember bool) (Taken, []string) {
	t := Taken{InstanceID: id}
	var problems []string
	if v.ASG {
		if isMember {
			t.AutoScalingGroup = m.Group
		} else {
			problems = append(problems, id+": tag says it was moved to Standby, but it is in no Auto Scaling group now (detached?)")
		}
	}
	for _, s := range v.TG {
		i := strings.LastIndex(s, ":")
		port, err := strconv.Atoi(s[i+1:])
		if i < 0 || err != nil {
			problems = append(problems, fmt.Sprintf("%s: target %q in the tag is not <name>:<port>", id, s))
			continue
		}
		arn, ok := names[s[:i]]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: deregistered from target group %q, which is not among the target groups given: register it by hand or pass the group's ARN", id, s[:i]))
			continue
		}
		t.Targets = append(t.Targets, Target{Group: arn, Port: int32(port)})
	}
	return t, problems
}

// targetGroupName is the name in a target group ARN
// (arn:<partition>:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>).
func targetGroupName(arn string) (string, error) {
	parts := strings.SplitN(arn, ":", 6)
	if len(parts) == 6 && parts[0] == "arn" && parts[2] == "elasticloadbalancing" {
		if res := strings.Split(parts[5], "/"); len(res) == 3 && res[0] == "targetgroup" && res[1] != "" && res[2] != "" {
			return res[1], nil
		}
	}
	return "", fmt.Errorf("%q is not a target group ARN such as arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef", arn)
}

func mergeTargets(a, b []Target) []Target {
	out := append([]Target(nil), a...)
	for _, t := range b {
		found := false
		for _, u := range out {
			if u == t {
				found = true
			}
		}
		if !found {
			out = append(out, t)
		}
	}
	return out
}

// isValidation reports Auto Scaling's ValidationError (wrong state, group,
// capacity): an answer about one of the instances, not a failed call.
func isValidation(err error) bool { return awsclient.ErrorCode(err) == "ValidationError" }
