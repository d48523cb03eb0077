package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/sfnlocal"
)

// wavesConfig: the policy reboots in waves per Auto Scaling group, target
// group and tag Service, one member at a time.
const wavesConfig = `{"deployment":"AmiBackup","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},"availability":{"groupBy":["asg","targetGroup","tag:Service"],"maxUnavailable":1,"healthTimeout":"1m"}}]}`

// workflow is the synthesized state machine (resolved to plain ASL) and
// the rollout function, prepared once.
var workflow struct {
	once    sync.Once
	def     []byte
	fnID    string
	rollout *localrun.Rollout
	work    string
	err     error
}

func prepareWorkflow(t *testing.T) {
	t.Helper()
	workflow.once.Do(func() {
		root, _ := filepath.Abs("../..")
		if workflow.work, workflow.err = os.MkdirTemp("", "amibackup-workflow-"); workflow.err != nil {
			return // removed by TestMain
		}
		r, err := localrun.PrepareRollout(context.Background(), root, workflow.work, wavesConfig)
		if err != nil {
			workflow.err = err
			return
		}
		workflow.rollout = r
		if workflow.def, err = sfnlocal.Resolve(r.Template, "", nil); err != nil {
			workflow.err = err
			return
		}
		ids, err := sfnlocal.Functions(r.Template, "")
		if err != nil || len(ids) != 1 {
			workflow.err = fmt.Errorf("functions of the workflow: %v %v", ids, err)
			return
		}
		workflow.fnID = ids[0]
	})
	if workflow.err != nil {
		t.Fatal(workflow.err)
	}
}

// wfFleet is the emulated account in real time (the functions use their own
// clock), with reboot phases and target group timings of a second or two.
type wfFleet struct {
	simtest.WavesFleet
	h       *localrun.Harness
	rollout *localrun.Function
	eng     *sfnlocal.Engine
}

