package ec2sim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// asgView is what DescribeAutoScalingInstances says of one member ("" if
// not listed).
func asgView(t *testing.T, c *autoscaling.Client, id string) (lifecycle, health string) {
	t.Helper()
	out, err := c.DescribeAutoScalingInstances(context.Background(), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.AutoScalingInstances {
		return aws.ToString(a.LifecycleState), aws.ToString(a.HealthStatus)
	}
	return "", ""
}

// targetState is the target's state in the group ("" if not listed).
func targetState(t *testing.T, c *elasticloadbalancingv2.Client, arn, id string) string {
	t.Helper()
	out, err := c.DescribeTargetHealth(context.Background(), &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range out.TargetHealthDescriptions {
		if aws.ToString(d.Target.Id) == id {
			return string(d.TargetHealth.State)
		}
	}
	return ""
}

type asgEnv struct {
	env     *simtest.Env
	ec2     *ec2.Client
	as      *autoscaling.Client
	elb     *elasticloadbalancingv2.Client
	ids     []string
	tg, own string // attached target group; one of our own, not attached
}

// newASGEnv: group "web" of 3 with target group "web" attached, all 3 also
// registered in target group "own" (not attached), health checks per opts.
func newASGEnv(t *testing.T, opts ec2sim.Options, grace time.Duration) *asgEnv {
	t.Helper()
	opts.RebootModel = true
	env, c := rebootEnv(t, opts)
	e := &asgEnv{env: env, ec2: c, as: env.AutoScaling("", ""), elb: env.ELBv2("", "")}
	e.ids = env.Sim.SeedFleet("", "", 3, map[string]string{"Backup": "yes"})
	e.tg = env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", DeregistrationDelay: time.Minute, HealthyAfter: 30 * time.Second})
	e.own = env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "own", Instances: e.ids, DeregistrationDelay: time.Minute, HealthyAfter: 30 * time.Second})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: e.ids, TargetGroupARNs: []string{e.tg},
		HealthCheckGracePeriod: grace, Tags: map[string]string{"Backup": "yes"}})
	return e
}

func (e *asgEnv) standby(t *testing.T, id string, enter bool) {
	t.Helper()
	ctx := context.Background()
	var err error
	if enter {
		_, err = e.as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: aws.Bool(true)})
	} else {
		_, err = e.as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{id}})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// newMembers are the group's members that were not seeded (replacements).
func (e *asgEnv) newMembers(t *testing.T) map[string]string {
	t.Helper()
	ms, _ := e.env.Sim.AutoScalingMembers("", "", "web")
	for _, id := range e.ids {
		delete(ms, id)
	}
	return ms
}

