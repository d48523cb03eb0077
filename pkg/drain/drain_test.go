package drain_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// frozen: a simulated second per 11 real days; the tests move the clock
// with Advance so every boundary (lifecycle delay, deregistration delay,
// reboot phases, HealthyAfter) is hit exactly.
const frozen = 1e-6

const (
	run      = "prod/nightly/2026-11-24T03:00:00Z"
	delay    = 60 * time.Second // target group deregistration delay
	healthy  = 30 * time.Second // target group HealthyAfter
	lifeStep = 5 * time.Second  // Options.LifecycleDelay (the default)
)

// fleet is an emulator with a web tier: web[0..2] in Auto Scaling group
// "web-asg" (MinSize 1) and all of web[0..3] in target group "web"; web[3]
// is in no Auto Scaling group. other is in neither.
type fleet struct {
	env   *simtest.Env
	d     *drain.Drainer
	ec2   *ec2.Client
	web   []string
	other string
	tg    string
}

func newFleet(t *testing.T, minSize int) *fleet {
	t.Helper()
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen, Start: time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)})
	f := &fleet{env: env, d: newDrainer(env), ec2: env.Client("", "")}
	f.web = env.Sim.SeedFleet("", "", 4, map[string]string{"Tier": "web"})
	f.other = env.Sim.AddInstance(ec2sim.InstanceSpec{})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web-asg", Instances: f.web[:3], MinSize: minSize})
	f.tg = env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: f.web, DeregistrationDelay: delay, HealthyAfter: healthy})
	env.Sim.ResetCalls()
	return f
}

// newDrainer is a fresh process: new SDK clients, nothing remembered.
func newDrainer(env *simtest.Env) *drain.Drainer {
	return &drain.Drainer{AutoScaling: env.AutoScaling("", ""), ELB: env.ELBv2("", ""), EC2: env.Client("", "")}
}

func (f *fleet) plan(ids ...string) drain.Plan {
	return drain.Plan{Run: run, Instances: ids, TargetGroups: []string{f.tg}}
}

func (f *fleet) lifecycle(t *testing.T, id string) string {
	t.Helper()
	out, err := f.env.AutoScaling("", "").DescribeAutoScalingInstances(context.Background(), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil || len(out.AutoScalingInstances) != 1 {
		t.Fatalf("lifecycle of %s: %v", id, err)
	}
	return aws.ToString(out.AutoScalingInstances[0].LifecycleState)
}

// target is the target's health state, "" when it is not listed at all.
func (f *fleet) target(t *testing.T, id string) string {
	t.Helper()
	out, err := f.env.ELBv2("", "").DescribeTargetHealth(context.Background(), &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(f.tg)})
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

func (f *fleet) tag(t *testing.T, id string) (string, bool) {
	t.Helper()
	in, ok := f.env.Sim.Instance("", "", id)
	if !ok {
		t.Fatalf("no instance %s", id)
	}
	v, ok := in.Tags[drain.TagKey]
	return v, ok
}

func (f *fleet) desired(t *testing.T) int {
	t.Helper()
	n, ok := f.env.Sim.AutoScalingGroupCapacity("", "", "web-asg")
	if !ok {
		t.Fatal("no group web-asg")
	}
	return n
}

func (f *fleet) reboot(t *testing.T, id string) {
	t.Helper()
	if _, err := f.ec2.CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("img-" + id), NoReboot: aws.Bool(false)}); err != nil {
		t.Fatalf("CreateImage %s: %v", id, err)
	}
}

// until calls round every step of simulated time until it reports done,
// at most max; it returns the simulated time it took.
func until(t *testing.T, f *fleet, step, max time.Duration, round func() bool) time.Duration {
	t.Helper()
	for waited := time.Duration(0); waited <= max; waited += step {
		if round() {
			return waited
		}
		f.env.Sim.Advance(step)
	}
	t.Fatalf("not done after %v", max)
	return 0
}

func state(p drain.Progress, id string) drain.InstanceProgress {
	for _, ip := range p.Instances {
		if ip.InstanceID == id {
			return ip
		}
	}
	return drain.InstanceProgress{}
}

