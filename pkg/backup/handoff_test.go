package backup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// handoffJSON: "nightly" reboots and has no availability section (waves by
// default: the workflow), "weekly" does not reboot and "bulk" reboots all
// at once (both: the backup function's one-call run).
const handoffJSON = `{"deployment":"prod","policies":[
 {"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}},
 {"name":"weekly","selector":{"tagKey":"Weekly"},"reboot":false,"schedule":{"expression":"cron(0 3 ? * SUN *)"},"retention":{"weekly":4}},
 {"name":"bulk","selector":{"tagKey":"Bulk"},"availability":{"mode":"all-at-once"},"schedule":{"expression":"cron(0 4 * * ? *)"},"retention":{"daily":3}}]}`

const workflowARN = "arn:aws:states:" + ec2sim.DefaultRegion + ":" + ec2sim.DefaultAccount + ":stateMachine:amibackup-prod-waves"

type handoff struct {
	env     *simtest.Env
	b       *backup.Backuper
	logs    bytes.Buffer
	metrics bytes.Buffer
}

func newHandoff(t *testing.T) *handoff {
	t.Helper()
	c, err := config.Parse([]byte(handoffJSON), "")
	if err != nil {
		t.Fatal(err)
	}
	h := &handoff{env: simtest.Start(t, ec2sim.Options{})}
	h.env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "x"})
	h.env.Sim.SeedFleet("", "", 2, map[string]string{"Weekly": "x"})
	h.env.Sim.SeedFleet("", "", 2, map[string]string{"Bulk": "x"})
	h.b = &backup.Backuper{EC2: h.env.Client("", ""), Config: c, Workflow: h.env.SFN("", ""), WorkflowARN: workflowARN,
		Job: runner.Job{Log: slog.New(slog.NewJSONHandler(&h.logs, nil)), Metrics: emf.New(&h.metrics), Now: h.env.Sim.Now}}
	return h
}

// ec2Calls: every call that is not Step Functions'.
func (h *handoff) ec2Calls() map[string]int {
	out := map[string]int{}
	for a, n := range h.env.Sim.Calls().ByAction {
		if !strings.HasPrefix(a, "states:") {
			out[a] = n
		}
	}
	return out
}

func sched(policy string) string {
	return fmt.Sprintf(`{"policy":%q,"time":%q}`, policy, slot.Format("2006-01-02T15:04:05Z"))
}

// TestHandoffStartsOneExecutionPerSlot: a waves policy's trigger starts
// the execution named for policy and slot with the trigger as input, with
// no EC2 call; repeated deliveries (Scheduler's at-least-once, Lambda's
// retries) while it runs get the same execution, and after it closed are
// reported as already run: never a second run, never an error.
func TestHandoffStartsOneExecutionPerSlot(t *testing.T) {
	h := newHandoff(t)
	ctx := context.Background()
	in := sched("nightly")
	wantName := "nightly-20261124T030000Z"
	wantARN := images.ExecutionARN(workflowARN, wantName)
	for i, c := range []struct {
		name    string
		close   bool // close the execution before this delivery
		done    int  // summary: started (or answered again)
		existed int  // summary: already exists
	}{
		{"first delivery", false, 1, 0},
		{"second delivery while it runs", false, 1, 0},
		{"third delivery after it closed", true, 0, 1},
	} {
		if c.close && !h.env.Sim.FinishExecution(wantARN, ec2sim.ExecutionSucceeded) {
			t.Fatalf("%s: no running execution %s", c.name, wantARN)
		}
		sum, err := h.b.Handle(ctx, []byte(in))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(sum.Done) != c.done || len(sum.Existed) != c.existed || len(sum.Failed) != 0 {
			t.Errorf("%s: summary done %v existed %v failed %v", c.name, sum.Done, sum.Existed, sum.Failed)
		}
		for _, e := range append(sum.Done, sum.Existed...) {
			if e.ID != wantName || !strings.Contains(e.Detail, wantARN) {
				t.Errorf("%s: entry %+v does not name the execution %s", c.name, e, wantARN)
			}
		}
		if n := h.env.Sim.Calls().Count("states:StartExecution"); n != i+1 {
			t.Errorf("%s: %d StartExecution calls", c.name, n)
		}
	}
	ex := h.env.Sim.Executions()
	if len(ex) != 1 || ex[0].Name != wantName || ex[0].StateMachineARN != workflowARN || ex[0].Input != in {
		t.Fatalf("executions %+v, want one %s with the trigger as input", ex, wantName)
	}
	if c := h.ec2Calls(); len(c) != 0 {
		t.Errorf("EC2 calls by the hand-off: %v", c)
	}
	if !strings.Contains(h.logs.String(), `"msg":"this slot's workflow execution already exists; no second run"`) {
		t.Errorf("log does not say the slot already ran:\n%s", h.logs.String())
	}
	// The metrics: two starts (the second answered the same execution), one existing.
	got := emfSums(t, h.metrics.Bytes())
	if got[metrics.WorkflowStarted] != 2 || got[metrics.WorkflowExisting] != 1 || got[metrics.ImagesCreated] != 0 || got[metrics.InstancesSelected] != 0 {
		t.Errorf("metrics %v", got)
	}
}