// TestHealthCheckReplacement: with Options.HealthChecks, an InService
// member that stops (a reboot without Standby, a termination) is marked
// UNHEALTHY and replaced at the next check, grace period or not; an
// impaired one only after the tolerance and the grace period; a member in
// Standby is not checked (it stays HEALTHY, even terminated) until it is
// back InService. Replacement: the old one Terminating then gone from the
// group, a new instance (the group's tags) Pending then InService,
// registered with the attached target group, the old one deregistered,
// desired capacity unchanged. Without HealthChecks nothing is replaced.
func TestHealthCheckReplacement(t *testing.T) {
	cases := []struct {
		name     string
		checks   bool
		grace    time.Duration
		fault    func(e *asgEnv, id string)
		replaced time.Duration // when after the fault it is replaced (0: never within an hour)
	}{
		{"reboot while InService", true, 5 * time.Minute, func(e *asgEnv, id string) { reboot(t, e.ec2, id, "img") }, time.Minute},
		{"reboot while InService, checks off", false, 0, func(e *asgEnv, id string) { reboot(t, e.ec2, id, "img") }, 0},
		{"reboot in Standby", true, 0, func(e *asgEnv, id string) {
			e.standby(t, id, true)
			e.env.Sim.Advance(time.Minute)
			reboot(t, e.ec2, id, "img")
		}, 0},
		{"never boots in Standby", true, 0, func(e *asgEnv, id string) {
			e.env.Sim.NeverBoots(id)
			e.standby(t, id, true)
			e.env.Sim.Advance(time.Minute)
			reboot(t, e.ec2, id, "img")
		}, 0},
		{"impaired InService, within grace", true, 30 * time.Minute, func(e *asgEnv, id string) {
			// A member just back from Standby is in its grace period.
			e.standby(t, id, true)
			e.env.Sim.Advance(time.Minute)
			e.env.Sim.ImpairedAfterReboot(id)
			reboot(t, e.ec2, id, "img")
			e.env.Sim.Advance(3 * time.Minute) // booted, impaired
			e.standby(t, id, false)
		}, 31 * time.Minute},
		{"impaired InService, no grace", true, 0, func(e *asgEnv, id string) {
			e.standby(t, id, true)
			e.env.Sim.Advance(time.Minute)
			e.env.Sim.ImpairedAfterReboot(id)
			reboot(t, e.ec2, id, "img")
			e.env.Sim.Advance(3 * time.Minute)
			e.standby(t, id, false)
		}, 2 * time.Minute}, // impaired since the boot ended (1 min before), tolerated 3 min
		{"terminated in Standby, then put back", true, 0, func(e *asgEnv, id string) {
			e.standby(t, id, true)
			e.env.Sim.Advance(time.Minute)
			if _, err := e.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				t.Fatal(err)
			}
			e.env.Sim.Advance(10 * time.Minute)
			// Not checked in Standby: still listed, HEALTHY (as-enter-exit-standby).
			if lc, h := asgView(t, e.as, id); lc != "Standby" || h != "HEALTHY" || len(e.newMembers(t)) != 0 {
				t.Fatalf("terminated in Standby: %s %s, new members %v", lc, h, e.newMembers(t))
			}
			e.standby(t, id, false)
		}, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newASGEnv(t, ec2sim.Options{HealthChecks: tc.checks, HealthCheckInterval: time.Minute}, tc.grace)
			id := e.ids[0]
			tc.fault(e, id)
			var seen time.Duration
			for waited := time.Duration(0); waited <= time.Hour; waited += 30 * time.Second {
				if lc, _ := asgView(t, e.as, id); lc == "Terminating" || lc == "" {
					seen = waited
					break
				}
				e.env.Sim.Advance(30 * time.Second)
			}
			if tc.replaced == 0 {
				if seen != 0 || len(e.newMembers(t)) != 0 {
					t.Fatalf("replaced after %v (new members %v), want never", seen, e.newMembers(t))
				}
				if lc, h := asgView(t, e.as, id); h != "HEALTHY" && tc.checks {
					t.Fatalf("not replaced, yet %s %s", lc, h)
				}
				return
			}
			// The onset falls at tc.replaced (give or take the microseconds
			// the frozen clock still moves); the check that sees it is the
			// next multiple of the 1-minute interval.
			if seen == 0 || seen > tc.replaced+time.Minute || seen < tc.replaced-time.Minute {
				t.Fatalf("replaced %v after the fault, want within a check interval of %v", seen, tc.replaced)
			}
			if lc, h := asgView(t, e.as, id); (lc != "Terminating" || h != "UNHEALTHY") && !(lc == "" && strings.HasPrefix(tc.name, "terminated")) {
				// (An instance terminated long ago is Terminated at once: no longer listed.)
				t.Fatalf("replaced member: %s %s, want Terminating UNHEALTHY", lc, h)
			}
			if st := targetState(t, e.elb, e.tg, id); st != "draining" && st != "" {
				t.Fatalf("replaced member in the attached target group: %q", st)
			}
			nm := e.newMembers(t)
			if len(nm) != 1 {
				t.Fatalf("new members %v, want 1", nm)
			}
			var nid string
			for k := range nm {
				nid = k
			}
			if nm[nid] != "Pending" {
				t.Fatalf("replacement %s: %s, want Pending", nid, nm[nid])
			}
			e.env.Sim.Advance(10 * time.Minute)
			if lc, h := asgView(t, e.as, nid); lc != "InService" || h != "HEALTHY" {
				t.Fatalf("replacement after 10m: %s %s", lc, h)
			}
			if st := targetState(t, e.elb, e.tg, nid); st != "healthy" {
				t.Fatalf("replacement's target in the attached group: %q", st)
			}
			if lc, _ := asgView(t, e.as, id); lc != "" {
				t.Fatalf("terminated member still listed: %s", lc)
			}
			in, _ := e.env.Sim.Instance("", "", nid)
			if in.Tags["aws:autoscaling:groupName"] != "web" || in.Tags["Backup"] != "yes" {
				t.Fatalf("replacement tags %v", in.Tags)
			}
			if old, _ := e.env.Sim.Instance("", "", id); old.State != "terminated" {
				t.Fatalf("replaced instance %s", old.State)
			}
			if d, _ := e.env.Sim.AutoScalingGroupCapacity("", "", "web"); d != 3 {
				t.Fatalf("desired %d, want 3", d)
			}
		})
	}
}

