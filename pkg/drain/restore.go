package drain

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Restore does one round of putting back what the record says was taken,
// and nothing else: ExitStandby for members in Standby, RegisterTargets
// (same port) for targets no longer registered or still draining. It is
// safe on every path (after success, in a Catch, twice, after a crash)
// because it acts on the current state: what is back already is left
// alone. Complete is true when every member is InService and every target
// healthy.
//
// A target of an instance that is not running cannot be registered (ELBv2
// refuses it): the instance is Blocked, its tag stays, and a later Restore
// (or the next run's Drain and Restore, which adopt the tag) registers it
// once it runs. Settled reports that nothing is waiting any more, so the
// workflow stops polling and reports the blocked and failed ones. An
// instance taken out of Standby while not healthy is the Auto Scaling
// group's to replace, as for any unhealthy member (Unhealthy), and one
// that was terminated is Gone (see the package comment). Targets are
// registered only once an Auto Scaling member is InService again.
func (d *Drainer) Restore(ctx context.Context, rec Record) (Progress, error) {
	if err := rec.validate(); err != nil {
		return Progress{}, err
	}
	prog := Progress{Record: rec}
	if len(rec.Instances) == 0 {
		prog.finish()
		return prog, nil
	}
	ids := make([]string, len(rec.Instances))
	for i, t := range rec.Instances {
		ids[i] = t.InstanceID
	}
	health, err := d.Health(ctx, ids)
	if err != nil {
		return Progress{}, fmt.Errorf("restore: %w", err)
	}
	state, condition, reason := map[string]string{}, map[string]string{}, map[string]string{}
	for _, h := range health {
		state[h.InstanceID], condition[h.InstanceID] = h.State, h.Condition
		reason[h.InstanceID] = h.Condition
		if h.Reason != "" {
			reason[h.InstanceID] += " (" + h.Reason + ")"
		}
	}
	ms, err := d.AutoScalingMembership(ctx, ids)
	if err != nil {
		return Progress{}, fmt.Errorf("restore: %w", err)
	}
	// Targets are looked at only for instances that may be registered in
	// this round: not for Auto Scaling members still on their way out of
	// (or into) Standby, whose targets wait until they are InService. That
	// spares a DescribeTargetHealth per target group in the round that
	// calls ExitStandby (BenchmarkWorkflow10k: ELBv2's Describe* bucket is
	// 40, 10 per second).
	var groups []string
	for _, t := range rec.Instances {
		if m, member := ms[t.InstanceID]; t.AutoScalingGroup != "" && member && m.Group == t.AutoScalingGroup && notYetInService(m.Lifecycle) {
			continue
		}
		for _, tg := range t.Targets {
			if !slices.Contains(groups, tg.Group) {
				groups = append(groups, tg.Group)
			}
		}
	}
	regs, err := d.TargetRegistrations(ctx, ids, groups)
	if err != nil {
		return Progress{}, fmt.Errorf("restore: %w", err)
	}
	tagsNow, err := d.drainTags(ctx, ids)
	if err != nil {
		return Progress{}, fmt.Errorf("restore: %w", err)
	}

	exit := map[string][]string{}
	register := map[string][]endpoint{} // group -> targets
	leftover := map[string]bool{}       // still to put back after this round's calls
	for _, t := range rec.Instances {
		id := t.InstanceID
		cond := condition[id]
		// sick: what Auto Scaling's EC2 health check calls unhealthy and
		// replaces; a reboot that is still booting (Pending) is not.
		sick := cond == Gone || cond == Stopped || cond == Impaired
		if t.AutoScalingGroup != "" {
			m, member := ms[id]
			switch {
			case !member || m.Group != t.AutoScalingGroup:
				if cond == Gone {
					prog.set(id, StateGone, fmt.Sprintf("instance is %s and no longer in Auto Scaling group %s: replaced, nothing to put back", orUnknown(state[id]), t.AutoScalingGroup))
					continue
				}
				prog.set(id, StateDone, fmt.Sprintf("no longer in Auto Scaling group %s: nothing to put back there", t.AutoScalingGroup))
			case m.Lifecycle == lcStandby:
				// Also when it is stopped, impaired or terminated: out of
				// Standby the group gets its capacity back and replaces it.
				exit[m.Group] = append(exit[m.Group], id)
				prog.set(id, StateWaiting, "leaving Standby")
				leftover[id] = len(t.Targets) > 0
				continue // targets once it is InService
			case m.Lifecycle == lcEnteringStandby:
				prog.set(id, StateWaiting, "still entering Standby: leaves it once in Standby")
				leftover[id] = true
				continue
			case strings.HasPrefix(m.Lifecycle, lcTerminating) || m.Lifecycle == lcTerminated:
				prog.set(id, StateGone, fmt.Sprintf("Auto Scaling group %s is terminating it (%s): it launches a replacement", m.Group, m.Lifecycle))
				continue
			case (m.Lifecycle == lcInService || strings.HasPrefix(m.Lifecycle, lcPending)) && cond == Gone:
				prog.set(id, StateGone, fmt.Sprintf("instance is %s, back in Auto Scaling group %s (%s), which replaces it", orUnknown(state[id]), m.Group, m.Lifecycle))
				continue
			case (m.Lifecycle == lcInService || strings.HasPrefix(m.Lifecycle, lcPending)) && sick:
				prog.set(id, StateUnhealthy, fmt.Sprintf("back in Auto Scaling group %s (%s) but %s: the group's health check replaces it", m.Group, m.Lifecycle, reason[id]))
				// Targets of a group not attached to the Auto Scaling group
				// stay deregistered while it is not running: the tag stays.
				leftover[id] = len(t.Targets) > 0
				continue
			case m.Lifecycle == lcInService:
				prog.set(id, StateDone, "")
			case strings.HasPrefix(m.Lifecycle, lcPending):
				prog.set(id, StateWaiting, "leaving Standby ("+m.Lifecycle+")")
				leftover[id] = len(t.Targets) > 0
				continue // targets once it is InService
			default:
				prog.set(id, StateDone, fmt.Sprintf("Auto Scaling lifecycle state %s: nothing to put back", m.Lifecycle))
			}
		}
		if cond == Gone {
			// Terminated: no target to put back (target groups drop
			// terminated instances).
			prog.set(id, StateGone, "instance is "+orUnknown(state[id])+": nothing to put back")
			continue
		}
		for _, tg := range t.Targets {
			r, found := findReg(regs[id], tg)
			switch {
			case !found || r.State == thDraining:
				if state[id] != "running" {
					prog.set(id, StateBlocked, fmt.Sprintf("instance is %s: target groups accept running instances only; registered once it runs", orUnknown(state[id])))
					leftover[id] = true
					continue
				}
				register[tg.Group] = append(register[tg.Group], endpoint{id: id, port: tg.Port})
				prog.set(id, StateWaiting, DetailRegistering)
			case r.State == thHealthy:
				prog.set(id, StateDone, "")
			case cond == Impaired || cond == Stopped:
				// Registered, failing its health checks, and the instance
				// itself is down: waiting would not end.
				prog.set(id, StateUnhealthy, fmt.Sprintf("registered with %s, target %s (%s), and %s", tg.Group, r.State, r.Reason, reason[id]))
			default:
				prog.set(id, StateWaiting, DetailTarget+r.State+" "+r.Reason)
			}
		}
		if t.empty() {
			prog.set(id, StateDone, "")
		}
	}

	refused, err := d.standby(ctx, exit, false)
	if err != nil {
		return Progress{}, fmt.Errorf("restore: %w", err)
	}
	// As in Drain: a refusal may be the retry of a call that took effect.
	if err := d.recheck(ctx, refused, lcPending, lcPending+":Wait", lcPending+":Proceed", lcInService); err != nil {
		return Progress{}, fmt.Errorf("restore: %w", err)
	}
	for id, msg := range refused {
		prog.set(id, StateBlocked, "ExitStandby refused: "+msg)
		leftover[id] = true
	}
	for _, arn := range slices.Sorted(maps.Keys(register)) {
		d.changed(arn)
		for _, batch := range chunks(register[arn], targetBatch) {
			bad, err := d.registerTargets(ctx, arn, batch)
			if err != nil {
				return Progress{}, fmt.Errorf("restore: %w", err)
			}
			for id, msg := range bad {
				prog.set(id, StateBlocked, "RegisterTargets refused: "+msg)
				leftover[id] = true
			}
		}
	}

	// Nothing left to put back: the tag goes, but only the tag this run
	// wrote (DeleteTags with the value): a newer run's tag stays.
	del := map[string][]string{}
	for _, t := range rec.Instances {
		v, tagged := tagsNow[t.InstanceID]
		if !tagged || leftover[t.InstanceID] {
			continue
		}
		if tv, err := decodeTag(v); err == nil && tv.Run == rec.Run {
			del[v] = append(del[v], t.InstanceID)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(del)) {
		for _, batch := range chunks(del[v], ec2Batch) {
			if _, err := d.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: batch, Tags: []ec2types.Tag{{Key: aws.String(TagKey), Value: aws.String(v)}}}); err != nil {
				return Progress{}, fmt.Errorf("restore: delete tag %s from %s: %w", TagKey, strings.Join(batch, ","), err)
			}
		}
	}
	prog.finish()
	return prog, nil
}