func drainOK(t *testing.T, d *drain.Drainer, p drain.Plan) drain.Progress {
	t.Helper()
	pr, err := d.Drain(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

func restoreOK(t *testing.T, d *drain.Drainer, r drain.Record) drain.Progress {
	t.Helper()
	pr, err := d.Restore(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

func healthOK(t *testing.T, d *drain.Drainer, ids []string) []drain.InstanceHealth {
	t.Helper()
	hs, err := d.Health(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

func groupMax(f *fleet, kind, name string) int {
	return f.env.Sim.Calls().MaxUnavailable[ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, kind, name)]
}

// TestDrainTiming: Drain of an Auto Scaling + target group member, a
// target-group-only member and an instance in neither. Standby is reached
// after the lifecycle delay, the target's draining ends after the
// deregistration delay (simulated), and only then is the round complete;
// the record names exactly what was taken, the tag says the same, and
// repeated rounds make no second change.
func TestDrainTiming(t *testing.T) {
	cases := []struct {
		name       string
		instance   func(f *fleet) string
		wantASG    string
		wantTarget bool
		// complete after this much simulated time
		completeAt time.Duration
	}{
		{"asg and target group", func(f *fleet) string { return f.web[0] }, "web-asg", true, delay},
		{"target group only", func(f *fleet) string { return f.web[3] }, "", true, delay},
		{"in neither", func(f *fleet) string { return f.other }, "", false, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 1)
			id := tc.instance(f)
			var p drain.Progress
			took := until(t, f, lifeStep, 10*time.Minute, func() bool {
				p = drainOK(t, f.d, f.plan(id))
				if tc.wantASG != "" {
					lc := f.lifecycle(t, id)
					if (lc == "Standby") != (f.env.Sim.Now().Sub(time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)) >= lifeStep) {
						t.Fatalf("lifecycle %s at %v", lc, f.env.Sim.Now())
					}
				}
				return p.Complete
			})
			if took != tc.completeAt {
				t.Fatalf("complete after %v, want %v (deregistration delay %v)", took, tc.completeAt, delay)
			}
			calls := f.env.Sim.Calls()
			wantEnter, wantDereg := 0, 0
			if tc.wantASG != "" {
				wantEnter = 1
			}
			if tc.wantTarget {
				wantDereg = 1
			}
			if calls.Count("EnterStandby") != wantEnter || calls.Count("DeregisterTargets") != wantDereg || calls.Count("CreateTags") != min(1, wantEnter+wantDereg) {
				t.Fatalf("EnterStandby %d (want %d), DeregisterTargets %d (want %d), CreateTags %d: a later round repeated a change",
					calls.Count("EnterStandby"), wantEnter, calls.Count("DeregisterTargets"), wantDereg, calls.Count("CreateTags"))
			}
			if tc.wantASG == "" && !tc.wantTarget {
				if len(p.Record.Instances) != 0 || state(p, id).State != drain.StateDone {
					t.Fatalf("nothing to take, got %+v", p)
				}
				if _, tagged := f.tag(t, id); tagged {
					t.Fatal("tagged an instance nothing was taken from")
				}
				return
			}
			if len(p.Record.Instances) != 1 {
				t.Fatalf("record %+v", p.Record)
			}
			got := p.Record.Instances[0]
			if got.InstanceID != id || got.AutoScalingGroup != tc.wantASG || len(got.Targets) != 1 || got.Targets[0] != (drain.Target{Group: f.tg, Port: 80}) {
				t.Fatalf("record %+v", got)
			}
			if f.target(t, id) != "" {
				t.Fatalf("target still listed: %s", f.target(t, id))
			}
			if tc.wantASG != "" && f.desired(t) != 2 {
				t.Fatalf("desired capacity %d, want 2 (ShouldDecrementDesiredCapacity)", f.desired(t))
			}
			v, tagged := f.tag(t, id)
			if !tagged || !strings.Contains(v, run) || strings.Contains(v, `"asg"`) != (tc.wantASG != "") || !strings.Contains(v, "web:80") {
				t.Fatalf("tag %s=%q", drain.TagKey, v)
			}
		})
	}
}

// TestCycle: drain, reboot (CreateImage NoReboot=false), health, restore,
// for an instance that comes back, one that never boots and one that
// comes back impaired. The healthy one is ok after the reboot's phases
// (20+10+30+60 s) and fully back (InService, target healthy, tag gone,
// capacity restored) HealthyAfter later. The broken ones are never ok, with
// the reason; Restore puts the Auto Scaling member back (the group's to
// replace) and reports the target of the stopped one blocked, keeping the
// tag, until it runs again. Throughout, at most one member of each group
// is unavailable, and no member is UNHEALTHY while InService.
func TestCycle(t *testing.T) {
	cases := []struct {
		name       string
		fault      func(s *ec2sim.Sim, id string)
		wantHealth string
		reason     string
	}{
		{"comes back", nil, drain.OK, ""},
		{"never boots", (*ec2sim.Sim).NeverBoots, drain.Stopped, "stopped"},
		{"impaired after reboot", (*ec2sim.Sim).ImpairedAfterReboot, drain.Impaired, "instance impaired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 1)
			id := f.web[0]
			var rec drain.Record
			until(t, f, 10*time.Second, 5*time.Minute, func() bool {
				p := drainOK(t, f.d, f.plan(id))
				rec = p.Record
				return p.Complete
			})
			if tc.fault != nil {
				tc.fault(f.env.Sim, id)
			}
			rebootAt := f.env.Sim.Now()
			f.reboot(t, id)
			var h drain.InstanceHealth
			took := until(t, f, 10*time.Second, 10*time.Minute, func() bool {
				h = healthOK(t, f.d, []string{id})[0]
				if h.Condition != drain.OK && h.Reason == "" {
					t.Fatalf("%s without a reason", h.Condition)
				}
				return h.Condition == tc.wantHealth && (tc.wantHealth == drain.OK || f.env.Sim.Now().Sub(rebootAt) >= 5*time.Minute)
			})
			if tc.wantHealth == drain.OK && took != 120*time.Second {
				t.Fatalf("ok after %v, want 120 s (stopping 20, stopped 10, pending 30, checks 60)", took)
			}
			if !strings.Contains(h.Reason, tc.reason) {
				t.Fatalf("reason %q, want %q", h.Reason, tc.reason)
			}

			var p drain.Progress
			restoreAt := f.env.Sim.Now()
			until(t, f, 5*time.Second, 10*time.Minute, func() bool {
				p = restoreOK(t, f.d, rec)
				return p.Settled || f.env.Sim.Now().Sub(restoreAt) >= 5*time.Minute
			})
			lc := f.lifecycle(t, id)
			switch tc.name {
			case "comes back":
				if !p.Complete || lc != "InService" || f.target(t, id) != "healthy" || f.desired(t) != 3 {
					t.Fatalf("restore %+v, lifecycle %s, target %q, desired %d", p, lc, f.target(t, id), f.desired(t))
				}
				if _, tagged := f.tag(t, id); tagged {
					t.Fatal("tag left after a complete restore")
				}
			case "never boots":
				// Out of Standby (the group gets its capacity back and, with
				// health checks, replaces it), target not registered: it does
				// not run. Settled as unhealthy, not blocked.
				ip := state(p, id)
				if p.Complete || !p.Settled || ip.State != drain.StateUnhealthy || !strings.Contains(ip.Detail, "stopped") || lc != "InService" || f.target(t, id) != "" || f.desired(t) != 3 {
					t.Fatalf("restore %+v, lifecycle %s, target %q, desired %d", p, lc, f.target(t, id), f.desired(t))
				}
				if _, tagged := f.tag(t, id); !tagged {
					t.Fatal("tag removed although the target is not registered again")
				}
				// An operator starts it: the next Restore finishes the job.
				if err := f.env.Sim.SetInstanceState("", "", id, "running"); err != nil {
					t.Fatal(err)
				}
				until(t, f, 5*time.Second, 5*time.Minute, func() bool { return restoreOK(t, f.d, rec).Complete })
				if _, tagged := f.tag(t, id); tagged {
					t.Fatal("tag left after the late restore")
				}
			case "impaired after reboot":
				// Out of Standby, and impaired: the group replaces it (no
				// target registered for it); settled at once instead of
				// waiting for a target that will not become healthy.
				if ip := state(p, id); !p.Settled || ip.State != drain.StateUnhealthy || !strings.Contains(ip.Detail, "impaired") ||
					f.target(t, id) != "" || lc != "InService" {
					t.Fatalf("restore %+v, lifecycle %s, target %q", p, lc, f.target(t, id))
				}
			}
			for _, g := range []struct{ kind, name string }{{ec2sim.GroupAutoScaling, "web-asg"}, {ec2sim.GroupTarget, "web"}} {
				if got := groupMax(f, g.kind, g.name); got != 1 {
					t.Errorf("%s %s: max unavailable %d, want 1 (the drained instance)", g.kind, g.name, got)
				}
			}
			if g, _ := f.env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "web-asg"); len(g.Unhealthy) != 0 && tc.fault == nil {
				t.Errorf("members UNHEALTHY while InService: %v", g.Unhealthy)
			}
		})
	}
}