// TestAttachedTargetGroups: EnterStandby deregisters the member from the
// group's attached target groups (not from others), ExitStandby registers
// it again; a DeregisterTargets of the draining target is a no-op.
func TestAttachedTargetGroups(t *testing.T) {
	e := newASGEnv(t, ec2sim.Options{}, 0)
	id := e.ids[1]
	if st := targetState(t, e.elb, e.tg, id); st != "healthy" {
		t.Fatalf("seeded member in the attached group: %q", st)
	}
	steps := []struct {
		name      string
		do        func()
		tg, owned string
	}{
		{"EnterStandby", func() { e.standby(t, id, true) }, "draining", "healthy"},
		{"drained", func() { e.env.Sim.Advance(2 * time.Minute) }, "", "healthy"},
		{"ExitStandby", func() { e.standby(t, id, false) }, "initial", "healthy"},
		{"healthy again", func() { e.env.Sim.Advance(time.Minute) }, "healthy", "healthy"},
	}
	for _, s := range steps {
		s.do()
		if got, own := targetState(t, e.elb, e.tg, id), targetState(t, e.elb, e.own, id); got != s.tg || own != s.owned {
			t.Fatalf("after %s: attached %q, own %q; want %q, %q", s.name, got, own, s.tg, s.owned)
		}
	}
}

// TestLifecycleStates: a member held by a lifecycle hook (or in any
// documented state but InService) is reported as such and EnterStandby
// refuses it with ValidationError; ExitStandby of a member not in Standby
// (twice) too; an undocumented state is a seeding error.
func TestLifecycleStates(t *testing.T) {
	e := newASGEnv(t, ec2sim.Options{}, 0)
	ctx := context.Background()
	for i, state := range []string{"Pending:Wait", "Terminating:Wait", "Detaching"} {
		t.Run(state, func(t *testing.T) {
			id := e.ids[i]
			if err := e.env.Sim.SetAutoScalingLifecycle("", "", id, state); err != nil {
				t.Fatal(err)
			}
			if lc, _ := asgView(t, e.as, id); lc != state {
				t.Fatalf("lifecycle %s, want %s", lc, state)
			}
			_, err := e.as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{id}, ShouldDecrementDesiredCapacity: aws.Bool(true)})
			if code(err) != "ValidationError" || !strings.Contains(err.Error(), "The instance "+id+" is not in InService.") {
				t.Fatalf("EnterStandby: %v", err)
			}
		})
	}
	if err := e.env.Sim.SetAutoScalingLifecycle("", "", e.ids[0], "Sleeping"); err == nil {
		t.Fatal("undocumented lifecycle state accepted")
	}
	if err := e.env.Sim.SetAutoScalingLifecycle("", "", e.ids[0], "InService"); err != nil {
		t.Fatal(err)
	}
	e.standby(t, e.ids[0], true)
	e.env.Sim.Advance(time.Minute)
	e.standby(t, e.ids[0], false)
	for i := 0; i < 2; i++ { // Pending, then InService
		_, err := e.as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: e.ids[:1]})
		if code(err) != "ValidationError" || !strings.Contains(err.Error(), "The instance "+e.ids[0]+" is not in Standby.") {
			t.Fatalf("ExitStandby again (%d): %v", i, err)
		}
		e.env.Sim.Advance(time.Minute)
	}
	if d, _ := e.env.Sim.AutoScalingGroupCapacity("", "", "web"); d != 3 {
		t.Fatalf("desired %d after refused calls, want 3", d)
	}
}

