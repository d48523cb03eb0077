package verify

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/actionloop"
	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// Bounds and pacing.
const (
	// MaxImages bounds one run's plan (the state: below 100 KB at 2,000,
	// TestVerifyStateSize). The history budget (MaxSteps, planLimit)
	// bounds it further unless maxConcurrent is high. What a run leaves
	// out is reported (notSampled); the sample order (instances verified
	// longest ago first) makes the next run take it.
	MaxImages = 2000
	// LaunchBurst is how many RunInstances calls one step makes at most:
	// the RunInstances request bucket holds 5 tokens and refills 2 a
	// second ("Request throttling for the Amazon EC2 API", EC2 developer
	// guide; ec2sim models it), so a step StepWait after the last finds it
	// full again and never throttles itself. (The resource bucket, 1,000
	// instances refilled 2 a second, is far from binding at this pace.)
	LaunchBurst = 5
	// StepWait: status checks move in tens of seconds (pending ~30 s, the
	// checks initializing for a minute or two); 15 s adds 7.5 s of
	// instance time on average and keeps a 1,000-image run within a few
	// hundred steps.
	StepWait = 15
	// CleanupWait between cleanup rounds (a failed TerminateInstances).
	CleanupWait = 15
	// MaxTagValue is EC2's tag value limit (the failure reason).
	MaxTagValue = 256

	maxNotes       = 50
	maxLaunchTries = 3  // retryable launch failures (5xx, throttled) before "not tested"
	maxTagTries    = 3  // failed CreateTags of an outcome before it is reported instead
	maxCleanups    = 20 // cleanup rounds before it gives up (VerifyInstancesLeft)
)

// SweepMargin is added to a policy's timeout before an instance counts as
// a leftover of an earlier run (terminated by any execution's start or
// cleanup). A live run decides an instance at its first step after the
// timeout, and that step can be late by far more than StepWait: the Step
// task is retried actionloop.Retries times on any error, each attempt may run
// until runner.FunctionTimeout (a hung call, a throttled account), with the
// retriers' waits between them. An instance older than the timeout plus
// the longest such delay (plus sweepSlack for clock skew between the
// function's clock and EC2's launch time) belongs to a run that is gone
// (crashed, stopped, timed out). About 68 minutes: a crashed run's
// instances cost that much longer, a live run's are never swept.
// (A variable only because the retriers' backoff is a sum: read it, never
// set it.)
var SweepMargin = StepWait*time.Second + (actionloop.Retries+1)*runner.FunctionTimeout + actionloop.RetryWaits() + actionloop.LambdaServiceRetryBackoff + sweepSlack

// sweepSlack: clock skew and the invocations' own latency.
const sweepSlack = 5 * time.Minute

// Step Functions keeps 25,000 events of history per Standard execution; an
// execution that reaches the limit fails outright, without its Catch: its
// instances would run until a later sweep and nothing would be recorded.
// The run therefore counts its steps (State.Steps) against a budget taken
// from the events the loop (infra/stacks/loop.go) writes:
//
//   - a round is Wait (WaitStateEntered, WaitStateExited), the Step task
//     (TaskStateEntered, TaskScheduled, TaskStarted, TaskSucceeded,
//     TaskStateExited) and the "Step done?" Choice (ChoiceStateEntered,
//     ChoiceStateExited): EventsPerRound = 9;
//   - a retry of a task adds TaskFailed (or TaskTimedOut), TaskScheduled
//     and TaskStarted: EventsPerRetry = 3;
//   - the head: ExecutionStarted, the Start task (5), "Started?" (2);
//   - the tail: the cleanup loop at its longest (maxCleanups rounds, each
//     retried actionloop.Retries times; the cleanup-after-error loop is the same
//     size and replaces it), Finish (5), the end state (2) and the
//     execution's end (1);
//   - retryReserve: a tenth of the rest for retried steps (throttling,
//     a 5xx; one retry in three steps).
const (
	HistoryLimit   = 25000
	EventsPerRound = 9
	EventsPerRetry = 3
	headEvents     = 1 + 5 + 2
	tailEvents     = maxCleanups*(EventsPerRound+actionloop.Retries*EventsPerRetry) + 5 + 2 + 1
	retryReserve   = (HistoryLimit - headEvents - tailEvents) / 10
	// MaxSteps: the step rounds one execution may take (2,462).
	MaxSteps = (HistoryLimit - headEvents - tailEvents - retryReserve) / EventsPerRound
	// stepMargin: steps after an instance's timeout until it is decided
	// and recorded (the deciding step, CreateTags retried maxTagTries
	// times), and maxLaunchTries steps of slack.
	stepMargin = 1 + maxTagTries + maxLaunchTries
	// ExpectedBoot: launch to both status checks ok as measured
	// (BenchmarkVerify1000 with ec2sim's launch timings: 2.5 min per
	// image); planLimit's estimate, never a deadline.
	ExpectedBoot = 150 * time.Second
)

// launchCutoff is the last step that may launch a new verification: the
// instance must be decided (at worst at its timeout) and recorded before
// the budget ends, so nothing is left "not tested" because the run ran
// out of history. The images not launched by then are reported not
// reached; the next run takes them (the verified ones are skipped there).
func launchCutoff(timeout time.Duration) int {
	return MaxSteps - timeoutSteps(timeout) - stepMargin
}

// timeoutSteps: steps of StepWait until an instance's timeout.
func timeoutSteps(timeout time.Duration) int {
	return int((timeout + StepWait*time.Second - 1) / (StepWait * time.Second))
}

// planLimit bounds the plan by what one run can reach: maxConcurrent
// instances at once, each holding its slot about ExpectedBoot (plus the
// step that sees it), over the steps that may launch. A run of images
// that time out reaches fewer; those are reported not reached.
func planLimit(v *config.Verify) int {
	per := int((ExpectedBoot+StepWait*time.Second-1)/(StepWait*time.Second)) + 1
	n := v.Concurrency() * (max(0, launchCutoff(v.TimeoutOrDefault()))/per + 1)
	return min(MaxImages, n)
}

