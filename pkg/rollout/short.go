package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/waves"
)

// State.Short maps a plan group whose member was due to start but whose
// group was short for another reason (drain.Drainer.Short) to since when
// (seconds after Progress.Start). The reason is not kept: the halt reads
// it from the check that finds the group still short. At most MaxShort
// records (checkPeak counts them: a 10,000-instance plan leaves little of
// the 240 KB).
const MaxShort = 100

// maxShortWhy bounds a halt's reason about a short group.
const maxShortWhy = 100

// shortEntryMax is the most a State.Short entry takes in JSON.
var shortEntryMax = len(`"123456":12345678,`)

// whole keeps back the members of ready whose group is short right now for
// a reason other than this run (a scale-out or replacement booting, a
// member Terminating, an operator's Standby, an Unhealthy member, a target
// not healthy): the run counts only its own members in flight (Ready), so
// starting one there would take the group below maxUnavailable. A kept-back
// member waits, its group recorded in State.Short; a group still short
// healthTimeout after its member was first due halts (waves.Progress.Halt),
// so that a permanently short group does not hold the night. An Auto
// Scaling group is asked whether the plan group is keyed by it or only
// holds members of it (waves.Group.AutoScalingGroups), and is short also
// below its desired capacity (a replacement not launched yet). Calls: one
// DescribeAutoScalingGroups per 50 Auto Scaling groups with a member in
// ready; the target groups' reads are the drain's (ShareReads).
func (r *Roller) whole(ctx context.Context, l *loaded, d *drain.Drainer, ready []int, nowP int64, timeout time.Duration) ([]int, error) {
	st, plan := l.st, l.plan
	if len(ready) == 0 {
		return ready, nil
	}
	ours := map[string]bool{}
	for i, s := range st.Progress.S {
		if byte(s) == waves.Rebooting {
			ours[plan.Slots[i].ID] = true
		}
	}
	for _, t := range st.Taken {
		ours[t.InstanceID] = true
	}
	asked := map[int]bool{}
	var asgs, tgs []string
	for _, i := range ready {
		// A member due is ours too: one not InService at its turn halts its
		// group in the drain ("not in service at its turn").
		ours[plan.Slots[i].ID] = true
		g := plan.Slots[i].Group
		if asked[g] {
			continue
		}
		asked[g] = true
		if r.AutoScaling != nil {
			// The key's Auto Scaling group and those of members in a group
			// keyed otherwise (waves.Group.ASGs: a tag- or target-group-
			// keyed group of Auto Scaling members, blue/green groups
			// linked by a tag): a short one takes capacity from this
			// group whatever names it.
			asgs = append(asgs, plan.Groups[g].AutoScalingGroups()...)
		}
		for _, k := range st.GroupTargets[g] {
			if k >= 0 && k < len(st.TargetGroups) {
				tgs = append(tgs, st.TargetGroups[k])
			}
		}
	}
	short, err := d.Short(ctx, asgs, tgs, ours)
	if err != nil {
		return nil, err
	}
	why := map[int]string{}
	for g := range asked {
		var ws []string
		for _, name := range plan.Groups[g].AutoScalingGroups() {
			if w := short["asg:"+name]; w != "" {
				ws = append(ws, "Auto Scaling group "+name+": "+w)
			}
		}
		for _, k := range st.GroupTargets[g] {
			if k < 0 || k >= len(st.TargetGroups) {
				continue
			}
			if w := short["tg:"+st.TargetGroups[k]]; w != "" {
				ws = append(ws, "target group "+tgName(st.TargetGroups[k])+": "+w)
			}
		}
		if len(ws) == 0 {
			delete(st.Short, g)
			continue
		}
		why[g] = clipWhy(strings.Join(ws, "; "))
		if st.Short == nil {
			st.Short = map[int]int64{}
		}
		if _, waiting := st.Short[g]; !waiting {
			if len(st.Short) >= MaxShort {
				continue // held back; its wait is timed once a record is free (checkPeak counts MaxShort)
			}
			st.Short[g] = nowP
		}
	}
	halted := map[int]bool{}
	var out []int
	for _, i := range ready {
		g := plan.Slots[i].Group
		if why[g] == "" {
			out = append(out, i)
			continue
		}
		since0, timed := st.Short[g]
		if since := time.Duration(nowP-since0) * time.Second; timed && since >= timeout && !halted[g] {
			halted[g] = true
			delete(st.Short, g)
			if err := st.Progress.Halt(plan, plan.Slots[i].ID, fmt.Sprintf("group short %s since due (healthTimeout %s): %s", since, timeout, why[g])); err != nil {
				return nil, err
			}
		}
	}
	if len(st.Short) == 0 {
		st.Short = nil
	}
	return out, nil
}

// tgName is a target group ARN's name (the ARN ends in
// targetgroup/<name>/<id>), or the ARN.
func tgName(arn string) string {
	parts := strings.Split(arn, "/")
	if len(parts) >= 3 {
		return parts[len(parts)-2]
	}
	return arn
}

func clipWhy(s string) string {
	if len(s) <= maxShortWhy {
		return s
	}
	return s[:maxShortWhy-3] + "..."
}

// forgetShort drops waiting records of groups with no member pending any
// more (halted, or nothing left to start).
func forgetShort(st *State, plan *waves.Plan) {
	if len(st.Short) == 0 {
		st.Short = nil
		return
	}
	pending := make([]bool, len(plan.Groups))
	for i, s := range plan.Slots {
		if st.Progress.S[i] == waves.Pending {
			pending[s.Group] = true
		}
	}
	for g := range st.Short {
		if !pending[g] {
			delete(st.Short, g)
		}
	}
	if len(st.Short) == 0 {
		st.Short = nil
	}
}