// TestCycleUnhealthyWithoutDrain is the control for TestCycle: the same
// reboot without Drain leaves the member InService while it is down, which
// Auto Scaling reports UNHEALTHY (and would replace). Drain prevents it.
func TestCycleUnhealthyWithoutDrain(t *testing.T) {
	for _, drained := range []bool{false, true} {
		f := newFleet(t, 1)
		if drained {
			until(t, f, 10*time.Second, 5*time.Minute, func() bool { return drainOK(t, f.d, f.plan(f.web[0])).Complete })
		}
		f.reboot(t, f.web[0])
		f.env.Sim.Advance(time.Hour)
		g, _ := f.env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "web-asg")
		if got := len(g.Unhealthy) > 0; got == drained {
			t.Errorf("drained %v: UNHEALTHY members %v", drained, g.Unhealthy)
		}
	}
}

// TestWavesAvailability: three waves of one instance each through drain,
// reboot, health and restore: the availability log never shows more than
// one member of the group or the target group unavailable, and everything
// ends back in service with the original capacity.
func TestWavesAvailability(t *testing.T) {
	f := newFleet(t, 1)
	for _, id := range f.web[:3] {
		var rec drain.Record
		until(t, f, 10*time.Second, 5*time.Minute, func() bool {
			p := drainOK(t, f.d, f.plan(id))
			rec = p.Record
			return p.Complete
		})
		f.reboot(t, id)
		until(t, f, 10*time.Second, 10*time.Minute, func() bool { return healthOK(t, f.d, []string{id})[0].Condition == drain.OK })
		until(t, f, 5*time.Second, 10*time.Minute, func() bool { return restoreOK(t, f.d, rec).Complete })
	}
	for _, g := range []struct{ kind, name string }{{ec2sim.GroupAutoScaling, "web-asg"}, {ec2sim.GroupTarget, "web"}} {
		if got := groupMax(f, g.kind, g.name); got != 1 {
			t.Errorf("%s %s: max unavailable %d, want 1", g.kind, g.name, got)
		}
	}
	if f.desired(t) != 3 {
		t.Fatalf("desired %d, want 3", f.desired(t))
	}
	for _, id := range f.web[:3] {
		if f.lifecycle(t, id) != "InService" || f.target(t, id) != "healthy" {
			t.Fatalf("%s: %s, %s", id, f.lifecycle(t, id), f.target(t, id))
		}
	}
}