func newWfFleet(t *testing.T) *wfFleet {
	t.Helper()
	prepareWorkflow(t)
	sim := ec2sim.New(ec2sim.Options{RebootModel: true, GroupTags: []string{"Service"}, LifecycleDelay: time.Second,
		Reboot: ec2sim.RebootTiming{Stopping: time.Second, Stopped: time.Second, Pending: time.Second, StatusInit: time.Second}})
	h, err := prepared.Start(context.Background(), sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	f := &wfFleet{h: h, WavesFleet: simtest.SeedWavesFleet(sim, 2*time.Second, 2*time.Second)}
	if f.rollout, err = h.StartRollout(context.Background(), prepared.RIE, workflow.rollout); err != nil {
		t.Fatal(err)
	}
	root, _ := filepath.Abs("../..")
	if f.eng, err = sfnlocal.FindEngine(root); err != nil {
		t.Fatal(err)
	}
	if err := f.eng.Check(context.Background(), workflow.def); err != nil {
		t.Fatalf("the synthesized workflow cannot run offline as in AWS: %v", err)
	}
	return f
}

var slotTime = time.Now().UTC().Truncate(time.Minute).Add(-time.Minute)

func (f *wfFleet) input() []byte {
	b, _ := json.Marshal(map[string]string{"policy": "nightly", "time": slotTime.Format(time.RFC3339)})
	return b
}

// run executes the workflow; the Wait states take 200 ms instead of 15 s.
func (f *wfFleet) run(ctx context.Context, t *testing.T, onEvent func(sfnlocal.Event)) *sfnlocal.Result {
	t.Helper()
	return f.runInput(ctx, t, f.input(), onEvent)
}

func (f *wfFleet) runInput(ctx context.Context, t *testing.T, input []byte, onEvent func(sfnlocal.Event)) *sfnlocal.Result {
	t.Helper()
	return f.runNamed(ctx, t, images.ExecutionName("nightly", slotTime, false), input, onEvent)
}

// runNamed executes the workflow as the execution name of the deployed
// state machine ($$.Execution.Id and $$.StateMachine.Id as in AWS: the
// rollout's start guard lists that state machine's executions on ec2sim).
func (f *wfFleet) runNamed(ctx context.Context, t *testing.T, name string, input []byte, onEvent func(sfnlocal.Event)) *sfnlocal.Result {
	t.Helper()
	short := 200 * time.Millisecond
	res, err := f.eng.Run(ctx, workflow.def, input, sfnlocal.Options{
		Name: name, StateMachineName: workflow.rollout.StateMachineName,
		Functions:              map[string][]string{sfnlocal.LocalFunctionARN(workflow.fnID): {f.rollout.URL}},
		WaitOverrides:          map[string]time.Duration{"Wait": short, "Wait to restore": short, "Wait to restore after error": short},
		RetryIntervalOverrides: map[string]time.Duration{"Start": short, "Step": short, "Restore": short, "Restore after error": short},
		OnEvent:                onEvent,
	})
	if err != nil && ctx.Err() != nil {
		return &sfnlocal.Result{Status: sfnlocal.Aborted} // killed: the crash the test wanted
	}
	if err != nil {
		t.Fatalf("execution: %v\n%s", err, f.rollout.Logs())
	}
	return res
}

func (f *wfFleet) imagesPer() map[string]int { return simtest.ImagesPerInstance(f.h.Sim, slotTime) }

// inService: no member of any group unavailable now (every Auto Scaling
// member InService, every target healthy, every instance running with its
// checks ok: ec2sim's availability record) and no drain tag left.
func (f *wfFleet) inService(t *testing.T) {
	t.Helper()
	for _, g := range f.h.Sim.Availability() {
		if g.Unavailable != 0 {
			t.Errorf("group %s: %d of %d members unavailable after the run", g.Key, g.Unavailable, g.Members)
		}
	}
	for _, id := range f.All() {
		in, _ := f.h.Sim.Instance("", "", id)
		if v, ok := in.Tags[drain.TagKey]; ok {
			t.Errorf("%s still tagged %s=%s", id, drain.TagKey, v)
		}
	}
}

// TestWorkflowUnderRIE: the synthesized state machine, executed offline
// with the real rollout bootstrap under the RIE against ec2sim: every
// instance imaged once, drained first (no Auto Scaling member stopped while
// InService), at most one member of each group down at any moment, all
// back in service at the end.
func TestWorkflowUnderRIE(t *testing.T) {
	f := newWfFleet(t)
	began := time.Now()
	res := f.run(context.Background(), t, nil)
	if res.Status != sfnlocal.Succeeded {
		t.Fatalf("execution %s: %s %s\n%s", res.Status, res.Error, res.Cause, f.rollout.Logs())
	}
	per := f.imagesPer()
	for _, id := range f.All() {
		if per[id] != 1 {
			t.Errorf("%s: %d images", id, per[id])
		}
	}
	mu := simtest.MaxUnavailable(t, f.h.Sim)
	for _, k := range []string{"autoscaling:web", "targetgroup:web", "tag:Service=db"} {
		if mu[k] != 1 {
			t.Errorf("group %s: at most %d unavailable at once, want 1", k, mu[k])
		}
	}
	f.inService(t)
	t.Logf("execution %s, %d invocations, %d engine events, max unavailable %v", time.Since(began).Round(time.Millisecond), len(res.Invocations()), len(res.Events), mu)
}

// TestWorkflowCrashThenRepeat: an execution killed mid-run (no Catch runs)
// followed by a new execution for the same slot: nothing left in Standby
// or deregistered, no duplicate image, still one member down at a time.
func TestWorkflowCrashThenRepeat(t *testing.T) {
	f := newWfFleet(t)
	ctx, cancel := context.WithCancel(context.Background())
	waits := 0
	res := f.run(ctx, t, func(e sfnlocal.Event) {
		// Killed between two steps, with the web tier's first member drained.
		if e.Type == "StateEntered" && e.State == "Wait" {
			if waits++; waits == 3 {
				cancel()
			}
		}
	})
	if res.Status != sfnlocal.Aborted {
		t.Fatalf("first execution %s", res.Status)
	}
	if n := len(f.imagesPer()); n == 0 || n == 7 {
		t.Fatalf("killed run imaged %d instances: the crash proves nothing", n)
	}
	tagged := 0
	for _, id := range f.All() {
		if in, _ := f.h.Sim.Instance("", "", id); in.Tags[drain.TagKey] != "" {
			tagged++
		}
	}
	if tagged == 0 {
		t.Fatal("the killed run left nothing drained: the crash proves nothing")
	}
	res = f.run(context.Background(), t, nil)
	if res.Status != sfnlocal.Succeeded {
		t.Fatalf("second execution %s: %s %s\n%s", res.Status, res.Error, res.Cause, f.rollout.Logs())
	}
	for _, id := range f.All() {
		if n := f.imagesPer()[id]; n != 1 {
			t.Errorf("%s: %d images", id, n)
		}
	}
	f.inService(t)
	if mu := simtest.MaxUnavailable(t, f.h.Sim); mu["autoscaling:web"] > 1 || mu["targetgroup:web"] > 1 || mu["tag:Service=db"] > 1 {
		t.Errorf("max unavailable %v", mu)
	}
}

// TestWorkflowHalt: a web member that never boots halts its group (its
// other members are not rebooted), the other groups finish, and the
// execution fails at Finish, naming the instance. healthTimeout is 1m (the
// least the configuration allows) and the functions use the real clock,
// so this test takes over a minute: skipped with -short.
func TestWorkflowHalt(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the 1m healthTimeout in real time")
	}
	f := newWfFleet(t)
	f.h.Sim.NeverBoots(f.Web[0])
	res := f.run(context.Background(), t, nil)
	if res.Status != sfnlocal.Failed || res.Error != "RolloutProblems" {
		t.Fatalf("execution %s %s: %s", res.Status, res.Error, res.Cause)
	}
	var finishErr string
	for _, inv := range res.Invocations() {
		if inv.State == "Finish" {
			finishErr = inv.Cause
		}
	}
	if !strings.Contains(finishErr, "halted at "+f.Web[0]) {
		t.Errorf("finish did not report the halt: %s", finishErr)
	}
	per := f.imagesPer()
	if per[f.Web[1]] != 0 || per[f.Web[2]] != 0 {
		t.Errorf("members of the halted group rebooted: %v", per)
	}
	for _, id := range append(append([]string{}, f.DB...), f.Standalone...) {
		if per[id] != 1 {
			t.Errorf("%s: %d images", id, per[id])
		}
	}
	if mu := simtest.MaxUnavailable(t, f.h.Sim, f.Web[0]); mu["autoscaling:web"] > 1 || mu["tag:Service=db"] != 1 {
		t.Errorf("max unavailable %v", mu)
	}
}

