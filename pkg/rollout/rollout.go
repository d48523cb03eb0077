// Package rollout runs a policy's backup as a Step Functions workflow that
// reboots in waves (issue 13): the state machine (infra/stacks/workflow.go)
// calls the rollout function with one action at a time and carries the
// returned state between calls:
//
//	{"action":"start","input":<execution input>}   -> {"state", "done", "waitSeconds"}
//	{"action":"step","state":...}                   -> {"state", "done", "waitSeconds"}
//	{"action":"restore","state":...}                -> {"state", "done", "waitSeconds"}
//	{"action":"finish","state":...}                 -> summary; an error when anything failed or halted
//
// The execution input is what the backup function takes (the Scheduler
// input or a "Backup Requested" event), parsed by pkg/trigger with the same
// rules: bad input fails start before any AWS call.
//
// start selects the instances (pkg/backup's selection), leaves out the
// ones whose image of the slot exists (a repeated execution reboots none
// of them again), finds each instance's target groups, plans the waves
// (pkg/waves), looks for what an earlier execution left out of service
// (drain.Stranded), rejects a plan whose state could outgrow
// MaxResultBytes, and only then (its first change) images the opted-out
// ones without reboot exactly as the backup does. Each step then:
// restores the leftovers first; checks the instances in flight
// (drain.Health), puts back those that are OK (drain.Restore) and records
// them healthy once back in service (waves.Progress.Observe: one not
// healthy healthTimeout after its drain began halts its group, as does one
// terminated during the run or not in service at its turn:
// waves.Progress.Halt); starts the members that have room (Ready,
// rolling); drains them (drain.Drain); and calls CreateImage for the
// drained ones through pkg/backup (same names, tags in the call,
// idempotent through the slot listing and the duplicate path). restore
// puts back everything this run took (its state and, for what a lost step
// took, the amibackup:drain tags of the run), on every path.
//
// The state holds the plan gzip-compressed (waves.Plan.Encode: derived
// once, so an Auto Scaling replacement during the night cannot change the
// plan under the progress), the progress (one byte per instance), the
// target groups and what is out of service now: see BenchmarkState10k.
package rollout

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
	"github.com/amibackup/amibackup/pkg/waves"
)

// Function is the name used in summaries and metrics.
const Function = "rollout"

// Actions of the contract.
const (
	ActionStart   = "start"
	ActionStep    = "step"
	ActionRestore = "restore"
	ActionFinish  = "finish"
)

// MaxInFlight bounds the instances out of service at once over all groups,
// so that what the state records of them stays far below Step Functions'
// 256 KB with the plan of 10,000 instances (BenchmarkState10k), and one
// step's drain and CreateImage calls fit an invocation easily.
const MaxInFlight = 400

// MaxResultBytes bounds what start, step and restore return (the state
// the execution carries). Step Functions allows 256 KB (262,144 bytes) per
// state's input and output, and exceeding it fails the execution with
// States.DataLimitExceeded, which no Catch (States.ALL included) catches:
// the restore-after-error loop would never run. The margin (about 16 KB)
// leaves room for what the state machine adds beside the state (a caught
// error in $.error). Over it, the action fails with an ordinary error
// that the Catch handles with the previous, smaller state, and start
// rejects a plan whose peak could reach it (checkPeak).
const MaxResultBytes = 240 << 10

// maxResultBytes is MaxResultBytes; tests lower it.
var maxResultBytes = MaxResultBytes

// startRounds bounds the pace-then-check rounds of a step's starts (Step).
const startRounds = 3

// RestoreWait is the wait between two restore rounds: ExitStandby and a
// target's health checks take tens of seconds.
const RestoreWait = 15

// maxNotes bounds the free-text problems kept in the state.
const maxNotes = 50

// EC2 is what the rollout needs of *ec2.Client: the backup's calls and
// the drain's (status checks, the drain tag).
type EC2 interface {
	backup.EC2
	drain.EC2API
}

// ELB is what the rollout needs of *elasticloadbalancingv2.Client.
type ELB interface {
	drain.ELBv2API
	DescribeTargetGroups(context.Context, *elasticloadbalancingv2.DescribeTargetGroupsInput, ...func(*elasticloadbalancingv2.Options)) (*elasticloadbalancingv2.DescribeTargetGroupsOutput, error)
	DescribeTargetGroupAttributes(context.Context, *elasticloadbalancingv2.DescribeTargetGroupAttributesInput, ...func(*elasticloadbalancingv2.Options)) (*elasticloadbalancingv2.DescribeTargetGroupAttributesOutput, error)
}

// Roller runs the actions.
type Roller struct {
	runner.Job
	EC2         EC2
	AutoScaling drain.AutoScalingAPI
	ELB         ELB
	Config      *config.Config
	// StepFunctions: the start guard's listing (guard.go).
	StepFunctions StepFunctions
}

// Request is one invocation of the function.
type Request struct {
	Action string `json:"action"`
	// Input (start): the execution input, a backup trigger.
	Input json.RawMessage `json:"input,omitempty"`
	// Execution (start): the execution's and state machine's ARNs (guard.go).
	Execution
	// State (step, restore, finish): what the previous action returned.
	State *State `json:"state,omitempty"`
}

// Result of start, step and restore.
type Result struct {
	State       *State `json:"state"`
	Done        bool   `json:"done"`
	WaitSeconds int    `json:"waitSeconds"`
}

