// Package drain takes instances out of service before their reboot-mode
// CreateImage and puts them back afterwards: Auto Scaling Standby (with the
// desired capacity decremented, so the group launches no replacement) and
// ELBv2 target deregistration (waiting for the deregistration delay to end).
//
// Every call is one round of work for a Step Functions task: it looks at the
// current state, makes the calls still needed, and reports whether the step
// is complete; the state machine waits (Wait state) and calls again. Rounds
// are idempotent: a retried, re-driven or repeated round makes no change
// that is already made.
//
// What a drain takes away is recorded twice: in the Record it returns (the
// workflow carries it in its execution state and hands it to Restore on
// every path, Catch included) and, written before anything is changed, in
// the instance tag amibackup:drain. The tag is what makes a lost answer or a
// crash harmless: the next Drain round adopts it instead of reading the
// instance's Standby as "was already out of service", and Stranded rebuilds
// a Record from the tags when the execution state is gone (an execution
// stopped by an operator runs no Catch). Restore deletes the tag once
// nothing is left to put back.
//
// The workflow, per wave: Drain until Complete (instances it fails are not
// imaged with a reboot); CreateImage per drained instance; Health until
// every instance is OK or healthTimeout (then the group halts); Restore
// until Complete, or Settled with blocked instances to report. Every path
// out of the wave (Catch included) ends in the Restore loop with the
// record. An execution starts with Stranded(deployment prefix, plan's
// target groups) and Restore of what it returns, so an earlier execution
// that was stopped without its Catch leaves nothing out of service.
//
// Permissions: autoscaling:DescribeAutoScalingInstances, DescribeAutoScalingGroups (Short), EnterStandby,
// ExitStandby; elasticloadbalancing:DescribeTargetHealth, RegisterTargets,
// DeregisterTargets; ec2:DescribeInstances, DescribeInstanceStatus, and
// ec2:CreateTags / ec2:DeleteTags on instances limited to the tag key
// amibackup:drain (aws:TagKeys).
//
// Auto Scaling, as an operator expects it to be treated (the decisions;
// Amazon EC2 Auto Scaling user guide, as-enter-exit-standby and the health
// check pages):
//   - Target groups attached to the group: Auto Scaling deregisters a member
//     on EnterStandby and registers it on ExitStandby. The plan lists them
//     like any other; Drain's DeregisterTargets of a target already draining
//     is a no-op ("If the specified target does not exist, the action
//     returns successfully"), and Restore registers targets only once the
//     member is back InService, so that it neither serves traffic from
//     Standby nor races the group: the group's registration comes first and
//     ours is then not needed.
//   - Only InService members are drained. A member in another lifecycle
//     state (Pending, Pending:Wait of a launch hook, Terminating:Wait of a
//     termination hook, Detaching, Warmed:*) or in Standby that no run of
//     ours put there (an operator's) is Skipped with the reason: not
//     drained and not rebooted, and not a failure of the run.
//   - A member put back while it is not healthy (a halted one: stopped, or
//     its status check impaired) is still taken out of Standby: that
//     restores the desired capacity, and the group's health check replaces
//     it (terminates it and launches a new instance). Restore then reports
//     it Unhealthy ("back in its group, which replaces it"), not blocked,
//     and registers no target for it (a target group refuses an instance
//     that is not running; the group registers the replacement).
//   - An instance terminated during the run (replaced by its group, or by
//     anyone) is Gone: nothing to put back, never "not restored". One that
//     is still listed in Standby is taken out of Standby first (AWS keeps
//     reporting it healthy there; out of Standby the group replaces it and
//     the desired capacity we decremented is given back).
//   - A target registered again whose instance is impaired fails its health
//     checks for good: Unhealthy with the target's reason, settled, instead
//     of waiting for a target that will not become healthy.
package drain

import (
	"context"
	"fmt"
	"slices"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/amibackup/amibackup/pkg/tags"
)

// API limits per call (bounded batches).
const (
	// DescribeAutoScalingInstances: "InstanceIds ... Array Members: Maximum
	// number of 50 items"; MaxRecords at most 50 (Auto Scaling API
	// reference, DescribeAutoScalingInstances).
	asgDescribeBatch = 50
	// EnterStandby / ExitStandby: "You can specify up to 20 instances"
	// (Auto Scaling API reference, EnterStandby, ExitStandby).
	standbyBatch = 20
	// DescribeInstanceStatus: "Constraints: Maximum 100 explicitly
	// specified instance IDs" (EC2 API reference).
	statusBatch = 100
	// RegisterTargets / DeregisterTargets document no maximum per call;
	// a target group holds at most 1,000 instance targets by default
	// ("Quotas for your Application Load Balancers"). 100 per call keeps a
	// request small and a failed call's reach bounded.
	targetBatch = 100
	// DescribeInstances filter values and CreateTags resources per call:
	// CreateTags accepts up to 1,000 resource IDs and recommends smaller
	// batches (EC2 API reference, CreateTags); 100 for both.
	ec2Batch = 100
	// tagValueMax: EC2 tag values are at most 256 characters.
	tagValueMax = 256
)