// TestWorkflowBadInput: an execution whose input the backup would reject
// fails at Start, naming the field, with zero AWS calls.
func TestWorkflowBadInput(t *testing.T) {
	f := newWfFleet(t)
	for _, c := range []struct{ input, want string }{
		{`{"policy":"nightly","time":"yesterday"}`, "input.time"},
		{`{"policy":"nope","time":"2026-11-24T03:00:00Z"}`, "nope"},
		{`{"policy":"nightly","time":"2026-11-24T03:00:00Z","dryRun":true}`, "dryRun"},
	} {
		res := f.runInput(context.Background(), t, []byte(c.input), nil)
		if res.Status != sfnlocal.Failed || res.Error != "RolloutFailed" {
			t.Errorf("%s: %s %s", c.input, res.Status, res.Error)
		}
		cause := ""
		for _, inv := range res.Invocations() {
			cause += inv.Cause
		}
		if !strings.Contains(cause, c.want) {
			t.Errorf("%s: start's error %q does not name %q", c.input, cause, c.want)
		}
	}
	if n := f.h.Sim.Calls().Total; n != 0 {
		t.Errorf("%d AWS calls for rejected input", n)
	}
}

// TestWorkflowHandoffUnderRIE: the backup bootstrap, configured from the
// same template, gets the Scheduler input of a policy that reboots in
// waves three times (at-least-once delivery): it starts one execution,
// named for policy and slot, with the trigger as input and no EC2 call;
// the second delivery while it runs gets the same execution; after it
// closed, the third is reported as already run. The execution it started
// then runs through the synthesized state machine, its start guard seeing
// only itself.
func TestWorkflowHandoffUnderRIE(t *testing.T) {
	f := newWfFleet(t)
	ctx := context.Background()
	backupFn, err := f.h.StartBackup(ctx, prepared.RIE, prepared.BackupBin, workflow.rollout.BackupEnv)
	if err != nil {
		t.Fatal(err)
	}
	name := images.ExecutionName("nightly", slotTime, false)
	arn := strings.Replace(localrun.StateMachineARN(workflow.rollout.StateMachineName), ":stateMachine:", ":execution:", 1) + ":" + name
	type summary struct {
		Done    []struct{ ID, Detail string }
		Existed []struct{ ID, Detail string } `json:"alreadyDone"`
	}
	deliver := func(what string) summary {
		out, _, err := backupFn.Invoke(ctx, f.input())
		if err != nil {
			t.Fatalf("%s: %v\n%s", what, err, backupFn.Logs())
		}
		var s summary
		if err := json.Unmarshal(out, &s); err != nil {
			t.Fatalf("%s: %s", what, out)
		}
		return s
	}
	for _, what := range []string{"first delivery", "second delivery while it runs"} {
		if s := deliver(what); len(s.Done) != 1 || s.Done[0].ID != name || !strings.Contains(s.Done[0].Detail, arn) {
			t.Errorf("%s: summary %+v, want execution %s", what, s, arn)
		}
	}
	ex := f.h.Sim.Executions()
	if len(ex) != 1 || ex[0].ARN != arn || ex[0].Input != string(f.input()) {
		t.Fatalf("executions %+v, want one %s with the trigger as input", ex, arn)
	}
	if c := f.h.Sim.Calls(); c.Total != c.Count("states:StartExecution") {
		t.Errorf("the hand-off made other calls than StartExecution: %v", c.ByAction)
	}
	res := f.runNamed(ctx, t, name, []byte(ex[0].Input), nil)
	if res.Status != sfnlocal.Succeeded {
		t.Fatalf("execution %s: %s %s\n%s", res.Status, res.Error, res.Cause, f.rollout.Logs())
	}
	for _, id := range f.All() {
		if n := f.imagesPer()[id]; n != 1 {
			t.Errorf("%s: %d images", id, n)
		}
	}
	f.h.Sim.FinishExecution(arn, ec2sim.ExecutionSucceeded)
	if s := deliver("third delivery after it closed"); len(s.Existed) != 1 || len(s.Done) != 0 || !strings.Contains(s.Existed[0].Detail, "already") {
		t.Errorf("third delivery: %+v, want reported as already run", s)
	}
	if n := len(f.h.Sim.Executions()); n != 1 {
		t.Errorf("%d executions, want 1", n)
	}
}