// State travels between the actions in the execution.
type State struct {
	V       int    `json:"v"`
	Policy  string `json:"policy"`
	Slot    string `json:"slot"`
	Trigger string `json:"trigger"`
	DryRun  bool   `json:"dryRun,omitempty"`
	// Run names the run in the drain tags: "<deployment>/<policy>/<slot>",
	// the same for every execution of the slot, so a repeated execution
	// adopts what an earlier one took.
	Run string `json:"run"`
	// Plan: waves.Plan.Encode, base64.
	Plan string `json:"plan"`
	// PlanText describes the plan (waves.Plan.String).
	PlanText     string   `json:"planText"`
	TargetGroups []string `json:"tgs,omitempty"`
	// GroupTargets: per plan group, its members' target groups (indices
	// in TargetGroups) at start; a drain round asks only these (targets.go).
	GroupTargets map[int][]int `json:"gtgs,omitempty"`
	// TGDelay and TGReady: per target group (indexed like TargetGroups),
	// its deregistration delay (unknownDelay until its group first drains)
	// and its health check's interval x healthy threshold, seconds
	// (targets.go).
	TGDelay []int `json:"tgDelay,omitempty"`
	TGReady []int `json:"tgReady,omitempty"`
	// TGFull: per target group (bit k, hex), whether a target of it was
	// seen still draining a step after its deregistration (targets.go).
	TGFull string `json:"tgFull,omitempty"`
	// Due: per slot in flight, the earliest time worth a look, seconds
	// after Progress.Start (targets.go); Prev: the previous step's time.
	Due  map[int]int64 `json:"due,omitempty"`
	Prev int64         `json:"prev,omitempty"`
	// CITokens: what the previous step left in CreateImage's bucket, as
	// estimated (pacing.go).
	CITokens int `json:"cit,omitempty"`
	// DrainTokens: the same for the drain calls (pacing.go).
	DrainTokens int `json:"drt,omitempty"`
	// Short: per plan group, since when its member due waits because the
	// group is short for another reason (short.go).
	Short    map[int]int64   `json:"short,omitempty"`
	Progress *waves.Progress `json:"progress"`
	// Draining: slots in flight whose drain is not complete (no CreateImage yet).
	Draining []int `json:"draining,omitempty"`
	// Taken: what this run took out of service and has not put back.
	Taken []drain.Taken `json:"taken,omitempty"`
	// Stranded: what earlier executions left out of service, put back
	// before anything is started.
	Stranded []drain.Record `json:"stranded,omitempty"`
	// NotRestored: what restore could not put back (blocked, failed, or
	// still waiting when the restore rounds ran out): still in Standby or
	// deregistered.
	NotRestored []drain.InstanceProgress `json:"notRestored,omitempty"`
	// Replaced: what was put back but is not in service, and will not be by
	// waiting: terminated (drain.StateGone: its Auto Scaling group replaced
	// it, or anyone terminated it) or unhealthy (drain.StateUnhealthy: out
	// of Standby, its group replaces it). Not "not restored": nothing is
	// left in Standby or deregistered by us.
	Replaced []drain.InstanceProgress `json:"replaced,omitempty"`
	// NotInService: instances Drain skipped, as states of earlier versions
	// recorded them (Errored slots, counted as skipped by finish). Such an
	// instance now halts its group (waves.Progress.Halt): it is not added.
	NotInService []string `json:"notInService,omitempty"`
	// RestoreRounds counts restore actions, so that a target that never
	// becomes healthy cannot keep the execution polling until its history
	// (25,000 events) runs out.
	RestoreRounds int `json:"restoreRounds,omitempty"`
	// Counts.
	Selected    int `json:"selected"`
	AlreadyDone int `json:"alreadyDone,omitempty"`
	NoReboot    int `json:"noReboot,omitempty"`
	Created     int `json:"created,omitempty"`
	Existed     int `json:"existed,omitempty"`
	Failed      int `json:"failed,omitempty"`
	// Notes: problems outside the plan (first maxNotes).
	Notes []string `json:"notes,omitempty"`
	// Began: start of the run, Unix seconds.
	Began int64 `json:"began"`
	// Checks: steps so far; they pace the rest (pacing.go).
	Checks int `json:"checks,omitempty"`
}

const stateVersion = 1

func (s *State) note(format string, args ...any) {
	if len(s.Notes) < maxNotes {
		s.Notes = append(s.Notes, fmt.Sprintf(format, args...))
	}
}

// Handle parses one request strictly (unknown fields, nulls, duplicate keys
// and trailing data are errors naming the field; nothing is called) and
// runs it. The result is a *Result or, for finish, a *Summary.
func (r *Roller) Handle(ctx context.Context, raw []byte) (any, error) {
	var req Request
	err := trigger.StrictDecode(raw, &req, "input")
	if err == nil {
		err = req.check()
	}
	if err != nil {
		r.Log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	var res *Result
	switch req.Action {
	case ActionStart:
		res, err = r.Start(ctx, req.Input, req.Execution)
	case ActionStep:
		res, err = r.Step(ctx, req.State)
	case ActionRestore:
		res, err = r.Restore(ctx, req.State)
	default:
		return r.Finish(ctx, req.State)
	}
	if err != nil {
		return nil, err // unchanged: its type name is Lambda's errorType (AnotherRunActive)
	}
	if err := checkSize(req.Action, res); err != nil {
		r.Log.Error("result too large for the workflow", "error", err.Error())
		return nil, err
	}
	return res, nil
}

// checkSize fails a result over maxResultBytes (see MaxResultBytes).
func checkSize(action string, res *Result) error {
	raw, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("rollout %s: encode the result: %w", action, err)
	}
	if len(raw) > maxResultBytes {
		return fmt.Errorf("rollout %s: the state is %d bytes, over rollout.MaxResultBytes (%d; Step Functions allows 256 KB per state and "+
			"States.DataLimitExceeded cannot be caught): this action's result is dropped and the workflow puts back what the run took from the previous state; "+
			"split the policy (its selector) into smaller policies", action, len(raw), maxResultBytes)
	}
	return nil
}

// checkPeak rejects, before start changes anything, a plan whose state
// could outgrow maxResultBytes during the run: the start state plus the
// records of the MaxInFlight largest in-flight instances (what the drain
// took of each, its start time and its draining slot).
func checkPeak(st *State, plan *waves.Plan, planned []backup.Instance, regs map[string][]drain.Registration) error {
	raw, err := json.Marshal(&Result{State: st})
	if err != nil {
		return fmt.Errorf("rollout start: encode the state: %w", err)
	}
	recs := make([]int, 0, len(planned))
	for _, in := range planned {
		t := drain.Taken{InstanceID: in.ID, AutoScalingGroup: in.Tags[waves.ASGTag]}
		for _, rg := range regs[in.ID] {
			t.Targets = append(t.Targets, rg.Target)
		}
		b, err := json.Marshal(t)
		if err != nil {
			return fmt.Errorf("rollout start: encode the state: %w", err)
		}
		i, _ := plan.Slot(in.ID)
		// Taken entry and comma; Progress.T `"slot":seconds,` (up to a
		// year of seconds); Draining `slot,`.
		recs = append(recs, len(b)+1+2*len(fmt.Sprint(i))+len(`"":12345678,`)+1)
	}
	slices.SortFunc(recs, func(a, b int) int { return b - a })
	peak := len(raw)
	for _, n := range recs[:min(MaxInFlight, len(recs))] {
		peak += n
	}
	// Groups waiting because they are short for another reason (short.go).
	peak += min(MaxShort, len(plan.Groups)) * shortEntryMax
	// Deregistration delays read later: "-1" now, up to "3600" then; and
	// the target groups that drain fully, a bit each.
	peak += len(st.TGDelay) * (len("3600") - len(fmt.Sprint(unknownDelay)))
	peak += len(`"tgFull":"",`) + (len(st.TargetGroups)+3)/4
	if peak > maxResultBytes {
		return fmt.Errorf("policy %q: its plan of %d instances would make a state of up to %d bytes (%d at start, plus up to %d instances in flight, rollout.MaxInFlight), "+
			"over rollout.MaxResultBytes (%d; Step Functions allows 256 KB per state): split the policy (its selector) into smaller policies; nothing was changed",
			st.Policy, len(plan.Slots), peak, len(raw), min(MaxInFlight, len(recs)), maxResultBytes)
	}
	return nil
}

