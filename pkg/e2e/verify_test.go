package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/sfnlocal"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
	"github.com/amibackup/amibackup/pkg/verify"
)

// verifyConfig: one policy verified with the shortest timeout the
// configuration allows (5m), two instances at a time, in the isolated
// network the stack creates (its IDs are tokens in the template; the test
// supplies verifyNet).
const verifyConfig = `{"deployment":"AmiBackup","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},"verify":{"schedule":{"expression":"cron(0 5 ? * SUN *)"},"timeout":"5m","maxConcurrent":2}}]}`

// verifyNet stands in for the stack's isolated VPC: ec2sim does not model
// subnets and security groups and accepts any subnet-/sg- ID.
var verifyNet = verify.Network{Subnets: []string{"subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60719"}, SecurityGroup: "sg-0a1b2c3d4e5f6071a"}

// State names of the verification workflow (infra/stacks VerifyState*;
// not imported: the CDK bindings take minutes to compile).
const (
	vStateStep    = "Step"
	vStateOnError = "Clean up after error"
)

// verifyWF is the synthesized verification state machine (plain ASL) and
// the verify function, prepared once.
var verifyWF struct {
	once sync.Once
	def  []byte
	fnID string
	w    *localrun.Workflow
	eng  *sfnlocal.Engine
	err  error
}

func prepareVerifyWF(t *testing.T) {
	t.Helper()
	verifyWF.once.Do(func() {
		root, _ := filepath.Abs("../..")
		// Inside the work directory of Prepare (<work>/<goarch>/backup/
		// bootstrap), which TestMain removes.
		work := filepath.Dir(filepath.Dir(filepath.Dir(prepared.BackupBin)))
		w, err := localrun.PrepareVerify(context.Background(), root, work, verifyConfig)
		if err != nil {
			verifyWF.err = err
			return
		}
		verifyWF.w = w
		if verifyWF.def, err = sfnlocal.Resolve(w.Template, w.StateMachine, nil); err != nil {
			verifyWF.err = err
			return
		}
		ids, err := sfnlocal.Functions(w.Template, w.StateMachine)
		if err != nil || len(ids) != 1 {
			verifyWF.err = fmt.Errorf("functions of the verification workflow: %v %v", ids, err)
			return
		}
		verifyWF.fnID = ids[0]
		if verifyWF.eng, err = sfnlocal.FindEngine(root); err != nil {
			verifyWF.err = err
			return
		}
		if err := verifyWF.eng.Check(context.Background(), verifyWF.def); err != nil {
			verifyWF.err = fmt.Errorf("the synthesized verification workflow cannot run offline as in AWS: %w", err)
		}
	})
	if verifyWF.err != nil {
		t.Fatal(verifyWF.err)
	}
}

// vFleet: an account in real time (the function uses its own clock) whose
// launches take a second to run and a second to pass (or fail) their
// status checks; four instances with an older and a newest image each;
// foreign images and foreign instances with look-alike tags.
type vFleet struct {
	h       *localrun.Harness
	env     *simtest.Env // the same emulator, for the test's own calls
	fn      *localrun.Function
	url     string // the function's invoke URL the engine uses
	newest  []string
	older   []string
	foreign []string // images no run may launch from
	// lookAlike are instances with some of our tags, launched an hour ago:
	// never terminated.
	lookAlike []string
	mu        sync.Mutex
	peak      int // most verification instances alive at once
	stop      chan struct{}
	ticker    sync.WaitGroup
}