func (s *State) note(format string, args ...any) {
	if len(s.Notes) < maxNotes {
		s.Notes = append(s.Notes, runner.Truncate(fmt.Sprintf(format, args...), runner.MaxDetail))
	}
}

// loaded is a state checked against the configuration, with its plan.
type loaded struct {
	st   *State
	pol  *config.Policy
	plan []planImage
	prog []byte
	log  *slog.Logger
}

// runName is the run's name: "<deployment>/<policy>/<slot>".
func runName(deployment, policy string, slot time.Time) string {
	return deployment + "/" + policy + "/" + tags.FormatTime(slot)
}

func (v *Verifier) load(st *State) (*loaded, error) {
	if st.V != stateVersion {
		return nil, fmt.Errorf("input.state.v: %d, this function reads %d: pass the state the previous action returned", st.V, stateVersion)
	}
	if len(st.Nonce) < 8 {
		return nil, fmt.Errorf("input.state.nonce: %q is too short: pass the state the previous action returned", st.Nonce)
	}
	pol, ok := v.Config.Policy(st.Policy)
	if !ok || pol.Verify == nil {
		return nil, fmt.Errorf("input.state.policy: %q is not a configured policy with a verify section", st.Policy)
	}
	slot, err := tags.ParseTime(st.Slot)
	if err != nil {
		return nil, fmt.Errorf("input.state.slot: %w", err)
	}
	if want := runName(v.Config.Deployment, pol.Name, slot); st.Run != want {
		return nil, fmt.Errorf("input.state.run: %q, expected %q", st.Run, want)
	}
	plan, err := decodePlan(st.Plan)
	if err != nil {
		return nil, fmt.Errorf("input.state.plan: %w: pass the state the previous action returned", err)
	}
	if len(st.Progress) != len(plan) {
		return nil, fmt.Errorf("input.state.progress: %d entries for %d images: pass the state the previous action returned", len(st.Progress), len(plan))
	}
	for _, f := range st.InFlight {
		if f.Image < 0 || f.Image >= len(plan) || st.Progress[f.Image] != statusInFlight {
			return nil, fmt.Errorf("input.state.inFlight: image %d is not in flight", f.Image)
		}
	}
	for _, o := range slices.Concat(st.Tagging, st.Failures) {
		if o.Image < 0 || o.Image >= len(plan) {
			return nil, fmt.Errorf("input.state: image %d is not in the plan", o.Image)
		}
	}
	l := &loaded{st: st, pol: pol, plan: plan, prog: []byte(st.Progress)}
	l.log = v.Log.With("policy", pol.Name, "run", st.Run)
	return l, nil
}

// save writes the progress back into the state.
func (l *loaded) save() { l.st.Progress = string(l.prog) }

func (l *loaded) count(status byte) int {
	n := 0
	for _, b := range l.prog {
		if b == status {
			n++
		}
	}
	return n
}

// placement is where a policy's verification instances boot.
func (v *Verifier) placement(pol *config.Policy) (subnets []string, group string, err error) {
	if !pol.Verify.Isolated() {
		return []string{pol.Verify.SubnetID}, pol.Verify.SecurityGroupID, nil
	}
	if len(v.Network.Subnets) == 0 || v.Network.SecurityGroup == "" {
		return nil, "", errNoNetwork(pol.Name)
	}
	return v.Network.Subnets, v.Network.SecurityGroup, nil
}

// tokenPrefix identifies the execution in its launches' client tokens:
// the run and the nonce drawn at start, so a retried step re-launches
// idempotently (same token, same instance) while another execution of the
// same slot (a re-run, even in the same second) never adopts this one's
// instances, terminated or not. Cleanup finds a launch whose answer was
// lost by this prefix. (Start launches nothing: a retried start draws a
// new nonce harmlessly.)
func tokenPrefix(st *State) string {
	sum := sha256.Sum256([]byte(st.Run + "@" + st.Nonce))
	return "av1-" + hex.EncodeToString(sum[:10]) + "-"
}

// clientToken: prefix (24) + image ID (at most 21) + "-" + subnet index:
// at most 24+21+1+3 = 49 of EC2's 64 characters.
func clientToken(st *State, imageID string, subnet int) string {
	return tokenPrefix(st) + imageID + "-" + strconv.Itoa(subnet)
}

// instanceTags are the tags of a verification instance and its volumes:
// what the sweep, cleanup and the verify role's TerminateInstances
// condition recognise.
func (v *Verifier) instanceTags(policy, imageID string) []types.Tag {
	return []types.Tag{
		{Key: aws.String(tags.ManagedBy), Value: aws.String(v.Config.Deployment)},
		{Key: aws.String(tags.Policy), Value: aws.String(policy)},
		{Key: aws.String(tags.VerifyOf), Value: aws.String(imageID)},
	}
}

// ours reports whether an instance carries both of this deployment's
// verification tags: nothing else is ever terminated.
func (v *Verifier) ours(in types.Instance) bool {
	t := awsclient.TagMap(in.Tags)
	return t[tags.ManagedBy] == v.Config.Deployment && t[tags.VerifyOf] != ""
}

// liveStates are the instance states a verification instance costs money
// in (and can be terminated from).
var liveStates = []string{"pending", "running", "stopping", "stopped"}

