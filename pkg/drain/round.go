package drain

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

// Drain does one round of taking the plan's instances out of service:
// EnterStandby (ShouldDecrementDesiredCapacity=true) for InService Auto
// Scaling members, DeregisterTargets for their registrations in the plan's
// target groups. What it takes is tagged on the instance first, then
// changed. Complete is true once every instance is in Standby and no
// target is registered or draining any more; an instance that cannot be
// drained is failed with the reason, and must not be rebooted.
//
// Not registered before the run: nothing is taken there, and Restore
// leaves it so. An Auto Scaling member that is not InService (a lifecycle
// hook's Pending:Wait or Terminating:Wait, Pending, Detaching, ...) or in a
// Standby no run of ours set is Skipped: not drained, not to be rebooted.
// A second round (or a retried one whose answer was lost) adopts the tag
// of the first, so what was taken stays in the record although the
// instance is no longer in service.
func (d *Drainer) Drain(ctx context.Context, p Plan) (Progress, error) {
	if err := p.validate(); err != nil {
		return Progress{}, err
	}
	tagsNow, err := d.drainTags(ctx, p.Instances)
	if err != nil {
		return Progress{}, fmt.Errorf("drain: %w", err)
	}
	ms, err := d.AutoScalingMembership(ctx, p.Instances)
	if err != nil {
		return Progress{}, fmt.Errorf("drain: %w", err)
	}
	regs, err := d.TargetRegistrations(ctx, p.Instances, p.TargetGroups)
	if err != nil {
		return Progress{}, fmt.Errorf("drain: %w", err)
	}
	names := map[string]string{}
	for _, arn := range p.TargetGroups {
		n, _ := targetGroupName(arn) // validated
		names[n] = arn
	}

	prog := Progress{Record: Record{Run: p.Run}}
	var (
		todo  []Taken                 // may be changed this round
		toTag = map[string][]string{} // tag value -> instances
	)
	for _, id := range p.Instances {
		t := Taken{InstanceID: id}
		m, member := ms[id]
		if v, tagged := tagsNow[id]; tagged {
			tv, err := decodeTag(v)
			if err != nil {
				prog.set(id, StateFailed, err.Error()+": not drained; remove the tag if it is not amibackup's")
				continue
			}
			var problems []string
			t, problems = tv.taken(id, names, m, member)
			if len(problems) > 0 {
				prog.set(id, StateFailed, "earlier drain ("+tv.Run+") cannot be accounted for: "+strings.Join(problems, "; "))
				continue
			}
		}
		if member {
			switch m.Lifecycle {
			case lcInService:
				t.AutoScalingGroup = m.Group
			case lcEnteringStandby, lcStandby:
				if t.AutoScalingGroup == "" {
					// Out of service before the run, not by us: whoever put
					// it there is working on it; a reboot is not ours to make.
					prog.set(id, StateSkipped, fmt.Sprintf("Auto Scaling group %s: in %s, not put there by amibackup: not drained, not rebooted", m.Group, m.Lifecycle))
					continue
				}
			default:
				// Launching or terminating (lifecycle hooks: Pending:Wait,
				// Terminating:Wait), detaching, warm pool: not ours to take.
				prog.set(id, StateSkipped, fmt.Sprintf("Auto Scaling group %s: lifecycle state %s, not InService: not drained, not rebooted", m.Group, m.Lifecycle))
				continue
			}
		}
		for _, r := range regs[id] {
			if r.State != thDraining {
				t.Targets = mergeTargets(t.Targets, []Target{r.Target})
			}
		}
		if t.empty() {
			prog.set(id, StateDone, "not in service in any Auto Scaling group or target group given: nothing to drain")
			continue
		}
		v, err := encodeTag(p.Run, t)
		if err != nil {
			prog.set(id, StateFailed, err.Error())
			continue
		}
		if tagsNow[id] != v {
			toTag[v] = append(toTag[v], id)
		}
		todo = append(todo, t)
	}
	// Write ahead: the tag before the change it announces.
	for _, v := range slices.Sorted(maps.Keys(toTag)) {
		for _, batch := range chunks(toTag[v], ec2Batch) {
			if _, err := d.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: batch, Tags: []ec2types.Tag{{Key: aws.String(TagKey), Value: aws.String(v)}}}); err != nil {
				return Progress{}, fmt.Errorf("drain: tag %s on %s: %w", TagKey, strings.Join(batch, ","), err)
			}
		}
	}

	// Auto Scaling: InService -> EnterStandby; EnteringStandby: wait.
	enter := map[string][]string{} // group -> instances
	var drained []Taken
	for _, t := range todo {
		prog.Record.Instances = append(prog.Record.Instances, t)
		if t.AutoScalingGroup == "" {
			drained = append(drained, t)
			continue
		}
		m := ms[t.InstanceID]
		switch {
		case m.Group != t.AutoScalingGroup:
			prog.set(t.InstanceID, StateFailed, fmt.Sprintf("no longer in Auto Scaling group %s", t.AutoScalingGroup))
			continue
		case m.Lifecycle == lcInService:
			enter[m.Group] = append(enter[m.Group], t.InstanceID)
			prog.set(t.InstanceID, StateWaiting, "entering Standby")
		case m.Lifecycle == lcEnteringStandby:
			prog.set(t.InstanceID, StateWaiting, "entering Standby")
		case m.Lifecycle == lcStandby:
			prog.set(t.InstanceID, StateDone, "")
		default:
			prog.set(t.InstanceID, StateFailed, fmt.Sprintf("Auto Scaling lifecycle state %s: not drained", m.Lifecycle))
			continue
		}
		drained = append(drained, t)
	}
	failed, err := d.standby(ctx, enter, true)
	if err != nil {
		return Progress{}, fmt.Errorf("drain: %w", err)
	}
	// A refusal can be our own lost answer: EnterStandby took effect, its
	// answer was lost (5xx, dropped connection) and the SDK's retry met
	// "not in InService". Such instances are on their way: not failed.
	if err := d.recheck(ctx, failed, lcEnteringStandby, lcStandby); err != nil {
		return Progress{}, fmt.Errorf("drain: %w", err)
	}
	for id, msg := range failed {
		prog.set(id, StateFailed, "EnterStandby refused: "+msg)
	}

	// ELBv2: registered (any state but draining) -> DeregisterTargets.
	dereg := map[string][]endpoint{} // group -> targets
	for _, t := range drained {
		if _, bad := failed[t.InstanceID]; bad {
			continue // still in service in its group: keep it serving there too
		}
		if len(t.Targets) == 0 {
			continue
		}
		waiting := false
		for _, tg := range t.Targets {
			r, found := findReg(regs[t.InstanceID], tg)
			switch {
			case !found:
			case r.State == thDraining:
				waiting = true
			default:
				dereg[tg.Group] = append(dereg[tg.Group], endpoint{id: t.InstanceID, port: tg.Port})
				waiting = true
			}
		}
		if waiting {
			prog.set(t.InstanceID, StateWaiting, DetailDraining)
		} else {
			prog.set(t.InstanceID, StateDone, "")
		}
	}
	for _, arn := range slices.Sorted(maps.Keys(dereg)) {
		d.changed(arn)
		for _, batch := range chunks(dereg[arn], targetBatch) {
			if _, err := d.ELB.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: descriptions(batch)}); err != nil {
				return Progress{}, fmt.Errorf("drain: deregister %d targets from %s: %w", len(batch), arn, err)
			}
		}
	}
	prog.finish()
	return prog, nil
}

