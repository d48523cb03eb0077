package rollout_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// newShortFleet is the WavesFleet plus one instance the policy does not
// select (no Backup tag): a 4th member of Auto Scaling group "web" (inASG)
// or, once the test registers it (register), a 4th target of target group
// "web". replaceAfter > 0 turns Auto Scaling's health checks on, a
// replacement launched that long after the termination of the member it
// replaces (ec2sim.Options.ReplacementDelay).
func newShortFleet(t *testing.T, inASG bool, healthyAfter, replaceAfter time.Duration) (*fleet, string) {
	t.Helper()
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen, Start: slot.Add(time.Minute), GroupTags: []string{"Service"},
		HealthCheckInterval: 30 * time.Second, HealthChecks: replaceAfter > 0, ReplacementDelay: replaceAfter})
	sim := env.Sim
	sel := map[string]string{"Backup": "yes"}
	w := simtest.WavesFleet{
		Web:        sim.SeedFleet("", "", 3, sel),
		DB:         sim.SeedFleet("", "", 2, map[string]string{"Backup": "yes", "Service": "db"}),
		Standalone: sim.SeedFleet("", "", 2, sel),
	}
	extra := sim.SeedFleet("", "", 1, map[string]string{"Name": "not selected"})[0]
	members := w.Web
	if inASG {
		members = append(slices.Clone(w.Web), extra)
	}
	sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: members, MinSize: 1, Tags: sel})
	w.TargetGroup = sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: w.Web, DeregistrationDelay: 60 * time.Second, HealthyAfter: healthyAfter})
	sim.ResetCalls()
	c, err := config.Parse([]byte(cfgJSON), "")
	if err != nil {
		t.Fatal(err)
	}
	return &fleet{env: env, WavesFleet: w, cfg: c}, extra
}