func newVFleet(t *testing.T) *vFleet {
	t.Helper()
	prepareVerifyWF(t)
	env := simtest.Start(t, ec2sim.Options{Launch: ec2sim.LaunchTiming{Pending: time.Second, StatusInit: time.Second, ShuttingDown: time.Second}})
	sim := env.Sim
	h, err := prepared.Start(context.Background(), sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	f := &vFleet{h: h, env: env, stop: make(chan struct{})}
	if f.fn, err = h.StartVerify(context.Background(), prepared.RIE, verifyWF.w, verifyNet); err != nil {
		t.Fatal(err)
	}
	f.url = f.fn.URL
	now := sim.Now()
	for _, inst := range sim.SeedFleet("", "", 4, map[string]string{"Backup": "nightly"}) {
		for k, age := range []time.Duration{2 * 24 * time.Hour, 2 * time.Hour} {
			created := now.Add(-age)
			id, _ := sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", inst, created), InstanceID: inst, Created: created,
				Tags: map[string]string{tags.ManagedBy: localrun.Stack, tags.Policy: "nightly", tags.InstanceID: inst, tags.Time: tags.FormatTime(created)}})
			if k == 0 {
				f.older = append(f.older, id)
			} else {
				f.newest = append(f.newest, id)
			}
		}
		// Newer than ours, named like ours, someone else's.
		created := now.Add(-time.Hour)
		id, _ := sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", inst, created) + "-copy", InstanceID: inst, Created: created,
			Tags: map[string]string{tags.ManagedBy: "someone-else", tags.Policy: "nightly", tags.InstanceID: inst, tags.Time: tags.FormatTime(created)}})
		f.foreign = append(f.foreign, id)
	}
	golden, _ := sim.AddImage(ec2sim.ImageSpec{Name: "golden-base", Created: now.AddDate(0, -1, 0)})
	f.foreign = append(f.foreign, golden)
	// Look-alike instances, launched from the golden image an hour ago (older
	// than any timeout plus the sweep margin): one tag of ours missing or
	// another deployment's.
	for i, tg := range []map[string]string{
		{tags.ManagedBy: localrun.Stack + "-staging", tags.VerifyOf: f.newest[0], tags.Policy: "nightly"},
		{tags.ManagedBy: localrun.Stack, tags.Policy: "nightly"},
		{tags.VerifyOf: f.newest[0], tags.Policy: "nightly"},
	} {
		var ts []types.Tag
		for k, v := range tg {
			ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		out, err := env.Client("", "").RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String(golden), InstanceType: types.InstanceTypeT3Micro,
			MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(fmt.Sprintf("look-alike-%d", i)),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: ts}}})
		if err != nil {
			t.Fatal(err)
		}
		id := aws.ToString(out.Instances[0].InstanceId)
		if err := sim.BackdateLaunch("", "", id, time.Hour); err != nil {
			t.Fatal(err)
		}
		f.lookAlike = append(f.lookAlike, id)
	}
	sim.ResetCalls()
	f.ticker.Add(1)
	go f.watch()
	t.Cleanup(func() { close(f.stop); f.ticker.Wait() })
	return f
}

// ours are the verification instances of this deployment (both tags), any state.
func (f *vFleet) ours() []ec2sim.Instance {
	var out []ec2sim.Instance
	for _, in := range f.h.Sim.Instances("", "") {
		if in.Tags[tags.ManagedBy] == localrun.Stack && in.Tags[tags.VerifyOf] != "" {
			out = append(out, in)
		}
	}
	return out
}

func alive(in ec2sim.Instance) bool {
	return slices.Contains([]string{"pending", "running", "stopping", "stopped"}, in.State)
}