// listOurs lists this deployment's verification instances (both tags, as
// EC2 filters and checked again here) in the given states (nil: any) and,
// when ids is not empty, with those IDs (a filter: an ID not visible yet
// is simply absent, where InstanceIds would fail the whole call).
func (v *Verifier) listOurs(ctx context.Context, states, ids []string) ([]types.Instance, error) {
	filters := []types.Filter{
		{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{v.Config.Deployment}},
		{Name: aws.String("tag-key"), Values: []string{tags.VerifyOf}},
	}
	if len(states) > 0 {
		filters = append(filters, types.Filter{Name: aws.String("instance-state-name"), Values: states})
	}
	var out []types.Instance
	list := func(fs []types.Filter) error {
		pg := ec2.NewDescribeInstancesPaginator(v.EC2, &ec2.DescribeInstancesInput{Filters: fs, MaxResults: aws.Int32(1000)})
		for pg.HasMorePages() {
			page, err := pg.NextPage(ctx)
			if err != nil {
				return fmt.Errorf("DescribeInstances: %w", err)
			}
			for _, r := range page.Reservations {
				for _, in := range r.Instances {
					if v.ours(in) {
						out = append(out, in)
					}
				}
			}
		}
		return nil
	}
	if len(ids) == 0 {
		return out, list(filters)
	}
	// EC2 takes at most 200 values per filter.
	for chunk := range slices.Chunk(ids, 200) {
		if err := list(append(slices.Clone(filters), types.Filter{Name: aws.String("instance-id"), Values: chunk})); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// timeoutOf is the boot timeout of the policy an instance's tag names
// (the longest allowed when the policy is unknown or has no verify
// section: never sooner than any run would give up on it).
func (v *Verifier) timeoutOf(in types.Instance) time.Duration {
	if pol, ok := v.Config.Policy(awsclient.TagMap(in.Tags)[tags.Policy]); ok && pol.Verify != nil {
		return pol.Verify.TimeoutOrDefault()
	}
	return config.MaxVerifyTimeout
}

// leftover reports whether an instance of ours is older than its policy's
// timeout and SweepMargin: a run that is gone launched it.
func (v *Verifier) leftover(in types.Instance, now time.Time) bool {
	return in.LaunchTime != nil && now.Sub(*in.LaunchTime) > v.timeoutOf(in)+SweepMargin
}

// terminate terminates instances (all of them ours: the callers listed
// them with both tags) in batches; it returns those whose termination is
// confirmed (or that are gone) and the first error.
func (v *Verifier) terminate(ctx context.Context, ids []string) (done []string, err error) {
	for chunk := range slices.Chunk(ids, 100) {
		_, e := v.EC2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: chunk})
		if e == nil {
			done = append(done, chunk...)
			continue
		}
		if awsclient.ErrorCode(e) == "InvalidInstanceID.NotFound" && len(chunk) > 1 {
			// One ID gone fails the whole call: one at a time.
			for _, id := range chunk {
				d, e1 := v.terminate(ctx, []string{id})
				done = append(done, d...)
				if e1 != nil && err == nil {
					err = e1
				}
			}
			continue
		}
		if awsclient.ErrorCode(e) == "InvalidInstanceID.NotFound" {
			done = append(done, chunk...) // gone: nothing left to pay for
			continue
		}
		if err == nil {
			err = fmt.Errorf("TerminateInstances: %w", e)
		}
	}
	return done, err
}

