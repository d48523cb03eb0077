package rollout_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/invoke"
	"github.com/amibackup/amibackup/pkg/rollout"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/sfnlocal"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/waves"
)

// The reboot-wave workflow at fleet scale (issue 13, acceptance
// "Benchmark"): the synthesized state machine executed by
// aws-local-stepfunctions (pkg/sfnlocal), its Lambda task answered in this
// process by the real rollout actions (rollout.Roller.Handle, rendered as
// the function renders them: pkg/invoke) against ec2sim with EC2's token
// buckets, the reboot model, Auto Scaling and ELBv2, over real SDK clients.
//
// Time. ec2sim's clock is frozen (it moves only when the harness moves it),
// so the simulated duration is exactly:
//   - every Wait state: the waitSeconds the previous action returned (the
//     engine's Wait states are overridden to 0 s of real time; the endpoint
//     advances the clock by the wait it answered when the next call comes);
//   - a fixed latency per Lambda invocation (invokeLatency: Step Functions
//     dispatch, a warm invoke and the round's sequential API calls);
//   - the SDK's retry waits: a throttled call (RequestLimitExceeded,
//     Throttling) advances the clock by retryQuantum and retries at once in
//     real time, so a step that issues more calls than a bucket holds takes
//     as long as the bucket needs to refill (to within a quantum per
//     worker), which is the least any client could wait. Production's
//     adaptive retryer waits at least that long.
// Nothing else moves it: how long the harness takes in real time (Node,
// JSON, the emulator) does not leak into the result.

// workflowDefinition is the synthesized state machine, resolved to plain
// ASL, and the logical ID of its function. It comes from the committed
// synth of the waves configuration (infra/stacks/testdata/golden/waves.json),
// which TestTemplatesMatchGolden keeps equal to `cdk synth` of the current
// stacks; a CDK synth here would take minutes per process.
var workflowDef struct {
	once sync.Once
	def  []byte
	fnID string
	err  error
}

func workflowDefinition(tb testing.TB) ([]byte, string) {
	tb.Helper()
	workflowDef.once.Do(func() {
		tmpl, err := os.ReadFile(filepath.Join("..", "..", "infra", "stacks", "testdata", "golden", "waves.json"))
		if err != nil {
			workflowDef.err = err
			return
		}
		if workflowDef.def, err = sfnlocal.Resolve(tmpl, "", nil); err != nil {
			workflowDef.err = err
			return
		}
		ids, err := sfnlocal.Functions(tmpl, "")
		if err != nil || len(ids) != 1 {
			workflowDef.err = fmt.Errorf("functions of the workflow: %v %v", ids, err)
			return
		}
		workflowDef.fnID = ids[0]
	})
	if workflowDef.err != nil {
		tb.Fatal(workflowDef.err)
	}
	return workflowDef.def, workflowDef.fnID
}

// Timing of the emulated fleet. Not multiples of the check interval, so a
// run cannot profit from transitions that fall exactly on a check.
const (
	benchDeregistrationDelay = 120 * time.Second // ELBv2 deregistration delay (tuned down from the 300 s default)
	benchHealthyAfter        = 50 * time.Second  // health check interval 10 s x healthy threshold 5
	benchLifecycleDelay      = 5 * time.Second   // EnteringStandby, Pending
	invokeLatency            = time.Second       // per Lambda invocation
	retryQuantum             = 100 * time.Millisecond
)

// benchReboot is the ec2sim reboot model (its defaults: 2 minutes).
var benchReboot = ec2sim.DefaultRebootTiming

// perReboot is the least time one member is out of service: drained
// (Standby and deregistration in parallel), rebooted until its status
// checks pass, then back (ExitStandby and the target's health checks in
// parallel). No member of a group can start before the previous one is
// back, so a group of n takes at least n x perReboot.
func perReboot() time.Duration {
	r := benchReboot
	return max(benchDeregistrationDelay, benchLifecycleDelay) + r.Stopping + r.Stopped + r.Pending + r.StatusInit +
		max(benchHealthyAfter, benchLifecycleDelay)
}

const benchConfig = `{"deployment":"bench","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
 "availability":{"groupBy":["asg","targetGroup"],"maxUnavailable":1,"healthTimeout":"15m"}}]}`

