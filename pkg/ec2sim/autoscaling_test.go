package ec2sim_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

func lifecycle(t *testing.T, c *autoscaling.Client, id string) string {
	t.Helper()
	out, err := c.DescribeAutoScalingInstances(context.Background(), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AutoScalingInstances) != 1 {
		t.Fatalf("%s: %d Auto Scaling instances", id, len(out.AutoScalingInstances))
	}
	return aws.ToString(out.AutoScalingInstances[0].LifecycleState)
}

// TestStandby: EnterStandby and ExitStandby move members through
// EnteringStandby -> Standby and Pending -> InService over simulated time,
// adjust the desired capacity, answer Activities, and refuse members in
// the wrong state or group with ValidationError.
func TestStandby(t *testing.T) {
	env, _ := rebootEnv(t, ec2sim.Options{LifecycleDelay: 10 * time.Second})
	ctx := context.Background()
	as := env.AutoScaling("", "")
	ids := env.Sim.SeedFleet("", "", 3, nil)
	stranger := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: ids, MinSize: 1})

	out, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Activities) != 1 || aws.ToString(out.Activities[0].Description) != "Moving EC2 instance to Standby: "+ids[0] ||
		!strings.Contains(aws.ToString(out.Activities[0].Cause), "from 3 to 2") || aws.ToString(out.Activities[0].AutoScalingGroupName) != "web" ||
		out.Activities[0].StartTime == nil || aws.ToString(out.Activities[0].ActivityId) == "" {
		t.Fatalf("activities %+v", out.Activities)
	}
	if d, _ := env.Sim.AutoScalingGroupCapacity("", "", "web"); d != 2 {
		t.Fatalf("desired %d after EnterStandby, want 2", d)
	}
	steps := []struct {
		advance time.Duration
		want    string
	}{{0, "EnteringStandby"}, {9 * time.Second, "EnteringStandby"}, {time.Second, "Standby"}}
	for _, s := range steps {
		env.Sim.Advance(s.advance)
		if got := lifecycle(t, as, ids[0]); got != s.want {
			t.Fatalf("after +%v: %s, want %s", s.advance, got, s.want)
		}
	}

	errs := []struct {
		name string
		call func() error
		msg  string
	}{
		{"unknown group", func() error {
			_, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("nope"), InstanceIds: ids[1:2], ShouldDecrementDesiredCapacity: aws.Bool(true)})
			return err
		}, "not found"},
		{"not a member", func() error {
			_, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: []string{stranger}, ShouldDecrementDesiredCapacity: aws.Bool(true)})
			return err
		}, "is not part of Auto Scaling group web"},
		{"already in standby", func() error {
			_, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(true)})
			return err
		}, "is not in InService"},
		{"below min size", func() error {
			_, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[1:], ShouldDecrementDesiredCapacity: aws.Bool(true)})
			return err
		}, "min-size=1"},
		{"exit an InService member", func() error {
			_, err := as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[1:2]})
			return err
		}, "is not in Standby"},
	}
	for _, e := range errs {
		t.Run(e.name, func(t *testing.T) {
			err := e.call()
			if code(err) != "ValidationError" || !strings.Contains(err.Error(), e.msg) {
				t.Fatalf("got %v, want ValidationError with %q", err, e.msg)
			}
		})
	}
	if lifecycle(t, as, ids[1]) != "InService" || lifecycle(t, as, ids[2]) != "InService" {
		t.Fatal("a refused EnterStandby changed a member")
	}

	exit, err := as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[:1]})
	if err != nil {
		t.Fatal(err)
	}
	if len(exit.Activities) != 1 || aws.ToString(exit.Activities[0].Description) != "Moving EC2 instance out of Standby: "+ids[0] {
		t.Fatalf("exit activities %+v", exit.Activities)
	}
	if got := lifecycle(t, as, ids[0]); got != "Pending" {
		t.Fatalf("after ExitStandby: %s", got)
	}
	env.Sim.Advance(10 * time.Second)
	if got := lifecycle(t, as, ids[0]); got != "InService" {
		t.Fatalf("10s after ExitStandby: %s", got)
	}
	if d, _ := env.Sim.AutoScalingGroupCapacity("", "", "web"); d != 3 {
		t.Fatalf("desired %d after ExitStandby, want 3", d)
	}
	// Standby counts as unavailable: one member at a time here.
	key := ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupAutoScaling, "web")
	if got := env.Sim.Calls().MaxUnavailable[key]; got != 1 {
		t.Fatalf("max unavailable %d, want 1", got)
	}
	// AWS tags group members.
	in, _ := env.Sim.Instance("", "", ids[0])
	if in.Tags["aws:autoscaling:groupName"] != "web" {
		t.Fatalf("tags %v", in.Tags)
	}
}

