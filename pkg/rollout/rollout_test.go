package rollout_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/rollout"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
)

const cfgJSON = `{"deployment":"prod","policies":[
 {"name":"nightly","selector":{"tagKey":"Backup"},
  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
  "availability":{"groupBy":["asg","targetGroup","tag:Service"],"maxUnavailable":1,"healthTimeout":"10m"}}]}`

var slot = time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)

// frozen: simulated time moves only with Advance (the test is the Wait state).
const frozen = 1e-6

type fleet struct {
	simtest.WavesFleet
	env     *simtest.Env
	cfg     *config.Config
	metrics bytes.Buffer
	wrap    func(*rollout.Roller) // e.g. a checking EC2 client
	each    func(step int)        // called after each step (the world moving between steps)
}

// newFleet: a web tier of 3 in Auto Scaling group "web" behind target group
// "web", a database pair tagged Service=db, two stand-alone instances, all
// selected by the policy (tag Backup).
func newFleet(t *testing.T) *fleet {
	return newFleetWith(t, false, simtest.WavesOptions{DeregistrationDelay: 60 * time.Second, HealthyAfter: 30 * time.Second})
}

// newFleetWith: the fleet with Auto Scaling health checks (replacement of
// unhealthy members) on or off and the fleet's options.
func newFleetWith(t *testing.T, healthChecks bool, o simtest.WavesOptions) *fleet {
	t.Helper()
	env := simtest.Start(t, ec2sim.Options{RebootModel: true, TimeScale: frozen, Start: slot.Add(time.Minute), GroupTags: []string{"Service"},
		HealthChecks: healthChecks, HealthCheckInterval: 30 * time.Second})
	f := &fleet{env: env, WavesFleet: simtest.SeedWavesFleetWith(env.Sim, o)}
	c, err := config.Parse([]byte(cfgJSON), "")
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = c
	return f
}

// roller is a fresh process: new clients, nothing remembered.
func (f *fleet) roller() *rollout.Roller {
	r := &rollout.Roller{EC2: f.env.Client("", ""), AutoScaling: f.env.AutoScaling("", ""), ELB: f.env.ELBv2("", ""),
		Config: f.cfg, Job: runner.Job{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: emf.New(&f.metrics), Now: f.env.Sim.Now}}
	if f.wrap != nil {
		f.wrap(r)
	}
	return r
}

// call invokes one action through the raw JSON contract, as Step Functions does.
func (f *fleet) call(t *testing.T, req map[string]any) (json.RawMessage, error) {
	t.Helper()
	raw, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.roller().Handle(context.Background(), raw)
	if err != nil && out == nil {
		return nil, err
	}
	b, merr := json.Marshal(out) // finish answers its summary with its error
	if merr != nil {
		t.Fatal(merr)
	}
	return b, err
}

type result struct {
	State       json.RawMessage `json:"state"`
	Done        bool            `json:"done"`
	WaitSeconds int             `json:"waitSeconds"`
}

// start starts the slot's run, as the schedule does.
func (f *fleet) start(t *testing.T) result {
	t.Helper()
	input := `{"policy":"nightly","time":"` + tags.FormatTime(slot) + `"}`
	b, err := f.call(t, map[string]any{"action": "start", "input": json.RawMessage(input)})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	var r result
	json.Unmarshal(b, &r)
	return r
}