// groupSizes returns n group sizes between 1 and largest (one group of
// exactly largest) summing to total: 1..largest cycling, then evened out.
func groupSizes(n, largest, total int) []int {
	sizes := make([]int, n)
	sum := 0
	for g := range sizes {
		sizes[g] = 1 + g%largest
		sum += sizes[g]
	}
	for g := 0; sum != total; g = (g + 1) % n { // group largest-1 keeps the maximum
		switch {
		case g == largest-1:
		case sum > total && sizes[g] > 1:
			sizes[g]--
			sum--
		case sum < total && sizes[g] < largest-1:
			sizes[g]++
			sum++
		}
	}
	return sizes
}

// benchFleet seeds groups (each an Auto Scaling group behind a target group
// of its own) and ungrouped instances, all tagged Backup=nightly.
type benchFleet struct {
	groups    [][]string
	ungrouped []string
}

func (f benchFleet) all() []string { return slices.Concat(append(f.groups, f.ungrouped)...) }

// groupName names group g's Auto Scaling group and target group.
func groupName(g int) string { return fmt.Sprintf("svc-%03d", g) }

func seedBenchFleet(sim *ec2sim.Sim, sizes []int, ungrouped int) benchFleet {
	sel := map[string]string{"Backup": "nightly"}
	var f benchFleet
	for g, n := range sizes {
		ids := sim.SeedFleet("", "", n, sel)
		name := groupName(g)
		sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: name, Instances: ids})
		sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: name, Instances: ids, DeregistrationDelay: benchDeregistrationDelay, HealthyAfter: benchHealthyAfter})
		f.groups = append(f.groups, ids)
	}
	f.ungrouped = sim.SeedFleet("", "", ungrouped, sel)
	sim.ResetCalls()
	return f
}

// simRetryer is the SDK's standard retryer with its waits moved to the
// simulated clock (see Time above); 1,000 attempts so that a worker that
// loses the race for tokens many times in a row is not failed by the
// harness (100 s of simulated waiting).
type simRetryer struct {
	aws.RetryerV2
	wb *workflowBench
}

func (r simRetryer) MaxAttempts() int { return 1000 }

func (r simRetryer) RetryDelay(int, error) (time.Duration, error) {
	r.wb.advance(&r.wb.retried, retryQuantum)
	return 0, nil
}

// workflowBench is one emulated account, the endpoint of the rollout
// function and the accounting of one execution.
type workflowBench struct {
	sim     *ec2sim.Sim
	env     *simtest.Env
	cfg     *config.Config
	ec2     *ec2.Client
	asg     *autoscaling.Client
	elb     *elbv2.Client
	fleet   benchFleet
	slot    time.Time
	tracked func(group int) bool // whose availability ec2sim logs

	// Simulated time by cause (nanoseconds).
	waited, invoked, retried atomic.Int64

	mu          sync.Mutex
	pendingWait time.Duration
	invocations map[string]int
	errors      []string
	peakResult  int // bytes of the largest answer
	steps       int
}

// newWorkflowBench seeds the fleet; every group's availability is logged
// when trackEvery is 1, every trackEvery-th group's (always the largest)
// otherwise: ec2sim sweeps its log over every member of every logged group
// on every request, which at 400 groups made the emulator 77% of the
// benchmark's CPU (hours for one run).
func newWorkflowBench(tb testing.TB, sizes []int, ungrouped, trackEvery int) *workflowBench {
	tb.Helper()
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	largest := slices.Index(sizes, slices.Max(sizes))
	tracked := func(g int) bool { return g%trackEvery == 0 || g == largest }
	names := map[string]bool{}
	for g := range sizes {
		if tracked(g) {
			names[groupName(g)] = true
		}
	}
	env := simtest.Start(tb, ec2sim.Options{Throttle: true, RebootModel: true, Reboot: benchReboot,
		LifecycleDelay: benchLifecycleDelay, TimeScale: frozen, Start: slot.Add(time.Minute),
		TrackGroup: func(_, name string) bool { return names[name] }})
	cfg, err := config.Parse([]byte(benchConfig), "")
	if err != nil {
		tb.Fatal(err)
	}
	wb := &workflowBench{sim: env.Sim, env: env, cfg: cfg, slot: slot, invocations: map[string]int{}, tracked: tracked}
	wb.fleet = seedBenchFleet(env.Sim, sizes, ungrouped)
	rt := simRetryer{RetryerV2: retry.NewStandard(func(o *retry.StandardOptions) { o.RateLimiter = ratelimit.None }), wb: wb}
	wb.ec2 = ec2.New(env.Client("", "").Options(), func(o *ec2.Options) { o.Retryer = rt })
	wb.asg = autoscaling.New(env.AutoScaling("", "").Options(), func(o *autoscaling.Options) { o.Retryer = rt })
	wb.elb = elbv2.New(env.ELBv2("", "").Options(), func(o *elbv2.Options) { o.Retryer = rt })
	return wb
}