// TagKey marks an instance a drain took out of service; its value says
// what was taken (tagValue). It belongs in pkg/tags with the other keys.
const TagKey = tags.Prefix + "drain"

// AutoScalingAPI is what the package needs of *autoscaling.Client.
type AutoScalingAPI interface {
	DescribeAutoScalingInstances(context.Context, *autoscaling.DescribeAutoScalingInstancesInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error)
	DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	EnterStandby(context.Context, *autoscaling.EnterStandbyInput, ...func(*autoscaling.Options)) (*autoscaling.EnterStandbyOutput, error)
	ExitStandby(context.Context, *autoscaling.ExitStandbyInput, ...func(*autoscaling.Options)) (*autoscaling.ExitStandbyOutput, error)
}

// ELBv2API is what the package needs of *elasticloadbalancingv2.Client.
type ELBv2API interface {
	DescribeTargetHealth(context.Context, *elasticloadbalancingv2.DescribeTargetHealthInput, ...func(*elasticloadbalancingv2.Options)) (*elasticloadbalancingv2.DescribeTargetHealthOutput, error)
	RegisterTargets(context.Context, *elasticloadbalancingv2.RegisterTargetsInput, ...func(*elasticloadbalancingv2.Options)) (*elasticloadbalancingv2.RegisterTargetsOutput, error)
	DeregisterTargets(context.Context, *elasticloadbalancingv2.DeregisterTargetsInput, ...func(*elasticloadbalancingv2.Options)) (*elasticloadbalancingv2.DeregisterTargetsOutput, error)
}

// EC2API is what the package needs of *ec2.Client: status checks and the
// drain tag.
type EC2API interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeInstanceStatus(context.Context, *ec2.DescribeInstanceStatusInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceStatusOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteTags(context.Context, *ec2.DeleteTagsInput, ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)
}

// Drainer holds the clients. Zero state between calls: everything a round
// needs comes from its arguments and from AWS.
type Drainer struct {
	AutoScaling AutoScalingAPI
	ELB         ELBv2API
	EC2         EC2API

	// reads, after ShareReads: each target group's DescribeTargetHealth
	// answer, until this Drainer changes the group's registrations.
	reads map[string][]elbtypes.TargetHealthDescription
}

// ShareReads makes the Drainer's rounds share their DescribeTargetHealth
// answers: a target group described by one round is not described again by
// a later round of the same Drainer, unless a round registered or
// deregistered targets in it since. For one workflow step, whose rounds
// follow each other within seconds: each round still acts on what AWS
// said during the step, and the next step reads afresh. Without it (the
// zero Drainer) every round reads.
func (d *Drainer) ShareReads() { d.reads = map[string][]elbtypes.TargetHealthDescription{} }

// changed forgets the shared read of a target group the round changed.
func (d *Drainer) changed(arn string) {
	if d.reads != nil {
		delete(d.reads, arn)
	}
}

// Plan is one wave: the instances to take out of service and the target
// groups (from the plan) to look for them in. Run names the run (e.g.
// "<deployment>/<policy>/<slot>"); it goes into the tag.
type Plan struct {
	Run          string   `json:"run"`
	Instances    []string `json:"instances"`
	TargetGroups []string `json:"targetGroups,omitempty"`
}

// Record is what a drain took away, per instance: the restore record the
// workflow carries. About 150 bytes per target and 60 per instance: a
// wave of 100 instances in two target groups is well below Step Functions'
// 256 KB per state.
type Record struct {
	Run       string  `json:"run"`
	Instances []Taken `json:"instances"`
}

// Taken is what was taken from one instance. An instance that was already
// in Standby or not registered has nothing taken, and Restore leaves it so.
type Taken struct {
	InstanceID string `json:"id"`
	// AutoScalingGroup is set when the drain moved it to Standby.
	AutoScalingGroup string `json:"asg,omitempty"`
	// Targets are the registrations the drain deregistered.
	Targets []Target `json:"targets,omitempty"`
}

// Target is one registration: target group ARN and port.
type Target struct {
	Group string `json:"group"`
	Port  int32  `json:"port"`
}

func (t Taken) empty() bool { return t.AutoScalingGroup == "" && len(t.Targets) == 0 }