// TestReplacementDelay: with Options.ReplacementDelay the replacement of a
// member terminated as unhealthy is launched that long after the
// termination starts (AWS: the launch is a second scaling activity, "a
// difference between desired and actual capacity"). Meanwhile
// DescribeAutoScalingGroups lists one instance fewer than DesiredCapacity,
// the rest InService and Healthy once the old one is gone; the
// availability log counts the missing capacity as one member down (not
// zero, not two with the Pending replacement).
func TestReplacementDelay(t *testing.T) {
	e := newASGEnv(t, ec2sim.Options{HealthChecks: true, HealthCheckInterval: time.Minute, ReplacementDelay: 4 * time.Minute}, 0)
	e.env.Sim.ResetCalls()
	id := e.ids[0]
	if _, err := e.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	describe := func() (desired int32, listed map[string]string) {
		t.Helper()
		out, err := e.as.DescribeAutoScalingGroups(context.Background(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web"}})
		if err != nil || len(out.AutoScalingGroups) != 1 {
			t.Fatalf("describe: %v", err)
		}
		g := out.AutoScalingGroups[0]
		listed = map[string]string{}
		for _, m := range g.Instances {
			listed[aws.ToString(m.InstanceId)] = string(m.LifecycleState) + "/" + aws.ToString(m.HealthStatus)
		}
		return aws.ToInt32(g.DesiredCapacity), listed
	}
	steps := []struct {
		after   time.Duration // since the termination
		listed  int           // instances the group lists
		pending int           // of them Pending (the replacement)
		gone    bool          // the terminated one no longer listed
		down    int           // the availability log's count now
	}{
		{2 * time.Minute, 2, 0, true, 1}, // checked at 1m: Terminating, terminated 30 s later
		{4*time.Minute + 30*time.Second, 2, 0, true, 1},
		{5*time.Minute + 30*time.Second, 3, 1, true, 1}, // launched at 5m (check at 1m + 4m)
		{10 * time.Minute, 3, 0, true, 0},
	}
	at := time.Duration(0)
	for _, s := range steps {
		e.env.Sim.Advance(s.after - at)
		at = s.after
		desired, listed := describe()
		pending := 0
		for lid, v := range listed {
			if strings.HasPrefix(v, "Pending") {
				pending++
			} else if v != "InService/Healthy" {
				t.Errorf("after %v: %s %s", s.after, lid, v)
			}
		}
		if _, still := listed[id]; desired != 3 || len(listed) != s.listed || pending != s.pending || still == s.gone {
			t.Fatalf("after %v: desired %d, listed %v; want 3, %d listed, %d Pending, %s gone %v", s.after, desired, listed, s.listed, s.pending, id, s.gone)
		}
		if g, _ := e.env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "web"); g.Unavailable != s.down {
			t.Fatalf("after %v: %d unavailable, want %d", s.after, g.Unavailable, s.down)
		}
	}
	if g, _ := e.env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "web"); g.MaxUnavailable != 1 || g.Unavailable != 0 {
		t.Fatalf("availability %+v: want at most 1 down (the missing capacity), 0 now", g)
	}
	// Without the delay the replacement is listed at the check itself.
	e0 := newASGEnv(t, ec2sim.Options{HealthChecks: true, HealthCheckInterval: time.Minute}, 0)
	if _, err := e0.ec2.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: e0.ids[:1]}); err != nil {
		t.Fatal(err)
	}
	e0.env.Sim.Advance(2 * time.Minute)
	if nm := e0.newMembers(t); len(nm) != 1 {
		t.Fatalf("no delay: new members %v, want the replacement", nm)
	}
}