// registerTargets registers a batch; ELBv2 refuses the whole call with
// InvalidTarget when one instance is not running (or gone): the batch is
// then tried one target at a time and the refusals returned per instance.
func (d *Drainer) registerTargets(ctx context.Context, arn string, batch []endpoint) (map[string]string, error) {
	call := func(ts []endpoint) error {
		_, err := d.ELB.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: descriptions(ts)})
		return err
	}
	err := call(batch)
	if err == nil {
		return nil, nil
	}
	if awsclient.ErrorCode(err) != "InvalidTarget" {
		return nil, fmt.Errorf("register %d targets with %s: %w", len(batch), arn, err)
	}
	bad := map[string]string{}
	if len(batch) == 1 {
		bad[batch[0].id] = err.Error()
		return bad, nil
	}
	for _, t := range batch {
		if err := call([]endpoint{t}); err != nil {
			if awsclient.ErrorCode(err) != "InvalidTarget" {
				return nil, fmt.Errorf("register %s with %s: %w", t.id, arn, err)
			}
			bad[t.id] = err.Error()
		}
	}
	return bad, nil
}

// notYetInService: the lifecycle states in which Restore leaves a member's
// targets for a later round (Standby: ExitStandby first; EnteringStandby:
// Standby first; Pending: InService first).
func notYetInService(lifecycle string) bool {
	return lifecycle == lcStandby || lifecycle == lcEnteringStandby || strings.HasPrefix(lifecycle, lcPending)
}