// Start parses the execution input and plans the run: it sweeps the
// deployment's leftover verification instances, lists the policy's
// available images and picks the ones to boot. Nothing is launched here
// (a retried start would launch twice under a new execution token); the
// first step launches.
func (v *Verifier) Start(ctx context.Context, input json.RawMessage) (*Result, error) {
	now := v.Clock()()
	req, err := trigger.ParseVerify(input, v.Config)
	if err == nil {
		err = trigger.CheckNotFuture("input.time", req.Slot, now)
	}
	var pol *config.Policy
	if err == nil {
		pol, _ = v.Config.Policy(req.Policy) // ParseVerify checked it
		_, _, err = v.placement(pol)
	}
	if err != nil {
		v.Log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	st := &State{V: stateVersion, Policy: pol.Name, Slot: tags.FormatTime(req.Slot), Trigger: req.Trigger, DryRun: req.DryRun,
		Run: runName(v.Config.Deployment, pol.Name, req.Slot), Nonce: rand.Text()[:16], Began: now.Unix()}
	log := v.Log.With("policy", pol.Name, "run", st.Run, "trigger", req.Trigger, "dryRun", req.DryRun)
	run := v.Job.Start(1)
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()

	if err := v.sweep(wctx, st, now); err != nil {
		// The sweep is housekeeping: the run goes on, cleanup sweeps again.
		log.Error("sweep of leftover verification instances failed", "error", err.Error())
		st.note("sweep: %v", err)
	}
	plan, err := v.plan(wctx, st, pol, req)
	if err != nil {
		return nil, fmt.Errorf("verify start: %w", err)
	}
	if st.Plan, err = encodePlan(plan); err != nil {
		return nil, fmt.Errorf("verify start: %w", err)
	}
	st.Progress = strings.Repeat(string(rune(statusQueued)), len(plan))
	if req.DryRun {
		st.PlanText = v.planText(wctx, st, pol, plan)
		log.Info("verify dry run: nothing launched", "plan", st.PlanText)
		return &Result{State: st, Done: true}, nil
	}
	log.Info("verify start", "images", len(plan), "candidates", st.Candidates, "alreadyVerified", st.Verified,
		"notSampled", st.NotSampled, "swept", st.Swept)
	return &Result{State: st, Done: len(plan) == 0}, nil
}

// sweep terminates this deployment's verification instances older than
// their policy's timeout and SweepMargin, whatever run launched them (a
// crashed or stopped execution's). A dry run only reports them.
func (v *Verifier) sweep(ctx context.Context, st *State, now time.Time) error {
	live, err := v.listOurs(ctx, liveStates, nil)
	if err != nil {
		return err
	}
	var old []string
	for _, in := range live {
		if v.leftover(in, now) {
			old = append(old, aws.ToString(in.InstanceId))
		}
	}
	if len(old) == 0 {
		return nil
	}
	if st.DryRun {
		st.note("sweep: would terminate %d leftover verification instances: %s", len(old), strings.Join(first(old, 10), ", "))
		return nil
	}
	done, err := v.terminate(ctx, old)
	st.Swept += len(done)
	return err
}

// instanceImages is what the listing says of one source instance.
type instanceImages struct {
	key          string // amibackup:instance-id, or the image ID of an image without one
	newest       types.Image
	newestAt     time.Time
	oldestAt     time.Time
	verifiedAt   time.Time // creation of its newest verified image
	lastVerified time.Time // the latest amibackup:verified time over its images
}

// plan lists the policy's available images and picks the run's.
//
// Without imageIds each instance's newest available image is a candidate;
// one already verified is left out (counted as alreadyVerified): an AMI is
// immutable, so booting it again proves nothing new, and a repeated
// execution of a slot does not boot again what the first verified. A
// failed one is tried again (the failure may have been the instance's,
// not the image's). The sample (count or percentage of the instances)
// takes the instances verified longest ago first, never verified first.
// A manual request's imageIds are verified as named (even when verified
// already: the way to re-test on purpose), if they are available images of
// the policy; others are reported and skipped.
func (v *Verifier) plan(ctx context.Context, st *State, pol *config.Policy, req trigger.Verify) ([]planImage, error) {
	byInstance := map[string]*instanceImages{}
	byID := map[string]types.Image{}
	q := images.Query{Deployment: v.Config.Deployment, Policy: pol.Name, States: []string{string(types.ImageStateAvailable)}}
	for im, err := range images.Managed(ctx, v.EC2, q) {
		if err != nil {
			return nil, fmt.Errorf("list the policy's images: %w", err)
		}
		created, err := images.Created(im)
		if err != nil {
			st.note("%s: creation date %q unreadable: skipped", images.ID(im), aws.ToString(im.CreationDate))
			continue
		}
		t := awsclient.TagMap(im.Tags)
		key := cmp.Or(t[tags.InstanceID], images.ID(im))
		ii := byInstance[key]
		if ii == nil {
			ii = &instanceImages{key: key, oldestAt: created}
			byInstance[key] = ii
		}
		if ii.newestAt.IsZero() || created.After(ii.newestAt) || created.Equal(ii.newestAt) && images.ID(im) > images.ID(ii.newest) {
			ii.newest, ii.newestAt = im, created
		}
		ii.oldestAt = minTime(ii.oldestAt, created)
		// Counted as verified by retention's rule (Holds); an unreadable
		// tag is not verified.
		if vf, _ := tags.ParseVerified(t); vf.Holds() {
			if created.After(ii.verifiedAt) {
				ii.verifiedAt = created
			}
			if vf.At.After(ii.lastVerified) {
				ii.lastVerified = vf.At
			}
		}
		byID[images.ID(im)] = im
	}
	st.Candidates = len(byInstance)
	entry := func(im types.Image) planImage {
		t := awsclient.TagMap(im.Tags)
		created, _ := images.Created(im)
		ii := byInstance[cmp.Or(t[tags.InstanceID], images.ID(im))]
		p := planImage{ID: images.ID(im), Instance: t[tags.InstanceID], Arch: string(im.Architecture), Created: created.Unix(),
			Base: ii.verifiedAt.Unix(), Clear: t[tags.Verify] != "" || t[tags.VerifyError] != ""}
		for _, b := range im.BlockDeviceMappings {
			if b.Ebs != nil && b.DeviceName != nil {
				p.Devices = append(p.Devices, *b.DeviceName)
			}
		}
		if ii.verifiedAt.IsZero() {
			p.Base, p.Unverified = ii.oldestAt.Unix(), true
		}
		return p
	}
	var out []planImage
	inPlan := map[string]bool{}
	if len(req.ImageIDs) > 0 {
		for _, id := range req.ImageIDs {
			im, ok := byID[id]
			if !ok {
				st.note("%s: not an available image of policy %q (tags %s=%s, %s=%s): skipped", id, pol.Name,
					tags.ManagedBy, v.Config.Deployment, tags.Policy, pol.Name)
				continue
			}
			out = append(out, entry(im))
			inPlan[cmp.Or(awsclient.TagMap(im.Tags)[tags.InstanceID], id)] = true
		}
	} else {
		var cands []*instanceImages
		for _, ii := range byInstance {
			if vf, _ := tags.ParseVerified(awsclient.TagMap(ii.newest.Tags)); vf.Holds() {
				st.Verified++
				continue
			}
			cands = append(cands, ii)
		}
		slices.SortFunc(cands, func(a, b *instanceImages) int {
			return cmp.Or(a.lastVerified.Compare(b.lastVerified), cmp.Compare(a.key, b.key))
		})
		n := min(pol.Verify.Sample.Of(len(byInstance)), len(cands))
		if limit := planLimit(pol.Verify); n > limit {
			st.note("%d images to verify, at most %d a run (maxConcurrent %d, timeout %s, Step Functions' history of %d steps): the other %d (verified longest ago last) are left for the next run; verify more often, sample or raise maxConcurrent",
				n, limit, pol.Verify.Concurrency(), pol.Verify.TimeoutOrDefault(), MaxSteps, n-limit)
			n = limit
		}
		st.NotSampled = len(cands) - n
		for _, ii := range cands[:n] {
			out = append(out, entry(ii.newest))
			inPlan[ii.key] = true
		}
	}
	for key, ii := range byInstance {
		if inPlan[key] {
			continue
		}
		base := ii.verifiedAt
		if base.IsZero() {
			base = ii.oldestAt
		}
		if st.AgeBase == 0 || base.Unix() < st.AgeBase {
			st.AgeBase = base.Unix()
		}
	}
	return out, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func first(s []string, n int) []string { return s[:min(n, len(s))] }

// planText is the dry run's answer: what would boot where. It checks the
// launch permission with RunInstances DryRun=true for the first image of
// each instance type (EC2 answers DryRunOperation when the call would be
// allowed; nothing is launched).
func (v *Verifier) planText(ctx context.Context, st *State, pol *config.Policy, plan []planImage) string {
	subnets, group, _ := v.placement(pol)
	var b strings.Builder
	fmt.Fprintf(&b, "%d images to boot (candidates %d, already verified %d, not sampled %d), at most %d at once, timeout %s, subnets %s, security group %s",
		len(plan), st.Candidates, st.Verified, st.NotSampled, pol.Verify.Concurrency(), pol.Verify.TimeoutOrDefault(), strings.Join(subnets, ","), group)
	checked := map[string]bool{}
	for i, im := range plan {
		itype, ok := pol.Verify.InstanceTypeFor(im.Arch)
		if i < maxNotes {
			if ok {
				fmt.Fprintf(&b, "; %s (%s, %s) on %s", im.ID, cmp.Or(im.Instance, "-"), im.Arch, itype)
			} else {
				fmt.Fprintf(&b, "; %s (%s, %s): no instance type for the architecture: would fail", im.ID, cmp.Or(im.Instance, "-"), im.Arch)
			}
		}
		if !ok || checked[itype] {
			continue
		}
		checked[itype] = true
		_, err := v.EC2.RunInstances(ctx, v.runInput(st, pol, im, itype, subnets[0], group, 0, true))
		switch {
		case awsclient.DryRunOK(err):
		case err == nil:
			st.note("RunInstances DryRun for %s answered without DryRunOperation", im.ID)
		default:
			st.note("RunInstances DryRun for %s (%s): %v", im.ID, itype, err)
		}
	}
	if len(plan) > maxNotes {
		fmt.Fprintf(&b, "; ... and %d more", len(plan)-maxNotes)
	}
	return b.String()
}

// runInput is the launch of one verification instance: the image, the
// type of its architecture, one instance, no key pair, one network
// interface without a public address in the verification subnet and
// security group, shutdown from the OS terminates, every volume deleted on
// termination (a backup keeps the source's DeleteOnTermination, which may
// be false for data volumes), our tags on the instance and its volumes in
// the request (what the verify role's conditions require), and the client
// token that makes a retry idempotent.
func (v *Verifier) runInput(st *State, pol *config.Policy, im planImage, itype, subnet, group string, subnetIndex int, dry bool) *ec2.RunInstancesInput {
	t := v.instanceTags(pol.Name, im.ID)
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(im.ID),
		InstanceType: types.InstanceType(itype),
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		ClientToken:  aws.String(clientToken(st, im.ID, subnetIndex)),
		NetworkInterfaces: []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex:              aws.Int32(0),
			SubnetId:                 aws.String(subnet),
			Groups:                   []string{group},
			AssociatePublicIpAddress: aws.Bool(false),
			DeleteOnTermination:      aws.Bool(true),
		}},
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeInstance, Tags: t},
			{ResourceType: types.ResourceTypeVolume, Tags: t},
		},
	}
	for _, d := range im.Devices {
		// Only DeleteOnTermination changes: the rest of the image's
		// mapping (snapshot, size, type, encryption) stays as it is.
		in.BlockDeviceMappings = append(in.BlockDeviceMappings, types.BlockDeviceMapping{DeviceName: aws.String(d),
			Ebs: &types.EbsBlockDevice{DeleteOnTermination: aws.Bool(true)}})
	}
	if dry {
		in.DryRun = aws.Bool(true)
	}
	return in
}