func (wb *workflowBench) advance(cause *atomic.Int64, d time.Duration) {
	cause.Add(int64(d))
	wb.sim.Advance(d)
}

func (wb *workflowBench) simulated() time.Duration {
	return time.Duration(wb.waited.Load() + wb.invoked.Load() + wb.retried.Load())
}

// lambdaErrorType is the errorType aws-lambda-go reports for an error: its
// type's name (the pointed-to type's for a pointer).
func lambdaErrorType(err error) string {
	t := reflect.TypeOf(err)
	if t.Kind() == reflect.Pointer {
		return t.Elem().Name()
	}
	return t.Name()
}

// ServeHTTP is the rollout function's Invoke API as the RIE serves it
// (POST /2015-03-31/functions/function/invocations; a function error is
// HTTP 200 with errorType and errorMessage), one invocation at a time, as
// the state machine calls it.
func (wb *workflowBench) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/2015-03-31/functions/function/invocations" {
		http.NotFound(w, r)
		return
	}
	payload, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var req struct{ Action string }
	json.Unmarshal(payload, &req)
	wb.mu.Lock()
	defer wb.mu.Unlock()
	// The Wait state before this call waited what the previous answer said.
	wb.advance(&wb.waited, wb.pendingWait)
	wb.pendingWait = 0
	wb.advance(&wb.invoked, invokeLatency)
	wb.invocations[req.Action]++
	// StepFunctions: the start guard's listing, answered by ec2sim (the
	// engine's execution is not there: nothing else runs).
	roller := &rollout.Roller{EC2: wb.ec2, AutoScaling: wb.asg, ELB: wb.elb, Config: wb.cfg, StepFunctions: wb.env.SFN("", ""),
		Job: runner.Job{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Now: wb.sim.Now}}
	// The function's timeout (15 minutes) as the invocation's deadline.
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Minute)
	defer cancel()
	out, err := invoke.Func[any](roller.Handle).Invoke(ctx, payload)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		wb.errors = append(wb.errors, req.Action+": "+err.Error())
		json.NewEncoder(w).Encode(map[string]string{"errorType": lambdaErrorType(err), "errorMessage": err.Error()})
		return
	}
	var res struct {
		Done        bool `json:"done"`
		WaitSeconds int  `json:"waitSeconds"`
	}
	json.Unmarshal(out, &res)
	// Start, Step and Restore are followed by a Wait of waitSeconds unless done.
	if req.Action != rollout.ActionFinish && !res.Done {
		wb.pendingWait = time.Duration(res.WaitSeconds) * time.Second
	}
	if req.Action == rollout.ActionStep {
		if wb.steps++; testing.Verbose() && wb.steps%100 == 0 {
			fmt.Fprintf(os.Stderr, "workflow bench: step %d, simulated %v (throttled retries %v: %v)\n", wb.steps, wb.simulated(),
				time.Duration(wb.retried.Load()), wb.sim.Calls().Throttled)
		}
	}
	wb.peakResult = max(wb.peakResult, len(out))
	w.Write(out)
}

// workflowResult is what one execution measured.
type workflowResult struct {
	status                   string
	simulated, bound, wall   time.Duration
	waited, invoked, retried time.Duration
	instances                int
	invocations              map[string]int
	lambdaInvocations        int
	transitions              int // states entered (Step Functions bills each)
	historyEvents            int
	peakPayload              int // bytes: the largest state input, output or task result
	plan                     string
	createImage, throttled   int
	throttledBy              map[string]int
}

func (r workflowResult) ratio() float64 { return r.simulated.Seconds() / r.bound.Seconds() }

func (r workflowResult) String() string {
	n := float64(r.instances)
	return fmt.Sprintf("%s: %s; simulated %v (waits %v, invocations %v, throttled retries %v), bound %v, ratio %.3f; "+
		"%d Lambda invocations (%.3f per instance: %v), %d state transitions (%.3f per instance), %d history events, "+
		"peak payload %.1f KB; %d CreateImage calls, %d throttled requests %v; wall %v",
		r.status, r.plan, r.simulated, r.waited, r.invoked, r.retried, r.bound, r.ratio(),
		r.lambdaInvocations, float64(r.lambdaInvocations)/n, r.invocations, r.transitions, float64(r.transitions)/n,
		r.historyEvents, float64(r.peakPayload)/1024, r.createImage, r.throttled, r.throttledBy, r.wall.Round(time.Millisecond))
}