func (req Request) check() error {
	switch req.Action {
	case ActionStart:
		if len(req.Input) == 0 || req.State != nil {
			return fmt.Errorf("input: action %q takes input (the execution input: a Scheduler input or a Backup Requested event) and no state", req.Action)
		}
	case ActionStep, ActionRestore, ActionFinish:
		if req.State == nil || len(req.Input) != 0 {
			return fmt.Errorf("input: action %q takes state (what the previous action returned) and no input", req.Action)
		}
	default:
		return fmt.Errorf("input.action: %q is not allowed: use %q, %q, %q or %q", req.Action, ActionStart, ActionStep, ActionRestore, ActionFinish)
	}
	return nil
}

func (r *Roller) drainer() *drain.Drainer {
	return &drain.Drainer{AutoScaling: r.AutoScaling, ELB: r.ELB, EC2: r.EC2}
}

func (r *Roller) backuper() *backup.Backuper {
	return &backup.Backuper{Job: r.Job, EC2: r.EC2, Config: r.Config, Batch: true}
}

// loaded is a state checked against the configuration, with its plan.
type loaded struct {
	st   *State
	pol  *config.Policy
	plan *waves.Plan
	req  trigger.Backup
	log  *slog.Logger
}

func (r *Roller) load(st *State) (*loaded, error) {
	if st.V != stateVersion {
		return nil, fmt.Errorf("input.state.v: %d, this function reads %d: pass the state the previous action returned", st.V, stateVersion)
	}
	pol, ok := r.Config.Policy(st.Policy)
	if !ok {
		return nil, fmt.Errorf("input.state.policy: %q is not a configured policy", st.Policy)
	}
	slot, err := tags.ParseTime(st.Slot)
	if err != nil {
		return nil, fmt.Errorf("input.state.slot: %w", err)
	}
	if want := runName(r.Config.Deployment, pol.Name, slot); st.Run != want {
		return nil, fmt.Errorf("input.state.run: %q, expected %q", st.Run, want)
	}
	raw, err := base64.StdEncoding.DecodeString(st.Plan)
	if err != nil {
		return nil, fmt.Errorf("input.state.plan: %w", err)
	}
	plan, err := waves.Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("input.state.plan: %w", err)
	}
	if st.Progress == nil || st.Progress.Plan != plan.Digest() || len(st.Progress.S) != len(plan.Slots) {
		return nil, fmt.Errorf("input.state.progress: does not belong to the plan: pass the state the previous action returned")
	}
	for _, i := range st.Draining {
		if i < 0 || i >= len(plan.Slots) || st.Progress.S[i] != waves.Rebooting {
			return nil, fmt.Errorf("input.state.draining: slot %d is not in flight", i)
		}
	}
	if len(st.Short) > MaxShort {
		return nil, fmt.Errorf("input.state.short: %d records, at most %d", len(st.Short), MaxShort)
	}
	for g := range st.Short {
		if g < 0 || g >= len(plan.Groups) {
			return nil, fmt.Errorf("input.state.short: group %d is not in the plan", g)
		}
	}
	l := &loaded{st: st, pol: pol, plan: plan,
		req: trigger.Backup{Policy: pol.Name, Slot: slot, Trigger: st.Trigger}}
	l.log = r.Log.With("policy", pol.Name, "slot", st.Slot, "run", st.Run)
	return l, nil
}

// runName is the run's name in the drain tags.
func runName(deployment, policy string, slot time.Time) string {
	return deployment + "/" + policy + "/" + tags.FormatTime(slot)
}