// Step advances the run by one round: observe what is in flight, record
// outcomes on the images, terminate the finished instances, launch more.
func (v *Verifier) Step(ctx context.Context, st *State) (*Result, error) {
	l, err := v.load(st)
	if err != nil {
		return nil, err
	}
	if st.DryRun {
		return &Result{State: st, Done: true}, nil
	}
	run := v.Job.Start(1)
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()
	st.Steps++
	confirmed, err := v.observe(wctx, l)
	if err != nil {
		// Nothing decided: the next step observes again.
		l.log.Error("observing the verification instances failed", "error", err.Error())
	}
	v.record(wctx, l, false)
	// Terminate what the listing showed with our tags and alive; what it
	// did not show waits (the next listing, or cleanup's).
	var alive []string
	for _, id := range st.Terminate {
		switch confirmed[id] {
		case "", types.InstanceStateNameShuttingDown, types.InstanceStateNameTerminated:
		default:
			alive = append(alive, id)
		}
	}
	terminated, err := v.terminate(wctx, alive)
	if err != nil {
		l.log.Error("terminating finished verification instances failed; retried next step", "error", err.Error())
	}
	st.Terminate = slices.DeleteFunc(st.Terminate, func(id string) bool {
		state := confirmed[id]
		return slices.Contains(terminated, id) || state == types.InstanceStateNameShuttingDown || state == types.InstanceStateNameTerminated
	})
	cutoff := st.Steps > launchCutoff(l.pol.Verify.TimeoutOrDefault())
	if !cutoff {
		v.launch(wctx, l)
	} else {
		// Launches still to be retried are not made any more: back to the
		// queue, not reached (one whose answer was lost is terminated by
		// cleanup, found by the client-token prefix).
		keep := st.InFlight[:0]
		for _, f := range st.InFlight {
			if f.Instance == "" {
				l.prog[f.Image] = statusQueued
				continue
			}
			keep = append(keep, f)
		}
		st.InFlight = keep
	}
	l.save()
	if len(st.InFlight) == 0 && len(st.Terminate) == 0 {
		st.Terminate = nil
	}
	done := len(st.InFlight) == 0 && len(st.Tagging) == 0 && (l.count(statusQueued) == 0 || cutoff)
	if st.Steps >= MaxSteps {
		// Out of budget (only when steps were lost to something the
		// cutoff did not foresee): cleanup ends what is in flight, not
		// tested, rather than the execution failing at its history limit.
		done = true
	}
	if done && cutoff && l.count(statusQueued) > 0 {
		l.log.Warn("verify: step budget spent; the images not launched are not reached (the next run takes them)",
			"steps", st.Steps, "maxSteps", MaxSteps, "notReached", l.count(statusQueued))
	}
	l.log.Info("verify step", "queued", l.count(statusQueued), "inFlight", len(st.InFlight), "verified", l.count(statusVerified),
		"failed", l.count(statusFailed), "notTested", l.count(statusNotTested), "terminating", len(st.Terminate))
	return &Result{State: st, Done: done, WaitSeconds: StepWait}, nil
}