// TestWorkflowGuardUnderRIE (issue 13, H2 and M4): another real execution
// of the workflow that started earlier, of the same policy (another slot)
// or of another policy (two policies may select one fleet), blocks Start
// with AnotherRunActive, naming it, with no EC2 call; the state machine
// retries that error (every 300 s in AWS, 200 ms here) and runs once the
// other has ended; with the other running throughout, the retries end and
// the execution fails at Start. A Start that fails once for another reason
// (here the role's permission not yet in effect) is retried and runs.
func TestWorkflowGuardUnderRIE(t *testing.T) {
	sm := localrun.StateMachineARN(workflow.rollout.StateMachineName)
	execARN := func(n string) string { return strings.Replace(sm, ":stateMachine:", ":execution:", 1) + ":" + n }
	starts := func(res *sfnlocal.Result) (errs []string) {
		for _, inv := range res.Invocations() {
			if inv.State == "Start" {
				errs = append(errs, inv.Error)
			}
		}
		return errs
	}
	t.Run("same policy runs throughout", func(t *testing.T) {
		f := newWfFleet(t)
		other := images.ExecutionName("nightly", slotTime.Add(-24*time.Hour), false)
		f.h.Sim.SeedExecution(ec2sim.Execution{ARN: execARN(other), StateMachineARN: sm, Name: other, Start: f.h.Sim.Now().Add(-time.Hour)})
		res := f.run(context.Background(), t, nil)
		if res.Status != sfnlocal.Failed || res.Error != "RolloutFailed" {
			t.Fatalf("execution %s %s, want RolloutFailed at Start", res.Status, res.Error)
		}
		if errs := starts(res); len(errs) != 25 || slices.IndexFunc(errs, func(e string) bool { return e != "AnotherRunActive" }) >= 0 {
			t.Errorf("Start invocations' errors %v, want AnotherRunActive 25 times (24 retries)", errs)
		}
		cause := ""
		for _, inv := range res.Invocations() {
			cause += inv.Cause
		}
		if !strings.Contains(cause, execARN(other)) {
			t.Errorf("start's error %q does not name %s", cause, execARN(other))
		}
		for a, n := range f.h.Sim.Calls().ByAction {
			if !strings.HasPrefix(a, "states:") {
				t.Errorf("%d %s calls by a blocked execution", n, a)
			}
		}
	})
	t.Run("another policy's run ends while this one waits", func(t *testing.T) {
		f := newWfFleet(t)
		weekly := images.ExecutionName("weekly", slotTime, false)
		f.h.Sim.SeedExecution(ec2sim.Execution{ARN: execARN(weekly), StateMachineARN: sm, Name: weekly, Start: f.h.Sim.Now().Add(-time.Hour)})
		blocked := 0
		res := f.run(context.Background(), t, func(e sfnlocal.Event) {
			if e.Type == "TaskFailed" && e.State == "Start" {
				if blocked++; blocked == 2 && !f.h.Sim.FinishExecution(execARN(weekly), ec2sim.ExecutionSucceeded) {
					t.Error("finish the other execution")
				}
			}
		})
		if res.Status != sfnlocal.Succeeded {
			t.Fatalf("execution %s %s %s\n%s", res.Status, res.Error, res.Cause, f.rollout.Logs())
		}
		if errs := starts(res); !slices.Equal(errs, []string{"AnotherRunActive", "AnotherRunActive", ""}) {
			t.Errorf("Start invocations' errors %q, want blocked twice, then run", errs)
		}
		for _, id := range f.All() {
			if n := f.imagesPer()[id]; n != 1 {
				t.Errorf("%s: %d images", id, n)
			}
		}
	})
	t.Run("transient start error", func(t *testing.T) {
		f := newWfFleet(t)
		f.h.Sim.Inject(ec2sim.Fault{Action: "states:ListExecutions", Nth: 1, Code: "AccessDeniedException",
			Message: "not authorized to perform: states:ListExecutions (injected: the role's new policy not in effect yet)"})
		res := f.run(context.Background(), t, nil)
		if res.Status != sfnlocal.Succeeded {
			t.Fatalf("execution %s %s %s\n%s", res.Status, res.Error, res.Cause, f.rollout.Logs())
		}
		if errs := starts(res); len(errs) != 2 || errs[0] == "" || errs[0] == "AnotherRunActive" || errs[1] != "" {
			t.Errorf("Start invocations' errors %q, want one failure (not AnotherRunActive), then run", errs)
		}
		for _, id := range f.All() {
			if n := f.imagesPer()[id]; n != 1 {
				t.Errorf("%s: %d images", id, n)
			}
		}
	})
}
