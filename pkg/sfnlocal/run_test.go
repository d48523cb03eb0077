package sfnlocal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/assertions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsstepfunctionstasks"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/lambdabuild"
	"github.com/amibackup/amibackup/pkg/localrun"
)

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func engine(t testing.TB) *Engine {
	t.Helper()
	e, err := FindEngine(repoRoot(t))
	if err != nil {
		t.Fatalf("%v (run the tests via `make test`, or put .tools/node_modules/.bin on PATH)", err)
	}
	return e
}

// fixture is the test-only function, built once like the stacks build theirs.
var fixture struct {
	once sync.Once
	bin  string
	err  error
}

func fixtureBootstrap(t testing.TB) string {
	t.Helper()
	fixture.once.Do(func() {
		dir, err := os.MkdirTemp("", "sfnlocal-fn-")
		if err != nil {
			fixture.err = err
			return
		}
		fixture.bin = filepath.Join(dir, "bootstrap")
		args := append([]string{"build"}, lambdabuild.Flags...)
		cmd := exec.Command("go", append(args, "-o", fixture.bin, "./testdata/fn")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+lambdabuild.GOOS, "GOARCH="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			fixture.err = fmt.Errorf("build fixture: %v\n%s", err, out)
		}
	})
	if fixture.err != nil {
		t.Fatal(fixture.err)
	}
	return fixture.bin
}