// TestRestoreIdempotent: Restore after a complete restore, and Restore of
// a drain that never finished (the Catch path right after the first
// round), make no change that is already made; a pre-existing Standby
// member (an operator's) is neither taken nor put back.
func TestRestoreIdempotent(t *testing.T) {
	cases := []struct {
		name string
		// drainRounds: Drain rounds (10 s apart) before the restores;
		// 0 means until complete.
		drainRounds int
	}{
		{"after a complete drain", 0},
		{"catch after the first round", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 0)
			ctx := context.Background()
			as := f.env.AutoScaling("", "")
			// The operator's Standby member, before the run.
			if _, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web-asg"), InstanceIds: f.web[2:3], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
				t.Fatal(err)
			}
			f.env.Sim.Advance(time.Minute)
			plan := f.plan(f.web[0], f.web[2])
			var rec drain.Record
			for i := 0; ; i++ {
				p := drainOK(t, f.d, plan)
				rec = p.Record
				if (tc.drainRounds == 0 && p.Complete) || i+1 == tc.drainRounds {
					break
				}
				f.env.Sim.Advance(10 * time.Second)
			}
			for _, tk := range rec.Instances {
				if tk.InstanceID == f.web[2] && tk.AutoScalingGroup != "" {
					t.Fatalf("took the operator's Standby member: %+v", tk)
				}
			}
			f.env.Sim.Advance(10 * time.Second)
			until(t, f, 5*time.Second, 10*time.Minute, func() bool { return restoreOK(t, f.d, rec).Complete })
			f.env.Sim.ResetCalls()
			for i := 0; i < 2; i++ {
				p := restoreOK(t, f.d, rec)
				if !p.Complete {
					t.Fatalf("second restore not complete: %+v", p)
				}
			}
			if m := f.env.Sim.Calls().Mutating(); m != 0 {
				t.Fatalf("restores after completion made %d changes: %v", m, f.env.Sim.Calls().ByAction)
			}
			if f.lifecycle(t, f.web[0]) != "InService" || f.lifecycle(t, f.web[2]) != "Standby" {
				t.Fatalf("lifecycles %s, %s: want InService, Standby (the operator's)", f.lifecycle(t, f.web[0]), f.lifecycle(t, f.web[2]))
			}
			if f.target(t, f.web[0]) != "healthy" || f.target(t, f.web[2]) != "healthy" {
				t.Fatalf("targets %s, %s", f.target(t, f.web[0]), f.target(t, f.web[2]))
			}
			if f.desired(t) != 2 {
				t.Fatalf("desired %d, want 2 (3 less the operator's Standby member)", f.desired(t))
			}
		})
	}
}