// TestRolloutForeignShort (issue 13): a group already short for a reason
// that is not the run's (a member of its Auto Scaling group in
// Pending:Wait, a target of its target group not healthy, neither planned;
// the Auto Scaling group below its desired capacity, a terminated member's
// replacement not launched yet, every member listed InService and
// Healthy) gets no member started while it is short: the run counted only
// its own members in flight, drained one at once and took the group to
// two members down. Once whole the group proceeds; still short
// healthTimeout (10m) after its member was due, it halts with the reason.
// The other groups are not held.
func TestRolloutForeignShort(t *testing.T) {
	cases := []struct {
		name    string
		inASG   bool
		healthy time.Duration // target group web's HealthyAfter
		replace time.Duration // Auto Scaling health checks on, replacements launched this late (0: off)
		// setup makes the group short before the run; release (if any)
		// makes it whole again wholeAt (default 3m) after the slot.
		setup   func(t *testing.T, f *fleet, extra string)
		release func(t *testing.T, f *fleet, extra string)
		wholeAt time.Duration
		kind    string // the availability record of the short group
		reason  string // in the halt, when it stays short
	}{
		{"Auto Scaling member Pending:Wait, then InService", true, 30 * time.Second, 0,
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "Pending:Wait") },
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "InService") }, 0, "autoscaling:web", ""},
		{"Auto Scaling member stays Pending:Wait", true, 30 * time.Second, 0,
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "Pending:Wait") }, nil, 0,
			"autoscaling:web", "Auto Scaling group web: " + "%s Pending:Wait"},
		{"foreign target initial, then healthy", false, 2 * time.Minute, 0,
			register, // just now: initial for HealthyAfter (2m), to 03:03
			func(*testing.T, *fleet, string) {}, 0, "targetgroup:web", ""},
		{"foreign target unhealthy", false, 30 * time.Second, 0,
			func(t *testing.T, f *fleet, extra string) {
				// Rebooted by someone (an image with reboot) and never up again.
				register(t, f, extra)
				f.env.Sim.NeverBoots(extra)
				if _, err := f.env.Client("", "").CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(extra), Name: aws.String("someone else's")}); err != nil {
					t.Fatal(err)
				}
				f.env.Sim.Advance(time.Minute)
			}, nil, 0, "targetgroup:web", "target group web: %s unused/Target.InvalidState"},
		{"Auto Scaling replacement not launched yet, then Pending, then InService", true, 30 * time.Second, 3 * time.Minute,
			// Terminated by someone; the health check at 03:01:30 replaces
			// it (Terminating, gone at 03:02), the replacement is launched
			// at 03:04:30, Pending until 03:07: from 03:02 to 03:04:30 the
			// group lists 3 of desired 4, all InService and Healthy.
			func(t *testing.T, f *fleet, extra string) {
				terminate(t, f, extra)
				if ms, _ := f.env.Sim.AutoScalingMembers("", "", "web"); len(ms) != 3 {
					t.Fatalf("members %v: want the 3 planned, %s gone, its replacement not listed yet", ms, extra)
				}
			},
			func(*testing.T, *fleet, string) {}, 7 * time.Minute, "autoscaling:web", ""},
		{"Auto Scaling replacement never launched", true, 30 * time.Second, time.Hour, terminate, nil, 0, "autoscaling:web", "Auto Scaling group web: actual capacity 3 of desired 4"},
		// Groups not keyed by the Auto Scaling group their members sit in:
		// the group is checked all the same (waves.Group.ASGs).
		{"grouped by tag only, Auto Scaling member Pending:Wait, then InService", true, 30 * time.Second, 0,
			func(t *testing.T, f *fleet, extra string) {
				groupBy(t, f, `"tag:Service"`)
				if _, err := f.env.Client("", "").CreateTags(context.Background(), &ec2.CreateTagsInput{Resources: f.Web,
					Tags: []ec2types.Tag{{Key: aws.String("Service"), Value: aws.String("web")}}}); err != nil {
					t.Fatal(err)
				}
				lifecycle(t, f, extra, "Pending:Wait")
			},
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "InService") }, 0, "autoscaling:web", ""},
		{"grouped by target group only, Auto Scaling replacement never launched", true, 30 * time.Second, time.Hour,
			func(t *testing.T, f *fleet, extra string) {
				groupBy(t, f, `"targetGroup"`)
				terminate(t, f, extra)
			}, nil, 0, "autoscaling:web", "Auto Scaling group web: actual capacity 3 of desired 4"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, extra := newShortFleet(t, tc.inASG, tc.healthy, tc.replace)
			if tc.wholeAt == 0 {
				tc.wholeAt = 3 * time.Minute
			}
			tc.setup(t, f, extra)
			released, reported := false, map[string]bool{}
			f.each = func(step int) {
				per := f.imagesPer()
				for _, id := range f.Web {
					if !released && per[id] != 0 && !reported[id] {
						reported[id] = true
						t.Errorf("step %d: %s imaged (drained and rebooted) while its group was short", step, id)
					}
				}
				if tc.release != nil && !released && f.env.Sim.Now().Sub(slot) >= tc.wholeAt {
					tc.release(t, f, extra)
					released = true
				}
			}
			sum, err, _ := f.execute(t, 0)
			if mu := simtest.MaxUnavailable(t, f.env.Sim, extra); mu[tc.kind] > 1 || mu["autoscaling:web"] > 1 || mu["targetgroup:web"] > 1 {
				t.Errorf("max unavailable %v: more than maxUnavailable (1) members of web down at once", mu)
			}
			per := f.imagesPer()
			for _, id := range append(slices.Clone(f.DB), f.Standalone...) {
				if per[id] != 1 {
					t.Errorf("%s (other group): %d images", id, per[id])
				}
			}
			if tc.release != nil {
				if err != nil {
					t.Fatalf("finish: %v", err)
				}
				for _, id := range f.Web {
					if per[id] != 1 {
						t.Errorf("%s: %d images after its group was whole again", id, per[id])
					}
				}
				return
			}
			reason := strings.ReplaceAll(tc.reason, "%s", extra)
			if err == nil || !strings.Contains(err.Error(), "halted at "+f.Web[0]) || !strings.Contains(err.Error(), "group short ") || !strings.Contains(err.Error(), reason) {
				t.Fatalf("finish: %v, want web halted at %s, short (%s)", err, f.Web[0], reason)
			}
			for _, id := range f.Web {
				if per[id] != 0 {
					t.Errorf("%s: rebooted in a short group", id)
				}
			}
			if c := sum.Counts; c.Halted != 1 || c.Skipped != 2 || c.Healthy != 4 || len(sum.Halts) != 1 {
				t.Errorf("counts %+v halts %+v", c, sum.Halts)
			}
		})
	}
}

