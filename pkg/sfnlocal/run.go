package sfnlocal

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Pinned npm packages (Makefile target node installs them into .tools).
const (
	LocalStepFunctionsVersion = "3.0.0"
	ASLValidatorVersion       = "4.0.0"
)

//go:embed runner.mjs
var runnerScript string

// Engine is Node 22 with aws-local-stepfunctions and asl-validator.
type Engine struct {
	Node    string // node binary
	Modules string // node_modules with both packages
}

// FindEngine locates Node ($AMIBACKUP_NODE, .tools/node_modules/.bin/node
// or PATH; version 22 or later, which the engine needs for
// Promise.withResolvers) and the pinned packages in root/.tools/node_modules.
func FindEngine(root string) (*Engine, error) {
	const fix = "run `make node` (installs Node 22, aws-local-stepfunctions@" + LocalStepFunctionsVersion +
		" and asl-validator@" + ASLValidatorVersion + " into .tools)"
	e := &Engine{Modules: filepath.Join(root, ".tools", "node_modules")}
	switch {
	case os.Getenv("AMIBACKUP_NODE") != "":
		e.Node = os.Getenv("AMIBACKUP_NODE")
	case fileExists(filepath.Join(e.Modules, ".bin", "node")):
		e.Node = filepath.Join(e.Modules, ".bin", "node")
	default:
		p, err := exec.LookPath("node")
		if err != nil {
			return nil, fmt.Errorf("sfnlocal: node not found in .tools or on PATH: %s", fix)
		}
		e.Node = p
	}
	out, err := exec.Command(e.Node, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("sfnlocal: %s --version: %w: %s", e.Node, err, fix)
	}
	v := strings.TrimSpace(string(out))
	major, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(v, "v"), ".", 2)[0])
	if major < 22 {
		return nil, fmt.Errorf("sfnlocal: %s is Node %s; aws-local-stepfunctions needs Node 22 or later (on Node 20 every Task fails): %s", e.Node, v, fix)
	}
	for pkg, want := range map[string]string{"aws-local-stepfunctions": LocalStepFunctionsVersion, "asl-validator": ASLValidatorVersion} {
		b, err := os.ReadFile(filepath.Join(e.Modules, pkg, "package.json"))
		var p struct{ Version string }
		if err != nil || json.Unmarshal(b, &p) != nil || p.Version != want {
			return nil, fmt.Errorf("sfnlocal: %s@%s not found in %s (found %q): %s", pkg, want, e.Modules, p.Version, fix)
		}
	}
	return e, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// Options of one execution.
type Options struct {
	// Functions maps a function ARN (as Resolve put it in the definition)
	// to the invoke URLs of its RIEs
	// (http://host:port/2015-03-31/functions/function/invocations). The RIE
	// serves one invocation at a time and crashes on a concurrent one, so
	// give a function one URL per invocation that may run at once (a Map's
	// MaxConcurrency); further invocations queue for a free URL.
	Functions map[string][]string
	// WaitOverrides replaces the duration of the named Wait states.
	WaitOverrides map[string]time.Duration
	// RetryIntervalOverrides replaces the interval before every retry of
	// the named states.
	RetryIntervalOverrides map[string]time.Duration
	// Name is the execution's name ($$.Execution.Name, default "local");
	// StateMachineName the state machine's ($$.StateMachine.Name, default
	// "local"). $$.Execution.Id, RoleArn and $$.StateMachine.Id are the
	// matching local ARNs.
	Name, StateMachineName string
	// OnEvent, when set, sees every event as it happens (from the goroutine
	// reading the engine), e.g. to cancel the context at a chosen point.
	OnEvent func(Event)
}