func orUnknown(s string) string {
	if s == "" {
		return "in an unknown state"
	}
	return s
}

// Stranded rebuilds restore records from the drain tags when the execution
// state that carried them is gone (an execution stopped by hand runs no
// Catch; a later execution for the slot, or the next night's, calls this
// first). It lists the account's instances tagged TagKey (DescribeInstances
// filtered by tag key, paginated) whose run starts with runPrefix (e.g.
// "<deployment>/"), one Record per run. Target groups are resolved by name
// among targetGroups (the plan's ARNs); what cannot be resolved is
// returned as problems, for an operator.
func (d *Drainer) Stranded(ctx context.Context, runPrefix string, targetGroups []string) ([]Record, []string, error) {
	names := map[string]string{}
	for i, arn := range targetGroups {
		n, err := targetGroupName(arn)
		if err != nil {
			return nil, nil, fmt.Errorf("stranded: targetGroups[%d]: %w", i, err)
		}
		names[n] = arn
	}
	found := map[string]tagValue{}
	var problems []string
	in := &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{TagKey}}}, MaxResults: aws.Int32(1000)}
	err := d.eachInstance(ctx, in, func(i ec2types.Instance) {
		id := aws.ToString(i.InstanceId)
		tv, err := decodeTag(awsclient.TagMap(i.Tags)[TagKey])
		if err != nil {
			problems = append(problems, id+": "+err.Error())
			return
		}
		if strings.HasPrefix(tv.Run, runPrefix) {
			found[id] = tv
		}
	})
	if err != nil {
		return nil, nil, fmt.Errorf("stranded: %w", err)
	}
	ids := slices.Sorted(maps.Keys(found))
	ms, err := d.AutoScalingMembership(ctx, ids)
	if err != nil {
		return nil, nil, fmt.Errorf("stranded: %w", err)
	}
	byRun := map[string]*Record{}
	for _, id := range ids {
		tv := found[id]
		m, member := ms[id]
		t, p := tv.taken(id, names, m, member)
		problems = append(problems, p...)
		if byRun[tv.Run] == nil {
			byRun[tv.Run] = &Record{Run: tv.Run}
		}
		byRun[tv.Run].Instances = append(byRun[tv.Run].Instances, t)
	}
	var out []Record
	for _, run := range slices.Sorted(maps.Keys(byRun)) {
		out = append(out, *byRun[run])
	}
	return out, problems, nil
}

// validate checks a record before any call (it comes from execution state).
func (r Record) validate() error {
	if r.Run == "" {
		return fmt.Errorf("restore: record.run is empty: pass the record Drain returned")
	}
	for i, t := range r.Instances {
		if !tags.ValidInstanceID(t.InstanceID) {
			return fmt.Errorf("restore: record.instances[%d].id: %q is not an instance ID", i, t.InstanceID)
		}
		for j, tg := range t.Targets {
			if _, err := targetGroupName(tg.Group); err != nil {
				return fmt.Errorf("restore: record.instances[%d].targets[%d].group: %w", i, j, err)
			}
			if tg.Port < 1 || tg.Port > 65535 {
				return fmt.Errorf("restore: record.instances[%d].targets[%d].port: %d is not a port (1-65535)", i, j, tg.Port)
			}
		}
	}
	return nil
}
