package ec2sim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// frozen is a clock that barely moves on its own (a simulated second per
// 11 real days): the tests move it with Advance, so every phase boundary
// is hit exactly.
const frozen = 1e-6

func rebootEnv(t *testing.T, opts ec2sim.Options) (*simtest.Env, *ec2.Client) {
	t.Helper()
	opts.TimeScale = frozen
	opts.Start = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	env := simtest.Start(t, opts)
	return env, env.Client("", "")
}

func reboot(t *testing.T, c *ec2.Client, id, name string) {
	t.Helper()
	if _, err := c.CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(name)}); err != nil {
		t.Fatalf("CreateImage %s: %v", id, err)
	}
}

// observed is what the SDK sees of one instance: state, and the instance
// and system checks with IncludeAllInstances.
func observed(t *testing.T, c *ec2.Client, id string) (state, inst, sys string) {
	t.Helper()
	ctx := context.Background()
	di, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	state = string(di.Reservations[0].Instances[0].State.Name)
	st, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, IncludeAllInstances: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.InstanceStatuses) != 1 {
		t.Fatalf("DescribeInstanceStatus listed %d instances", len(st.InstanceStatuses))
	}
	s := st.InstanceStatuses[0]
	if got := string(s.InstanceState.Name); got != state {
		t.Fatalf("DescribeInstanceStatus state %s, DescribeInstances %s", got, state)
	}
	return state, string(s.InstanceStatus.Status), string(s.SystemStatus.Status)
}

// TestRebootStateSequence: with the reboot model, CreateImage without
// NoReboot takes the instance through stopping, stopped, pending and running
// with status checks initializing, then ok, at the configured instants;
// NeverBoots leaves it stopped, ImpairedAfterReboot running but impaired.
// Without the model (the default) it stays running.
func TestRebootStateSequence(t *testing.T) {
	type step struct {
		at                   time.Duration // since CreateImage
		state, instSt, sysSt string
	}
	normal := []step{
		{0, "stopping", "not-applicable", "not-applicable"},
		{19 * time.Second, "stopping", "not-applicable", "not-applicable"},
		{20 * time.Second, "stopped", "not-applicable", "not-applicable"},
		{30 * time.Second, "pending", "not-applicable", "not-applicable"},
		{59 * time.Second, "pending", "not-applicable", "not-applicable"},
		{60 * time.Second, "running", "initializing", "initializing"},
		{119 * time.Second, "running", "initializing", "initializing"},
		{120 * time.Second, "running", "ok", "ok"},
		{24 * time.Hour, "running", "ok", "ok"},
	}
	cases := []struct {
		name  string
		model bool
		fault func(*ec2sim.Sim, string)
		steps []step
	}{
		{"reboot", true, nil, normal},
		{"never boots", true, (*ec2sim.Sim).NeverBoots, []step{
			{0, "stopping", "not-applicable", "not-applicable"},
			{20 * time.Second, "stopped", "not-applicable", "not-applicable"},
			{120 * time.Second, "stopped", "not-applicable", "not-applicable"},
			{24 * time.Hour, "stopped", "not-applicable", "not-applicable"},
		}},
		{"impaired", true, (*ec2sim.Sim).ImpairedAfterReboot, []step{
			{30 * time.Second, "pending", "not-applicable", "not-applicable"},
			{60 * time.Second, "running", "initializing", "initializing"},
			{120 * time.Second, "running", "impaired", "ok"},
			{24 * time.Hour, "running", "impaired", "ok"},
		}},
		{"model off", false, nil, []step{
			{0, "running", "ok", "ok"},
			{30 * time.Second, "running", "ok", "ok"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, c := rebootEnv(t, ec2sim.Options{RebootModel: tc.model})
			id := env.Sim.AddInstance(ec2sim.InstanceSpec{})
			if tc.fault != nil {
				tc.fault(env.Sim, id)
			}
			reboot(t, c, id, "img-1")
			at := time.Duration(0)
			for _, s := range tc.steps {
				env.Sim.Advance(s.at - at)
				at = s.at
				state, inst, sys := observed(t, c, id)
				if state != s.state || inst != s.instSt || sys != s.sysSt {
					t.Fatalf("at +%v: %s/%s/%s, want %s/%s/%s", s.at, state, inst, sys, s.state, s.instSt, s.sysSt)
				}
				if in, _ := env.Sim.Instance("", "", id); in.State != s.state {
					t.Fatalf("at +%v: Sim.Instance state %s", s.at, in.State)
				}
			}
		})
	}
}

// TestRebootTimingOption: Options.Reboot replaces the phase durations.
func TestRebootTimingOption(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true, Reboot: ec2sim.RebootTiming{Stopping: time.Second, Stopped: time.Second, Pending: time.Second, StatusInit: time.Second}})
	id := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	reboot(t, c, id, "img-1")
	env.Sim.Advance(3 * time.Second)
	if st, inst, _ := observed(t, c, id); st != "running" || inst != "initializing" {
		t.Fatalf("at +3s: %s/%s", st, inst)
	}
	env.Sim.Advance(time.Second)
	if st, inst, _ := observed(t, c, id); st != "running" || inst != "ok" {
		t.Fatalf("at +4s: %s/%s", st, inst)
	}
}