// observe looks at the instances in flight and decides the finished ones.
//
// One listing covers the flights and the instances waiting for their
// termination; what it returns (both of our tags checked) is all that
// may be terminated (the returned map: ID -> state).
func (v *Verifier) observe(ctx context.Context, l *loaded) (map[string]types.InstanceStateName, error) {
	st := l.st
	ids := slices.Clone(st.Terminate)
	for _, f := range st.InFlight {
		if f.Instance != "" {
			ids = append(ids, f.Instance)
		}
	}
	confirmed := map[string]types.InstanceStateName{}
	if len(ids) == 0 {
		return confirmed, nil
	}
	listed, err := v.listOurs(ctx, nil, ids)
	if err != nil {
		return confirmed, err
	}
	byID := map[string]types.Instance{}
	var running []string
	for _, in := range listed {
		id := aws.ToString(in.InstanceId)
		byID[id] = in
		if in.State == nil {
			continue
		}
		confirmed[id] = in.State.Name
		if in.State.Name == types.InstanceStateNameRunning && slices.ContainsFunc(st.InFlight, func(f Flight) bool { return f.Instance == id }) {
			running = append(running, id)
		}
	}
	status := map[string]types.InstanceStatus{}
	for chunk := range slices.Chunk(running, 100) {
		out, err := v.EC2.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: chunk, IncludeAllInstances: aws.Bool(true)})
		if err != nil {
			return confirmed, fmt.Errorf("DescribeInstanceStatus: %w", err)
		}
		for _, s := range out.InstanceStatuses {
			status[aws.ToString(s.InstanceId)] = s
		}
	}
	now := v.Clock()()
	timeout := l.pol.Verify.TimeoutOrDefault()
	keep := st.InFlight[:0]
	for _, f := range st.InFlight {
		if f.Instance == "" {
			keep = append(keep, f)
			continue
		}
		age := now.Sub(time.Unix(f.Launched, 0))
		in, found := byID[f.Instance]
		// imageCaused: what is seen at the timeout is the image's doing
		// (the guest's status check); anything else (not visible, stuck
		// pending, a host problem) leaves the image not tested.
		imageCaused := false
		switch {
		case !found:
			// Not visible yet (EC2's eventual consistency) or gone.
			f.Last = "not visible in DescribeInstances"
		case in.State == nil:
			f.Last = "no state"
		default:
			state := in.State.Name
			switch state {
			case types.InstanceStateNamePending:
				f.Last = "pending"
			case types.InstanceStateNameRunning:
				s := status[f.Instance]
				is, ss := checkStatus(s.InstanceStatus), checkStatus(s.SystemStatus)
				if is == "ok" && ss == "ok" {
					v.decide(l, f, "", now)
					continue
				}
				f.Last = fmt.Sprintf("running, instance status %s, system status %s", is, ss)
				// The system check is the host's (AWS's); the instance
				// check is the guest's: a guest that does not answer
				// within the timeout is the image's failure.
				imageCaused = ss != string(types.SummaryStatusImpaired)
			default:
				code, msg := "", ""
				if in.StateReason != nil {
					code, msg = aws.ToString(in.StateReason.Code), aws.ToString(in.StateReason.Message)
				}
				reason := fmt.Sprintf("instance %s %s before both status checks were ok (%s: %s)", f.Instance, state, cmp.Or(code, "no state reason"), msg)
				if endedByImage(code) {
					v.decide(l, f, reason, now)
				} else {
					v.notTested(l, f, reason, now)
				}
				continue
			}
		}
		if age >= timeout {
			reason := fmt.Sprintf("instance %s: status checks not ok within %s of launch (%s)", f.Instance, timeout, f.Last)
			if imageCaused {
				v.decide(l, f, reason, now)
			} else {
				v.notTested(l, f, reason, now)
			}
			continue
		}
		keep = append(keep, f)
	}
	st.InFlight = keep
	return confirmed, nil
}

// endedByImage reports whether an instance that shut down or terminated
// before its status checks were ok did so because of its image, by its
// StateReason code (EC2 API Reference, StateReason):
// Client.InstanceInitiatedShutdown is the guest shutting itself down (the
// launch sets InstanceInitiatedShutdownBehavior=terminate) and
// Client.InvalidSnapshot.NotFound a snapshot of the image that is gone.
// Everything else is not the image's doing and leaves it not tested:
// Client.UserInitiatedShutdown (TerminateInstances or StopInstances by
// someone: another execution's sweep, an operator), Server.* (capacity,
// AWS's internal errors, retirement), Client.VolumeLimitExceeded (a
// quota), Client.InternalError (typically a KMS key the launch may not
// use: the key policy, not the image) and no reason at all.
func endedByImage(code string) bool {
	switch code {
	case "Client.InstanceInitiatedShutdown", "Client.InvalidSnapshot.NotFound":
		return true
	}
	return false
}

// refusedImage reports whether a RunInstances error is the image's: the
// only codes that tag it failed ("Error codes for the Amazon EC2 API", EC2
// API Reference). InvalidBlockDeviceMapping: the image's block device
// mapping cannot be launched (the launch only sets DeleteOnTermination on
// the image's own devices); InvalidSnapshot.NotFound: a snapshot of the
// image is gone. Everything else (quotas: VcpuLimitExceeded,
// InstanceLimitExceeded; the network: InsufficientFreeAddressesInSubnet,
// InvalidSubnetID.NotFound, InvalidGroup.NotFound; the request or
// configuration: InvalidParameterCombination, InvalidParameterValue,
// IdempotentParameterMismatch; permissions; anything unknown) says nothing
// about the image: not tested, never tagged. A verify=failed tag takes an
// image off retention's newest-verified floor, so a quota error must not
// un-protect the last image known to restore.
func refusedImage(code string) bool {
	switch code {
	case "InvalidBlockDeviceMapping", "InvalidSnapshot.NotFound":
		return true
	}
	return false
}

func checkStatus(s *types.InstanceStatusSummary) string {
	if s == nil {
		return "unknown"
	}
	return string(s.Status)
}

// decide ends a flight: the outcome goes to the image's tags, the
// instance (if any) to termination.
func (v *Verifier) decide(l *loaded, f Flight, reason string, now time.Time) {
	st := l.st
	o := Outcome{Image: f.Image, Reason: runner.Truncate(reason, MaxTagValue), At: now.Unix(), Tag: true}
	if reason == "" {
		l.prog[f.Image] = statusVerified
	} else {
		l.prog[f.Image] = statusFailed
		v.addFailure(st, o)
		l.log.Warn("verification failed", "image", l.plan[f.Image].ID, "instance", f.Instance, "reason", o.Reason)
	}
	st.Tagging = append(st.Tagging, o)
	if f.Instance != "" && !slices.Contains(st.Terminate, f.Instance) {
		st.Terminate = append(st.Terminate, f.Instance)
	}
}

func (v *Verifier) addFailure(st *State, o Outcome) {
	if len(st.Failures) < maxNotes {
		st.Failures = append(st.Failures, o)
	}
}

// notTested ends an image without booting it for a reason that is not
// the image's: no tag is written, the run reports it and fails.
func (v *Verifier) notTested(l *loaded, f Flight, reason string, now time.Time) {
	l.prog[f.Image] = statusNotTested
	l.log.Warn("image not tested", "image", l.plan[f.Image].ID, "instance", f.Instance, "reason", reason)
	v.addFailure(l.st, Outcome{Image: f.Image, Reason: "not tested: " + runner.Truncate(reason, runner.MaxDetail), At: now.Unix()})
	if f.Instance != "" && !slices.Contains(l.st.Terminate, f.Instance) {
		l.st.Terminate = append(l.st.Terminate, f.Instance)
	}
}

// record writes the decided outcomes to the images: verified ones get
// amibackup:verified=<time> (one CreateTags for all of a step) and lose an
// earlier failure's tags; failed ones amibackup:verify=failed and the
// reason. What fails is retried next step (maxTagTries), then reported.
func (v *Verifier) record(ctx context.Context, l *loaded, last bool) {
	st := l.st
	if len(st.Tagging) == 0 {
		return
	}
	var left []Outcome
	retry := func(o Outcome, err error) {
		if awsclient.ImageGone(err) {
			st.note("%s: deregistered before its outcome was recorded (%s)", l.plan[o.Image].ID, outcomeText(o))
			return
		}
		if o.Tries++; o.Tries < maxTagTries && !last {
			left = append(left, o)
			return
		}
		if o.Reason == "" {
			// It booted, but prune cannot know: the run reports it.
			l.prog[o.Image] = statusNotTested
			v.addFailure(st, Outcome{Image: o.Image, Reason: runner.Truncate(fmt.Sprintf("booted with both status checks ok, but %s could not be written: %v", tags.Verified, err), runner.MaxDetail), At: o.At})
			return
		}
		st.note("%s: outcome not recorded on the image (%s): %v", l.plan[o.Image].ID, outcomeText(o), err)
	}
	// Verified: grouped by time, one call each (CreateTags takes many
	// resources with the same tags).
	byTime := map[int64][]Outcome{}
	for _, o := range st.Tagging {
		if o.Reason == "" {
			byTime[o.At] = append(byTime[o.At], o)
		}
	}
	for _, at := range slices.Sorted(maps.Keys(byTime)) {
		group := byTime[at]
		ids := make([]string, len(group))
		var clear []string
		for i, o := range group {
			ids[i] = l.plan[o.Image].ID
			if l.plan[o.Image].Clear {
				clear = append(clear, ids[i])
			}
		}
		_, err := v.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: ids,
			Tags: []types.Tag{{Key: aws.String(tags.Verified), Value: aws.String(tags.FormatTime(time.Unix(at, 0)))}}})
		if err != nil && len(group) > 1 {
			// One image gone fails the whole call: one at a time.
			for _, o := range group {
				_, e := v.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{l.plan[o.Image].ID},
					Tags: []types.Tag{{Key: aws.String(tags.Verified), Value: aws.String(tags.FormatTime(time.Unix(at, 0)))}}})
				if e != nil {
					retry(o, e)
					clear = slices.DeleteFunc(clear, func(id string) bool { return id == l.plan[o.Image].ID })
				}
			}
		} else if err != nil {
			retry(group[0], err)
			clear = nil
		}
		if len(clear) > 0 {
			// The failure of an earlier run no longer holds. Best effort:
			// retention reads verify=failed as "not verified", so a
			// leftover is on the safe side (kept by other floors, reported).
			if _, err := v.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: clear,
				Tags: []types.Tag{{Key: aws.String(tags.Verify)}, {Key: aws.String(tags.VerifyError)}}}); err != nil {
				st.note("DeleteTags %s, %s on %d verified images: %v", tags.Verify, tags.VerifyError, len(clear), err)
			}
		}
	}
	for _, o := range st.Tagging {
		if o.Reason == "" {
			continue
		}
		_, err := v.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{l.plan[o.Image].ID}, Tags: []types.Tag{
			{Key: aws.String(tags.Verify), Value: aws.String(tags.VerifyFailed)},
			{Key: aws.String(tags.VerifyError), Value: aws.String(o.Reason)},
		}})
		if err != nil {
			retry(o, err)
		}
	}
	st.Tagging = left
}

func outcomeText(o Outcome) string {
	if o.Reason == "" {
		return "verified"
	}
	return "failed: " + o.Reason
}