// TestDescribeAutoScalingInstances: members of the caller's groups only,
// unknown IDs left out, MaxRecords pages through the SDK's paginator, and
// an EC2-unhealthy InService member (stopped by a reboot) is UNHEALTHY.
func TestDescribeAutoScalingInstances(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true})
	ctx := context.Background()
	as := env.AutoScaling("", "")
	ids := env.Sim.SeedFleet("", "", 3, nil)
	loner := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "a", Instances: ids[:2]})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "b", Instances: ids[2:]})
	other := env.Sim.SeedFleet("222222222222", "", 1, nil)
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Account: "222222222222", Name: "a", Instances: other})

	var seen []string
	p := autoscaling.NewDescribeAutoScalingInstancesPaginator(as, &autoscaling.DescribeAutoScalingInstancesInput{MaxRecords: aws.Int32(2)})
	pages := 0
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, i := range out.AutoScalingInstances {
			seen = append(seen, aws.ToString(i.AutoScalingGroupName)+"/"+aws.ToString(i.InstanceId))
		}
	}
	if want := []string{"a/" + ids[0], "a/" + ids[1], "b/" + ids[2]}; pages != 2 || strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("%d pages: %v, want %v", pages, seen, want)
	}
	out, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{loner, ids[2], "i-0123456789abcdef0"}})
	if err != nil || len(out.AutoScalingInstances) != 1 || aws.ToString(out.AutoScalingInstances[0].InstanceId) != ids[2] {
		t.Fatalf("by IDs: %+v, %v", out, err)
	}
	if _, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{MaxRecords: aws.Int32(51)}); code(err) != "ValidationError" {
		t.Fatalf("MaxRecords 51: %v", err)
	}
	if _, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{NextToken: aws.String("zz")}); code(err) != "InvalidNextToken" {
		t.Fatalf("bad token: %v", err)
	}
	health := func() string {
		out, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: ids[:1]})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.AutoScalingInstances[0].HealthStatus)
	}
	if h := health(); h != "HEALTHY" {
		t.Fatalf("before reboot %s", h)
	}
	// Rebooting an InService member: Auto Scaling sees it stopped. AWS
	// would replace it; the emulator reports it.
	reboot(t, c, ids[0], "img-0")
	env.Sim.Advance(25 * time.Second)
	if h := health(); h != "UNHEALTHY" {
		t.Fatalf("stopped InService member %s", h)
	}
	env.Sim.Advance(time.Hour)
	if h := health(); h != "HEALTHY" {
		t.Fatalf("back up: %s", h)
	}
	// The availability record keeps it after it is back; group b, never
	// rebooted, has none.
	if g, _ := env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "a"); len(g.Unhealthy) != 1 || g.Unhealthy[0] != ids[0] {
		t.Fatalf("group a: %+v", g)
	}
	if g, _ := env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "b"); len(g.Unhealthy) != 0 {
		t.Fatalf("group b: %+v", g)
	}
}

// TestStandbyBeforeRebootIsNotUnhealthy: a member put in Standby before its
// reboot is never UNHEALTHY while InService, and returns InService only
// after ExitStandby.
func TestStandbyBeforeRebootIsNotUnhealthy(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true})
	ctx := context.Background()
	as := env.AutoScaling("", "")
	ids := env.Sim.SeedFleet("", "", 2, nil)
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: ids})
	if _, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	env.Sim.Advance(10 * time.Second)
	reboot(t, c, ids[0], "img-0")
	env.Sim.Advance(5 * time.Minute)
	if _, err := as.ExitStandby(ctx, &autoscaling.ExitStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[:1]}); err != nil {
		t.Fatal(err)
	}
	env.Sim.Advance(time.Minute)
	g, _ := env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupAutoScaling, "web")
	if len(g.Unhealthy) != 0 || g.MaxUnavailable != 1 || g.Unavailable != 0 {
		t.Fatalf("record %+v", g)
	}
	if got := lifecycle(t, as, ids[0]); got != "InService" {
		t.Fatalf("lifecycle %s", got)
	}
}