// TestRebootWhileCycling: while a reboot is under way the instance is not
// running: a second CreateImage fails IncorrectState while it stops, and is
// accepted without another reboot while it is stopped; the image still
// goes pending -> available as before.
func TestRebootWhileCycling(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true, ImageDelay: time.Minute})
	ctx := context.Background()
	id := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	reboot(t, c, id, "img-1")
	_, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("img-2")})
	if code(err) != "IncorrectState" {
		t.Fatalf("CreateImage while stopping: %v", err)
	}
	env.Sim.Advance(25 * time.Second)
	reboot(t, c, id, "img-3")
	if in, _ := env.Sim.Instance("", "", id); in.Reboots != 1 {
		t.Fatalf("reboots %d, want 1 (the stopped instance is imaged as it is)", in.Reboots)
	}
	env.Sim.Advance(2 * time.Minute)
	for _, im := range env.Sim.Images("", "") {
		if im.State != "available" {
			t.Fatalf("image %s %s", im.Name, im.State)
		}
	}
	// Filters see the state of the moment: the instance is running again.
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}})
	if err != nil || len(out.Reservations) != 1 {
		t.Fatalf("running instances: %v, %v", out, err)
	}
}

// TestDescribeInstanceStatus: only running instances unless
// IncludeAllInstances; filters on the checks; EC2's error codes.
func TestDescribeInstanceStatus(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true})
	ctx := context.Background()
	up := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	down := env.Sim.AddInstance(ec2sim.InstanceSpec{State: "stopped"})
	booting := env.Sim.AddInstance(ec2sim.InstanceSpec{})
	reboot(t, c, booting, "img-1")
	env.Sim.Advance(90 * time.Second) // booting: running, initializing
	ids := func(in *ec2.DescribeInstanceStatusInput) ([]string, error) {
		out, err := c.DescribeInstanceStatus(ctx, in)
		if err != nil {
			return nil, err
		}
		var got []string
		for _, s := range out.InstanceStatuses {
			got = append(got, aws.ToString(s.InstanceId))
		}
		return got, nil
	}
	cases := []struct {
		name string
		in   *ec2.DescribeInstanceStatusInput
		want []string
		code string
	}{
		{"running only", &ec2.DescribeInstanceStatusInput{}, []string{up, booting}, ""},
		{"all", &ec2.DescribeInstanceStatusInput{IncludeAllInstances: aws.Bool(true)}, []string{up, down, booting}, ""},
		{"stopped by ID, not included", &ec2.DescribeInstanceStatusInput{InstanceIds: []string{down}}, nil, ""},
		{"status filter", &ec2.DescribeInstanceStatusInput{Filters: []types.Filter{{Name: aws.String("instance-status.status"), Values: []string{"initializing"}}}}, []string{booting}, ""},
		{"system filter", &ec2.DescribeInstanceStatusInput{Filters: []types.Filter{{Name: aws.String("system-status.status"), Values: []string{"ok"}}}}, []string{up}, ""},
		{"unknown ID", &ec2.DescribeInstanceStatusInput{InstanceIds: []string{"i-0123456789abcdef0"}}, nil, "InvalidInstanceID.NotFound"},
		{"malformed ID", &ec2.DescribeInstanceStatusInput{InstanceIds: []string{"x-1"}}, nil, "InvalidInstanceID.Malformed"},
		{"bad filter", &ec2.DescribeInstanceStatusInput{Filters: []types.Filter{{Name: aws.String("nope"), Values: []string{"x"}}}}, nil, "InvalidParameterValue"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ids(tc.in)
			if code(err) != tc.code {
				t.Fatalf("error %v, want code %q", err, tc.code)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	// Paginated, the SDK's paginator collects every page.
	var n int
	p := ec2.NewDescribeInstanceStatusPaginator(c, &ec2.DescribeInstanceStatusInput{IncludeAllInstances: aws.Bool(true), MaxResults: aws.Int32(5)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n += len(out.InstanceStatuses)
	}
	if n != 3 {
		t.Fatalf("paginator saw %d instances", n)
	}
}

// TestAvailabilityMax: the log keeps, per group, the most members
// unavailable at once, evaluated at the instants states change rather than
// only when requests arrive. Each case reboots a group's members at the
// given offsets and reads the log only at the end, a day later. The
// members come back ok 120 s after their CreateImage; their targets are
// healthy again 30 s later (HealthyAfter), so the target group counts them
// unavailable 30 s longer (wantTG).
func TestAvailabilityMax(t *testing.T) {
	cases := []struct {
		name    string
		offsets []time.Duration // CreateImage of member i at offsets[i]
		want    int
		wantTG  int
	}{
		{"overlapping", []time.Duration{0, 10 * time.Second}, 2, 2},
		{"second starts 1s before the first is ok", []time.Duration{0, 119 * time.Second}, 2, 2},
		{"second starts as the first is ok", []time.Duration{0, 120 * time.Second}, 1, 2},
		{"second starts 1s before the first is healthy", []time.Duration{0, 149 * time.Second}, 1, 2},
		{"second starts as the first is healthy", []time.Duration{0, 150 * time.Second}, 1, 1},
		{"sequential", []time.Duration{0, 5 * time.Minute, 10 * time.Minute}, 1, 1},
		{"three at once", []time.Duration{0, 0, 0}, 3, 3},
		{"none", nil, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env, c := rebootEnv(t, ec2sim.Options{RebootModel: true, GroupTags: []string{"Tier"}})
			ids := env.Sim.SeedFleet("", "", 3, map[string]string{"Tier": "web"})
			other := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Tier": "db"}})
			env.Sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web-asg", Instances: ids})
			env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: ids, HealthyAfter: 30 * time.Second})
			at := time.Duration(0)
			for i, off := range tc.offsets {
				env.Sim.Advance(off - at)
				at = off
				reboot(t, c, ids[i], "img-"+ids[i])
			}
			reboot(t, c, other, "img-db") // another group: never counted with web
			env.Sim.Advance(24 * time.Hour)
			log := env.Sim.Calls().MaxUnavailable
			for key, want := range map[string]int{
				ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTag, "Tier=web"):        tc.want,
				ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupAutoScaling, "web-asg"): tc.want,
				ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTarget, "web"):          tc.wantTG,
			} {
				if got := log[key]; got != want {
					t.Errorf("%s: max unavailable %d, want %d (log %v)", key, got, want, log)
				}
			}
			if got := log[ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTag, "Tier=db")]; got != 1 {
				t.Errorf("Tier=db: %d, want 1", got)
			}
			g, ok := env.Sim.GroupAvailabilityOf("", "", ec2sim.GroupTarget, "web")
			if !ok || g.Members != 3 || g.Unavailable != 0 || g.MaxUnavailable != tc.wantTG {
				t.Errorf("target group record %+v", g)
			}
		})
	}
}