func lifecycle(t *testing.T, f *fleet, id, state string) {
	t.Helper()
	if err := f.env.Sim.SetAutoScalingLifecycle("", "", id, state); err != nil {
		t.Fatal(err)
	}
}

func register(t *testing.T, f *fleet, id string) {
	t.Helper()
	if _, err := f.env.ELBv2("", "").RegisterTargets(context.Background(), &elbv2.RegisterTargetsInput{TargetGroupArn: aws.String(f.TargetGroup),
		Targets: []elbtypes.TargetDescription{{Id: aws.String(id)}}}); err != nil {
		t.Fatal(err)
	}
}

// groupBy replaces the policy's availability.groupBy (a JSON list's items).
func groupBy(t *testing.T, f *fleet, items string) {
	t.Helper()
	c, err := config.Parse([]byte(strings.Replace(cfgJSON, `"groupBy":["asg","targetGroup","tag:Service"]`, `"groupBy":[`+items+`]`, 1)), "")
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = c
}

// terminate: someone terminates id; a minute later its Auto Scaling group's
// health check (every 30 s) has replaced it and it is gone (shutting down
// takes 30 s); the replacement is launched ReplacementDelay after the check.
func terminate(t *testing.T, f *fleet, id string) {
	t.Helper()
	if _, err := f.env.Client("", "").TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	f.env.Sim.Advance(time.Minute)
}

// TestRolloutShortHeadDoesNotBlock: 21 Auto Scaling groups of two members,
// each short (a third, unselected member in Pending:Wait), come first in
// plan order (larger), a whole group of one member last. The drain
// bucket's 20 tokens of the first step go to short groups, which the
// whole-group check keeps back; their tokens pass to the next ready
// members, so the whole group's member starts in the first step instead of
// waiting for every short group's healthTimeout.
func TestRolloutShortHeadDoesNotBlock(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen, Start: slot.Add(time.Minute)})
	sim := env.Sim
	sel := map[string]string{"Backup": "yes"}
	f := &fleet{env: env}
	for g := range 21 {
		ids := sim.SeedFleet("", "", 2, sel)
		foreign := sim.SeedFleet("", "", 1, map[string]string{"Name": "not selected"})[0]
		sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: fmt.Sprintf("short-%02d", g), Instances: append(ids, foreign), MinSize: 1})
		lifecycle(t, f, foreign, "Pending:Wait")
	}
	whole := sim.SeedFleet("", "", 1, sel)[0]
	sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "whole", Instances: []string{whole}, MinSize: 0})
	sim.ResetCalls()
	c, err := config.Parse([]byte(cfgJSON), "")
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = c
	r := f.start(t)
	// Past the whole group's spread start (heldBack: half its slack, 150 s).
	sim.Advance(time.Duration(r.WaitSeconds)*time.Second + 150*time.Second)
	if _, err := f.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
		t.Fatalf("step: %v", err)
	}
	out, err := env.AutoScaling("", "").DescribeAutoScalingInstances(context.Background(), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{whole}})
	if err != nil || len(out.AutoScalingInstances) != 1 {
		t.Fatalf("describe %s: %v %v", whole, out, err)
	}
	if lc := aws.ToString(out.AutoScalingInstances[0].LifecycleState); !strings.Contains(lc, "Standby") {
		t.Errorf("the whole group's member is %s after the first step, want on its way to Standby (started)", lc)
	}
	if n := sim.Calls().Count("EnterStandby"); n != 1 {
		t.Errorf("%d EnterStandby calls, want 1 (no member of a short group started)", n)
	}
}