// Start parses the execution input and plans the run.
func (r *Roller) Start(ctx context.Context, input json.RawMessage, ex Execution) (*Result, error) {
	req, err := trigger.ParseBackup(input, r.Config)
	if err == nil {
		err = trigger.CheckNotFuture("time", req.Slot, r.Clock()())
	}
	if err == nil {
		err = ex.check()
	}
	if err != nil {
		r.Log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	pol, _ := r.Config.Policy(req.Policy) // ParseBackup checked it
	log := r.Log.With("policy", pol.Name, "slot", tags.FormatTime(req.Slot), "trigger", req.Trigger, "dryRun", req.DryRun)
	run := r.begin()
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()
	if err := r.guard(wctx, log, req, ex); err != nil {
		// Unwrapped: *AnotherRunActive's type name is the errorType the
		// state machine retries.
		log.Error("another execution of the workflow runs, or the check failed; nothing was changed", "error", err.Error())
		return nil, err
	}
	st := &State{V: stateVersion, Policy: pol.Name, Slot: tags.FormatTime(req.Slot), Trigger: req.Trigger, DryRun: req.DryRun,
		Run: runName(r.Config.Deployment, pol.Name, req.Slot), Began: r.Clock()().Unix()}
	b := r.backuper()
	selected, err := b.Select(wctx, req)
	if err != nil {
		return nil, fmt.Errorf("rollout start: %w", err)
	}
	st.Selected = len(selected)
	for _, id := range req.InstanceIDs {
		if !slices.ContainsFunc(selected, func(in backup.Instance) bool { return in.ID == id }) {
			st.note("%s: not selected by policy %q (tag or state): skipped", id, pol.Name)
		}
	}
	if req.Trigger == tags.TriggerSchedule && r.Metrics != nil && !req.DryRun {
		if err := r.Metrics.Emit(r.Clock()(), map[string]string{metrics.Dimension: pol.Name}, emf.CountOf(metrics.InstancesSelected, len(selected))); err != nil {
			log.Error("emit metrics", "error", err.Error())
		}
	}
	reboot := pol.RebootEnabled() && (req.Reboot == nil || *req.Reboot)
	var done map[string]string
	if !req.DryRun && len(selected) > 0 {
		if done, err = b.Done(wctx, req); err != nil {
			// Without the listing every instance is planned; the CreateImage
			// of one already imaged is resolved by the duplicate path.
			log.Error("listing the slot's images failed; every instance is planned", "error", err.Error())
			st.note("DescribeImages: %v; images of this slot were not recognised up front", err)
		}
	}
	d := r.drainer()
	// What an earlier execution of the slot left: instances drained by it
	// (its tags, same run name) and imaged ones still down. They are
	// planned and start in flight, so their groups count them.
	var ours, stranded []drain.Record
	downDone := map[string]bool{}
	if !req.DryRun && reboot && len(selected) > 0 {
		// Target groups are not known yet: which instances, not how to
		// put them back (read again below; its problems are reported).
		recs, _, err := d.Stranded(wctx, r.Config.Deployment+"/", nil)
		if err != nil {
			return nil, fmt.Errorf("rollout start: %w", err)
		}
		for _, rec := range recs {
			if rec.Run == st.Run {
				ours = append(ours, rec)
			} else {
				stranded = append(stranded, rec)
			}
		}
		var imaged []string
		for _, in := range selected {
			if done[in.ID] != "" && !in.NoReboot {
				imaged = append(imaged, in.ID)
			}
		}
		hs, err := d.Health(wctx, imaged)
		if err != nil {
			return nil, fmt.Errorf("rollout start: %w", err)
		}
		for _, h := range hs {
			if h.Condition != drain.OK {
				downDone[h.InstanceID] = true
			}
		}
	}
	tagged := map[string]bool{}
	for _, rec := range ours {
		for _, t := range rec.Instances {
			tagged[t.InstanceID] = true
		}
	}
	var planned []backup.Instance
	var direct []string // imaged without a reboot now
	for _, in := range selected {
		switch {
		case done[in.ID] != "" && (downDone[in.ID] || tagged[in.ID]):
			st.AlreadyDone++
			planned = append(planned, in)
		case done[in.ID] != "":
			st.AlreadyDone++
		case req.DryRun:
			// Every instance gets its CreateImage DryRun=true (the
			// permission check); the plan shows the rebooting ones.
			direct = append(direct, in.ID)
			if reboot && !in.NoReboot {
				planned = append(planned, in)
			}
		case !reboot || in.NoReboot:
			direct = append(direct, in.ID)
		default:
			planned = append(planned, in)
		}
	}
	// What start's own CreateImage calls (below) leave of the bucket (pacing.go).
	st.CITokens = max(0, waves.CreateImageBucket-len(direct))
	st.DrainTokens = drainBucket
	var tgs []string
	regs := map[string][]drain.Registration{}
	if len(planned) > 0 && (pol.Availability.DrainEnabled() || slices.Contains(pol.Availability.Sources(), config.GroupByTargetGroup)) {
		all, healthy, err := r.targetGroups(wctx)
		if err != nil {
			return nil, fmt.Errorf("rollout start: %w", err)
		}
		ids := make([]string, len(planned))
		for i, in := range planned {
			ids[i] = in.ID
		}
		if regs, err = d.TargetRegistrations(wctx, ids, all); err != nil {
			return nil, fmt.Errorf("rollout start: %w", err)
		}
		used := map[string]bool{}
		for _, rs := range regs {
			for _, rg := range rs {
				used[rg.Group] = true
			}
		}
		tgs = slices.Sorted(maps.Keys(used))
		if pol.Availability.DrainEnabled() {
			st.TGDelay, st.TGReady = targetTimings(tgs, healthy)
		}
	}
	st.TargetGroups = tgs
	ws := make([]waves.Instance, len(planned))
	for i, in := range planned {
		ws[i] = waves.Instance{ID: in.ID, Tags: in.Tags}
		for _, rg := range regs[in.ID] {
			if !slices.Contains(ws[i].TargetGroups, rg.Group) {
				ws[i].TargetGroups = append(ws[i].TargetGroups, rg.Group)
			}
		}
	}
	plan, err := waves.New(ws, pol.Availability, waves.Options{})
	if err != nil {
		return nil, fmt.Errorf("rollout start: %w", err)
	}
	enc, err := plan.Encode()
	if err != nil {
		return nil, fmt.Errorf("rollout start: %w", err)
	}
	st.Plan, st.PlanText = base64.StdEncoding.EncodeToString(enc), plan.String()
	st.Progress = waves.NewProgress(plan, time.Unix(st.Began, 0))
	st.GroupTargets = groupTargets(plan, tgs, regs)
	// Stranded records were read without target groups (not known yet);
	// read again with them, now that they are.
	if len(ours)+len(stranded) > 0 {
		recs, problems, err := d.Stranded(wctx, r.Config.Deployment+"/", tgs)
		if err != nil {
			return nil, fmt.Errorf("rollout start: %w", err)
		}
		for _, p := range problems {
			st.note("stranded: %s", p)
		}
		ours, stranded = nil, nil
		for _, rec := range recs {
			if rec.Run == st.Run {
				ours = append(ours, rec)
			} else {
				stranded = append(stranded, rec)
			}
		}
	}
	st.Stranded = stranded
	var resume []int
	for _, rec := range ours {
		st.Taken = mergeTaken(st.Taken, rec.Instances)
		for _, t := range rec.Instances {
			if i, ok := plan.Slot(t.InstanceID); ok && done[t.InstanceID] == "" {
				resume = append(resume, i)
				st.Draining = append(st.Draining, i) // drain again (adopts the tag), then image
			}
		}
	}
	for id := range downDone {
		if i, ok := plan.Slot(id); ok && !slices.Contains(resume, i) {
			resume = append(resume, i) // imaged, in flight: health, then put back
		}
	}
	for _, rec := range ours {
		for _, t := range rec.Instances {
			if i, ok := plan.Slot(t.InstanceID); ok && done[t.InstanceID] != "" && !slices.Contains(resume, i) {
				resume = append(resume, i)
			}
		}
	}
	slices.Sort(resume)
	slices.Sort(st.Draining)
	if err := st.Progress.Started(plan, resume, time.Unix(st.Began, 0)); err != nil {
		return nil, fmt.Errorf("rollout start: %w", err)
	}
	// Everything above only read: a plan too large for the workflow is
	// rejected before the first change (the no-reboot images below).
	if err := checkPeak(st, plan, planned, regs); err != nil {
		log.Error("plan too large for the workflow; nothing was changed", "error", err.Error())
		return nil, err
	}
	if len(direct) > 0 {
		// The backup's own path: opt-out tag, warnings, crash-consistent
		// images (or, in a dry run, CreateImage DryRun=true for each).
		dreq := req
		dreq.InstanceIDs = direct
		sum, _ := b.Run(wctx, dreq)
		r.count(st, sum, nil, nil)
		if !req.DryRun {
			st.NoReboot = len(direct)
		}
	}
	log.Info("rollout planned", "plan", st.PlanText, "selected", st.Selected, "alreadyDone", st.AlreadyDone,
		"noReboot", st.NoReboot, "targetGroups", len(tgs), "stranded", len(st.Stranded))
	return &Result{State: st, Done: req.DryRun || st.Progress.Done() && len(st.Stranded) == 0,
		WaitSeconds: stepWait(plan, st.Progress, 0)}, nil
}

// begin starts a runner.Run (the deadline margin and the clock).
func (r *Roller) begin() *runner.Run { return r.Job.Start(r.Config.Concurrency) }

// targetGroups lists the account's target groups in the Region (ELBv2 has
// no lookup from instance to target group) with, per ARN, how long a newly
// registered target takes at the least to be healthy: its health check's
// interval x healthy threshold, seconds.
func (r *Roller) targetGroups(ctx context.Context) ([]string, map[string]int, error) {
	var out []string
	healthy := map[string]int{}
	pg := elasticloadbalancingv2.NewDescribeTargetGroupsPaginator(r.ELB, &elasticloadbalancingv2.DescribeTargetGroupsInput{PageSize: aws.Int32(400)})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("describe target groups: %w", err)
		}
		for _, tg := range page.TargetGroups {
			arn := aws.ToString(tg.TargetGroupArn)
			out = append(out, arn)
			healthy[arn] = int(aws.ToInt32(tg.HealthCheckIntervalSeconds) * aws.ToInt32(tg.HealthyThresholdCount))
		}
	}
	return out, healthy, nil
}