// TestCrash: the process dies after a round's changes, before its answer
// reaches the workflow. With the record lost but the execution alive, a
// fresh process's next Drain round still records what the first took (it
// adopts the tag) although the instance is no longer in service; with the
// execution gone, Stranded finds the instances from their tags and Restore
// puts them back. Neither touches an operator's Standby member.
func TestCrash(t *testing.T) {
	cases := []struct {
		name   string
		record func(t *testing.T, f *fleet, d *drain.Drainer) []drain.Record
	}{
		{"next drain round adopts the tag", func(t *testing.T, f *fleet, d *drain.Drainer) []drain.Record {
			p := drainOK(t, d, f.plan(f.web[0], f.web[1]))
			return []drain.Record{p.Record}
		}},
		{"no record: stranded", func(t *testing.T, f *fleet, d *drain.Drainer) []drain.Record {
			recs, problems, err := d.Stranded(context.Background(), "prod/", []string{f.tg})
			if err != nil || len(problems) != 0 {
				t.Fatalf("stranded: %v %v", err, problems)
			}
			return recs
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 0)
			ctx := context.Background()
			as := f.env.AutoScaling("", "")
			if _, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web-asg"), InstanceIds: f.web[2:3], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
				t.Fatal(err)
			}
			// First process: one round, answer lost.
			if _, err := newDrainer(f.env).Drain(ctx, f.plan(f.web[0], f.web[1])); err != nil {
				t.Fatal(err)
			}
			f.env.Sim.Advance(10 * time.Second)
			recs := tc.record(t, f, newDrainer(f.env))
			if len(recs) != 1 || recs[0].Run != run || len(recs[0].Instances) != 2 {
				t.Fatalf("records %+v", recs)
			}
			for _, tk := range recs[0].Instances {
				if tk.AutoScalingGroup != "web-asg" || len(tk.Targets) != 1 || tk.Targets[0] != (drain.Target{Group: f.tg, Port: 80}) {
					t.Fatalf("recovered %+v: want web-asg and %s:80", tk, f.tg)
				}
			}
			d := newDrainer(f.env)
			until(t, f, 5*time.Second, 10*time.Minute, func() bool { return restoreOK(t, d, recs[0]).Complete })
			for _, id := range f.web[:2] {
				if f.lifecycle(t, id) != "InService" || f.target(t, id) != "healthy" {
					t.Fatalf("%s: %s, %s", id, f.lifecycle(t, id), f.target(t, id))
				}
				if _, tagged := f.tag(t, id); tagged {
					t.Fatalf("%s still tagged", id)
				}
			}
			if f.lifecycle(t, f.web[2]) != "Standby" {
				t.Fatal("the operator's Standby member was taken out of Standby")
			}
			if recs, _, _ := d.Stranded(ctx, "prod/", []string{f.tg}); len(recs) != 0 {
				t.Fatalf("still stranded after restore: %+v", recs)
			}
		})
	}
}

// TestLostAnswers: EnterStandby and ExitStandby take effect and their
// answers are lost (5xx after the change); the SDK's retry meets "not in
// InService" / "not in Standby". The round must count that as its own
// change, not as a refusal.
func TestLostAnswers(t *testing.T) {
	f := newFleet(t, 0)
	f.env.Sim.Inject(ec2sim.Fault{Action: "EnterStandby", Nth: 1, After: true, Code: "InternalFailure"})
	f.env.Sim.Inject(ec2sim.Fault{Action: "ExitStandby", Nth: 1, After: true, Code: "InternalFailure"})
	var rec drain.Record
	until(t, f, 10*time.Second, 5*time.Minute, func() bool {
		p := drainOK(t, f.d, f.plan(f.web[0]))
		if ip := state(p, f.web[0]); ip.State == drain.StateFailed {
			t.Fatalf("lost answer read as a refusal: %+v", ip)
		}
		rec = p.Record
		return p.Complete
	})
	until(t, f, 5*time.Second, 10*time.Minute, func() bool {
		p := restoreOK(t, f.d, rec)
		if ip := state(p, f.web[0]); ip.State == drain.StateBlocked {
			t.Fatalf("lost answer read as a refusal: %+v", ip)
		}
		return p.Complete
	})
	if c := f.env.Sim.Calls(); c.Faults["EnterStandby"] != 1 || c.Faults["ExitStandby"] != 1 {
		t.Fatalf("faults not hit: %v", c.Faults)
	}
}

// TestMinSizeRefusal: a wave that would take the group below its minimum:
// Auto Scaling refuses the batch; the refusal is attributed to the one
// instance it concerns, which is failed (not to be rebooted) and keeps its
// target registered; the other is drained.
func TestMinSizeRefusal(t *testing.T) {
	f := newFleet(t, 2)
	p := drainOK(t, f.d, f.plan(f.web[0], f.web[1]))
	a, b := state(p, f.web[0]), state(p, f.web[1])
	if a.State != drain.StateWaiting || b.State != drain.StateFailed || !strings.Contains(b.Detail, "min-size=2") {
		t.Fatalf("progress %+v", p.Instances)
	}
	if p.Complete || !strings.Contains(b.Detail, "EnterStandby refused") {
		t.Fatalf("progress %+v", p)
	}
	if f.target(t, f.web[1]) != "healthy" || f.lifecycle(t, f.web[1]) != "InService" {
		t.Fatalf("refused instance changed: %s, %s", f.target(t, f.web[1]), f.lifecycle(t, f.web[1]))
	}
	// Restore of the partial drain puts back the one drained, leaves the other.
	until(t, f, 5*time.Second, 10*time.Minute, func() bool { return restoreOK(t, f.d, p.Record).Complete })
	if f.desired(t) != 3 {
		t.Fatalf("desired %d", f.desired(t))
	}
}

