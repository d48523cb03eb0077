package drain_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestShort: a group is short when a member other than ours is not
// InService and Healthy, or a target other than ours is initial,
// unhealthy, draining, or unused because its instance is down; ours are
// not counted, an unknown Auto Scaling group is absent; a target no
// longer registered is not a member down.
func TestShort(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, f *fleet)
		ours  func(f *fleet) []string
		want  func(f *fleet) map[string]string // key -> substring of the reason
	}{
		{"whole", nil, nil, func(*fleet) map[string]string { return nil }},
		{"Pending:Wait member", func(t *testing.T, f *fleet) { setLC(t, f, f.web[1], "Pending:Wait") }, nil,
			func(f *fleet) map[string]string { return map[string]string{"asg:web-asg": f.web[1] + " Pending:Wait/"} }},
		{"Terminating member", func(t *testing.T, f *fleet) { setLC(t, f, f.web[2], "Terminating") }, nil,
			func(f *fleet) map[string]string { return map[string]string{"asg:web-asg": f.web[2] + " Terminating/"} }},
		{"ours not counted", func(t *testing.T, f *fleet) { setLC(t, f, f.web[1], "Standby") }, func(f *fleet) []string { return f.web[1:2] },
			func(*fleet) map[string]string { return nil }},
		{"operator's Standby: asg and its target draining", func(t *testing.T, f *fleet) {
			if _, err := f.env.AutoScaling("", "").EnterStandby(context.Background(), &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web-asg"),
				InstanceIds: f.web[:1], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
				t.Fatal(err)
			}
			deregister(t, f, f.web[0])
			f.env.Sim.Advance(10 * time.Second)
		}, nil, func(f *fleet) map[string]string {
			return map[string]string{"asg:web-asg": f.web[0] + " Standby/", "tg:" + f.tg: f.web[0] + " draining"}
		}},
		{"deregistered long ago: not a member", func(t *testing.T, f *fleet) {
			deregister(t, f, f.web[3])
			f.env.Sim.Advance(2 * delay)
		}, nil, func(*fleet) map[string]string { return nil }},
		{"target rebooting (instance down)", func(t *testing.T, f *fleet) {
			f.env.Sim.NeverBoots(f.web[3])
			f.reboot(t, f.web[3])
			f.env.Sim.Advance(25 * time.Second)
		}, nil, func(f *fleet) map[string]string { return map[string]string{"tg:" + f.tg: f.web[3] + " "} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleet(t, 1)
			if tc.setup != nil {
				tc.setup(t, f)
			}
			ours := map[string]bool{}
			if tc.ours != nil {
				for _, id := range tc.ours(f) {
					ours[id] = true
				}
			}
			f.env.Sim.ResetCalls()
			got, err := f.d.Short(context.Background(), []string{"web-asg", "gone-asg", "web-asg"}, []string{f.tg}, ours)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want(f)
			if len(got) != len(want) {
				t.Fatalf("short %v, want %v", got, want)
			}
			for k, w := range want {
				if !strings.Contains(got[k], w) {
					t.Errorf("%s: %q, want %q in it", k, got[k], w)
				}
			}
			if n := f.env.Sim.Calls().Count("DescribeAutoScalingGroups"); n != 1 {
				t.Errorf("DescribeAutoScalingGroups called %d times, want 1", n)
			}
		})
	}
}

// TestShortBatches: 120 Auto Scaling groups asked take 3 calls (50 names
// each), every short one is found.
func TestShortBatches(t *testing.T) {
	f := newFleet(t, 1)
	var names []string
	for i := range 120 {
		id := f.env.Sim.AddInstance(ec2sim.InstanceSpec{})
		name := fmt.Sprintf("g-%03d", i)
		f.env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: name, Instances: []string{id}})
		if i%7 == 0 {
			setLC(t, f, id, "Pending")
		}
		names = append(names, name)
	}
	f.env.Sim.ResetCalls()
	got, err := f.d.Short(context.Background(), names, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 18 || got["asg:g-007"] == "" || got["asg:g-119"] == "" {
		t.Errorf("short %d groups: %v", len(got), got)
	}
	if n := f.env.Sim.Calls().Count("DescribeAutoScalingGroups"); n != 3 {
		t.Errorf("DescribeAutoScalingGroups called %d times, want 3", n)
	}
}

func setLC(t *testing.T, f *fleet, id, state string) {
	t.Helper()
	if err := f.env.Sim.SetAutoScalingLifecycle("", "", id, state); err != nil {
		t.Fatal(err)
	}
}

func deregister(t *testing.T, f *fleet, id string) {
	t.Helper()
	if _, err := f.env.ELBv2("", "").DeregisterTargets(context.Background(), &elbv2.DeregisterTargetsInput{TargetGroupArn: aws.String(f.tg),
		Targets: []elbtypes.TargetDescription{{Id: aws.String(id)}}}); err != nil {
		t.Fatal(err)
	}
}
