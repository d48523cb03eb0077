package ec2sim_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

func targets(ids ...string) []elbtypes.TargetDescription {
	out := make([]elbtypes.TargetDescription, len(ids))
	for i, id := range ids {
		out[i] = elbtypes.TargetDescription{Id: aws.String(id)}
	}
	return out
}

// health returns id -> "state/reason" for the listed targets (none: all
// registered or draining ones).
func health(t *testing.T, c *elasticloadbalancingv2.Client, arn string, ids ...string) map[string]string {
	t.Helper()
	in := &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)}
	if len(ids) > 0 {
		in.Targets = targets(ids...)
	}
	out, err := c.DescribeTargetHealth(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range out.TargetHealthDescriptions {
		got[aws.ToString(d.Target.Id)] = string(d.TargetHealth.State) + "/" + string(d.TargetHealth.Reason)
		if aws.ToInt32(d.Target.Port) != 8080 || aws.ToString(d.HealthCheckPort) != "8080" {
			t.Fatalf("port %d, health check port %q", aws.ToInt32(d.Target.Port), aws.ToString(d.HealthCheckPort))
		}
	}
	return got
}

// TestTargetDrainingAndRegistration: a deregistered target drains for the
// deregistration delay, then is gone (unused, not listed); registered
// again it is initial until it has passed health checks for HealthyAfter.
func TestTargetDrainingAndRegistration(t *testing.T) {
	env, _ := rebootEnv(t, ec2sim.Options{})
	ctx := context.Background()
	elb := env.ELBv2("", "")
	ids := env.Sim.SeedFleet("", "", 2, nil)
	arn := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Port: 8080, Instances: ids,
		DeregistrationDelay: 300 * time.Second, HealthyAfter: 50 * time.Second})
	if !strings.HasPrefix(arn, "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/") {
		t.Fatalf("ARN %s", arn)
	}
	if got := health(t, elb, arn); got[ids[0]] != "healthy/" || got[ids[1]] != "healthy/" {
		t.Fatalf("seeded: %v", got)
	}
	if _, err := elb.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(ids[0])}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance time.Duration
		all     map[string]string // DescribeTargetHealth without targets
		byID    string            // ids[0] asked for by ID
	}{
		{0, map[string]string{ids[0]: "draining/Target.DeregistrationInProgress", ids[1]: "healthy/"}, "draining/Target.DeregistrationInProgress"},
		{299 * time.Second, map[string]string{ids[0]: "draining/Target.DeregistrationInProgress", ids[1]: "healthy/"}, "draining/Target.DeregistrationInProgress"},
		{time.Second, map[string]string{ids[1]: "healthy/"}, "unused/Target.NotRegistered"},
	}
	for _, s := range steps {
		env.Sim.Advance(s.advance)
		got := health(t, elb, arn)
		if len(got) != len(s.all) {
			t.Fatalf("+%v: %v, want %v", s.advance, got, s.all)
		}
		for k, v := range s.all {
			if got[k] != v {
				t.Fatalf("+%v: %v, want %v", s.advance, got, s.all)
			}
		}
		if got := health(t, elb, arn, ids[0])[ids[0]]; got != s.byID {
			t.Fatalf("+%v by ID: %s, want %s", s.advance, got, s.byID)
		}
	}
	// Deregistering a target that is not registered succeeds and changes nothing.
	if _, err := elb.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(ids[0])}); err != nil {
		t.Fatal(err)
	}
	if _, err := elb.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(ids[0])}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		advance time.Duration
		want    string
	}{{0, "initial/Elb.RegistrationInProgress"}, {49 * time.Second, "initial/Elb.RegistrationInProgress"}, {time.Second, "healthy/"}} {
		env.Sim.Advance(s.advance)
		if got := health(t, elb, arn, ids[0])[ids[0]]; got != s.want {
			t.Fatalf("+%v after RegisterTargets: %s, want %s", s.advance, got, s.want)
		}
	}
	// Draining then registered again: health checks start over.
	elb.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(ids[1])})
	env.Sim.Advance(10 * time.Second)
	if _, err := elb.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(ids[1])}); err != nil {
		t.Fatal(err)
	}
	if got := health(t, elb, arn, ids[1])[ids[1]]; got != "initial/Elb.RegistrationInProgress" {
		t.Fatalf("re-registered while draining: %s", got)
	}
	// One member unavailable at a time, ids[1] included: max 1.
	if got := env.Sim.Calls().MaxUnavailable[ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTarget, "web")]; got != 1 {
		t.Fatalf("max unavailable %d", got)
	}
}

// TestTargetHealthAcrossReboot: a target whose instance reboots while
// registered (not drained first) is unused (Target.InvalidState) while the
// instance is not running, unhealthy until it has passed checks for
// HealthyAfter after its status is ok, then healthy.
func TestTargetHealthAcrossReboot(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true})
	elb := env.ELBv2("", "")
	id := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	arn := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Port: 8080, Instances: []string{id}, HealthyAfter: 30 * time.Second})
	reboot(t, c, id, "img-1")
	at := time.Duration(0)
	for _, s := range []struct {
		at   time.Duration
		want string
	}{
		{0, "unused/Target.InvalidState"},
		{59 * time.Second, "unused/Target.InvalidState"},
		{60 * time.Second, "unhealthy/Target.FailedHealthChecks"},
		{149 * time.Second, "unhealthy/Target.FailedHealthChecks"},
		{150 * time.Second, "healthy/"},
	} {
		env.Sim.Advance(s.at - at)
		at = s.at
		if got := health(t, elb, arn)[id]; got != s.want {
			t.Fatalf("+%v: %s, want %s", s.at, got, s.want)
		}
	}
}