// TestFaultsRetried: throttling and 5xx answers on every new action are
// retried by the SDK and the rounds succeed; a persistent error is
// reported with its context and AWS code, and the round fails.
func TestFaultsRetried(t *testing.T) {
	f := newFleet(t, 0)
	ctx := context.Background()
	for _, fl := range []ec2sim.Fault{
		{Action: "DescribeAutoScalingInstances", Times: 1, Code: "Throttling"},
		{Action: "EnterStandby", Times: 1, Code: "Throttling"},
		{Action: "ExitStandby", Times: 1, Code: "InternalFailure"},
		{Action: "DescribeTargetHealth", Times: 1, Code: "Throttling"},
		{Action: "DeregisterTargets", Times: 1, Code: "ServiceUnavailable"},
		{Action: "RegisterTargets", Times: 1, Code: "Throttling"},
		{Action: "DescribeInstanceStatus", Times: 1, Code: "RequestLimitExceeded"},
		{Action: "CreateTags", Times: 1, Code: "InternalError"},
		{Action: "DeleteTags", Times: 1, Code: "Unavailable"},
	} {
		f.env.Sim.Inject(fl)
	}
	var rec drain.Record
	until(t, f, 10*time.Second, 5*time.Minute, func() bool {
		p := drainOK(t, f.d, f.plan(f.web[0]))
		rec = p.Record
		return p.Complete
	})
	until(t, f, 5*time.Second, 10*time.Minute, func() bool { return restoreOK(t, f.d, rec).Complete })
	c := f.env.Sim.Calls()
	for _, a := range []string{"DescribeAutoScalingInstances", "EnterStandby", "ExitStandby", "DescribeTargetHealth", "DeregisterTargets", "RegisterTargets", "DescribeInstanceStatus", "CreateTags", "DeleteTags"} {
		if c.Faults[a] != 1 {
			t.Errorf("%s: %d faults answered, want 1 (retried)", a, c.Faults[a])
		}
	}
	if c.Count("EnterStandby") != 2 || c.Count("ExitStandby") != 2 {
		t.Errorf("EnterStandby %d, ExitStandby %d attempts: want 2 each (one retry)", c.Count("EnterStandby"), c.Count("ExitStandby"))
	}

	f.env.Sim.Inject(ec2sim.Fault{Action: "DescribeTargetHealth", Code: "AccessDenied", Message: "not authorized to perform: elasticloadbalancing:DescribeTargetHealth"})
	_, err := f.d.Drain(ctx, f.plan(f.web[1]))
	if err == nil || awsclient.ErrorCode(err) != "AccessDenied" || !strings.Contains(err.Error(), "describe target health of "+f.tg) {
		t.Fatalf("got %v, want AccessDenied with the target group", err)
	}
	if f.lifecycle(t, f.web[1]) != "InService" {
		t.Fatal("a failed round changed something")
	}
}

// TestBadInput: bad plans and records are refused naming the field, with
// zero calls.
func TestBadInput(t *testing.T) {
	f := newFleet(t, 0)
	ctx := context.Background()
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"no run", func() error { _, err := f.d.Drain(ctx, drain.Plan{Instances: f.web[:1]}); return err }, "plan.run"},
		{"no instances", func() error { _, err := f.d.Drain(ctx, drain.Plan{Run: run}); return err }, "plan.instances is empty"},
		{"bad id", func() error { _, err := f.d.Drain(ctx, drain.Plan{Run: run, Instances: []string{"web-1"}}); return err }, "plan.instances[0]"},
		{"duplicate", func() error {
			_, err := f.d.Drain(ctx, drain.Plan{Run: run, Instances: []string{f.web[0], f.web[0]}})
			return err
		}, "listed twice"},
		{"bad target group", func() error {
			_, err := f.d.Drain(ctx, drain.Plan{Run: run, Instances: f.web[:1], TargetGroups: []string{"web"}})
			return err
		}, "plan.targetGroups[0]"},
		{"record without run", func() error { _, err := f.d.Restore(ctx, drain.Record{}); return err }, "record.run"},
		{"record bad port", func() error {
			_, err := f.d.Restore(ctx, drain.Record{Run: run, Instances: []drain.Taken{{InstanceID: f.web[0], Targets: []drain.Target{{Group: f.tg}}}}})
			return err
		}, "record.instances[0].targets[0].port"},
		{"health bad id", func() error { _, err := f.d.Health(ctx, []string{"i-"}); return err }, "instances[0]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	if c := f.env.Sim.Calls(); c.Total != 0 {
		t.Fatalf("bad input made %d calls: %v", c.Total, c.ByAction)
	}
}

// TestHealthBatches: more instances than one DescribeInstanceStatus call
// takes (100), one of them unknown to EC2: answered per instance in the
// order given, the unknown one Gone, in bounded calls.
func TestHealthBatches(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen})
	d := newDrainer(env)
	ids := env.Sim.SeedFleet("", "", 150, nil)
	ids = append(ids, "i-0000000000000dead")
	hs := healthOK(t, d, ids)
	for i, h := range hs {
		want := drain.OK
		if i == len(ids)-1 {
			want = drain.Gone
		}
		if h.InstanceID != ids[i] || h.Condition != want {
			t.Fatalf("%d: %+v, want %s %s", i, h, ids[i], want)
		}
	}
	// 2 batches; the one with the unknown ID again one by one (51).
	if n := env.Sim.Calls().Count("DescribeInstanceStatus"); n != 2+51 {
		t.Fatalf("%d DescribeInstanceStatus calls, want 53", n)
	}
}