// count adds a backup batch's outcome to the state; failed instances of
// the plan are failed in the progress (their group goes on: nothing was
// rebooted).
func (r *Roller) count(st *State, sum *runner.Summary, l *loaded, planned map[string]bool) {
	if sum == nil {
		return
	}
	st.Created += len(sum.Done)
	st.Existed += len(sum.Existed)
	fail := func(id, why string) {
		if l != nil && planned[id] {
			if err := st.Progress.Fail(l.plan, id, why); err != nil {
				st.note("%s: %v", id, err)
			}
			return
		}
		st.Failed++
		st.note("%s: %s", id, why)
	}
	for _, e := range sum.Failed {
		fail(e.ID, e.Detail)
	}
	for _, e := range sum.Skipped {
		fail(e.ID, "skipped: "+e.Detail)
	}
	for _, id := range sum.NotReached {
		fail(id, "not reached before the deadline")
	}
}

// Step advances the run by one round.
func (r *Roller) Step(ctx context.Context, st *State) (*Result, error) {
	l, err := r.load(st)
	if err != nil {
		return nil, err
	}
	run := r.begin()
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()
	// One step's rounds share their target group reads: the round that
	// sees a member back and the one that drains the group's next member
	// ask the same target groups (drain.Drainer.ShareReads).
	d := r.drainer()
	d.ShareReads()
	st.Checks++
	wait := stepWait(l.plan, st.Progress, st.Checks)
	// Leftovers of earlier executions first: nothing new goes out of
	// service while they are not back.
	if len(st.Stranded) > 0 {
		var left []drain.Record
		for _, rec := range st.Stranded {
			p, err := d.Restore(wctx, rec)
			if err != nil {
				return nil, fmt.Errorf("rollout step: put back %s: %w", rec.Run, err)
			}
			switch {
			case p.Complete || p.Settled:
				settle(st, p.Instances, "")
			default:
				left = append(left, rec)
			}
		}
		st.Stranded = left
		if len(left) > 0 {
			return &Result{State: st, WaitSeconds: RestoreWait}, nil
		}
	}
	now := r.Clock()()
	timeout := l.pol.Availability.Timeout()
	draining := map[int]bool{}
	for _, i := range st.Draining {
		draining[i] = true
	}
	// 1. Health of the imaged instances in flight; put back the OK ones
	// and what instances that failed or halted left out of service.
	nowP := now.Unix() - st.Progress.Start
	waited := dueNow(st, nowP, timeout)
	lookNow := func(i int) bool { _, later := st.Due[i]; return !later }
	var imaged []string
	for _, id := range st.Progress.InFlight(l.plan) {
		if i, _ := l.plan.Slot(id); !draining[i] && lookNow(i) {
			imaged = append(imaged, id)
		}
	}
	hs, err := d.Health(wctx, imaged)
	if err != nil {
		return nil, fmt.Errorf("rollout step: %w", err)
	}
	var obs []waves.Observation
	restoreNow := map[string]bool{}
	for _, h := range hs {
		if h.Condition == drain.Gone {
			// Terminated during the run (its Auto Scaling group replaced
			// it, or anyone did): nothing to wait for, but its group is a
			// member short while the replacement boots, so the member must
			// not free its slot (the next one would take a second member
			// down): its group halts for the night, like an unhealthy
			// member. Restore reports it gone.
			if err := st.Progress.Halt(l.plan, h.InstanceID, "terminated during the run, its group a member short: no other member rebooted ("+h.Reason+")"); err != nil {
				return nil, fmt.Errorf("rollout step: %w", err)
			}
			restoreNow[h.InstanceID] = true
			continue
		}
		if h.Condition == drain.OK {
			restoreNow[h.InstanceID] = true
		} else {
			why := h.Reason
			if why == "" {
				why = h.Condition
			}
			obs = append(obs, waves.Observation{ID: h.InstanceID, Reason: why})
		}
	}
	for _, t := range st.Taken {
		if i, ok := l.plan.Slot(t.InstanceID); ok && st.Progress.S[i] != waves.Rebooting {
			restoreNow[t.InstanceID] = true
		}
	}
	restored, notBack, settled, err := r.restoreSome(wctx, l, d, restoreNow)
	if err != nil {
		return nil, err
	}
	for id, why := range notBack {
		r.scheduleReturn(l, id, why, nowP, timeout, waited)
	}
	for _, h := range hs {
		if h.Condition != drain.OK {
			continue
		}
		if ip, final := settled[h.InstanceID]; final {
			obs = append(obs, waves.Observation{ID: h.InstanceID, Reason: "status ok, not back in service: " + ip.State + " " + ip.Detail})
			continue
		}
		if why, waiting := notBack[h.InstanceID]; waiting {
			obs = append(obs, waves.Observation{ID: h.InstanceID, Reason: "status ok, not back in service: " + why})
		} else if restored[h.InstanceID] {
			obs = append(obs, waves.Observation{ID: h.InstanceID, Healthy: true})
		}
	}
	for i := range draining {
		obs = append(obs, waves.Observation{ID: l.plan.Slots[i].ID, Reason: "drain not complete"})
	}
	if err := st.Progress.Observe(l.plan, obs, now, timeout); err != nil {
		return nil, fmt.Errorf("rollout step: %w", err)
	}
	// A halted draining slot is no longer in flight.
	st.Draining = slices.DeleteFunc(st.Draining, func(i int) bool { return st.Progress.S[i] != waves.Rebooting })
	// 2. Start the members that have room (rolling: waves measured it
	// closest to the bound), within the bucket's pace and MaxInFlight.
	inFlight := len(st.Progress.InFlight(l.plan))
	limit := min(waves.CreateImageBucket+waves.CreateImageRefillPerSecond*wait, MaxInFlight-inFlight)
	tokens, dr := ciTokens(st, nowP), drainTokens(st, nowP)
	if limit > 0 {
		drains := l.pol.Availability.DrainEnabled()
		held := heldBack(l.plan, st, drains, nowP)
		ready, err := st.Progress.ReadyExcept(l.plan, limit, l.plan.Waves-1, held)
		if err != nil {
			return nil, fmt.Errorf("rollout step: %w", err)
		}
		// Within the buckets' pace, then only into groups whole right now
		// (short.go): in this order, so that the check reads only the
		// groups of members that could start now (checked first, the 85
		// members ready in each of the first steps of BenchmarkWorkflow10k
		// cost a target group read each, for the 20 the drain bucket let
		// start). The tokens of members kept back because their group is
		// short go to the next ready members, in a few rounds, so that
		// short groups at the head of the plan cannot hold every start
		// until their healthTimeout; each round's starts count as ours in
		// the next round's check.
		checked := map[int]bool{}
		ci := tokens
		var started []int
		for range startRounds {
			cand := slices.DeleteFunc(slices.Clone(ready), func(i int) bool { return checked[l.plan.Slots[i].Group] })
			paced, _ := paceStarts(l.plan, st, drains, cand, ci, dr)
			if len(paced) == 0 {
				break
			}
			for _, i := range paced {
				checked[l.plan.Slots[i].Group] = true
			}
			ok, err := r.whole(wctx, l, d, paced, nowP, timeout)
			if err != nil {
				return nil, fmt.Errorf("rollout step: %w", err)
			}
			for _, i := range ok {
				if imagedAtOnce(l.plan, st, drains, l.plan.Slots[i].Group) {
					ci--
				} else {
					dr--
				}
			}
			if err := st.Progress.Started(l.plan, ok, now); err != nil {
				return nil, fmt.Errorf("rollout step: %w", err)
			}
			started = append(started, ok...)
			if len(ok) == len(paced) {
				break // nothing kept back: the buckets set the limit
			}
		}
		ready = started
		st.Draining = append(st.Draining, ready...)
		slices.Sort(st.Draining)
		for _, i := range ready {
			delete(st.Due, i) // a stale entry of an earlier run of the slot
		}
	}
	// 3. Drain; CreateImage for the drained.
	var toImage []string
	var look []int // draining slots worth a drain round now
	for _, i := range st.Draining {
		if lookNow(i) {
			look = append(look, i)
		}
	}
	if err := r.readDelays(wctx, st, l.plan, look); err != nil {
		return nil, fmt.Errorf("rollout step: %w", err)
	}
	if len(look) > 0 {
		ids := make([]string, len(look))
		for k, i := range look {
			ids[k] = l.plan.Slots[i].ID
		}
		if !l.pol.Availability.DrainEnabled() {
			toImage = ids
		} else {
			p, err := d.Drain(wctx, drain.Plan{Run: st.Run, Instances: ids, TargetGroups: drainTargets(st, l.plan, look)})
			if err != nil {
				return nil, fmt.Errorf("rollout step: %w", err)
			}
			st.Taken = mergeTaken(st.Taken, p.Record.Instances)
			for _, ip := range p.Instances {
				switch ip.State {
				case drain.StateDone:
					toImage = append(toImage, ip.InstanceID)
				case drain.StateWaiting:
					// Still draining a step after its DeregisterTargets (no
					// early completion; its target groups learn that they
					// drain for their whole delay), or just started in
					// target groups known to: not before the delay has
					// passed (targets.go).
					i, _ := l.plan.Slot(ip.InstanceID)
					g := l.plan.Slots[i].Group
					later := ip.Detail == drain.DetailDraining && st.Progress.T[i] < nowP
					if later {
						learnFullDrain(st, g)
					}
					if later || st.Progress.T[i] == nowP && ip.Detail == drain.DetailDraining && drainsFully(st, g) {
						setDue(st, i, min(st.Progress.T[i]+groupTiming(st, g, st.TGDelay), st.Progress.T[i]+int64(timeout/time.Second)), nowP)
					}
				case drain.StateFailed:
					if err := st.Progress.Fail(l.plan, ip.InstanceID, "not drained, not rebooted: "+ip.Detail); err != nil {
						return nil, fmt.Errorf("rollout step: %w", err)
					}
				case drain.StateSkipped:
					// Not InService at its turn (lifecycle wait state,
					// Pending, an operator's Standby): not rebooted, but its
					// group is already a member short, so it halts for the
					// night rather than free the slot for the next member.
					if err := st.Progress.Halt(l.plan, ip.InstanceID, "not in service at its turn, its group a member short: not rebooted, nor any other member ("+ip.Detail+")"); err != nil {
						return nil, fmt.Errorf("rollout step: %w", err)
					}
				}
			}
		}
	}
	if len(toImage) > 0 {
		req := l.req
		req.InstanceIDs = toImage
		sum, _ := r.backuper().Run(wctx, req)
		planned := map[string]bool{}
		for _, id := range toImage {
			planned[id] = true
		}
		r.count(st, sum, l, planned)
	}
	st.Draining = slices.DeleteFunc(st.Draining, func(i int) bool {
		return st.Progress.S[i] != waves.Rebooting || slices.Contains(toImage, l.plan.Slots[i].ID)
	})
	if len(st.Draining) == 0 {
		st.Draining = nil
	}
	for i := range st.Due {
		if st.Progress.S[i] != waves.Rebooting {
			delete(st.Due, i)
		}
	}
	if len(st.Due) == 0 {
		st.Due = nil
	}
	forgetShort(st, l.plan)
	st.CITokens = max(0, tokens-len(toImage))
	st.DrainTokens = max(0, dr)
	st.Prev = nowP
	l.log.Info("rollout step", "pending", st.Progress.Count(waves.Pending), "inFlight", len(st.Progress.InFlight(l.plan)),
		"draining", len(st.Draining), "healthy", st.Progress.Count(waves.Healthy), "halted", st.Progress.Count(waves.Unhealthy),
		"failed", st.Progress.Count(waves.Errored), "created", st.Created)
	return &Result{State: st, Done: st.Progress.Done(), WaitSeconds: wait}, nil
}