// execute plays the state machine: start, step/wait until done, restore
// until done, finish. stopAfter > 0 abandons the execution after that many
// steps (a crash: no Catch runs). It returns the finish error and summary.
func (f *fleet) execute(t *testing.T, stopAfter int) (*rollout.Summary, error, int) {
	t.Helper()
	r := f.start(t)
	var b []byte
	var err error
	maxState, steps := len(r.State), 0
	for !r.Done {
		f.env.Sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
		if b, err = f.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
			t.Fatalf("step %d: %v", steps, err)
		}
		r = result{}
		json.Unmarshal(b, &r)
		maxState = max(maxState, len(r.State))
		if f.each != nil {
			f.each(steps)
		}
		if steps++; steps == stopAfter {
			return nil, nil, maxState
		}
		if steps > 500 {
			t.Fatal("not done after 500 steps")
		}
	}
	for i := 0; ; i++ {
		if b, err = f.call(t, map[string]any{"action": "restore", "state": r.State}); err != nil {
			t.Fatalf("restore: %v", err)
		}
		done := r.State
		r = result{}
		json.Unmarshal(b, &r)
		if r.Done {
			break
		}
		_ = done
		f.env.Sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
		if i > 100 {
			t.Fatal("restore not done after 100 rounds")
		}
	}
	b, err = f.call(t, map[string]any{"action": "finish", "state": r.State})
	var sum rollout.Summary
	if b != nil {
		json.Unmarshal(b, &sum)
	}
	return &sum, err, maxState
}

// inService checks that nothing is left out of service: every Auto Scaling
// member InService, every target healthy, no drain tag.
func (f *fleet) inService(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	out, err := f.env.AutoScaling("", "").DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: f.Web})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range out.AutoScalingInstances {
		if aws.ToString(a.LifecycleState) != "InService" {
			t.Errorf("%s: %s", aws.ToString(a.InstanceId), aws.ToString(a.LifecycleState))
		}
	}
	th, err := f.env.ELBv2("", "").DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(f.TargetGroup)})
	if err != nil {
		t.Fatal(err)
	}
	registered := 0
	for _, d := range th.TargetHealthDescriptions {
		if d.TargetHealth.State == "healthy" {
			registered++
		}
	}
	if registered != len(f.Web) {
		t.Errorf("%d of %d targets registered and healthy", registered, len(f.Web))
	}
	for _, id := range f.All() {
		in, _ := f.env.Sim.Instance("", "", id)
		if v, ok := in.Tags[drain.TagKey]; ok {
			t.Errorf("%s still tagged %s=%s", id, drain.TagKey, v)
		}
	}
}

// imagesPer counts this slot's images per instance.
func (f *fleet) imagesPer() map[string]int { return simtest.ImagesPerInstance(f.env.Sim, slot) }

// TestRollout: every instance imaged once, never more than one member of
// a group down, everything back in service, the run succeeds.
func TestRollout(t *testing.T) {
	f := newFleet(t)
	sum, err, maxState := f.execute(t, 0)
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	per := f.imagesPer()
	for _, id := range f.All() {
		if per[id] != 1 {
			t.Errorf("%s: %d images", id, per[id])
		}
	}
	mu := simtest.MaxUnavailable(t, f.env.Sim)
	for _, k := range []string{"autoscaling:web", "targetgroup:web", "tag:Service=db"} {
		if mu[k] != 1 {
			t.Errorf("group %s: at most %d unavailable at once, want exactly 1 (rebooted one at a time)", k, mu[k])
		}
	}
	f.inService(t)
	c := sum.Counts
	if c.Planned != 7 || c.Healthy != 7 || c.Created != 7 || c.Halted != 0 || c.Failed != 0 || c.NotRestored != 0 {
		t.Errorf("counts %+v", c)
	}
	if calls := f.env.Sim.Calls(); calls.Count("EnterStandby") == 0 || calls.Count("DeregisterTargets") == 0 || calls.Count("RegisterTargets") == 0 || calls.Count("ExitStandby") == 0 {
		t.Errorf("drain calls: %v", calls.ByAction)
	}
	t.Logf("largest state %d bytes; summary %+v", maxState, c)
}