func (f *vFleet) aliveOurs() []string {
	var ids []string
	for _, in := range f.ours() {
		if alive(in) {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

// watch records the most verification instances alive at once.
func (f *vFleet) watch() {
	defer f.ticker.Done()
	for {
		select {
		case <-f.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		n := len(f.aliveOurs())
		f.mu.Lock()
		f.peak = max(f.peak, n)
		f.mu.Unlock()
	}
}

// halt makes an image unbootable (its instances' instance check impaired,
// never ok) and its guests halt a second after the check is impaired.
func (f *vFleet) halt(t *testing.T, imageID string) {
	f.h.Sim.UnbootableImage(imageID)
	t.Cleanup(simtest.HaltWhenImpaired(f.h.Sim, time.Second, imageID))
}

func vInput(at time.Time) []byte {
	b, _ := json.Marshal(map[string]string{"policy": "nightly", "time": at.UTC().Truncate(time.Minute).Format(time.RFC3339)})
	return b
}

// run executes the verification workflow; the Wait states take 200 ms
// instead of 15 s, retries 100 ms.
func (f *vFleet) run(ctx context.Context, t *testing.T, input []byte, onEvent func(sfnlocal.Event)) *sfnlocal.Result {
	t.Helper()
	short := 200 * time.Millisecond
	res, err := verifyWF.eng.Run(ctx, verifyWF.def, input, sfnlocal.Options{
		Functions:              map[string][]string{sfnlocal.LocalFunctionARN(verifyWF.fnID): {f.url}},
		WaitOverrides:          map[string]time.Duration{"Wait": short, "Wait to clean up": short, "Wait to clean up after error": short},
		RetryIntervalOverrides: map[string]time.Duration{"Start": short / 2, vStateStep: short / 2, "Clean up": short / 2, vStateOnError: short / 2},
		OnEvent:                onEvent,
	})
	if err != nil && ctx.Err() != nil {
		return &sfnlocal.Result{Status: sfnlocal.Aborted}
	}
	if err != nil {
		t.Fatalf("execution: %v\n%s", err, f.fn.Logs())
	}
	return res
}

func (f *vFleet) tags(id string) map[string]string {
	for _, im := range f.h.Sim.Images("", "") {
		if im.ID == id {
			return im.Tags
		}
	}
	return nil
}

// untouched: no foreign or older image tagged or launched from, no
// look-alike instance terminated, every launch one of ours from a newest
// image, placed in the verification network.
func (f *vFleet) untouched(t *testing.T) {
	t.Helper()
	for _, id := range slices.Concat(f.foreign, f.older) {
		tg := f.tags(id)
		if tg[tags.Verified] != "" || tg[tags.Verify] != "" || tg[tags.VerifyError] != "" {
			t.Errorf("image %s (not in any plan) tagged %v", id, tg)
		}
	}
	for _, in := range f.h.Sim.Instances("", "") {
		if slices.Contains(f.lookAlike, in.ID) {
			if in.State != "running" {
				t.Errorf("look-alike instance %s %v is %s", in.ID, in.Tags, in.State)
			}
			continue
		}
		if in.ImageID == "" {
			continue // the seeded fleet
		}
		if !slices.Contains(f.newest, in.ImageID) || in.Tags[tags.VerifyOf] != in.ImageID || in.Tags[tags.ManagedBy] != localrun.Stack {
			t.Errorf("instance %s launched from %s with tags %v", in.ID, in.ImageID, in.Tags)
		}
		if in.PublicIP || !slices.Contains(verifyNet.Subnets, in.SubnetID) || !slices.Equal(in.SecurityGroupIDs, []string{verifyNet.SecurityGroup}) {
			t.Errorf("instance %s placed in %s %v, public IP %v", in.ID, in.SubnetID, in.SecurityGroupIDs, in.PublicIP)
		}
	}
}

// TestVerifyWorkflowUnderRIE: the synthesized verification state machine,
// executed offline with the real verify bootstrap under the RIE against
// ec2sim: each instance's newest image booted once, at most maxConcurrent
// at a time; the images that booted tagged verified, the unbootable one
// failed with the reason; nothing left running; foreign images and
// look-alike instances untouched. A second execution of the same slot
// boots only the failed image again.
//
// The unbootable image's instance check is impaired and never ok; the
// Verifier gives such an instance its policy's timeout (5m at least) before
// failing it, which the in-process TestVerify (pkg/verify, simulated clock)
// covers. Here the function uses the real clock, so the guest halts once
// impaired (ec2sim ShutdownFromOS, shutdown behavior terminate) and the
// Verifier fails the image on the instance leaving running early.
func TestVerifyWorkflowUnderRIE(t *testing.T) {
	f := newVFleet(t)
	bad := f.newest[1]
	f.halt(t, bad)
	slot := f.h.Sim.Now()
	began := time.Now()
	res := f.run(context.Background(), t, vInput(slot), nil)
	if res.Status != sfnlocal.Failed || res.Error != "VerifyProblems" {
		t.Fatalf("execution %s %s: %s\n%s", res.Status, res.Error, res.Cause, f.fn.Logs())
	}
	if c := res.TaskError("Finish"); !strings.Contains(c, bad) {
		t.Errorf("finish does not name the failed image %s: %s", bad, c)
	}
	for _, id := range f.newest {
		tg := f.tags(id)
		if id == bad {
			if tg[tags.Verify] != tags.VerifyFailed || tg[tags.Verified] != "" || !strings.Contains(tg[tags.VerifyError], "before both status checks were ok") {
				t.Errorf("unbootable %s tagged %v", id, tg)
			}
			continue
		}
		if _, err := tags.ParseTime(tg[tags.Verified]); err != nil || tg[tags.Verify] != "" {
			t.Errorf("%s booted, tagged %v", id, tg)
		}
	}
	if left := f.aliveOurs(); len(left) > 0 {
		t.Errorf("verification instances alive after the run: %v", left)
	}
	if n := len(f.ours()); n != len(f.newest) {
		t.Errorf("%d launches for %d images", n, len(f.newest))
	}
	f.mu.Lock()
	peak := f.peak
	f.mu.Unlock()
	if peak > 2 || peak == 0 {
		t.Errorf("at most %d verification instances alive at once, want 1..2 (maxConcurrent 2)", peak)
	}
	f.untouched(t)
	calls := f.h.Sim.Calls()
	t.Logf("execution %s in %s: %d invocations, %d EC2 calls %v", res.Status, time.Since(began).Round(time.Millisecond), len(res.Invocations()), calls.Total, calls.ByAction)

	// The same slot again (Scheduler's at-least-once delivery, or a re-run):
	// the verified images are not booted twice, the failed one is.
	f.h.Sim.ResetCalls()
	res = f.run(context.Background(), t, vInput(slot), nil)
	if res.Status != sfnlocal.Failed || res.Error != "VerifyProblems" {
		t.Fatalf("second execution %s %s: %s", res.Status, res.Error, res.Cause)
	}
	if n := f.h.Sim.Calls().ByAction["RunInstances"]; n != 1 {
		t.Errorf("second execution: %d RunInstances, want 1 (the failed image only)", n)
	}
	if left := f.aliveOurs(); len(left) > 0 {
		t.Errorf("verification instances alive after the second run: %v", left)
	}
	f.untouched(t)
}

// TestVerifyWorkflowKilledThenSwept: an execution killed after its first
// launch (no Catch, no cleanup) leaves instances running. A new execution
// right after verifies the images but leaves those young instances alone
// (they may be a live execution's); once they are older than the timeout
// plus verify.SweepMargin (ec2sim BackdateLaunch: the function's clock is
// the real one), the next execution's start sweeps them: none left, and
// look-alike instances (an hour old) never terminated.
func TestVerifyWorkflowKilledThenSwept(t *testing.T) {
	f := newVFleet(t)
	slot := f.h.Sim.Now()
	ctx, cancel := context.WithCancel(context.Background())
	res := f.run(ctx, t, vInput(slot), func(e sfnlocal.Event) {
		// Killed once a step returned with launches in flight.
		if e.Type == "TaskSucceeded" && e.State == vStateStep && bytes.Contains(e.Output, []byte(`"inFlight"`)) {
			cancel()
		}
	})
	cancel()
	if res.Status != sfnlocal.Aborted {
		t.Fatalf("first execution %s", res.Status)
	}
	crashed := f.aliveOurs()
	if len(crashed) == 0 {
		t.Fatal("the killed execution left nothing running: the crash proves nothing")
	}
	res = f.run(context.Background(), t, vInput(slot), nil)
	if res.Status != sfnlocal.Succeeded {
		t.Fatalf("second execution %s %s: %s\n%s", res.Status, res.Error, res.Cause, f.fn.Logs())
	}
	for _, id := range f.newest {
		if f.tags(id)[tags.Verified] == "" {
			t.Errorf("%s not verified by the second execution", id)
		}
	}
	if left := f.aliveOurs(); !slices.Equal(left, crashed) {
		t.Errorf("after the second execution alive %v, want the killed one's young instances %v untouched", left, crashed)
	}
	age := config.MinVerifyTimeout + verify.SweepMargin + time.Minute
	for _, id := range crashed {
		if err := f.h.Sim.BackdateLaunch("", "", id, age); err != nil {
			t.Fatal(err)
		}
	}
	res = f.run(context.Background(), t, vInput(f.h.Sim.Now()), nil)
	if res.Status != sfnlocal.Succeeded {
		t.Fatalf("third execution %s %s: %s\n%s", res.Status, res.Error, res.Cause, f.fn.Logs())
	}
	var sum verify.Summary
	json.Unmarshal(res.Output, &sum)
	if sum.Swept != len(crashed) || sum.Images.Planned != 0 {
		t.Errorf("third execution swept %d (want %d), planned %d (all verified): %s", sum.Swept, len(crashed), sum.Images.Planned, res.Output)
	}
	if left := f.aliveOurs(); len(left) > 0 {
		t.Errorf("left after the sweep: %v", left)
	}
	f.untouched(t)
}

// TestVerifyWorkflowStepError: a step that keeps failing (its state
// corrupted on the way to the function: the function rejects it) is
// retried, then caught: the cleanup-after-error loop terminates what the
// run launched, and the execution fails.
func TestVerifyWorkflowStepError(t *testing.T) {
	f := newVFleet(t)
	var steps atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req map[string]any
		if json.Unmarshal(body, &req) == nil && req["action"] == verify.ActionStep && steps.Add(1) > 2 {
			req["state"].(map[string]any)["v"] = 99
			body, _ = json.Marshal(req)
		}
		resp, err := http.Post(f.fn.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	f.url = proxy.URL
	res := f.run(context.Background(), t, vInput(f.h.Sim.Now()), nil)
	if res.Status != sfnlocal.Failed || res.Error != "VerifyFailed" {
		t.Fatalf("execution %s %s: %s\n%s", res.Status, res.Error, res.Cause, f.fn.Logs())
	}
	stepErr := res.TaskError(vStateStep)
	if !strings.Contains(stepErr, "input.state.v") {
		t.Errorf("the step's error does not name the field: %q", stepErr)
	}
	if !slices.Contains(res.Entered(), vStateOnError) {
		t.Fatalf("the Catch did not run the cleanup: %v", res.Entered())
	}
	if len(f.ours()) == 0 {
		t.Fatal("nothing was launched before the step failed: the cleanup proves nothing")
	}
	if left := f.aliveOurs(); len(left) > 0 {
		t.Errorf("left after the cleanup after error: %v", left)
	}
	f.untouched(t)
}

// TestVerifyWorkflowBadInput: input the function rejects fails the
// execution at Start, naming the field, with zero EC2 calls.
func TestVerifyWorkflowBadInput(t *testing.T) {
	f := newVFleet(t)
	now := time.Now().UTC()
	for _, c := range []struct{ input, want string }{
		{`{"policy":"nightly","time":"yesterday"}`, "input.time"},
		{`{"policy":"nope","time":"2026-11-24T05:00:00Z"}`, "nope"},
		{string(vInput(now.Add(2 * time.Hour))), "input.time"},
		{`{"policy":"nightly","time":"2026-11-24T05:00:00Z","extra":1}`, "extra"},
		{string(trigger.MarshalVerifyEvent(now, trigger.VerifyDetail{Policy: "nightly", ImageIDs: []string{"not-an-image"}})), "not-an-image"},
	} {
		res := f.run(context.Background(), t, []byte(c.input), nil)
		if res.Status != sfnlocal.Failed || res.Error != "VerifyFailed" {
			t.Errorf("%s: %s %s", c.input, res.Status, res.Error)
		}
		cause := ""
		for _, inv := range res.Invocations() {
			cause += inv.Cause
		}
		if !strings.Contains(cause, c.want) {
			t.Errorf("%s: start's error %q does not name %q", c.input, cause, c.want)
		}
		if got := res.Entered(); len(got) == 0 || got[0] != "Start" || slices.Contains(got, vStateStep) {
			t.Errorf("%s: states %v", c.input, got)
		}
	}
	if n := f.h.Sim.Calls().Total; n != 0 {
		t.Errorf("%d EC2 calls for rejected input", n)
	}
}