// restoreSome puts back what was taken from the given instances (one round)
// and reports which are back in service and, for the others, why not.
// Instances nothing was taken from count as back. Those put back as far as
// they will go while gone or unhealthy (settled, returned too) leave Taken
// for State.Replaced: polling them again would not change them.
func (r *Roller) restoreSome(ctx context.Context, l *loaded, d *drain.Drainer, ids map[string]bool) (map[string]bool, map[string]string, map[string]drain.InstanceProgress, error) {
	back := map[string]bool{}
	notBack := map[string]string{}
	settled := map[string]drain.InstanceProgress{}
	rec := drain.Record{Run: l.st.Run}
	for _, t := range l.st.Taken {
		if ids[t.InstanceID] {
			rec.Instances = append(rec.Instances, t)
		}
	}
	for id := range ids {
		back[id] = true
	}
	if len(rec.Instances) == 0 {
		return back, notBack, settled, nil
	}
	p, err := d.Restore(ctx, rec)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("rollout step: %w", err)
	}
	for _, ip := range p.Instances {
		switch ip.State {
		case drain.StateDone:
		case drain.StateGone, drain.StateUnhealthy:
			back[ip.InstanceID] = false
			settled[ip.InstanceID] = ip
		default:
			back[ip.InstanceID] = false
			notBack[ip.InstanceID] = ip.State + " " + ip.Detail
		}
	}
	settle(l.st, slices.Collect(maps.Values(settled)), "")
	l.st.Taken = slices.DeleteFunc(l.st.Taken, func(t drain.Taken) bool {
		_, final := settled[t.InstanceID]
		return ids[t.InstanceID] && (back[t.InstanceID] || final)
	})
	return back, notBack, settled, nil
}