// TestQueryProtocolRouting: the same endpoint serves EC2, Auto Scaling and
// ELBv2, told apart by the SigV4 service (or, unsigned, by Version); an
// unknown action answers the Query protocol's ErrorResponse; the standard
// AWS_ENDPOINT_URL_<SERVICE> variables reach it through LoadDefaultConfig.
func TestQueryProtocolRouting(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Setenv(t, "", "")
	ids := env.Sim.SeedFleet("", "", 1, nil)
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: ids})
	arn := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: ids})
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	as := autoscaling.NewFromConfig(cfg)
	if out, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{}); err != nil || len(out.AutoScalingInstances) != 1 {
		t.Fatalf("Auto Scaling via AWS_ENDPOINT_URL_AUTO_SCALING: %+v, %v", out, err)
	}
	elb := elasticloadbalancingv2.NewFromConfig(cfg)
	if out, err := elb.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)}); err != nil || len(out.TargetHealthDescriptions) != 1 {
		t.Fatalf("ELBv2 via AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2: %+v, %v", out, err)
	}
	if _, err := ec2.NewFromConfig(cfg).DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ version, ns string }{
		{"2011-01-01", "http://autoscaling.amazonaws.com/doc/2011-01-01/"},
		{"2015-12-01", "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"},
	} {
		resp, err := http.PostForm(env.URL, url.Values{"Action": {"Bogus"}, "Version": {tc.version}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), `<ErrorResponse xmlns="`+tc.ns+`"><Error><Type>Sender</Type><Code>InvalidAction</Code>`) {
			t.Fatalf("%s: %d %s", tc.version, resp.StatusCode, body)
		}
	}
}

// TestQueryThrottlingAndFaults: the new actions have token buckets of
// their own (answered Throttling, counted apart) and take injected faults
// matched by InstanceIds.member.N and Targets.member.N.Id.
func TestQueryThrottlingAndFaults(t *testing.T) {
	env, _ := rebootEnv(t, ec2sim.Options{Throttle: true})
	ctx := context.Background()
	ids := env.Sim.SeedFleet("", "", 2, nil)
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: ids})
	arn := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: ids})
	creds := credentials.NewStaticCredentialsProvider(ec2sim.DefaultAccount, "secret", "")
	as := autoscaling.New(autoscaling.Options{Region: ec2sim.DefaultRegion, BaseEndpoint: aws.String(env.URL), Credentials: creds, Retryer: aws.NopRetryer{}, HTTPClient: simtest.HTTPClient()})
	elb := elasticloadbalancingv2.New(elasticloadbalancingv2.Options{Region: ec2sim.DefaultRegion, BaseEndpoint: aws.String(env.URL), Credentials: creds, Retryer: aws.NopRetryer{}, HTTPClient: simtest.HTTPClient()})
	cases := []struct {
		action string
		burst  int
		call   func() error
	}{
		{"DescribeAutoScalingInstances", 40, func() error {
			_, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{})
			return err
		}},
		{"DescribeTargetHealth", 40, func() error {
			_, err := elb.DescribeTargetHealth(ctx, &elasticloadbalancingv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(arn)})
			return err
		}},
		{"RegisterTargets", 20, func() error {
			_, err := elb.RegisterTargets(ctx, &elasticloadbalancingv2.RegisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: []elbtypes.TargetDescription{{Id: aws.String(ids[0])}}})
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.action, func(t *testing.T) {
			for i := range tc.burst {
				if err := tc.call(); err != nil {
					t.Fatalf("call %d: %v", i+1, err)
				}
			}
			if err := tc.call(); code(err) != "Throttling" {
				t.Fatalf("call %d: %v, want Throttling", tc.burst+1, err)
			}
			if n := env.Sim.Calls().Throttled[tc.action]; n != 1 {
				t.Fatalf("Throttled[%s] = %d", tc.action, n)
			}
			env.Sim.Advance(time.Second) // refills at least one token
			if err := tc.call(); err != nil {
				t.Fatalf("after a second: %v", err)
			}
		})
	}
	env.Sim.SetThrottle(false)
	env.Sim.Inject(ec2sim.Fault{Action: "EnterStandby", InstanceID: ids[1], Code: "InternalFailure"})
	env.Sim.Inject(ec2sim.Fault{Action: "DeregisterTargets", InstanceID: ids[1], Code: "InternalFailure"})
	if _, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[:1], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatalf("fault for another instance fired: %v", err)
	}
	if _, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: ids[1:], ShouldDecrementDesiredCapacity: aws.Bool(true)}); code(err) != "InternalFailure" {
		t.Fatalf("EnterStandby %s: %v", ids[1], err)
	}
	if _, err := elb.DeregisterTargets(ctx, &elasticloadbalancingv2.DeregisterTargetsInput{TargetGroupArn: aws.String(arn), Targets: []elbtypes.TargetDescription{{Id: aws.String(ids[1])}}}); code(err) != "InternalFailure" {
		t.Fatalf("DeregisterTargets %s: %v", ids[1], err)
	}
	if f := env.Sim.Calls().Faults; f["EnterStandby"] != 1 || f["DeregisterTargets"] != 1 {
		t.Fatalf("faults %v", f)
	}
}