// TestRecordJSON: the record survives the execution state (JSON) and stays
// small: a wave of 100 instances in two target groups is well below the
// 256 KB per state.
func TestRecordJSON(t *testing.T) {
	rec := drain.Record{Run: run}
	for i := 0; i < 100; i++ {
		rec.Instances = append(rec.Instances, drain.Taken{InstanceID: "i-0abc1234def567890", AutoScalingGroup: "web-asg-production-eu-west-1",
			Targets: []drain.Target{{Group: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-production/0123456789abcdef", Port: 443},
				{Group: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-health/0123456789abcdef", Port: 8080}}})
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 64<<10 {
		t.Fatalf("record of 100 instances is %d bytes", len(b))
	}
	var back drain.Record
	if err := json.Unmarshal(b, &back); err != nil || len(back.Instances) != 100 || back.Instances[7].Targets[1].Port != 8080 {
		t.Fatalf("round trip: %v", err)
	}
}

// TestBatches: a wave of 60 Auto Scaling members in one target group is
// handled in bounded calls: DescribeAutoScalingInstances 50 IDs per call,
// EnterStandby and ExitStandby 20 per call, one DeregisterTargets and one
// RegisterTargets (100 per call), one CreateTags and one DeleteTags (one
// tag value for all).
func TestBatches(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen})
	d := newDrainer(env)
	ids := env.Sim.SeedFleet("", "", 60, nil)
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "big", Instances: ids})
	tg := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "big", Instances: ids, DeregistrationDelay: delay, HealthyAfter: healthy})
	env.Sim.ResetCalls()
	p := drainOK(t, d, drain.Plan{Run: run, Instances: ids, TargetGroups: []string{tg}})
	c := env.Sim.Calls()
	for action, want := range map[string]int{"DescribeAutoScalingInstances": 2, "EnterStandby": 3, "DeregisterTargets": 1, "CreateTags": 1, "DescribeTargetHealth": 1} {
		if c.Count(action) != want {
			t.Errorf("drain round: %s %d calls, want %d", action, c.Count(action), want)
		}
	}
	if len(p.Record.Instances) != 60 {
		t.Fatalf("record of %d instances", len(p.Record.Instances))
	}
	env.Sim.Advance(delay)
	if p := drainOK(t, d, drain.Plan{Run: run, Instances: ids, TargetGroups: []string{tg}}); !p.Complete {
		t.Fatalf("not complete after the delay: %+v", p.Instances[0])
	}
	// Targets are registered once the members are InService again (not
	// while in Standby): two rounds.
	for i, calls := range []map[string]int{
		{"ExitStandby": 3, "RegisterTargets": 0, "DeleteTags": 0, "DescribeInstanceStatus": 1},
		{"ExitStandby": 0, "RegisterTargets": 1, "DeleteTags": 1, "DescribeInstanceStatus": 1},
	} {
		env.Sim.ResetCalls()
		restoreOK(t, d, p.Record)
		c = env.Sim.Calls()
		for action, want := range calls {
			if c.Count(action) != want {
				t.Errorf("restore round %d: %s %d calls, want %d", i+1, action, c.Count(action), want)
			}
		}
		env.Sim.Advance(time.Minute)
	}
}

// TestAdoptOlderRun: last night's execution was stopped by hand after its
// drain (no Catch ran). Tonight's Drain of the same instance adopts what
// that run took (the instance is in Standby and deregistered, yet both are
// put back at the end) and re-tags it for tonight; Stranded only reports
// this deployment's runs.
func TestAdoptOlderRun(t *testing.T) {
	f := newFleet(t, 0)
	old := drain.Plan{Run: "prod/nightly/2026-11-23T03:00:00Z", Instances: f.web[:1], TargetGroups: []string{f.tg}}
	drainOK(t, newDrainer(f.env), old)
	other := drain.Plan{Run: "staging/nightly/2026-11-23T03:00:00Z", Instances: f.web[3:4], TargetGroups: []string{f.tg}}
	drainOK(t, newDrainer(f.env), other)
	f.env.Sim.Advance(24 * time.Hour)

	recs, problems, err := f.d.Stranded(context.Background(), "prod/", []string{f.tg})
	if err != nil || len(problems) != 0 || len(recs) != 1 || recs[0].Run != old.Run || len(recs[0].Instances) != 1 || recs[0].Instances[0].InstanceID != f.web[0] {
		t.Fatalf("stranded %+v %v %v", recs, problems, err)
	}
	var rec drain.Record
	until(t, f, 10*time.Second, 5*time.Minute, func() bool {
		p := drainOK(t, f.d, f.plan(f.web[0]))
		rec = p.Record
		return p.Complete
	})
	if len(rec.Instances) != 1 || rec.Instances[0].AutoScalingGroup != "web-asg" || len(rec.Instances[0].Targets) != 1 {
		t.Fatalf("tonight's record %+v: want last night's Standby and target adopted", rec)
	}
	if v, _ := f.tag(t, f.web[0]); !strings.Contains(v, run) {
		t.Fatalf("tag %q not re-tagged for tonight", v)
	}
	until(t, f, 5*time.Second, 10*time.Minute, func() bool { return restoreOK(t, f.d, rec).Complete })
	if f.lifecycle(t, f.web[0]) != "InService" || f.target(t, f.web[0]) != "healthy" {
		t.Fatalf("%s, %s", f.lifecycle(t, f.web[0]), f.target(t, f.web[0]))
	}
	// A restore of last night's record (a late Catch) changes nothing now
	// and leaves the other deployment's instance alone.
	f.env.Sim.ResetCalls()
	restoreOK(t, f.d, recs[0])
	if m := f.env.Sim.Calls().Mutating(); m != 0 {
		t.Fatalf("late restore made %d changes", m)
	}
	if f.target(t, f.web[3]) != "" {
		t.Fatal("staging's drained instance was registered by prod")
	}
}