// settle files the instances of a settled restore round: gone or unhealthy
// ones in Replaced, the others not done in NotRestored (with why, e.g.
// that the rounds ran out), each instance once, at most maxNotes each.
func settle(st *State, ips []drain.InstanceProgress, why string) {
	has := func(list []drain.InstanceProgress, id string) bool {
		return slices.ContainsFunc(list, func(h drain.InstanceProgress) bool { return h.InstanceID == id })
	}
	slices.SortFunc(ips, func(a, b drain.InstanceProgress) int { return strings.Compare(a.InstanceID, b.InstanceID) })
	for _, ip := range ips {
		switch ip.State {
		case drain.StateDone:
		case drain.StateGone, drain.StateUnhealthy:
			if !has(st.Replaced, ip.InstanceID) && len(st.Replaced) < maxNotes {
				st.Replaced = append(st.Replaced, ip)
			}
		default:
			if why != "" {
				ip.Detail = strings.TrimSpace(ip.Detail + " " + why)
			}
			if !has(st.NotRestored, ip.InstanceID) && len(st.NotRestored) < maxNotes {
				st.NotRestored = append(st.NotRestored, ip)
			}
		}
	}
}

// mergeTaken replaces or adds the entries of add, by instance.
func mergeTaken(have, add []drain.Taken) []drain.Taken {
	for _, t := range add {
		if k := slices.IndexFunc(have, func(h drain.Taken) bool { return h.InstanceID == t.InstanceID }); k >= 0 {
			have[k] = t
		} else {
			have = append(have, t)
		}
	}
	return have
}

// Restore puts back everything the run took: what its state records and
// what the run's drain tags say (a step that failed after draining, its
// answer lost). One round; done once complete or settled (what cannot be
// put back is reported by finish; the tags stay for the next run).
func (r *Roller) Restore(ctx context.Context, st *State) (*Result, error) {
	l, err := r.load(st)
	if err != nil {
		return nil, err
	}
	run := r.begin()
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()
	d := r.drainer()
	rec := drain.Record{Run: st.Run, Instances: slices.Clone(st.Taken)}
	if !st.DryRun {
		recs, problems, err := d.Stranded(wctx, st.Run, st.TargetGroups)
		if err != nil {
			return nil, fmt.Errorf("rollout restore: %w", err)
		}
		for _, p := range problems {
			st.note("restore: %s", p)
		}
		for _, sr := range recs {
			if sr.Run != st.Run {
				continue // another run whose name starts like this one
			}
			for _, t := range sr.Instances {
				if !slices.ContainsFunc(rec.Instances, func(h drain.Taken) bool { return h.InstanceID == t.InstanceID }) {
					rec.Instances = append(rec.Instances, t)
				}
			}
		}
		rec.Instances = append(rec.Instances, flatten(st.Stranded)...)
	}
	st.Stranded = nil
	if len(rec.Instances) == 0 {
		st.Taken = nil
		return &Result{State: st, Done: true}, nil
	}
	p, err := d.Restore(wctx, rec)
	if err != nil {
		return nil, fmt.Errorf("rollout restore: %w", err)
	}
	st.Taken = rec.Instances
	st.RestoreRounds++
	last := st.RestoreRounds >= maxRestoreRounds(l.pol.Availability.Timeout())
	if p.Complete || p.Settled || last {
		why := ""
		if !p.Settled {
			// Typically a target that does not become healthy although its
			// instance is: reported with the target's reason, not polled
			// until the execution's history runs out.
			why = fmt.Sprintf("(still so after %d restore rounds)", st.RestoreRounds)
		}
		st.Taken = nil
		// What this round reports replaces what earlier rounds (Step's
		// leftovers of earlier executions) said of the same instances.
		st.NotRestored = slices.DeleteFunc(st.NotRestored, func(h drain.InstanceProgress) bool {
			return slices.ContainsFunc(p.Instances, func(ip drain.InstanceProgress) bool { return ip.InstanceID == h.InstanceID })
		})
		settle(st, p.Instances, why)
		l.log.Info("rollout restore settled", "instances", len(rec.Instances), "notRestored", len(st.NotRestored), "replaced", len(st.Replaced), "rounds", st.RestoreRounds)
		return &Result{State: st, Done: true}, nil
	}
	return &Result{State: st, WaitSeconds: RestoreWait}, nil
}

// maxRestoreRounds bounds the restore loop: long enough for a target to
// pass its health checks after it is registered (the policy's
// healthTimeout, at least 10 minutes), short enough that the execution's
// history (25,000 events; a round is about 5) cannot run out.
func maxRestoreRounds(healthTimeout time.Duration) int {
	return int(max(healthTimeout, 10*time.Minute) / (RestoreWait * time.Second))
}

