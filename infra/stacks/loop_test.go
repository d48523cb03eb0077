package stacks

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/rollout"
	"github.com/amibackup/amibackup/pkg/sfnlocal"
	"github.com/amibackup/amibackup/pkg/verify"
)

// fakeFunction answers the loop's invocations like a function under the
// RIE: a result, or HTTP 200 with {errorType, errorMessage}.
type fakeFunction struct {
	mu      sync.Mutex
	answer  func(action string, n int) (any, string) // n: the how-many-th call of the action
	calls   map[string]int
	actions []string
	states  []json.RawMessage
	// wrong: calls whose state was not the one the last successful call
	// returned.
	wrong []string
	last  string
}

func (f *fakeFunction) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct {
		Action string          `json:"action"`
		State  json.RawMessage `json:"state"`
	}
	json.Unmarshal(body, &req)
	f.mu.Lock()
	f.calls[req.Action]++
	f.actions = append(f.actions, req.Action)
	f.states = append(f.states, req.State)
	if req.Action != verify.ActionStart && string(req.State) != f.last {
		f.wrong = append(f.wrong, req.Action+" got "+string(req.State)+", want "+f.last)
	}
	res, errType := f.answer(req.Action, f.calls[req.Action])
	if m, ok := res.(map[string]any); ok && errType == "" && m["state"] != nil {
		b, _ := json.Marshal(m["state"])
		f.last = string(b)
	}
	f.mu.Unlock()
	if errType != "" {
		res = map[string]string{"errorType": errType, "errorMessage": "scripted " + errType}
	}
	json.NewEncoder(w).Encode(res)
}

func loopResult(done bool, n int) map[string]any {
	return map[string]any{"state": map[string]any{"n": n}, "done": done, "waitSeconds": 1}
}

// TestVerifyLoopRuns executes the synthesized verification workflow (the
// shared action loop) offline against a scripted function: the happy path
// with its waits, a Step that keeps failing (cleaned up, then Failed), a
// failed Finish, a Start with nothing to do, a Start failing once (retried)
// or always (Failed after its retries), a failing cleanup after error.
// The function always gets the state the previous action returned.
func TestVerifyLoopRuns(t *testing.T) {
	eng, err := sfnlocal.FindEngine(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	_, tmpl := synthCached(t, verifyConfig)
	raw, _ := json.Marshal(tmpl)
	ids := logicalIDs(tmpl, "AWS::StepFunctions::StateMachine", "VerifyWorkflow")
	def, err := sfnlocal.Resolve(raw, ids[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	fnARN := sfnlocal.LocalFunctionARN(functionLogicalID(t, tmpl, "Verify"))
	ok := func(action string, n int) (any, string) {
		switch action {
		case verify.ActionStart:
			return loopResult(false, 0), ""
		case verify.ActionStep:
			return loopResult(n >= 2, n), ""
		case verify.ActionCleanup:
			return loopResult(n >= 2, 10+n), ""
		}
		return map[string]any{"function": "verify"}, ""
	}
	for _, tc := range []struct {
		name    string
		answer  func(string, int) (any, string)
		status  string
		errName string
		actions []string
	}{
		{"happy path: two steps, two cleanups", ok, sfnlocal.Succeeded, "",
			[]string{"start", "step", "step", "cleanup", "cleanup", "finish"}},
		{"nothing to verify: start is done", func(a string, n int) (any, string) {
			if a == verify.ActionStart {
				return loopResult(true, 0), ""
			}
			return ok(a, n)
		}, sfnlocal.Succeeded, "", []string{"start", "cleanup", "cleanup", "finish"}},
		{"step fails after its retries: cleaned up, then Failed", func(a string, n int) (any, string) {
			if a == verify.ActionStep {
				return nil, "ThrottledForever"
			}
			return ok(a, n)
		}, sfnlocal.Failed, "VerifyFailed", []string{"start", "step", "step", "step", "step", "cleanup", "cleanup"}},
		{"finish reports failed images", func(a string, n int) (any, string) {
			if a == verify.ActionFinish {
				return nil, "ImagesFailed"
			}
			return ok(a, n)
		}, sfnlocal.Failed, "VerifyProblems", []string{"start", "step", "step", "cleanup", "cleanup", "finish"}},
		{"start keeps failing: retried 3 times, nothing launched, Failed", func(a string, n int) (any, string) {
			if a == verify.ActionStart {
				return nil, "BadInput"
			}
			return ok(a, n)
		}, sfnlocal.Failed, "VerifyFailed", []string{"start", "start", "start", "start"}},
		{"start fails once (transient): retried, the run completes", func(a string, n int) (any, string) {
			if a == verify.ActionStart && n == 1 {
				return nil, "ThrottlingException"
			}
			return ok(a, n)
		}, sfnlocal.Succeeded, "", []string{"start", "start", "step", "step", "cleanup", "cleanup", "finish"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFunction{answer: tc.answer, calls: map[string]int{}}
			srv := httptest.NewServer(f)
			defer srv.Close()
			zero := map[string]time.Duration{}
			for _, s := range []string{VerifyStateWait, VerifyStateCleanupWait, VerifyStateOnErrorWait} {
				zero[s] = 0
			}
			retries := map[string]time.Duration{VerifyStateStart: 0, VerifyStateStep: 0, VerifyStateCleanup: 0, VerifyStateOnError: 0}
			res, err := eng.Run(context.Background(), def, []byte(`{"policy":"web","time":"2026-11-29T06:00:00Z"}`), sfnlocal.Options{
				Functions:     map[string][]string{fnARN: {srv.URL + "/2015-03-31/functions/function/invocations"}},
				WaitOverrides: zero, RetryIntervalOverrides: retries,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.status || res.Error != tc.errName {
				t.Errorf("status %s %s, want %s %s (%s)", res.Status, res.Error, tc.status, tc.errName, res.Cause)
			}
			if !slices.Equal(f.actions, tc.actions) {
				t.Errorf("actions %v, want %v (states %v)", f.actions, tc.actions, res.Entered())
			}
			// Every action after start gets the state the last successful
			// one returned (a caught error goes beside it, in $.error).
			for _, w := range f.wrong {
				t.Error(w)
			}
		})
	}
}

// TestRolloutStartRetries (issue 13, M4) executes the synthesized
// reboot-wave workflow offline against a scripted function: a Start that
// fails once with a transient error is retried and the run completes; the
// guard's AnotherRunActive is retried (in AWS every 300 s, 24 times: here
// the interval is overridden) until the other run ends, then the run
// completes; retries spent, the execution fails at Start. Before the
// retries a failed Start ended the execution at once (and its name, the
// slot, was spent for 90 days).
func TestRolloutStartRetries(t *testing.T) {
	eng, err := sfnlocal.FindEngine(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	_, tmpl := synthCached(t, wavesConfig)
	raw, _ := json.Marshal(tmpl)
	ids := logicalIDs(tmpl, "AWS::StepFunctions::StateMachine", "Workflow")
	def, err := sfnlocal.Resolve(raw, ids[0], nil)
	if err != nil {
		t.Fatal(err)
	}
	fnARN := sfnlocal.LocalFunctionARN(functionLogicalID(t, tmpl, "Rollout"))
	ok := func(action string, n int) (any, string) {
		switch action {
		case rollout.ActionStart:
			return loopResult(false, 0), ""
		case rollout.ActionStep, rollout.ActionRestore:
			return loopResult(true, n), ""
		}
		return map[string]any{"function": "rollout"}, ""
	}
	failStart := func(errType string, times int) func(string, int) (any, string) {
		return func(a string, n int) (any, string) {
			if a == rollout.ActionStart && (times < 0 || n <= times) {
				return nil, errType
			}
			return ok(a, n)
		}
	}
	starts := func(n int, rest ...string) []string {
		return append(slices.Repeat([]string{"start"}, n), rest...)
	}
	run := []string{"step", "restore", "finish"}
	for _, tc := range []struct {
		name    string
		answer  func(string, int) (any, string)
		status  string
		errName string
		actions []string
	}{
		{"transient error once: retried, the run completes", failStart("ThrottlingException", 1), sfnlocal.Succeeded, "", starts(2, run...)},
		{"another run active 5 times: waits its turn, then runs", failStart(anotherRunActive, 5), sfnlocal.Succeeded, "", starts(6, run...)},
		{"another run active throughout: 24 retries, then Failed", failStart(anotherRunActive, -1), sfnlocal.Failed, "RolloutFailed", starts(25)},
		{"other error throughout: 3 retries, then Failed", failStart("wrapError", -1), sfnlocal.Failed, "RolloutFailed", starts(4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeFunction{answer: tc.answer, calls: map[string]int{}}
			srv := httptest.NewServer(f)
			defer srv.Close()
			zero := map[string]time.Duration{}
			for _, s := range []string{StateWait, StateRestoreWait, StateOnErrorWait, StateStart, StateStep, StateRestore, StateOnError} {
				zero[s] = 0
			}
			res, err := eng.Run(context.Background(), def, []byte(`{"policy":"web","time":"2026-11-29T06:00:00Z"}`), sfnlocal.Options{
				Functions:     map[string][]string{fnARN: {srv.URL + "/2015-03-31/functions/function/invocations"}},
				WaitOverrides: zero, RetryIntervalOverrides: zero,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tc.status || res.Error != tc.errName {
				t.Errorf("status %s %s, want %s %s (%s)", res.Status, res.Error, tc.status, tc.errName, res.Cause)
			}
			if !slices.Equal(f.actions, tc.actions) {
				t.Errorf("actions %v, want %v (states %v)", f.actions, tc.actions, res.Entered())
			}
			for _, w := range f.wrong {
				t.Error(w)
			}
		})
	}
}
