package rollout_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/rollout"
	"github.com/amibackup/amibackup/pkg/tags"
)

const guardSM = "arn:aws:states:" + ec2sim.DefaultRegion + ":" + ec2sim.DefaultAccount + ":stateMachine:amibackup-prod-waves"

func execARN(name string) string {
	return strings.Replace(guardSM, ":stateMachine:", ":execution:", 1) + ":" + name
}

// TestStartGuard: start fails, before any EC2 call and naming the other
// execution, when another execution of the workflow runs and started
// earlier (on a tie: the smaller name), whatever its policy (issue 13, H2:
// two policies may reach one fleet), with *AnotherRunActive (M4); dry runs,
// closed executions, later ones and the execution itself do not block.
func TestStartGuard(t *testing.T) {
	self := "nightly-20261124T030000Z"
	input := `{"policy":"nightly","time":"` + tags.FormatTime(slot) + `"}`
	type seed struct {
		name, input, status string
		start               time.Duration // relative to self's start
	}
	for _, c := range []struct {
		name     string
		seeds    []seed
		selfSeen bool // self is listed (false: not yet, the listing lags)
		blocker  string
		dryRun   bool
	}{
		{name: "alone", selfSeen: true},
		{name: "alone, not listed yet", selfSeen: false},
		{name: "same policy, earlier slot, started earlier", selfSeen: true, seeds: []seed{{name: "nightly-20261123T030000Z", start: -time.Hour}}, blocker: "nightly-20261123T030000Z"},
		{name: "same policy started earlier, self not listed yet", selfSeen: false, seeds: []seed{{name: "nightly-20261123T030000Z", start: -time.Hour}}, blocker: "nightly-20261123T030000Z"},
		{name: "same policy, started later: it stops, not this one", selfSeen: true, seeds: []seed{{name: "nightly-20261124T100000Z", start: time.Minute}}},
		{name: "tie, smaller name goes first", selfSeen: true, seeds: []seed{{name: "nightly-20261123T030000Z"}}, blocker: "nightly-20261123T030000Z"},
		{name: "tie, larger name waits", selfSeen: true, seeds: []seed{{name: "nightly-20261125T030000Z"}}},
		// Two policies may select the same fleet (daily and weekly tags on
		// one Auto Scaling group): executions of all policies run one at a time.
		{name: "other policy started earlier", selfSeen: true, seeds: []seed{{name: "weekly-20261123T030000Z", start: -time.Hour}}, blocker: "weekly-20261123T030000Z"},
		{name: "other policy, tie, smaller name goes first", selfSeen: true, seeds: []seed{{name: "daily-20261124T030000Z"}}, blocker: "daily-20261124T030000Z"},
		{name: "other policy started later", selfSeen: true, seeds: []seed{{name: "weekly-20261124T030000Z", start: time.Minute}}},
		{name: "dry run of another policy", selfSeen: true, seeds: []seed{{name: "weekly-20261123T030000Z-dry-run", start: -time.Hour}}},
		{name: "dry run of the policy", selfSeen: true, seeds: []seed{{name: "nightly-20261123T030000Z-dry-run", start: -time.Hour}}},
		{name: "closed execution of the policy", selfSeen: true, seeds: []seed{{name: "nightly-20261123T030000Z", start: -time.Hour, status: ec2sim.ExecutionSucceeded}}},
		{name: "foreign name, input of the policy", selfSeen: true, seeds: []seed{{name: "console-run-1", input: input, start: -time.Hour}}, blocker: "console-run-1"},
		{name: "foreign name, other input", selfSeen: true, seeds: []seed{{name: "console-run-2", input: `{"hello":1}`, start: -time.Hour}}},
		{name: "this run is a dry run", selfSeen: true, dryRun: true, seeds: []seed{{name: "nightly-20261123T030000Z", start: -time.Hour}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFleet(t)
			f.wrap = func(r *rollout.Roller) { r.StepFunctions = f.env.SFN("", "") }
			now := f.env.Sim.Now()
			selfName, in := self, input
			if c.dryRun {
				selfName += "-dry-run"
				in = string(manualDryRun(slot))
			}
			if c.selfSeen {
				f.env.Sim.SeedExecution(ec2sim.Execution{ARN: execARN(selfName), StateMachineARN: guardSM, Name: selfName, Input: in, Start: now})
			}
			for _, s := range c.seeds {
				f.env.Sim.SeedExecution(ec2sim.Execution{ARN: execARN(s.name), StateMachineARN: guardSM, Name: s.name, Input: s.input, Status: s.status, Start: now.Add(s.start)})
			}
			_, err := f.call(t, map[string]any{"action": "start", "input": json.RawMessage(in), "execution": execARN(selfName), "stateMachine": guardSM})
			ec2 := 0
			for a, n := range f.env.Sim.Calls().ByAction {
				if !strings.HasPrefix(a, "states:") {
					ec2 += n
				}
			}
			if c.blocker == "" {
				if err != nil {
					t.Fatalf("start: %v", err)
				}
				if ec2 == 0 {
					t.Fatal("start made no EC2 call: it did not run")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), execARN(c.blocker)) {
				t.Fatalf("start: %v, want an error naming %s", err, execARN(c.blocker))
			}
			// Unwrapped, so that Lambda's errorType (the type name, see
			// pkg/invoke) is what the state machine's Start retries.
			if a, ok := err.(*rollout.AnotherRunActive); !ok || reflect.TypeOf(err).Elem().Name() != "AnotherRunActive" || a.Other != execARN(c.blocker) {
				t.Errorf("start error %T %v: want *rollout.AnotherRunActive itself", err, err)
			}
			if ec2 != 0 {
				t.Errorf("blocked start made %d EC2 calls: %v", ec2, f.env.Sim.Calls().ByAction)
			}
		})
	}
}

func manualDryRun(at time.Time) []byte {
	b, _ := json.Marshal(map[string]any{"version": "0", "id": "x", "detail-type": "Backup Requested", "source": "amibackup", "account": ec2sim.DefaultAccount,
		"time": tags.FormatTime(at), "region": ec2sim.DefaultRegion, "resources": []string{}, "detail": map[string]any{"policy": "nightly", "dryRun": true}})
	return b
}

// TestStartGuardBadContext: a malformed execution context is rejected
// before any call.
func TestStartGuardBadContext(t *testing.T) {
	f := newFleet(t)
	f.wrap = func(r *rollout.Roller) { r.StepFunctions = f.env.SFN("", "") }
	input := json.RawMessage(`{"policy":"nightly","time":"` + tags.FormatTime(slot) + `"}`)
	for _, c := range []struct {
		exec, sm, want string
	}{
		{execARN("x"), "arn:aws:states:us-east-1:123:stateMachine:y", "input.stateMachine"},
		{"arn:aws:states:us-east-1:123456789012:execution:other:x", guardSM, "input.execution"},
		{"", guardSM, "input.execution"},
	} {
		if _, err := f.call(t, map[string]any{"action": "start", "input": input, "execution": c.exec, "stateMachine": c.sm}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.exec, c.sm, err, c.want)
		}
	}
	if n := f.env.Sim.Calls().Total; n != 0 {
		t.Errorf("%d calls", n)
	}
}