// flatten merges earlier runs' records into this run's restore record:
// Restore deletes only tags of the record's run, so those keep their tags
// (and are found again by the next run) unless put back here; adoption by
// run name is what Stranded is for, so they are restored under their own
// run by Step. Here they are only put back, which is safe.
func flatten(recs []drain.Record) []drain.Taken {
	var out []drain.Taken
	for _, r := range recs {
		out = append(out, r.Instances...)
	}
	return out
}

// Summary is what finish reports (and logs).
type Summary struct {
	Function    string       `json:"function"`
	Deployment  string       `json:"deployment"`
	Policy      string       `json:"policy"`
	Trigger     string       `json:"trigger"`
	Slot        string       `json:"slot"`
	DryRun      bool         `json:"dryRun"`
	Plan        string       `json:"plan"`
	Selected    int          `json:"selected"`
	Counts      Counts       `json:"counts"`
	Halts       []waves.Halt `json:"halts,omitempty"`
	Problems    []string     `json:"problems,omitempty"`
	NotRestored []string     `json:"notRestored,omitempty"`
	// Replaced: put back, but terminated or unhealthy (see State.Replaced).
	Replaced   []string `json:"replaced,omitempty"`
	DurationMS int64    `json:"durationMs"`
}

// Counts are exact.
type Counts struct {
	Planned     int `json:"planned"`
	Healthy     int `json:"healthy"`
	Halted      int `json:"halted"`
	Skipped     int `json:"skipped"`
	Failed      int `json:"failed"`
	Created     int `json:"created"`
	AlreadyDone int `json:"alreadyDone"`
	NoReboot    int `json:"noReboot"`
	NotRestored int `json:"notRestored"`
	Replaced    int `json:"replaced"`
}

// Finish reports the run: the summary, metrics (GroupsHalted,
// InstancesNotRestored, RolloutDuration) and an error when an instance
// failed, a group halted or something is not back in service.
func (r *Roller) Finish(ctx context.Context, st *State) (*Summary, error) {
	l, err := r.load(st)
	if err != nil {
		return nil, err
	}
	pr := st.Progress
	sum := &Summary{Function: Function, Deployment: r.Config.Deployment, Policy: st.Policy, Trigger: st.Trigger, Slot: st.Slot,
		DryRun: st.DryRun, Plan: st.PlanText, Selected: st.Selected, Halts: pr.Halts(l.plan),
		Counts: Counts{Planned: len(l.plan.Slots), Healthy: pr.Count(waves.Healthy), Halted: pr.Count(waves.Unhealthy),
			Skipped: pr.Count(waves.Skipped) + len(st.NotInService), Failed: pr.Count(waves.Errored) - len(st.NotInService) + st.Failed, Created: st.Created,
			AlreadyDone: st.AlreadyDone + st.Existed, NoReboot: st.NoReboot, NotRestored: len(st.NotRestored) + len(st.Taken),
			Replaced: len(st.Replaced)}}
	if len(sum.Halts) > maxNotes {
		sum.Halts = sum.Halts[:maxNotes]
	}
	// A halted member that was put back and is being replaced (or is gone)
	// says so: the group has its capacity back, nothing waits for an operator.
	for i, h := range sum.Halts {
		if k := slices.IndexFunc(st.Replaced, func(ip drain.InstanceProgress) bool { return ip.InstanceID == h.Instance }); k >= 0 {
			sum.Halts[i].Reason += "; put back: " + replacedText(st.Replaced[k])
		}
	}
	for _, p := range pr.Problems {
		if len(sum.Problems) < maxNotes && pr.S[p.Slot] == waves.Errored {
			sum.Problems = append(sum.Problems, l.plan.Slots[p.Slot].ID+": "+p.Reason)
		}
	}
	for _, ip := range st.Replaced {
		sum.Replaced = append(sum.Replaced, ip.InstanceID+": "+replacedText(ip))
	}
	sum.Problems = append(sum.Problems, st.Notes...)
	for _, ip := range st.NotRestored {
		sum.NotRestored = append(sum.NotRestored, ip.InstanceID+": "+ip.State+" "+ip.Detail)
	}
	for _, t := range st.Taken {
		if len(sum.NotRestored) < maxNotes {
			sum.NotRestored = append(sum.NotRestored, t.InstanceID+": still out of service")
		}
	}
	now := r.Clock()()
	sum.DurationMS = now.Sub(time.Unix(st.Began, 0)).Milliseconds()
	if r.Metrics != nil && !st.DryRun {
		if err := r.Metrics.Emit(now, map[string]string{metrics.Dimension: st.Policy},
			emf.CountOf(metrics.GroupsHalted, groups(sum.Halts)),
			emf.CountOf(metrics.InstancesNotRestored, sum.Counts.NotRestored),
			emf.Metric{Name: metrics.RolloutDuration, Unit: emf.Milliseconds, Value: float64(sum.DurationMS)}); err != nil {
			l.log.Error("emit metrics", "error", err.Error())
		}
	}
	c := sum.Counts
	l.log.Info("rollout summary", "summary", sum)
	var why []string
	if len(sum.Halts) > 0 {
		for _, h := range sum.Halts {
			if len(why) < 10 {
				why = append(why, fmt.Sprintf("group %s halted at %s: %s (%d members not rebooted)", h.Group, h.Instance, h.Reason, h.Skipped))
			}
		}
	}
	// Replaced instances that did not halt a group (e.g. a failed
	// CreateImage, then terminated) are failed instances already; the list
	// says what became of them. One terminated mid-run halts its group.
	if c.Failed > 0 {
		why = append(why, fmt.Sprintf("%d instances failed", c.Failed))
	}
	if c.NotRestored > 0 {
		why = append(why, fmt.Sprintf("%d instances not back in service (Standby or deregistered): %s", c.NotRestored, strings.Join(first(sum.NotRestored, 5), "; ")))
	}
	if len(why) > 0 {
		return sum, fmt.Errorf("rollout %s: %s", st.Run, strings.Join(why, "; "))
	}
	return sum, nil
}

// replacedText says what became of an instance put back unhealthy or gone.
func replacedText(ip drain.InstanceProgress) string {
	if ip.State == drain.StateGone {
		return "terminated, replaced by Auto Scaling or by its owner: " + ip.Detail
	}
	return "unhealthy: " + ip.Detail
}

func groups(hs []waves.Halt) int {
	seen := map[string]bool{}
	for _, h := range hs {
		seen[h.Group] = true
	}
	return len(seen)
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }
