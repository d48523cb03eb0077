package rollout_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// newShortFleet is the WavesFleet plus one instance the policy does not
// select (no Backup tag): a 4th member of Auto Scaling group "web" (inASG)
// or, once the test registers it (register), a 4th target of target group "web".
func newShortFleet(t *testing.T, inASG bool, healthyAfter time.Duration) (*fleet, string) {
	t.Helper()
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen, Start: slot.Add(time.Minute), GroupTags: []string{"Service"},
		HealthCheckInterval: 30 * time.Second})
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
// Pending:Wait, a target of its target group not healthy, neither planned)
// gets no member started while it is short: the run counted only its own
// members in flight, drained one at once and took the group to two
// members down. Once whole the group proceeds; still short healthTimeout
// (10m) after its member was due, it halts with the reason. The other
// groups are not held.
func TestRolloutForeignShort(t *testing.T) {
	cases := []struct {
		name    string
		inASG   bool
		healthy time.Duration // target group web's HealthyAfter
		// setup makes the group short before the run; release (if any)
		// makes it whole again after the given step.
		setup   func(t *testing.T, f *fleet, extra string)
		release func(t *testing.T, f *fleet, extra string)
		kind    string // the availability record of the short group
		reason  string // in the halt, when it stays short
	}{
		{"Auto Scaling member Pending:Wait, then InService", true, 30 * time.Second,
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "Pending:Wait") },
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "InService") }, "autoscaling:web", ""},
		{"Auto Scaling member stays Pending:Wait", true, 30 * time.Second,
			func(t *testing.T, f *fleet, extra string) { lifecycle(t, f, extra, "Pending:Wait") }, nil,
			"autoscaling:web", "Auto Scaling group web: " + "%s Pending:Wait"},
		{"foreign target initial, then healthy", false, 2 * time.Minute,
			register, // just now: initial for HealthyAfter (2m), to 03:03
			func(*testing.T, *fleet, string) {}, "targetgroup:web", ""},
		{"foreign target unhealthy", false, 30 * time.Second,
			func(t *testing.T, f *fleet, extra string) {
				// Rebooted by someone (an image with reboot) and never up again.
				register(t, f, extra)
				f.env.Sim.NeverBoots(extra)
				if _, err := f.env.Client("", "").CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(extra), Name: aws.String("someone else's")}); err != nil {
					t.Fatal(err)
				}
				f.env.Sim.Advance(time.Minute)
			}, nil, "targetgroup:web", "target group web: %s unused/Target.InvalidState"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, extra := newShortFleet(t, tc.inASG, tc.healthy)
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
				if tc.release != nil && !released && f.env.Sim.Now().Sub(slot) >= 3*time.Minute {
					tc.release(t, f, extra)
					released = true
				}
			}
			sum, err, _ := f.execute(t, 0)
			if mu := simtest.MaxUnavailable(t, f.env.Sim); mu[tc.kind] > 1 || mu["autoscaling:web"] > 1 || mu["targetgroup:web"] > 1 {
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