// TestRestoreGone: an instance terminated after its drain (its group
// replaced it, or someone terminated it) has nothing to put back: Restore
// completes instead of polling for it forever.
func TestRestoreGone(t *testing.T) {
	f := newFleet(t, 0)
	p := drainOK(t, f.d, f.plan(f.web[0], f.web[1]))
	f.env.Sim.Advance(delay)
	if err := f.env.Sim.SetInstanceState("", "", f.web[0], "terminated"); err != nil {
		t.Fatal(err)
	}
	var r drain.Progress
	until(t, f, 5*time.Second, 10*time.Minute, func() bool { r = restoreOK(t, f.d, p.Record); return r.Complete })
	if ip := state(r, f.web[0]); ip.State != drain.StateGone || !strings.Contains(ip.Detail, "terminated") {
		t.Fatalf("terminated instance: %+v", ip)
	}
	// Taken out of Standby all the same: the desired capacity we took is
	// given back (and the group replaces the instance).
	if f.desired(t) != 3 {
		t.Fatalf("desired %d, want 3 (web-asg's size before the drain)", f.desired(t))
	}
	if f.lifecycle(t, f.web[1]) != "InService" || f.target(t, f.web[1]) != "healthy" {
		t.Fatal("the other instance was not restored")
	}
}

// TestRestoreDescribesTargetsWhenUsed: the round that takes a member out of
// Standby does not describe its target groups (its targets are registered
// once it is InService, a later round); the round that registers does.
// Before, every round described every target group of the record.
func TestRestoreDescribesTargetsWhenUsed(t *testing.T) {
	f := newFleet(t, 1)
	id := f.web[0]
	var rec drain.Record
	until(t, f, 10*time.Second, 5*time.Minute, func() bool {
		p := drainOK(t, f.d, f.plan(id))
		rec = p.Record
		return p.Complete
	})
	rounds := []struct {
		name      string
		wantState string
		wantDTH   int
	}{
		{"in Standby: ExitStandby only", "leaving Standby", 0},
		{"Pending: wait", "leaving Standby (Pending)", 0},
		{"InService: register", drain.DetailRegistering, 1},
	}
	for k, r := range rounds {
		f.env.Sim.ResetCalls()
		p := restoreOK(t, f.d, rec)
		ip := state(p, id)
		if n := f.env.Sim.Calls().Count("DescribeTargetHealth"); ip.Detail != r.wantState || n != r.wantDTH {
			t.Fatalf("round %d (%s): %s %q with %d DescribeTargetHealth calls, want %q and %d", k, r.name, ip.State, ip.Detail, n, r.wantState, r.wantDTH)
		}
		if k == 0 {
			f.env.Sim.Advance(time.Second) // still Pending (lifecycle delay)
		} else {
			f.env.Sim.Advance(time.Minute)
		}
	}
}

// TestShareReads: a Drainer that shares its reads describes a target group
// once for its rounds, again only after it changed the group's
// registrations; the zero Drainer describes it in every round.
func TestShareReads(t *testing.T) {
	for _, tc := range []struct {
		name  string
		share bool
		want  []int // DescribeTargetHealth calls after each round
	}{
		{"shared", true, []int{1, 2, 2}}, // round 1 deregisters: round 2 reads again; round 3 changes nothing since
		{"not shared", false, []int{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 1)
			d := newDrainer(f.env)
			if tc.share {
				d.ShareReads()
			}
			for k, want := range tc.want {
				p := drainOK(t, d, f.plan(f.web[3])) // no Auto Scaling group: targets only
				if ip := state(p, f.web[3]); ip.State != drain.StateWaiting || ip.Detail != drain.DetailDraining {
					t.Fatalf("round %d: %+v", k, ip)
				}
				if n := f.env.Sim.Calls().Count("DescribeTargetHealth"); n != want {
					t.Fatalf("round %d: %d DescribeTargetHealth calls, want %d", k, n, want)
				}
			}
		})
	}
}