// Event is one step of the execution: the engine's events (ExecutionStarted,
// StateEntered, StateExited, StateFailed, StateRetried, StateCaught,
// MapIterationStarted/Succeeded/Failed, ParallelBranch*, ExecutionSucceeded,
// ExecutionFailed) and one per Lambda invocation: TaskStarted, then
// TaskSucceeded or TaskFailed with the same Call. TaskSuppressed is a task of
// a queued iteration that the engine started after another iteration of its
// (top-level) Map failed: AWS would not start it, so it is not invoked.
type Event struct {
	Type      string          `json:"type"`
	Timestamp int64           `json:"timestamp"` // Unix milliseconds
	State     string          `json:"state,omitempty"`
	StateType string          `json:"stateType,omitempty"`
	Parent    string          `json:"parent,omitempty"` // Map or Parallel state of iteration and branch events
	Index     *int            `json:"index,omitempty"`  // Map iteration
	Input     json.RawMessage `json:"input,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	Error     string          `json:"error,omitempty"`
	Cause     string          `json:"cause,omitempty"`
	Attempt   int             `json:"attempt,omitempty"` // StateRetried: 1 for the first retry of its retrier
	Next      string          `json:"next,omitempty"`    // StateCaught: the catcher's target
	// Invocation events.
	Function          string `json:"function,omitempty"`
	Endpoint          string `json:"endpoint,omitempty"`
	Call              int    `json:"call,omitempty"`
	FunctionErrorType string `json:"functionErrorType,omitempty"` // errorType as the function (or RIE) reported it
}

// Status of an execution, named as DescribeExecution names them.
const (
	Succeeded = "SUCCEEDED"
	Failed    = "FAILED"
	TimedOut  = "TIMED_OUT"
	Aborted   = "ABORTED" // the context ended the execution (the node process was killed)
)

// Result of an execution.
type Result struct {
	Status string
	Output json.RawMessage // SUCCEEDED
	Error  string          // FAILED: the error name (e.g. a function's errorType, States.Timeout)
	Cause  string
	Events []Event
}

// Invocation is one Lambda invocation of a task: what the function received
// and answered.
type Invocation struct {
	State, Function, Endpoint string
	Input, Output             json.RawMessage
	Error, Cause              string // the error name Retry/Catch matched, and the error JSON
	FunctionErrorType         string
	Start, End                time.Time // End is zero when the execution stopped first
}

// Invocations returns the Lambda invocations in the order they started.
func (r *Result) Invocations() []Invocation {
	var out []Invocation
	byCall := map[int]int{}
	for _, e := range r.Events {
		switch e.Type {
		case "TaskStarted":
			byCall[e.Call] = len(out)
			out = append(out, Invocation{State: e.State, Function: e.Function, Endpoint: e.Endpoint, Input: e.Input, Start: time.UnixMilli(e.Timestamp)})
		case "TaskSucceeded", "TaskFailed":
			if i, ok := byCall[e.Call]; ok {
				out[i].Output, out[i].Error, out[i].Cause, out[i].FunctionErrorType = e.Output, e.Error, e.Cause, e.FunctionErrorType
				out[i].End = time.UnixMilli(e.Timestamp)
			}
		}
	}
	return out
}

// TaskError returns the errorMessage of the last failed invocation of the
// Task state named state ("" when none failed): what the function said.
func (r *Result) TaskError(state string) string {
	msg := ""
	for _, inv := range r.Invocations() {
		if inv.State == state && inv.Error != "" {
			var e struct {
				ErrorMessage string `json:"errorMessage"`
			}
			if json.Unmarshal([]byte(inv.Cause), &e) == nil && e.ErrorMessage != "" {
				msg = e.ErrorMessage
			} else {
				msg = inv.Cause
			}
		}
	}
	return msg
}

// Entered returns the names of the states entered, in order (Map iterations
// interleave).
func (r *Result) Entered() []string {
	var out []string
	for _, e := range r.Events {
		if e.Type == "StateEntered" {
			out = append(out, e.State)
		}
	}
	return out
}

// HarnessError is a failure of the local setup (a missing endpoint, an RIE
// that does not answer, an unsupported construct met at run time), not an
// outcome AWS could produce.
type HarnessError struct{ Message string }

func (e *HarnessError) Error() string { return "sfnlocal: " + e.Message }

// Run executes def (plain ASL JSON, see Resolve) with input in
// aws-local-stepfunctions, every Lambda task invoking its function's RIE.
// A definition Unsupported reports is refused. When ctx ends, the node
// process is killed (like a crash of the execution) and Run returns the
// events so far with status ABORTED and ctx's error; invocations already
// sent to an RIE run to completion there, as in Lambda.
func (e *Engine) Run(ctx context.Context, def, input []byte, opts Options) (*Result, error) {
	if err := Unsupported(def); err != nil {
		return nil, err
	}
	if len(input) == 0 {
		input = []byte("{}")
	}
	if !json.Valid(input) {
		return nil, fmt.Errorf("sfnlocal: input is not JSON: %.200s", input)
	}
	ms := func(m map[string]time.Duration) map[string]int64 {
		out := map[string]int64{}
		for k, v := range m {
			out[k] = v.Milliseconds()
		}
		return out
	}
	name, smName := cmp.Or(opts.Name, "local"), cmp.Or(opts.StateMachineName, "local")
	// The engine itself fills only $$.Execution.Input and StartTime.
	contextObject := map[string]any{
		"Execution": map[string]any{
			"Id":      fmt.Sprintf("arn:%s:states:%s:%s:execution:%s:%s", Partition, Region, Account, smName, name),
			"Name":    name,
			"RoleArn": fmt.Sprintf("arn:%s:iam::%s:role/%s", Partition, Account, smName),
		},
		"StateMachine": map[string]any{
			"Id":   fmt.Sprintf("arn:%s:states:%s:%s:stateMachine:%s", Partition, Region, Account, smName),
			"Name": smName,
		},
	}
	req := map[string]any{
		"mode": "run", "definition": json.RawMessage(def), "input": json.RawMessage(input), "context": contextObject,
		"functions": opts.Functions, "waitOverrides": ms(opts.WaitOverrides), "retryIntervalOverrides": ms(opts.RetryIntervalOverrides),
	}
	res := &Result{}
	var final struct {
		Status       string
		Output       json.RawMessage
		Error, Cause string
	}
	err := e.stream(ctx, req, func(ev Event) {
		res.Events = append(res.Events, ev)
		if opts.OnEvent != nil {
			opts.OnEvent(ev)
		}
	}, &final)
	if ctx.Err() != nil {
		res.Status = Aborted
		return res, ctx.Err()
	}
	if err != nil {
		return res, err
	}
	res.Status, res.Output, res.Error, res.Cause = final.Status, final.Output, final.Error, final.Cause
	return res, nil
}

// call runs the script with req and decodes its result line into out.
func (e *Engine) call(ctx context.Context, req any, out any) error {
	return e.stream(ctx, req, func(Event) {}, out)
}

// stream runs the script in its own process group (a terminal's signals
// reach the test, not the engine), passes events to onEvent and decodes the
// result line into out. Node is killed when ctx ends.
func (e *Engine) stream(ctx context.Context, req any, onEvent func(Event), out any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("sfnlocal: encode request: %w", err)
	}
	cmd := exec.Command(e.Node, "--input-type=module", "--eval", runnerScript)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "SFNLOCAL_MODULES=" + e.Modules}
	cmd.Stdin = bytes.NewReader(body)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("sfnlocal: start %s: %w", e.Node, err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-ctx.Done():
			// The script starts no processes, so killing node ends the run;
			// os.Process.Kill is safe against a reaped and reused pid.
			cmd.Process.Kill()
		case <-stop:
		}
	}()
	var fatal, result []byte
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	var scanErr error
	for sc.Scan() {
		var line struct {
			Kind    string
			Event   *Event
			Message string
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			scanErr = fmt.Errorf("sfnlocal: engine printed a line that is not JSON: %.300s", sc.Bytes())
			continue
		}
		switch line.Kind {
		case "event":
			if line.Event != nil {
				onEvent(*line.Event)
			}
		case "fatal":
			fatal = []byte(line.Message)
		case "result":
			result = bytes.Clone(sc.Bytes())
		}
	}
	if err := sc.Err(); err != nil && scanErr == nil && ctx.Err() == nil {
		scanErr = fmt.Errorf("sfnlocal: read engine output: %w", err)
	}
	io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	close(stop)
	wg.Wait()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case fatal != nil:
		return &HarnessError{Message: string(fatal)}
	case scanErr != nil:
		return scanErr
	case waitErr != nil || result == nil:
		return fmt.Errorf("sfnlocal: engine exited (%v) without a result: %s", waitErr, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(result, out); err != nil {
		return fmt.Errorf("sfnlocal: decode result: %w", err)
	}
	return nil
}