// TestRolloutHalt: a member that never boots halts its group (the others
// are not rebooted), the other groups finish, finish fails naming it.
func TestRolloutHalt(t *testing.T) {
	f := newFleet(t)
	f.env.Sim.NeverBoots(f.Web[0]) // the first member of the largest group
	sum, err, _ := f.execute(t, 0)
	if err == nil || !strings.Contains(err.Error(), "halted at "+f.Web[0]) {
		t.Fatalf("finish: %v (%+v)", err, sum)
	}
	per := f.imagesPer()
	if per[f.Web[1]] != 0 || per[f.Web[2]] != 0 {
		t.Errorf("halted group's other members imaged: %v", per)
	}
	for _, id := range append(append([]string{}, f.DB...), f.Standalone...) {
		if per[id] != 1 {
			t.Errorf("%s (other group): %d images", id, per[id])
		}
	}
	// web[0] was put back into its Auto Scaling group while it does not
	// boot (ExitStandby; the group replaces an unhealthy member).
	if mu := simtest.MaxUnavailable(t, f.env.Sim, f.Web[0]); mu["autoscaling:web"] > 1 || mu["tag:Service=db"] != 1 {
		t.Errorf("max unavailable %v", mu)
	}
	// The dead instance was put back in the Auto Scaling group (its
	// replacement is the group's business): reported with the halt, not as
	// "not back in service" (nothing of it is left in Standby by us).
	if strings.Contains(err.Error(), "not back in service") || !strings.Contains(err.Error(), "put back: unhealthy") ||
		sum.Counts.NotRestored != 0 || sum.Counts.Replaced != 1 {
		t.Errorf("finish: %v; counts %+v", err, sum.Counts)
	}
	if !strings.Contains(f.metrics.String(), `"GroupsHalted"`) || !strings.Contains(f.metrics.String(), `"GroupsHalted":1`) {
		t.Errorf("metrics: %s", f.metrics.String())
	}
}

// TestRolloutCrashThenRepeat: an execution abandoned mid-run (no Catch, no
// restore) leaves instances drained; a new execution for the same slot
// puts them back, reboots none already imaged and makes no duplicate.
func TestRolloutCrashThenRepeat(t *testing.T) {
	f := newFleet(t)
	f.execute(t, 3)
	if n := len(f.imagesPer()); n == 0 || n == 7 {
		t.Fatalf("crash after 3 steps: %d instances imaged, want some", n)
	}
	out, _ := f.env.AutoScaling("", "").DescribeAutoScalingInstances(context.Background(), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: f.Web})
	standby := 0
	for _, a := range out.AutoScalingInstances {
		if aws.ToString(a.LifecycleState) != "InService" {
			standby++
		}
	}
	if standby == 0 {
		t.Fatalf("the crash left nothing out of service: the test proves nothing")
	}
	before := f.env.Sim.Calls().Count("CreateImage")
	sum, err, _ := f.execute(t, 0)
	if err != nil {
		t.Fatalf("second execution: %v", err)
	}
	for id, n := range f.imagesPer() {
		if n != 1 {
			t.Errorf("%s: %d images", id, n)
		}
	}
	if len(f.imagesPer()) != 7 {
		t.Errorf("images for %d instances", len(f.imagesPer()))
	}
	f.inService(t)
	created := f.env.Sim.Calls().Count("CreateImage") - before
	if created+sum.Counts.AlreadyDone < 7 || sum.Counts.AlreadyDone == 0 {
		t.Errorf("second execution: %d CreateImage, %d already done; %+v", created, sum.Counts.AlreadyDone, sum)
	}
	if mu := simtest.MaxUnavailable(t, f.env.Sim); mu["autoscaling:web"] > 1 || mu["targetgroup:web"] > 1 || mu["tag:Service=db"] > 1 {
		t.Errorf("max unavailable %v", mu)
	}
}

// TestRolloutBadInput: malformed requests fail before any call.
func TestRolloutBadInput(t *testing.T) {
	f := newFleet(t)
	for _, raw := range []string{
		`{"action":"start"}`,
		`{"action":"go","input":{}}`,
		`{"action":"start","input":{"policy":"nightly","time":"2026-11-24T03:00:00Z"}} {}`,
		`{"action":"start","input":{"policy":"nope","time":"2026-11-24T03:00:00Z"}}`,
		`{"action":"step","state":null}`,
		`{"action":"step","state":{"v":1,"policy":"nightly"}}`,
		`{"action":"start","input":{"policy":"nightly","time":"2026-11-24T03:00:00Z"},"extra":1}`,
	} {
		if _, err := f.roller().Handle(context.Background(), []byte(raw)); err == nil {
			t.Errorf("%s: accepted", raw)
		}
	}
	if n := f.env.Sim.Calls().Total; n != 0 {
		t.Errorf("%d calls for bad input", n)
	}
}

// TestRolloutDryRun: start answers with the plan of the rebooting
// instances, checks CreateImage with DryRun=true for each, changes nothing
// and is done at once; finish reports the plan.
func TestRolloutDryRun(t *testing.T) {
	f := newFleet(t)
	input := `{"version":"0","id":"1","detail-type":"Backup Requested","source":"amibackup","account":"123456789012","time":"` + tags.FormatTime(slot) + `","region":"us-east-1","resources":[],"detail":{"policy":"nightly","dryRun":true}}`
	b, err := f.call(t, map[string]any{"action": "start", "input": json.RawMessage(input)})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	json.Unmarshal(b, &r)
	if !r.Done {
		t.Fatal("a dry run is not done at start")
	}
	b, err = f.call(t, map[string]any{"action": "finish", "state": r.State})
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	var sum rollout.Summary
	json.Unmarshal(b, &sum)
	if !sum.DryRun || sum.Counts.Planned != 7 || !strings.Contains(sum.Plan, "7 instances in 2 groups") {
		t.Errorf("summary %+v", sum)
	}
	calls := f.env.Sim.Calls()
	if calls.DryRun["CreateImage"] != 7 || calls.Mutating() != 0 || len(f.env.Sim.Images("", "")) != 0 {
		t.Errorf("dry run: %v, dry %v, %d images", calls.ByAction, calls.DryRun, len(f.env.Sim.Images("", "")))
	}
}

// drainCheck wraps the EC2 client: at every CreateImage with a reboot it
// asks Auto Scaling and ELBv2 where the instance is, so the test sees that
// each was out of service before its image.
type drainCheck struct {
	rollout.EC2
	f       *fleet
	t       *testing.T
	checked map[string]bool
}

func (d *drainCheck) CreateImage(ctx context.Context, in *ec2.CreateImageInput, opts ...func(*ec2.Options)) (*ec2.CreateImageOutput, error) {
	id := aws.ToString(in.InstanceId)
	if slices.Contains(d.f.Web, id) && !aws.ToBool(in.NoReboot) {
		out, err := d.f.env.AutoScaling("", "").DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
		if err != nil || len(out.AutoScalingInstances) != 1 || aws.ToString(out.AutoScalingInstances[0].LifecycleState) != "Standby" {
			d.t.Errorf("CreateImage of %s while not in Standby: %v %+v", id, err, out)
		}
		th, err := d.f.env.ELBv2("", "").DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: aws.String(d.f.TargetGroup)})
		if err != nil {
			d.t.Fatal(err)
		}
		for _, h := range th.TargetHealthDescriptions {
			if aws.ToString(h.Target.Id) == id {
				d.t.Errorf("CreateImage of %s while its target is %s (not deregistered)", id, h.TargetHealth.State)
			}
		}
		d.checked[id] = true
	}
	return d.EC2.CreateImage(ctx, in, opts...)
}

// TestRolloutDrainsBeforeImage: every web member is in Standby and out of
// its target group when its CreateImage is called.
func TestRolloutDrainsBeforeImage(t *testing.T) {
	f := newFleet(t)
	dc := &drainCheck{EC2: f.env.Client("", ""), f: f, t: t, checked: map[string]bool{}}
	f.wrap = func(r *rollout.Roller) { dc.EC2 = r.EC2; r.EC2 = dc }
	if _, err, _ := f.execute(t, 0); err != nil {
		t.Fatal(err)
	}
	if len(dc.checked) != len(f.Web) {
		t.Errorf("checked %d of %d web members", len(dc.checked), len(f.Web))
	}
}

// hook wraps the EC2 client: after the CreateImage of an instance it runs
// a function (e.g. someone terminates the instance mid-run).
type hook struct {
	rollout.EC2
	after func(id string)
}

func (h *hook) CreateImage(ctx context.Context, in *ec2.CreateImageInput, opts ...func(*ec2.Options)) (*ec2.CreateImageOutput, error) {
	out, err := h.EC2.CreateImage(ctx, in, opts...)
	if err == nil {
		h.after(aws.ToString(in.InstanceId))
	}
	return out, err
}

// TestRolloutAutoScaling: what an Auto Scaling group does to the run, with
// its health checks on (it replaces unhealthy InService members): a halted
// member is put back and replaced, and reported so, not "not restored";
// with the target group attached to the group, the group registers the
// members and the run does not (no race); a target that never becomes
// healthy ends the restore loop with the reason instead of polling it for
// ever. Members terminated or not in service: TestRolloutShortGroupHalts.
func TestRolloutAutoScaling(t *testing.T) {
	cases := []struct {
		name   string
		checks bool
		opts   simtest.WavesOptions
		setup  func(t *testing.T, f *fleet)
		check  func(t *testing.T, f *fleet, sum *rollout.Summary, err error)
	}{
		{"halted member replaced", true, simtest.WavesOptions{}, func(t *testing.T, f *fleet) { f.env.Sim.NeverBoots(f.Web[0]) },
			func(t *testing.T, f *fleet, sum *rollout.Summary, err error) {
				// Unhealthy when put back, or already terminated by the group:
				// either way reported with the halt.
				if err == nil || !strings.Contains(err.Error(), "halted at "+f.Web[0]) || !strings.Contains(err.Error(), "; put back: ") ||
					strings.Contains(err.Error(), "not back in service") {
					t.Fatalf("finish: %v", err)
				}
				if c := sum.Counts; c.NotRestored != 0 || c.Replaced != 1 || c.Halted != 1 || len(sum.Replaced) != 1 || !strings.Contains(sum.Replaced[0], f.Web[0]) {
					t.Errorf("summary %+v", sum)
				}
				if !strings.Contains(f.metrics.String(), `"InstancesNotRestored":0`) {
					t.Errorf("metrics: %s", f.metrics.String())
				}
				// The group replaced it: 3 members in service, desired 3.
				f.env.Sim.Advance(10 * time.Minute)
				ms, _ := f.env.Sim.AutoScalingMembers("", "", "web")
				inService := 0
				for id, lc := range ms {
					if lc == "InService" && id != f.Web[0] {
						inService++
					}
				}
				if _, still := ms[f.Web[0]]; still || inService != 3 {
					t.Errorf("members after the run %v: want %s replaced, 3 InService", ms, f.Web[0])
				}
				if d, _ := f.env.Sim.AutoScalingGroupCapacity("", "", "web"); d != 3 {
					t.Errorf("desired %d, want 3", d)
				}
				simtest.MaxUnavailable(t, f.env.Sim, f.Web[0])
			}},
		{"attached target group", true, simtest.WavesOptions{Attach: true}, nil,
			func(t *testing.T, f *fleet, sum *rollout.Summary, err error) {
				if err != nil {
					t.Fatalf("finish: %v", err)
				}
				for _, id := range f.All() {
					if f.imagesPer()[id] != 1 {
						t.Errorf("%s: %d images", id, f.imagesPer()[id])
					}
				}
				f.inService(t)
				// Auto Scaling registered the members again on ExitStandby;
				// the run registered nothing (the plan lists the group: its
				// registrations were all back before the run's turn).
				if n := f.env.Sim.Calls().Count("RegisterTargets"); n != 0 {
					t.Errorf("RegisterTargets called %d times: racing the Auto Scaling group", n)
				}
				if mu := simtest.MaxUnavailable(t, f.env.Sim); mu["autoscaling:web"] != 1 || mu["targetgroup:web"] != 1 {
					t.Errorf("max unavailable %v", mu)
				}
			}},
		{"target never healthy", false, simtest.WavesOptions{HealthyAfter: 24 * time.Hour}, nil,
			func(t *testing.T, f *fleet, sum *rollout.Summary, err error) {
				if err == nil || !strings.Contains(err.Error(), "not back in service") || !strings.Contains(err.Error(), "restore rounds") {
					t.Fatalf("finish: %v", err)
				}
				if sum.Counts.NotRestored == 0 || !slices.ContainsFunc(sum.NotRestored, func(s string) bool { return strings.Contains(s, "target initial") }) {
					t.Errorf("not restored %v", sum.NotRestored)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.DeregistrationDelay, o.HealthyAfter = 60*time.Second, max(o.HealthyAfter, 30*time.Second)
			f := newFleetWith(t, tc.checks, o)
			if tc.setup != nil {
				tc.setup(t, f)
			}
			sum, err, _ := f.execute(t, 0)
			tc.check(t, f, sum, err)
		})
	}
}

// TestRolloutShortGroupHalts (issue 13, H1): a member that leaves its group
// short in a way the run cannot wait out (terminated mid-run while its
// Auto Scaling group boots a replacement; not InService at its turn: a
// lifecycle hook's Pending:Wait, an operator's Standby) halts its group for
// the night: no other member of the group is rebooted, so the group never
// has more than maxUnavailable (1) members down; the halt names the
// instance and why, and counts as a halt (GroupsHalted: the alarm fires).
// The other groups finish. Before the fix such a member freed its slot
// and the next member was drained at once: two members down.
func TestRolloutShortGroupHalts(t *testing.T) {
	cases := []struct {
		name   string
		reason string // in the halt
		setup  func(t *testing.T, f *fleet)
	}{
		{"terminated mid-run", "terminated during the run", func(t *testing.T, f *fleet) {
			f.wrap = func(r *rollout.Roller) {
				r.EC2 = &hook{EC2: r.EC2, after: func(id string) {
					if id == f.Web[0] {
						if _, err := f.env.Client("", "").TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
							t.Error(err)
						}
					}
				}}
			}
		}},
		{"lifecycle hook Pending:Wait", "lifecycle state Pending:Wait", func(t *testing.T, f *fleet) {
			if err := f.env.Sim.SetAutoScalingLifecycle("", "", f.Web[0], "Pending:Wait"); err != nil {
				t.Fatal(err)
			}
		}},
		{"operator's Standby", "Standby, not put there by amibackup", func(t *testing.T, f *fleet) {
			if _, err := f.env.AutoScaling("", "").EnterStandby(context.Background(), &autoscaling.EnterStandbyInput{AutoScalingGroupName: aws.String("web"),
				InstanceIds: f.Web[0:1], ShouldDecrementDesiredCapacity: aws.Bool(true)}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFleetWith(t, true, simtest.WavesOptions{DeregistrationDelay: 60 * time.Second, HealthyAfter: 30 * time.Second})
			tc.setup(t, f)
			sum, err, _ := f.execute(t, 0)
			if mu := simtest.MaxUnavailable(t, f.env.Sim, f.Web[0]); mu["autoscaling:web"] > 1 || mu["targetgroup:web"] > 1 {
				t.Errorf("max unavailable %v: more than maxUnavailable (1) members of web down at once", mu)
			}
			if err == nil || !strings.Contains(err.Error(), "halted at "+f.Web[0]) || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("finish: %v, want the web group halted at %s (%s)", err, f.Web[0], tc.reason)
			}
			per := f.imagesPer()
			if per[f.Web[1]] != 0 || per[f.Web[2]] != 0 {
				t.Errorf("images %v: no other member of the short group may be rebooted", per)
			}
			for _, id := range append(slices.Clone(f.DB), f.Standalone...) {
				if per[id] != 1 {
					t.Errorf("%s (other group): %d images", id, per[id])
				}
			}
			if c := sum.Counts; c.Halted != 1 || c.Failed != 0 || c.Healthy != 4 || len(sum.Halts) != 1 || sum.Halts[0].Instance != f.Web[0] || sum.Halts[0].Skipped != 2 {
				t.Errorf("counts %+v halts %+v", c, sum.Halts)
			}
			if !strings.Contains(f.metrics.String(), `"GroupsHalted":1`) {
				t.Errorf("metrics: %s", f.metrics.String())
			}
			if tc.name != "terminated mid-run" {
				if per[f.Web[0]] != 0 {
					t.Errorf("%s was not in service: rebooted anyway", f.Web[0])
				}
				return
			}
			if d, _ := f.env.Sim.AutoScalingGroupCapacity("", "", "web"); d != 3 {
				t.Errorf("desired %d, want 3 (the Standby of the terminated member given back)", d)
			}
			if sum.Counts.Replaced != 1 || sum.Counts.NotRestored != 0 {
				t.Errorf("counts %+v", sum.Counts)
			}
		})
	}
}

// TestRolloutStateLimit (issue 13, H3): Step Functions fails an execution
// whose state exceeds 256 KB with States.DataLimitExceeded, which no Catch
// catches. A step whose result would exceed rollout.MaxResultBytes fails
// with an ordinary error instead (the Catch restores from the previous
// state); start rejects a plan whose state could outgrow the limit before
// any change (not even the no-reboot image of an opted-out instance),
// naming the limit and telling the operator to split the policy.
func TestRolloutStateLimit(t *testing.T) {
	t.Run("step result over the limit", func(t *testing.T) {
		f := newFleet(t)
		input := `{"policy":"nightly","time":"` + tags.FormatTime(slot) + `"}`
		b, err := f.call(t, map[string]any{"action": "start", "input": json.RawMessage(input)})
		if err != nil {
			t.Fatal(err)
		}
		var r result
		json.Unmarshal(b, &r)
		// A state grown huge: notes are carried from step to step.
		var st map[string]any
		json.Unmarshal(r.State, &st)
		var notes []string
		for range 50 {
			notes = append(notes, strings.Repeat("x", 5200))
		}
		st["notes"] = notes
		f.env.Sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
		out, err := f.call(t, map[string]any{"action": "step", "state": st})
		if err == nil || !strings.Contains(err.Error(), "rollout.MaxResultBytes") || !strings.Contains(err.Error(), "split the policy") || out != nil {
			t.Fatalf("step: %s, %v; want the state limit error and no result", out, err)
		}
		// The same state without the notes is fine.
		delete(st, "notes")
		if _, err := f.call(t, map[string]any{"action": "step", "state": st}); err != nil {
			t.Fatalf("step: %v", err)
		}
	})
	t.Run("start rejects a plan too large", func(t *testing.T) {
		f := newFleet(t)
		// An opted-out instance: start would image it without reboot.
		f.env.Sim.SeedFleet("", "", 1, map[string]string{"Backup": "yes", tags.NoReboot: "true"})
		defer rollout.SetMaxResultBytes(1000)() // the start state fits (about 700 bytes), its peak does not
		input := `{"policy":"nightly","time":"` + tags.FormatTime(slot) + `"}`
		_, err := f.call(t, map[string]any{"action": "start", "input": json.RawMessage(input)})
		if err == nil || !strings.Contains(err.Error(), "rollout.MaxResultBytes (1000;") || !strings.Contains(err.Error(), "split the policy") ||
			!strings.Contains(err.Error(), `policy "nightly"`) || !strings.Contains(err.Error(), "nothing was changed") {
			t.Fatalf("start: %v, want the plan rejected naming the limit", err)
		}
		t.Log(err)
		for a, n := range f.env.Sim.Calls().ByAction {
			if !strings.HasPrefix(a, "Describe") {
				t.Errorf("%d %s calls by a rejected start", n, a)
			}
		}
		if n := len(f.imagesPer()); n != 0 {
			t.Errorf("%d instances imaged", n)
		}
	})
}