// emfSums adds up the EMF values per metric name.
func emfSums(t *testing.T, b []byte) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("metrics line %s: %v", line, err)
		}
		aws, _ := m["_aws"].(map[string]any)
		for _, d := range aws["CloudWatchMetrics"].([]any) {
			for _, md := range d.(map[string]any)["Metrics"].([]any) {
				name := md.(map[string]any)["Name"].(string)
				v, _ := m[name].(float64)
				out[name] += v
			}
		}
	}
	return out
}

// TestHandoffCases: manual requests, dry runs, a different input for a
// running slot, deployments without the workflow, failures of the call,
// and the policies that keep the backup function's one-call run.
func TestHandoffCases(t *testing.T) {
	manual := func(d trigger.BackupDetail) string { return string(trigger.MarshalBackupEvent(slot, d)) }
	for _, c := range []struct {
		name     string
		in       string
		noARN    bool
		fault    *ec2sim.Fault
		seed     string // an execution of this name already runs, with other input
		wantErr  string
		wantExec string // the execution started ("" none)
		existed  bool
		images   int
	}{
		{name: "manual", in: manual(trigger.BackupDetail{Policy: "nightly"}), wantExec: "nightly-20261124T030000Z"},
		{name: "manual dry run", in: manual(trigger.BackupDetail{Policy: "nightly", DryRun: true}), wantExec: "nightly-20261124T030000Z-dry-run"},
		{name: "manual subset without reboot: the workflow images it without reboot", in: manual(trigger.BackupDetail{Policy: "nightly", InstanceIDs: []string{"i-0123456789abcdef0"}, Reboot: new(bool)}), wantExec: "nightly-20261124T030000Z"},
		{name: "same slot running with another input", in: manual(trigger.BackupDetail{Policy: "nightly"}), seed: "nightly-20261124T030000Z", existed: true},
		{name: "reboot false keeps the one-call run", in: sched("weekly"), images: 2},
		{name: "all-at-once keeps the one-call run", in: sched("bulk"), images: 2},
		{name: "no workflow ARN", in: sched("nightly"), noARN: true, wantErr: backup.WorkflowEnvVar},
		{name: "bad input", in: `{"policy":"nightly","time":"2026-11-24 03:00"}`, wantErr: "input.time"},
		{name: "bad input, dry run in a schedule", in: `{"policy":"nightly","time":"2026-11-24T03:00:00Z","dryRun":true}`, wantErr: "dryRun"},
		{name: "access denied", in: sched("nightly"), fault: &ec2sim.Fault{Action: "states:StartExecution", Code: "AccessDeniedException", HTTPStatus: http.StatusBadRequest, Message: "not authorized"}, wantErr: "AccessDeniedException"},
		{name: "answer lost, retried by the SDK", in: sched("nightly"), fault: &ec2sim.Fault{Action: "states:StartExecution", Code: "InternalServerError", HTTPStatus: http.StatusInternalServerError, After: true, Times: 1}, wantExec: "nightly-20261124T030000Z"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHandoff(t)
			if c.noARN {
				h.b.WorkflowARN = ""
			}
			if c.fault != nil {
				h.env.Sim.Inject(*c.fault)
			}
			if c.seed != "" {
				h.env.Sim.SeedExecution(ec2sim.Execution{ARN: images.ExecutionARN(workflowARN, c.seed), StateMachineARN: workflowARN, Name: c.seed, Input: `{"other":true}`})
			}
			sum, err := h.b.Handle(context.Background(), []byte(c.in))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want %q", err, c.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			var started []string
			for _, e := range h.env.Sim.Executions() {
				if e.Input != `{"other":true}` {
					started = append(started, e.Name)
					if e.Input != c.in {
						t.Errorf("execution input %s, want the trigger %s", e.Input, c.in)
					}
				}
			}
			if want := c.wantExec; (want == "" && len(started) != 0) || (want != "" && (len(started) != 1 || started[0] != want)) {
				t.Errorf("executions started %v, want %q", started, want)
			}
			if c.existed && (sum == nil || len(sum.Existed) != 1 || len(sum.Done) != 0) {
				t.Errorf("summary %+v, want the slot reported as already running", sum)
			}
			if c.wantExec != "" || c.existed || (c.wantErr != "" && c.fault == nil) {
				if calls := h.ec2Calls(); len(calls) != 0 {
					t.Errorf("EC2 calls: %v", calls)
				}
			}
			if c.wantErr != "" && c.fault == nil && h.env.Sim.Calls().Total != 0 {
				t.Errorf("rejected before any call, yet %d calls: %v", h.env.Sim.Calls().Total, h.env.Sim.Calls().ByAction)
			}
			if c.images > 0 {
				if n := h.env.Sim.Calls().Count("states:StartExecution"); n != 0 {
					t.Errorf("%d StartExecution calls for a policy that does not reboot in waves", n)
				}
			}
			if n := len(h.env.Sim.Images("", "")); n != c.images {
				t.Errorf("%d images, want %d", n, c.images)
			}
		})
	}
}