// TestTargetErrors: ELBv2's error codes for unknown target groups, unknown
// instances and instances that are not running; nothing changes.
func TestTargetErrors(t *testing.T) {
	env, _ := rebootEnv(t, ec2sim.Options{})
	ctx := context.Background()
	elb := env.ELBv2("", "")
	up := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	down := env.Sim.AddInstance(ec2sim.InstanceSpec{State: "stopped"})
	arn := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Port: 8080, Instances: []string{up}})
	missing := ec2sim.TargetGroupARN(ec2sim.DefaultAccount, ec2sim.DefaultRegion, "nope")
	foreign := env.ELBv2("222222222222", "")
	cases := []struct {
		name, code, msg string
		call            func() error
	}{
		{"describe unknown group", "TargetGroupNotFound", "", func() error {
			_, err := elb.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(missing)})
			return err
		}},
		{"another account's group", "TargetGroupNotFound", "", func() error {
			_, err := foreign.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
			return err
		}},
		{"describe unknown instance", "InvalidTarget", "i-0123456789abcdef0", func() error {
			_, err := elb.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn), Targets: targets("i-0123456789abcdef0")})
			return err
		}},
		{"register unknown group", "TargetGroupNotFound", "", func() error {
			_, err := elb.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(missing), Targets: targets(up)})
			return err
		}},
		{"register unknown instance", "InvalidTarget", "does not exist", func() error {
			_, err := elb.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(down, "i-0123456789abcdef0")})
			return err
		}},
		{"register stopped instance", "InvalidTarget", "not in a running state", func() error {
			_, err := elb.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: targets(down)})
			return err
		}},
		{"deregister unknown group", "TargetGroupNotFound", "", func() error {
			_, err := elb.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: aws.String(missing), Targets: targets(up)})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %s with %q", err, tc.code, tc.msg)
			}
		})
	}
	if got := health(t, elb, arn); len(got) != 1 || got[up] != "healthy/" {
		t.Fatalf("after refused calls: %v", got)
	}
}

// TestDescribeTargetGroups: every group of the account and Region, by ARN,
// in pages with NextMarker; by name or ARN; unknown ones fail.
func TestDescribeTargetGroups(t *testing.T) {
	env, _ := rebootEnv(t, ec2sim.Options{})
	ctx := context.Background()
	elb := env.ELBv2("", "")
	ids := env.Sim.SeedFleet("", "", 1, nil)
	var arns []string
	for _, n := range []string{"c", "a", "b"} {
		arns = append(arns, env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: n, Instances: ids}))
	}
	env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "other", Account: "210987654321"})
	var got []string
	in := &elasticloadbalancingv2.DescribeTargetGroupsInput{PageSize: aws.Int32(2)}
	pages := 0
	for p := elasticloadbalancingv2.NewDescribeTargetGroupsPaginator(elb, in); p.HasMorePages(); pages++ {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range out.TargetGroups {
			got = append(got, aws.ToString(tg.TargetGroupArn))
		}
	}
	if pages != 2 || len(got) != 3 {
		t.Fatalf("%d pages, groups %v", pages, got)
	}
	out, err := elb.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{Names: []string{"a"}})
	if err != nil || len(out.TargetGroups) != 1 || aws.ToString(out.TargetGroups[0].TargetGroupArn) != arns[1] {
		t.Fatalf("by name: %v %+v", err, out)
	}
	if _, err := elb.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{Names: []string{"other"}}); err == nil || !strings.Contains(err.Error(), "TargetGroupNotFound") {
		t.Fatalf("another account's group: %v", err)
	}
}

// TestTargetGroupTimings: DescribeTargetGroups reports the health check
// (interval x threshold = HealthyAfter) and DescribeTargetGroupAttributes
// the deregistration delay, the two timings a drain waits for.
func TestTargetGroupTimings(t *testing.T) {
	env, _ := rebootEnv(t, ec2sim.Options{})
	ctx := context.Background()
	elb := env.ELBv2("", "")
	for _, tc := range []struct {
		name                 string
		delay, healthy       time.Duration
		wantDelay, wantIntvl string
	}{
		{"defaults", 0, 0, "300", "30"},
		{"tuned", 120 * time.Second, 50 * time.Second, "120", "10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arn := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: tc.name, DeregistrationDelay: tc.delay, HealthyAfter: tc.healthy})
			out, err := elb.DescribeTargetGroups(ctx, &elasticloadbalancingv2.DescribeTargetGroupsInput{TargetGroupArns: []string{arn}})
			if err != nil || len(out.TargetGroups) != 1 {
				t.Fatalf("%v %+v", err, out)
			}
			tg := out.TargetGroups[0]
			if got := fmt.Sprint(aws.ToInt32(tg.HealthCheckIntervalSeconds)); got != tc.wantIntvl || aws.ToInt32(tg.HealthyThresholdCount) != 5 {
				t.Errorf("interval %s threshold %d, want %s and 5", got, aws.ToInt32(tg.HealthyThresholdCount), tc.wantIntvl)
			}
			attrs, err := elb.DescribeTargetGroupAttributes(ctx, &elasticloadbalancingv2.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(arn)})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, a := range attrs.Attributes {
				got[aws.ToString(a.Key)] = aws.ToString(a.Value)
			}
			if got["deregistration_delay.timeout_seconds"] != tc.wantDelay {
				t.Errorf("attributes %v, want deregistration_delay.timeout_seconds=%s", got, tc.wantDelay)
			}
		})
	}
	if _, err := elb.DescribeTargetGroupAttributes(ctx, &elasticloadbalancingv2.DescribeTargetGroupAttributesInput{TargetGroupArn: aws.String(ec2sim.TargetGroupARN("", "", "nope"))}); err == nil || !strings.Contains(err.Error(), "TargetGroupNotFound") {
		t.Fatalf("unknown group: %v", err)
	}
}