// startFn runs the fixture with role under its own RIE.
func startFn(t testing.TB, role string, env ...string) *localrun.Function {
	t.Helper()
	rie, err := localrun.FindRIE(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	f, err := localrun.Start(context.Background(), rie, role, fixtureBootstrap(t), append([]string{"FIXTURE_ROLE=" + role}, env...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	return f
}

func invocationsIn(f *localrun.Function) int { return strings.Count(f.Logs(), "START RequestId") }

// testMachine is synthesized once: two functions, a LambdaInvoke with a
// Retry on a custom error and a Catch, a Choice, a Wait and an INLINE Map
// with MaxConcurrency 2 over a plain-ARN task.
var testMachine struct {
	once     sync.Once
	template []byte
	err      error
}

func synthTestMachine(t testing.TB) []byte {
	t.Helper()
	testMachine.once.Do(func() {
		if _, err := exec.LookPath("node"); err != nil {
			testMachine.err = errors.New("node is not on PATH: the Go CDK needs Node.js; run `make tools` and use `make test`")
			return
		}
		testMachine.template, testMachine.err = synthMachine(filepath.Dir(fixtureBootstrap(t)))
	})
	if testMachine.err != nil {
		t.Fatal(testMachine.err)
	}
	return testMachine.template
}

func synthMachine(codeDir string) (tmpl []byte, err error) {
	defer func() {
		// jsii reports synthesis errors as panics.
		if r := recover(); r != nil {
			err = fmt.Errorf("synth: %v", r)
		}
	}()
	out, err := os.MkdirTemp("", "sfnlocal-cdk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	app := awscdk.NewApp(&awscdk.AppProps{Outdir: jsii.String(out)})
	stack := awscdk.NewStack(app, jsii.String("SfnLocalTest"), nil)
	fn := func(id string) awslambda.Function {
		return awslambda.NewFunction(stack, jsii.String(id), &awslambda.FunctionProps{
			Runtime: awslambda.Runtime_PROVIDED_AL2023(), Handler: jsii.String("bootstrap"),
			Code: awslambda.Code_FromAsset(jsii.String(codeDir), nil),
		})
	}
	prepareFn, squareFn := fn("PrepareFn"), fn("SquareFn")

	prepare := awsstepfunctionstasks.NewLambdaInvoke(stack, jsii.String("Prepare"), &awsstepfunctionstasks.LambdaInvokeProps{
		LambdaFunction: prepareFn, OutputPath: jsii.String("$.Payload"),
	})
	prepare.AddRetry(&awsstepfunctions.RetryProps{
		Errors: jsii.Strings("TransientError"), MaxAttempts: jsii.Number(2),
		Interval: awscdk.Duration_Seconds(jsii.Number(1)), BackoffRate: jsii.Number(1),
	})
	recovered := awsstepfunctions.NewPass(stack, jsii.String("Recovered"), nil)
	prepare.AddCatch(recovered, &awsstepfunctions.CatchProps{Errors: jsii.Strings("PermanentError"), ResultPath: jsii.String("$.error")})

	square := awsstepfunctionstasks.NewLambdaInvoke(stack, jsii.String("Square"), &awsstepfunctionstasks.LambdaInvokeProps{
		LambdaFunction: squareFn, PayloadResponseOnly: jsii.Bool(true),
	})
	each := awsstepfunctions.NewMap(stack, jsii.String("Each"), &awsstepfunctions.MapProps{
		ItemsPath: jsii.String("$.items"), MaxConcurrency: jsii.Number(2), ResultPath: jsii.String("$.squares"),
		ItemSelector: &map[string]any{
			"value.$": "$$.Map.Item.Value.value", "sleepMs.$": "$$.Map.Item.Value.sleepMs", "index.$": "$$.Map.Item.Index",
		},
	})
	each.ItemProcessor(square, nil)
	pause := awsstepfunctions.NewWait(stack, jsii.String("Pause"), &awsstepfunctions.WaitProps{
		Time: awsstepfunctions.WaitTime_Duration(awscdk.Duration_Hours(jsii.Number(1))),
	})
	skipped := awsstepfunctions.NewSucceed(stack, jsii.String("Skipped"), nil)
	choice := awsstepfunctions.NewChoice(stack, jsii.String("Skip?"), nil).
		When(awsstepfunctions.Condition_BooleanEquals(jsii.String("$.skip"), jsii.Bool(true)), skipped, nil).
		Otherwise(pause.Next(each))
	awsstepfunctions.NewStateMachine(stack, jsii.String("Machine"), &awsstepfunctions.StateMachineProps{
		DefinitionBody:   awsstepfunctions.DefinitionBody_FromChainable(prepare.Next(choice)),
		StateMachineType: awsstepfunctions.StateMachineType_STANDARD,
	})
	return json.Marshal(*assertions.Template_FromStack(stack, nil).ToJSON())
}

// machine is the resolved test machine with its functions under the RIE:
// Prepare on one RIE, Square on three (more than MaxConcurrency, so the
// Map's limit is what bounds the overlap).
type machine struct {
	def     []byte
	eng     *Engine
	prepare *localrun.Function
	squares []*localrun.Function
	opts    Options
}

func startMachine(t testing.TB, env ...string) *machine {
	t.Helper()
	tmpl := synthTestMachine(t)
	def, err := Resolve(tmpl, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	fns, err := Functions(tmpl, "")
	if err != nil || strings.Join(fns, ",") != lambdaID(t, tmpl, "PrepareFn")+","+lambdaID(t, tmpl, "SquareFn") {
		t.Fatalf("Functions = %v, %v", fns, err)
	}
	m := &machine{def: def, eng: engine(t), prepare: startFn(t, "prepare", env...)}
	urls := []string{}
	for range 3 {
		f := startFn(t, "square", env...)
		m.squares = append(m.squares, f)
		urls = append(urls, f.URL)
	}
	m.opts = Options{
		Functions: map[string][]string{
			LocalFunctionARN(lambdaID(t, tmpl, "PrepareFn")): {m.prepare.URL},
			LocalFunctionARN(lambdaID(t, tmpl, "SquareFn")):  urls,
		},
		WaitOverrides:          map[string]time.Duration{"Pause": 0},
		RetryIntervalOverrides: map[string]time.Duration{"Prepare": 0},
	}
	return m
}

// lambdaID is the logical ID CDK gave the function construct id.
func lambdaID(t testing.TB, tmpl []byte, prefix string) string {
	t.Helper()
	var tt struct {
		Resources map[string]struct{ Type string }
	}
	json.Unmarshal(tmpl, &tt)
	for id, r := range tt.Resources {
		if r.Type == "AWS::Lambda::Function" && strings.HasPrefix(id, prefix) {
			return id
		}
	}
	t.Fatalf("no function %s* in the template", prefix)
	return ""
}

func (m *machine) run(t testing.TB, input string) *Result {
	t.Helper()
	res, err := m.eng.Run(context.Background(), m.def, []byte(input), m.opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res
}

func items(sleeps ...int) string {
	var parts []string
	for i, s := range sleeps {
		parts = append(parts, fmt.Sprintf(`{"value":%d,"sleepMs":%d}`, i+2, s))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func countState(invs []Invocation, state string) int {
	n := 0
	for _, i := range invs {
		if i.State == state {
			n++
		}
	}
	return n
}

func TestSynthesizedMachine(t *testing.T) {
	if testing.Short() {
		t.Skip("synthesizes a CDK app and runs RIEs")
	}
	m := startMachine(t)
	if err := m.eng.Check(context.Background(), m.def); err != nil {
		t.Fatalf("Check of the synthesized machine: %v", err)
	}

	t.Run("retry, choice, wait overridden, map in order with MaxConcurrency", func(t *testing.T) {
		before := invocationsIn(m.prepare)
		start := time.Now()
		res := m.run(t, `{"value":5,"failTimes":2,"key":"ok","items":`+items(300, 200, 100, 0, 50)+`}`)
		if res.Status != Succeeded {
			t.Fatalf("status %s %s %s", res.Status, res.Error, res.Cause)
		}
		var out struct {
			Value   int
			Skip    bool
			Squares []struct{ Index, Square int }
		}
		if err := json.Unmarshal(res.Output, &out); err != nil {
			t.Fatal(err)
		}
		if out.Value != 10 || len(out.Squares) != 5 {
			t.Fatalf("output %s", res.Output)
		}
		for i, s := range out.Squares {
			if s.Index != i || s.Square != (i+2)*(i+2) {
				t.Errorf("squares[%d] = %+v, want index %d square %d (results in item order)", i, s, i, (i+2)*(i+2))
			}
		}
		// Two transient failures, retried: three invocations, seen by the
		// RIE as well as by the engine.
		invs := res.Invocations()
		if n := countState(invs, "Prepare"); n != 3 {
			t.Errorf("Prepare invoked %d times, want 3", n)
		}
		if n := invocationsIn(m.prepare) - before; n != 3 {
			t.Errorf("Prepare's RIE saw %d invocations, want 3", n)
		}
		var retried []int
		for _, e := range res.Events {
			if e.Type == "StateRetried" {
				retried = append(retried, e.Attempt)
			}
		}
		if fmt.Sprint(retried) != "[1 2]" {
			t.Errorf("retries %v, want [1 2]", retried)
		}
		if invs[0].Error != "TransientError" || !strings.Contains(invs[0].Cause, `"errorType":"TransientError"`) {
			t.Errorf("first attempt error %q cause %q", invs[0].Error, invs[0].Cause)
		}
		// lambda:invoke sends Parameters.Payload (the state input) to the function.
		var sent struct{ Value, FailTimes int }
		json.Unmarshal(invs[0].Input, &sent)
		if sent.Value != 5 || sent.FailTimes != 2 {
			t.Errorf("Prepare received %s", invs[0].Input)
		}
		// Path: Prepare, the Choice's Otherwise, the Wait, the Map.
		path := strings.Join(res.Entered(), ",")
		if !strings.HasPrefix(path, "Prepare,Skip?,Pause,Each,") || strings.Contains(path, "Skipped") {
			t.Errorf("path %s", path)
		}
		// The Wait of one hour took no time.
		var entered, exited int64
		for _, e := range res.Events {
			if e.State == "Pause" && e.Type == "StateEntered" {
				entered = e.Timestamp
			}
			if e.State == "Pause" && e.Type == "StateExited" {
				exited = e.Timestamp
			}
		}
		if exited == 0 || exited-entered > 500 {
			t.Errorf("Pause entered %d exited %d", entered, exited)
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("run took %v", d)
		}
		// The Map ran at most two squares at once, and did use two.
		inFlight, peak := 0, 0
		for _, e := range res.Events {
			if e.State != "Square" {
				continue
			}
			switch e.Type {
			case "TaskStarted":
				inFlight++
				peak = max(peak, inFlight)
			case "TaskSucceeded", "TaskFailed":
				inFlight--
			}
		}
		if peak != 2 {
			t.Errorf("peak concurrency of Square %d, want 2 (MaxConcurrency)", peak)
		}
		if n := countState(invs, "Square"); n != 5 {
			t.Errorf("Square invoked %d times", n)
		}
	})

	t.Run("choice skips", func(t *testing.T) {
		res := m.run(t, `{"value":1,"skip":true,"items":[]}`)
		if res.Status != Succeeded || strings.Join(res.Entered(), ",") != "Prepare,Skip?,Skipped" {
			t.Fatalf("%s %v %s", res.Status, res.Entered(), res.Output)
		}
	})

	t.Run("permanent error is caught", func(t *testing.T) {
		res := m.run(t, `{"value":1,"permanent":"bad input","items":[]}`)
		if res.Status != Succeeded {
			t.Fatalf("status %s %s", res.Status, res.Error)
		}
		if p := strings.Join(res.Entered(), ","); p != "Prepare,Recovered" {
			t.Errorf("path %s", p)
		}
		if n := countState(res.Invocations(), "Prepare"); n != 1 {
			t.Errorf("PermanentError retried: %d invocations", n)
		}
		var out struct {
			Value int
			Error struct{ Error, Cause string }
		}
		json.Unmarshal(res.Output, &out)
		var cause struct{ ErrorType, ErrorMessage string }
		if err := json.Unmarshal([]byte(out.Error.Cause), &cause); err != nil {
			t.Fatalf("Cause is not the error JSON: %q", out.Error.Cause)
		}
		if out.Value != 1 || out.Error.Error != "PermanentError" || cause.ErrorType != "PermanentError" || cause.ErrorMessage != "permanent failure: bad input" {
			t.Errorf("output %s", res.Output)
		}
	})

	t.Run("retries exhausted fail the execution", func(t *testing.T) {
		res := m.run(t, `{"value":1,"failTimes":9,"key":"exhaust","items":[]}`)
		if res.Status != Failed || res.Error != "TransientError" || !strings.Contains(res.Cause, "transient failure on attempt 3") {
			t.Fatalf("status %s error %q cause %q", res.Status, res.Error, res.Cause)
		}
		if n := countState(res.Invocations(), "Prepare"); n != 3 {
			t.Errorf("%d invocations, want 1 + MaxAttempts 2", n)
		}
	})

	t.Run("error types keep their name, runtime exits are Lambda.Unknown", func(t *testing.T) {
		for _, tc := range []struct{ input, errName, fnType string }{
			{`{"errorType":"Backup.Throttled","items":[]}`, "Backup.Throttled", "Backup.Throttled"},
			{`{"crash":true,"items":[]}`, "Lambda.Unknown", "Runtime.ExitError"},
		} {
			res := m.run(t, tc.input)
			invs := res.Invocations()
			if res.Status != Failed || res.Error != tc.errName || len(invs) != 1 || invs[0].FunctionErrorType != tc.fnType {
				t.Errorf("%s: status %s error %q invocations %+v", tc.input, res.Status, res.Error, invs)
			}
		}
		// The RIE restarts the runtime after the crash.
		if res := m.run(t, `{"value":2,"skip":true}`); res.Status != Succeeded {
			t.Errorf("after crash: %s %s", res.Status, res.Error)
		}
	})
}

func TestFunctionTimeoutIsLambdaUnknown(t *testing.T) {
	if testing.Short() {
		t.Skip("runs RIEs")
	}
	// The RIE answers a timed-out invocation with plain text, not JSON.
	f := startFn(t, "square", "AWS_LAMBDA_FUNCTION_TIMEOUT=1")
	def := `{"StartAt":"Slow","States":{"Slow":{"Type":"Task","Resource":"` + LocalFunctionARN("Slow") + `",
	  "Catch":[{"ErrorEquals":["Lambda.Unknown"],"Next":"Caught"}],"End":true},"Caught":{"Type":"Pass","End":true}}}`
	res, err := engine(t).Run(context.Background(), []byte(def), []byte(`{"sleepMs":3000}`),
		Options{Functions: map[string][]string{LocalFunctionARN("Slow"): {f.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	invs := res.Invocations()
	if res.Status != Succeeded || strings.Join(res.Entered(), ",") != "Slow,Caught" || len(invs) != 1 ||
		invs[0].FunctionErrorType != "Sandbox.Timedout" || !strings.Contains(invs[0].Cause, "Task timed out") {
		t.Fatalf("status %s path %v invocations %+v", res.Status, res.Entered(), invs)
	}
}

func TestOversizedResultStopsTheRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs RIEs")
	}
	f := startFn(t, "square")
	def := `{"StartAt":"Big","States":{"Big":{"Type":"Task","Resource":"` + LocalFunctionARN("Big") + `",
	  "Catch":[{"ErrorEquals":["States.ALL"],"Next":"Caught"}],"End":true},"Caught":{"Type":"Pass","End":true}}}`
	opts := Options{Functions: map[string][]string{LocalFunctionARN("Big"): {f.URL}}}
	if res, err := engine(t).Run(context.Background(), []byte(def), []byte(`{"value":2,"pad":200000}`), opts); err != nil || res.Status != Succeeded {
		t.Fatalf("200 kB result: %v %+v", err, res)
	}
	_, err := engine(t).Run(context.Background(), []byte(def), []byte(`{"value":2,"pad":270000}`), opts)
	var he *HarnessError
	if !errors.As(err, &he) || !strings.Contains(he.Message, "state Big: the result of "+LocalFunctionARN("Big")) {
		t.Fatalf("270 kB result: %v", err)
	}
}

func TestCancelKillsExecution(t *testing.T) {
	if testing.Short() {
		t.Skip("synthesizes a CDK app and runs RIEs")
	}
	m := startMachine(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodePID := 0
	opts := m.opts
	opts.OnEvent = func(e Event) {
		if e.Type == "TaskStarted" && e.State == "Square" && nodePID == 0 {
			nodePID = runnerChild(t)
			cancel()
		}
	}
	start := time.Now()
	res, err := m.eng.Run(ctx, m.def, []byte(`{"value":1,"items":`+items(2000, 2000, 2000, 2000)+`}`), opts)
	if !errors.Is(err, context.Canceled) || res == nil || res.Status != Aborted {
		t.Fatalf("Run after cancel: %v, %+v", err, res)
	}
	if d := time.Since(start); d > 1800*time.Millisecond {
		t.Errorf("Run returned %v after start: not stopped by the cancel", d)
	}
	if nodePID == 0 {
		t.Fatal("node process not found while running")
	}
	if err := syscall.Kill(nodePID, 0); err == nil {
		t.Errorf("node process %d still exists after cancel", nodePID)
	}
	// Nothing more is invoked: the in-flight square finishes in its RIE,
	// no further item starts.
	time.Sleep(2500 * time.Millisecond)
	total := 0
	for _, f := range m.squares {
		total += invocationsIn(f)
	}
	if total > 2 {
		t.Errorf("%d squares invoked after the execution was killed (at most the 2 in flight)", total)
	}
	if n := countState(res.Invocations(), "Prepare"); n != 1 {
		t.Errorf("events before the kill: %d Prepare invocations", n)
	}
}

// runnerChild returns the pid of this process's node child running the
// embedded script.
func runnerChild(t *testing.T) int {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", os.Getpid()))
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, c := range strings.Fields(string(b)) {
			cmdline, _ := os.ReadFile("/proc/" + c + "/cmdline")
			if strings.Contains(string(cmdline), "the Node side of pkg/sfnlocal") {
				pid, _ := strconv.Atoi(c)
				return pid
			}
		}
	}
	return 0
}

// The engine starts a Map's queued iterations even after one failed; AWS
// stops them. Run suppresses their tasks, so a failed wave is not followed
// by the next one.
func TestFailedMapStartsNoFurtherIterations(t *testing.T) {
	if testing.Short() {
		t.Skip("runs RIEs")
	}
	f := startFn(t, "square")
	def := `{"StartAt":"M","States":{
	  "M":{"Type":"Map","ItemsPath":"$.items","MaxConcurrency":1,"ItemProcessor":{"StartAt":"T","States":{"T":{"Type":"Task","Resource":"` + LocalFunctionARN("Sq") + `","End":true}}},
	    "Catch":[{"ErrorEquals":["States.ALL"],"ResultPath":"$.error","Next":"Linger"}],"End":true},
	  "Linger":{"Type":"Wait","Seconds":1,"Next":"Done"},
	  "Done":{"Type":"Pass","End":true}}}`
	res, err := engine(t).Run(context.Background(), []byte(def),
		[]byte(`{"items":[{"permanent":"first wave failed"},{"value":2,"sleepMs":10},{"value":3},{"value":4}]}`),
		Options{Functions: map[string][]string{LocalFunctionARN("Sq"): {f.URL}}, WaitOverrides: map[string]time.Duration{"Linger": 700 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != Succeeded || strings.Join(res.Entered(), ",") != "M,T,Linger,Done" {
		t.Fatalf("status %s path %v: %s %s", res.Status, res.Entered(), res.Error, res.Cause)
	}
	time.Sleep(300 * time.Millisecond)
	if n := invocationsIn(f); n != 1 || len(res.Invocations()) != 1 {
		t.Errorf("the RIE saw %d invocations, the result %d: want only the failed first item", n, len(res.Invocations()))
	}
	suppressed := 0
	for _, e := range res.Events {
		if e.Type == "TaskSuppressed" {
			suppressed++
		}
	}
	if suppressed == 0 {
		t.Errorf("no TaskSuppressed event: the engine did not start the queued iterations, update the package doc")
	}
}