// launch starts verifications while there is room: at most maxConcurrent
// in flight and LaunchBurst RunInstances calls a step.
func (v *Verifier) launch(ctx context.Context, l *loaded) {
	st := l.st
	subnets, group, err := v.placement(l.pol)
	if err != nil {
		st.note("launch: %v", err)
		return
	}
	budget := LaunchBurst
	now := v.Clock()()
	// Retries of launches whose answer was lost or refused first (same
	// client token: EC2 returns the instance if it was launched).
	var pending []int
	for k, f := range st.InFlight {
		if f.Instance == "" {
			pending = append(pending, k)
		}
	}
	room := l.pol.Verify.Concurrency() - len(st.InFlight)
	for i := 0; i < len(l.prog) && room > 0; i++ {
		if l.prog[i] != statusQueued {
			continue
		}
		l.prog[i] = statusInFlight
		st.InFlight = append(st.InFlight, Flight{Image: i})
		pending = append(pending, len(st.InFlight)-1)
		room--
	}
	drop := map[int]bool{}
	for _, k := range pending {
		if budget <= 0 || ctx.Err() != nil {
			break
		}
		f := &st.InFlight[k]
		im := l.plan[f.Image]
		itype, ok := l.pol.Verify.InstanceTypeFor(im.Arch)
		if !ok {
			v.decide(l, *f, fmt.Sprintf("no instance type for architecture %q: add verify.instanceType.%s to policy %q", im.Arch, im.Arch, l.pol.Name), now)
			drop[k] = true
			continue
		}
		for budget > 0 {
			budget--
			out, err := v.EC2.RunInstances(ctx, v.runInput(st, l.pol, im, itype, subnets[f.Subnet], group, f.Subnet, false))
			if err == nil && len(out.Instances) > 0 {
				f.Instance, f.Launched, f.Last = aws.ToString(out.Instances[0].InstanceId), v.Clock()().Unix(), "launched"
				break
			}
			if err == nil {
				err = fmt.Errorf("RunInstances answered no instance")
			}
			code := awsclient.ErrorCode(err)
			switch {
			case code == "InsufficientInstanceCapacity" || code == "Unsupported":
				// The type is missing (or full) in this subnet's zone:
				// the next subnet is in another zone.
				if f.Subnet+1 < len(subnets) {
					f.Subnet++
					continue
				}
				v.notTested(l, *f, fmt.Sprintf("RunInstances %s in %s: %v", itype, strings.Join(subnets, ", "), err), now)
				drop[k] = true
			case awsclient.ImageGone(err):
				l.prog[f.Image] = statusGone
				st.note("%s: deregistered or unavailable since the listing: not verified (%s)", im.ID, code)
				drop[k] = true
			case awsclient.Unauthorized(err):
				v.notTested(l, *f, fmt.Sprintf("RunInstances denied (the verify role launches only from this deployment's images, with its tags in the request): %v", err), now)
				drop[k] = true
			case retryable(err):
				if f.Tries++; f.Tries >= maxLaunchTries {
					v.notTested(l, *f, fmt.Sprintf("RunInstances failed %d times: %v", f.Tries, err), now)
					drop[k] = true
				}
				budget = 0 // throttled or unwell: no more launches this step
			case refusedImage(code):
				// EC2 refused this image: it cannot boot.
				v.decide(l, *f, fmt.Sprintf("RunInstances: %v", err), now)
				drop[k] = true
			default:
				// The account, the network or the configuration: the image
				// is not to blame (refusedImage).
				v.notTested(l, *f, fmt.Sprintf("RunInstances %s in %s: %v", itype, subnets[f.Subnet], err), now)
				drop[k] = true
			}
			break
		}
	}
	if len(drop) > 0 {
		keep := st.InFlight[:0]
		for k, f := range st.InFlight {
			if !drop[k] {
				keep = append(keep, f)
			}
		}
		st.InFlight = keep
	}
	// Flights never tried this step (budget spent) go back to the queue.
	keep := st.InFlight[:0]
	for _, f := range st.InFlight {
		if f.Instance == "" && f.Tries == 0 && f.Subnet == 0 {
			l.prog[f.Image] = statusQueued
			continue
		}
		keep = append(keep, f)
	}
	st.InFlight = keep
}

// retryable: the SDK retried these already; a later step tries again.
func retryable(err error) bool {
	if awsclient.Throttled(err) {
		return true
	}
	switch awsclient.ErrorCode(err) {
	case "InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable", "":
		return true // "": no API answer (network, deadline)
	}
	return false
}

// Cleanup terminates everything the run launched that is not terminated
// (its state's instances and, by the client-token prefix, a launch whose
// answer was lost) and the deployment's leftovers, and records outcomes
// still to be written. Every path of the workflow ends here (the state
// machine's Catch). Done when all of them are shutting down or terminated,
// or after maxCleanups rounds (what is left is reported and alarmed on).
func (v *Verifier) Cleanup(ctx context.Context, st *State) (*Result, error) {
	l, err := v.load(st)
	if err != nil {
		return nil, err
	}
	if st.DryRun {
		return &Result{State: st, Done: true}, nil
	}
	run := v.Job.Start(1)
	wctx, cancel := run.WorkContext(ctx)
	defer cancel()
	now := v.Clock()()
	st.Cleanups++
	// What is still in flight ends here, untested.
	for _, f := range st.InFlight {
		v.notTested(l, f, "the run ended before its status checks were ok", now)
	}
	st.InFlight = nil
	v.record(wctx, l, st.Cleanups >= maxCleanups)
	l.save()
	mine := map[string]bool{}
	for _, id := range st.Terminate {
		mine[id] = true
	}
	prefix := tokenPrefix(st)
	live, err := v.listOurs(wctx, liveStates, nil)
	var targets []string
	if err == nil {
		for _, in := range live {
			id := aws.ToString(in.InstanceId)
			if mine[id] || strings.HasPrefix(aws.ToString(in.ClientToken), prefix) || v.leftover(in, now) {
				targets = append(targets, id)
			}
		}
		var done []string
		done, err = v.terminate(wctx, targets)
		targets = slices.DeleteFunc(targets, func(id string) bool { return slices.Contains(done, id) })
	}
	if err == nil && len(st.Tagging) == 0 {
		st.Terminate, st.Left = nil, nil
		l.log.Info("verify cleanup done", "rounds", st.Cleanups)
		return &Result{State: st, Done: true}, nil
	}
	if err != nil {
		l.log.Error("verify cleanup round failed", "round", st.Cleanups, "error", err.Error())
	}
	if st.Cleanups >= maxCleanups {
		st.Left = first(targets, maxNotes)
		st.note("cleanup gave up after %d rounds: %v", st.Cleanups, err)
		return &Result{State: st, Done: true}, nil
	}
	return &Result{State: st, WaitSeconds: CleanupWait}, nil
}