// history counts the events Step Functions would write for the engine's
// events (HistoryEvent types, Step Functions API reference): ExecutionStarted
// and the execution's end; per state entered its Entered and Exited events
// (a Fail state only its Entered: the execution fails there); per Lambda
// invocation TaskScheduled, TaskStarted and TaskSucceeded or TaskFailed.
type history struct {
	events, transitions, peak int
}

func (h *history) observe(e sfnlocal.Event) {
	switch e.Type {
	case "ExecutionStarted", "ExecutionSucceeded", "ExecutionFailed":
		h.events++
		h.peak = max(h.peak, len(e.Input), len(e.Output))
	case "StateEntered":
		h.transitions++
		h.events += 2
		if e.StateType == "Fail" {
			h.events--
		}
		h.peak = max(h.peak, len(e.Input))
	case "StateExited":
		h.peak = max(h.peak, len(e.Output))
	case "TaskStarted":
		h.events += 3
	}
}

// run executes the workflow for the slot once.
func (wb *workflowBench) run(tb testing.TB, ctx context.Context) workflowResult {
	tb.Helper()
	def, fnID := workflowDefinition(tb)
	root, _ := filepath.Abs(filepath.Join("..", ".."))
	eng, err := sfnlocal.FindEngine(root)
	if err != nil {
		tb.Fatal(err)
	}
	fn := httptest.NewServer(wb)
	defer fn.Close()
	input, _ := json.Marshal(map[string]string{"policy": "nightly", "time": tags.FormatTime(wb.slot)})
	var h history
	zero := map[string]time.Duration{}
	for _, s := range []string{"Wait", "Wait to restore", "Wait to restore after error"} {
		zero[s] = 0
	}
	began, simBegan := time.Now(), wb.sim.Now()
	res, err := eng.Run(ctx, def, input, sfnlocal.Options{
		Functions:     map[string][]string{sfnlocal.LocalFunctionARN(fnID): {fn.URL + "/2015-03-31/functions/function/invocations"}},
		WaitOverrides: zero,
		// The name the backup function gives the execution (no ":" allowed).
		Name:    images.ExecutionName("nightly", wb.slot, false),
		OnEvent: h.observe,
	})
	if err != nil {
		tb.Fatalf("execution: %v", err)
	}
	wall := time.Since(began)
	// The frozen clock still creeps (a microsecond per real second): allow
	// twice that over the wall time, and a millisecond.
	creep := time.Millisecond + 2*wall/time.Second*time.Microsecond
	if got, want := wb.sim.Now().Sub(simBegan), wb.simulated(); got-want > creep || want-got > creep {
		tb.Fatalf("the simulated clock moved %v, the harness accounts for %v: something else moves it", got, want)
	}
	out := workflowResult{status: res.Status, simulated: wb.simulated(), wall: wall, waited: time.Duration(wb.waited.Load()),
		invoked: time.Duration(wb.invoked.Load()), retried: time.Duration(wb.retried.Load()),
		instances: len(wb.fleet.all()), invocations: wb.invocations, transitions: h.transitions, historyEvents: h.events,
		peakPayload: max(h.peak, wb.peakResult)}
	for _, n := range wb.invocations {
		out.lambdaInvocations += n
	}
	calls := wb.sim.Calls()
	out.createImage = calls.Count("CreateImage")
	out.throttledBy = calls.Throttled
	for _, n := range calls.Throttled {
		out.throttled += n
	}
	// The bound, from the plan the run carried (its last state).
	for _, e := range slices.Backward(res.Events) {
		if e.Type != "TaskStarted" || e.State != "Finish" {
			continue
		}
		var in struct{ State rollout.State }
		if err := json.Unmarshal(e.Input, &in); err != nil || in.State.Plan == "" {
			tb.Fatalf("finish input: %v", err)
		}
		raw, err := base64.StdEncoding.DecodeString(in.State.Plan)
		if err != nil {
			tb.Fatal(err)
		}
		plan, err := waves.Decode(raw)
		if err != nil {
			tb.Fatal(err)
		}
		out.plan = plan.String()
		out.bound = plan.MinDuration(perReboot())
		break
	}
	return out
}