// TestAvailabilityTargetHealthWindow: a target group member counts as
// unavailable until its target is healthy again, which is HealthyAfter
// past the instance's status ok: two reboots 150 s apart overlap in the
// target group (health back at 120+60 s) but not in the tag group.
func TestAvailabilityTargetHealthWindow(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true, GroupTags: []string{"Tier"}})
	ids := env.Sim.SeedFleet("", "", 2, map[string]string{"Tier": "web"})
	env.Sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: ids, HealthyAfter: time.Minute})
	reboot(t, c, ids[0], "img-0")
	env.Sim.Advance(150 * time.Second)
	reboot(t, c, ids[1], "img-1")
	env.Sim.Advance(time.Hour)
	log := env.Sim.Calls().MaxUnavailable
	if got := log[ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTarget, "web")]; got != 2 {
		t.Errorf("target group max %d, want 2", got)
	}
	if got := log[ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTag, "Tier=web")]; got != 1 {
		t.Errorf("tag group max %d, want 1", got)
	}
}

// TestAvailabilityResetAndControlAPI: ResetCalls restarts the maxima from
// the members unavailable now; GET /_sim/calls and /_sim/availability
// report them.
func TestAvailabilityResetAndControlAPI(t *testing.T) {
	env, c := rebootEnv(t, ec2sim.Options{RebootModel: true, GroupTags: []string{"Tier"}})
	ids := env.Sim.SeedFleet("", "", 2, map[string]string{"Tier": "web"})
	env.Sim.NeverBoots(ids[1])
	reboot(t, c, ids[0], "img-0")
	reboot(t, c, ids[1], "img-1")
	env.Sim.Advance(time.Hour)
	key := ec2sim.GroupKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion, ec2sim.GroupTag, "Tier=web")
	if got := env.Sim.Calls().MaxUnavailable[key]; got != 2 {
		t.Fatalf("before reset %d, want 2", got)
	}
	env.Sim.ResetCalls()
	var calls ec2sim.CallLog
	getJSON(t, env.URL+"/_sim/calls", &calls)
	if calls.MaxUnavailable[key] != 1 {
		t.Fatalf("after reset /_sim/calls says %v, want 1 (the instance that never booted)", calls.MaxUnavailable)
	}
	var groups []ec2sim.GroupAvailability
	getJSON(t, env.URL+"/_sim/availability", &groups)
	if len(groups) != 1 || groups[0].Key != key || groups[0].Unavailable != 1 || groups[0].Members != 2 {
		t.Fatalf("/_sim/availability: %+v", groups)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}