// State of one instance in a round.
const (
	StateDone    = "done"    // drained (restored)
	StateWaiting = "waiting" // changes made, not yet effective
	StateFailed  = "failed"  // cannot be done: Detail says why (drain: do not reboot it)
	StateBlocked = "blocked" // restore: cannot be put back yet (instance not running)
	// StateSkipped (drain): not in service to begin with (an Auto Scaling
	// lifecycle state other than InService, or Standby not by us): not
	// drained, must not be rebooted; not a failure.
	StateSkipped = "skipped"
	// StateGone (restore): terminated (by its Auto Scaling group, which
	// launches a replacement, or by anyone): nothing left to put back.
	StateGone = "gone"
	// StateUnhealthy (restore): put back (out of Standby, targets
	// registered) but not healthy: stopped or impaired. An Auto Scaling
	// member is replaced by its group; Detail says why.
	StateUnhealthy = "unhealthy"
)

// Details of a waiting instance that tell the caller when to look again
// (pkg/rollout schedules its next look from the target group's timings).
const (
	// DetailDraining (drain): its targets are draining; the deregistration
	// delay ends it at the latest.
	DetailDraining = "targets draining"
	// DetailRegistering (restore): its targets were registered in this
	// round; healthy at the earliest after the health check's interval
	// times its healthy threshold.
	DetailRegistering = "registering"
	// DetailTarget prefixes the detail of a registered target that is not
	// healthy yet: "target <state> <reason>".
	DetailTarget = "target "
)

// final reports a state no later part of the round may change.
func final(state string) bool {
	switch state {
	case StateFailed, StateBlocked, StateSkipped, StateGone, StateUnhealthy:
		return true
	}
	return false
}

// InstanceProgress is one instance's state after a round.
type InstanceProgress struct {
	InstanceID string `json:"id"`
	State      string `json:"state"`
	Detail     string `json:"detail,omitempty"`
}

// Progress is the result of one round.
type Progress struct {
	// Complete: every instance is done, or has nothing to be done (gone:
	// nothing to put back; skipped: not ours to drain).
	Complete bool `json:"complete"`
	// Settled: no instance is waiting; the rest are failed or blocked and
	// polling again will not change that by itself.
	Settled bool `json:"settled"`
	// Record: what was taken (Drain) or what is still to put back (Restore).
	Record    Record             `json:"record"`
	Instances []InstanceProgress `json:"instances"`
	// waiting: instances with a part still on its way, whatever state a
	// failure or block in another part shows.
	waiting map[string]bool
}

func (p *Progress) set(id, state, detail string) {
	if state == StateWaiting {
		if p.waiting == nil {
			p.waiting = map[string]bool{}
		}
		p.waiting[id] = true
	}
	for i := range p.Instances {
		if p.Instances[i].InstanceID == id {
			// A failure or a wait outranks done; the first failure stays.
			if final(p.Instances[i].State) || (p.Instances[i].State == StateWaiting && state == StateDone) {
				return
			}
			p.Instances[i].State, p.Instances[i].Detail = state, detail
			return
		}
	}
	p.Instances = append(p.Instances, InstanceProgress{InstanceID: id, State: state, Detail: detail})
}

func (p *Progress) finish() {
	slices.SortFunc(p.Instances, func(a, b InstanceProgress) int { return cmpString(a.InstanceID, b.InstanceID) })
	p.Complete, p.Settled = true, true
	for _, ip := range p.Instances {
		if ip.State != StateDone && ip.State != StateGone && ip.State != StateSkipped {
			p.Complete = false
		}
		if ip.State == StateWaiting || p.waiting[ip.InstanceID] {
			p.Settled = false
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// validate checks a plan before any call: bad input changes nothing.
func (p Plan) validate() error {
	if p.Run == "" {
		return fmt.Errorf("drain: plan.run is empty: name the run (e.g. \"<deployment>/<policy>/<slot>\")")
	}
	if len(p.Instances) == 0 {
		return fmt.Errorf("drain: plan.instances is empty: list the wave's instance IDs")
	}
	seen := map[string]bool{}
	for i, id := range p.Instances {
		if !tags.ValidInstanceID(id) {
			return fmt.Errorf("drain: plan.instances[%d]: %q is not an instance ID such as i-0abc1234def567890", i, id)
		}
		if seen[id] {
			return fmt.Errorf("drain: plan.instances[%d]: %s is listed twice", i, id)
		}
		seen[id] = true
	}
	for i, arn := range p.TargetGroups {
		if _, err := targetGroupName(arn); err != nil {
			return fmt.Errorf("drain: plan.targetGroups[%d]: %w", i, err)
		}
	}
	return nil
}

func chunks[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	if len(s) > 0 {
		out = append(out, s)
	}
	return out
}