// check asserts the run's invariants: succeeded; every instance imaged
// exactly once; no logged group ever had more than one member unavailable
// (ec2sim's availability record: stopped, not ok, in Standby or not
// healthy) and each had one (it was rebooted); no logged group has a member
// out of service and no instance keeps a drain tag (Restore removes it only
// once nothing is left to put back); Step Functions' limits.
func (wb *workflowBench) check(t testing.TB, r workflowResult) {
	t.Helper()
	if r.status != sfnlocal.Succeeded || len(wb.errors) > 0 {
		t.Fatalf("execution %s; function errors: %v", r.status, wb.errors)
	}
	per := simtest.ImagesPerInstance(wb.sim, wb.slot)
	bad := 0
	for _, id := range wb.fleet.all() {
		if per[id] != 1 {
			if bad++; bad <= 5 {
				t.Errorf("%s: %d images of the slot, want 1", id, per[id])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d instances not imaged exactly once", bad, len(wb.fleet.all()))
	}
	mu := simtest.MaxUnavailable(t, wb.sim)
	for g, ids := range wb.fleet.groups {
		if !wb.tracked(g) {
			continue
		}
		name := groupName(g)
		for _, k := range []string{"autoscaling:" + name, "targetgroup:" + name} {
			if mu[k] != 1 {
				t.Errorf("group %s of %d: at most %d members unavailable at once, want exactly 1", k, len(ids), mu[k])
			}
		}
	}
	for _, g := range wb.sim.Availability() {
		if g.Unavailable != 0 {
			t.Errorf("group %s: %d members unavailable after the run", g.Key, g.Unavailable)
		}
	}
	for _, in := range wb.sim.Instances("", "") {
		if v, ok := in.Tags[drain.TagKey]; ok {
			t.Errorf("%s still tagged %s=%s", in.ID, drain.TagKey, v)
		}
	}
	if r.historyEvents >= 25000 {
		t.Errorf("%d history events: Step Functions keeps 25,000 per execution", r.historyEvents)
	}
	if r.peakPayload > 256*1024 {
		t.Errorf("peak payload %d bytes: Step Functions allows 256 KB", r.peakPayload)
	}
}

// TestWorkflowAtScale is the benchmark's scaled-down guard in the suite:
// 500 instances (100 in 40 groups of 1-4, each an Auto Scaling group behind
// a target group, 400 ungrouped) through the synthesized state machine and
// the real actions, time-scaled. The largest group is small so that the run
// takes about 200 steps.
func TestWorkflowAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("200 steps through Node and the emulator (about 11 s, minutes under -race)")
	}
	wb := newWorkflowBench(t, groupSizes(40, 4, 100), 400, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := wb.run(t, ctx)
	t.Log(r)
	wb.check(t, r)
	if r.ratio() > 1.05 {
		t.Errorf("simulated %v is %.3f x the bound %v: over 1.05", r.simulated, r.ratio(), r.bound)
	}
}

// BenchmarkWorkflow10k is the benchmark: 10,000 instances (8,000 in
// 400 groups of 1-40, each an Auto Scaling group behind a target group of
// its own, 2,000 ungrouped) at EC2's bucket sizes. Run with -benchtime 1x.
func BenchmarkWorkflow10k(b *testing.B) {
	sizes := groupSizes(400, 40, 8000)
	var r workflowResult
	for b.Loop() {
		b.StopTimer()
		wb := newWorkflowBench(b, sizes, 2000, 10)
		b.StartTimer()
		r = wb.run(b, context.Background())
		b.StopTimer()
		b.Log(r)
		wb.check(b, r)
		b.StartTimer()
	}
	n := float64(r.instances)
	b.ReportMetric(r.simulated.Seconds(), "sim_s")
	b.ReportMetric(r.bound.Seconds(), "bound_s")
	b.ReportMetric(r.ratio(), "ratio")
	b.ReportMetric(float64(r.lambdaInvocations)/n, "lambda/instance")
	b.ReportMetric(float64(r.transitions)/n, "transitions/instance")
	b.ReportMetric(float64(r.historyEvents), "history_events")
	b.ReportMetric(float64(r.peakPayload)/1024, "peak_payload_KB")
	b.ReportMetric(r.wall.Seconds(), "wall_s")
}