// TestDescribeAutoScalingGroups through the SDK: the groups by name
// (unknown names left out), paged by MaxRecords/NextToken, with sizes,
// target groups and members (lifecycle state, HealthStatus spelled
// Healthy/Unhealthy as this action does); MaxRecords out of 1-100 is a
// ValidationError.
func TestDescribeAutoScalingGroups(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true, LifecycleDelay: 10 * time.Second})
	ctx := context.Background()
	as := env.AutoScaling("", "")
	web := env.Sim.SeedFleet("", "", 3, nil)
	api := env.Sim.SeedFleet("", "", 2, nil)
	tg := env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web"})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: web, MinSize: 1, TargetGroupARNs: []string{tg}})
	env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "api", Instances: api})
	if err := env.Sim.SetAutoScalingLifecycle("", "", web[2], "Pending:Wait"); err != nil {
		t.Fatal(err)
	}
	if _, err := as.EnterStandby(ctx, &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"), InstanceIds: web[1:2], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	env.Sim.Advance(time.Minute)

	out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web", "nope"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AutoScalingGroups) != 1 || out.NextToken != nil {
		t.Fatalf("groups %+v next %v: want web only", out.AutoScalingGroups, out.NextToken)
	}
	g := out.AutoScalingGroups[0]
	if aws.ToString(g.AutoScalingGroupName) != "web" || aws.ToInt32(g.MinSize) != 1 || aws.ToInt32(g.MaxSize) != 3 || aws.ToInt32(g.DesiredCapacity) != 2 ||
		len(g.TargetGroupARNs) != 1 || g.TargetGroupARNs[0] != tg || !strings.HasPrefix(aws.ToString(g.AutoScalingGroupARN), "arn:aws:autoscaling:") {
		t.Errorf("group %+v", g)
	}
	want := map[string]string{web[0]: "InService", web[1]: "Standby", web[2]: "Pending:Wait"}
	if len(g.Instances) != 3 {
		t.Fatalf("instances %+v", g.Instances)
	}
	for _, m := range g.Instances {
		id := aws.ToString(m.InstanceId)
		if string(m.LifecycleState) != want[id] || aws.ToString(m.HealthStatus) != "Healthy" || aws.ToString(m.AvailabilityZone) == "" || m.ProtectedFromScaleIn == nil {
			t.Errorf("%s: %+v, want %s Healthy", id, m, want[id])
		}
	}

	// Paging: every group once.
	var names []string
	p := autoscaling.NewDescribeAutoScalingGroupsPaginator(as, &autoscaling.DescribeAutoScalingGroupsInput{MaxRecords: aws.Int32(1)})
	pages := 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, g := range page.AutoScalingGroups {
			names = append(names, aws.ToString(g.AutoScalingGroupName))
		}
	}
	if pages != 2 || strings.Join(names, ",") != "api,web" {
		t.Errorf("paged %d pages: %v", pages, names)
	}

	// A member down while InService (rebooted by an image, never up
	// again) is Unhealthy (the EC2 health check).
	env.Sim.NeverBoots(api[0])
	reboot(t, c, api[0], "img-0")
	env.Sim.Advance(25 * time.Second)
	out, err = as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"api"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range out.AutoScalingGroups[0].Instances {
		if h := aws.ToString(m.HealthStatus); (aws.ToString(m.InstanceId) == api[0]) != (h == "Unhealthy") {
			t.Errorf("%s: %s", aws.ToString(m.InstanceId), h)
		}
	}

	for _, n := range []int32{0, 101} {
		_, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{MaxRecords: aws.Int32(n)})
		if code(err) != "ValidationError" {
			t.Errorf("MaxRecords %d: %v, want ValidationError", n, err)
		}
	}
}