// findReg finds the registration of target t (group and port).
func findReg(regs []Registration, t Target) (Registration, bool) {
	for _, r := range regs {
		if r.Target == t {
			return r, true
		}
	}
	return Registration{}, false
}

// endpoint is one target of a group: instance and port.
type endpoint struct {
	id   string
	port int32
}

// descriptions turns endpoints into ELBv2 targets.
func descriptions(ts []endpoint) []elbtypes.TargetDescription {
	out := make([]elbtypes.TargetDescription, len(ts))
	for i, t := range ts {
		out[i] = elbtypes.TargetDescription{Id: aws.String(t.id), Port: aws.Int32(t.port)}
	}
	return out
}

// standby calls EnterStandby (enter) or ExitStandby per group in batches
// of 20. Auto Scaling refuses a whole call with ValidationError when one
// instance cannot move (wrong state, min or max size); such a batch is
// retried one instance at a time so that the refusal is attributed to the
// instance it concerns. Refusals are returned per instance; other errors
// fail the round.
func (d *Drainer) standby(ctx context.Context, byGroup map[string][]string, enter bool) (map[string]string, error) {
	refused := map[string]string{}
	call := func(group string, ids []string) error {
		if enter {
			_, err := d.AutoScaling.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String(group), InstanceIds: ids, ShouldDecrementDesiredCapacity: aws.Bool(true)})
			return err
		}
		_, err := d.AutoScaling.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String(group), InstanceIds: ids})
		return err
	}
	action := map[bool]string{true: "EnterStandby", false: "ExitStandby"}[enter]
	for _, group := range slices.Sorted(maps.Keys(byGroup)) {
		for _, batch := range chunks(byGroup[group], standbyBatch) {
			err := call(group, batch)
			if err == nil {
				continue
			}
			if !isValidation(err) {
				return nil, fmt.Errorf("%s %s in %s: %w", action, strings.Join(batch, ","), group, err)
			}
			if len(batch) == 1 {
				refused[batch[0]] = err.Error()
				continue
			}
			for _, id := range batch {
				if err := call(group, []string{id}); err != nil {
					if !isValidation(err) {
						return nil, fmt.Errorf("%s %s in %s: %w", action, id, group, err)
					}
					refused[id] = err.Error()
				}
			}
		}
	}
	return refused, nil
}

// recheck removes from refused the instances whose lifecycle state is now
// one of moved: the refused call (or its lost first attempt) moved them.
func (d *Drainer) recheck(ctx context.Context, refused map[string]string, moved ...string) error {
	if len(refused) == 0 {
		return nil
	}
	ms, err := d.AutoScalingMembership(ctx, slices.Sorted(maps.Keys(refused)))
	if err != nil {
		return err
	}
	for id, m := range ms {
		if slices.Contains(moved, m.Lifecycle) {
			delete(refused, id)
		}
	}
	return nil
}
