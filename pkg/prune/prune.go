// Package prune applies the retention policy to the images this deployment
// created, and only to those: it lists images by the exact
// amibackup:managed-by tag, deletes each expired image with its snapshots
// in one DeregisterImage call, and sweeps snapshots left behind by earlier
// runs. A blast-radius guard stops runs that would delete too much.
package prune

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/retention"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// EC2 is the part of the EC2 API prune needs; *ec2.Client satisfies it.
type EC2 interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	EnableImageDeprecation(context.Context, *ec2.EnableImageDeprecationInput, ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
	DescribeImageReferences(context.Context, *ec2.DescribeImageReferencesInput, ...func(*ec2.Options)) (*ec2.DescribeImageReferencesOutput, error)
}

// Function is the name used in summaries and metrics.
const Function = "prune"

// Pruner applies retention.
type Pruner struct {
	runner.Job
	EC2    EC2
	Config *config.Config
}

// PlanEntry is one image in the plan.
type PlanEntry struct {
	ImageID    string    `json:"imageId"`
	Name       string    `json:"name"`
	InstanceID string    `json:"instanceId"`
	Policy     string    `json:"policy"`
	Time       time.Time `json:"time"`
	State      string    `json:"state"`
	Keep       bool      `json:"keep"`
	Reasons    []string  `json:"reasons"`
	// Notes say what does not change the verdict but matters: a failed
	// restore verification, what retention alone would have decided for
	// an image kept by a reference.
	Notes []string `json:"notes,omitempty"`
	// Verified is when the image last passed a restore verification.
	Verified time.Time `json:"verified,omitzero"`
	// InstanceGone marks images of instances that no longer exist.
	InstanceGone bool `json:"instanceGone,omitempty"`
}

// Summary of a prune run. Done lists deleted images, Existed images found
// already gone, Skipped images left alone (e.g. of unknown policies).
type Summary struct {
	runner.Summary
	Plan                []PlanEntry    `json:"plan"`
	OrphansDeleted      []runner.Entry `json:"orphanSnapshotsDeleted"`
	SnapshotsNotDeleted []runner.Entry `json:"snapshotsNotDeleted"`
	DeprecationsSet     []string       `json:"deprecationsSet"`
	GoneInstances       []string       `json:"goneInstances"`
	// KeptByReference lists images retention would delete that an
	// instance, launch template or SSM parameter still references.
	KeptByReference []runner.Entry `json:"keptByReference"`
	// VerificationFailed lists images whose last restore verification
	// failed (reported; retention decides them like any other image).
	VerificationFailed []runner.Entry `json:"verificationFailed"`
	Blocked            string         `json:"blocked,omitempty"`
	mu                 sync.Mutex
}

type candidate struct {
	entry     PlanEntry
	snapshots []string
	created   time.Time
	deprecate bool
	// undecidable says why retention cannot decide this image (it is kept).
	undecidable string
	// verifyFailed and verifyError: the image's last restore verification
	// failed (tags.Verify, tags.VerifyError).
	verifyFailed bool
	verifyError  string
}

// Handle is the function's handler without the Lambda plumbing: it parses
// the raw trigger (rejecting bad input before any EC2 call) and runs it.
func (p *Pruner) Handle(ctx context.Context, raw []byte) (*Summary, error) {
	req, err := trigger.ParsePrune(raw, p.Config)
	if err == nil {
		// req.Time is "now" for retention: a future time would age every image.
		err = trigger.CheckNotFuture("time", req.Time, p.Clock()())
	}
	if err != nil {
		p.Log.Error("rejected input; nothing was deleted", "error", err.Error())
		return nil, err
	}
	return p.Run(ctx, req)
}

// Run applies retention for the request.
func (p *Pruner) Run(ctx context.Context, req trigger.Prune) (*Summary, error) {
	run := p.Start(p.Config.Concurrency)
	sum := &Summary{Summary: runner.Summary{Function: Function, Deployment: p.Config.Deployment, Policy: req.Policy,
		Trigger: req.Trigger, Slot: req.Time, DryRun: req.DryRun}}
	log := p.Log.With("policy", req.Policy, "time", tags.FormatTime(req.Time), "dryRun", req.DryRun, "force", req.Force)

	// The listings run on the work context: a hung or endlessly retried
	// DescribeImages/DescribeInstances is cut off half a margin before the
	// deadline, so the run still logs its summary and emits its metrics
	// instead of ending in "Task timed out".
	lctx, cancel := run.WorkContext(ctx)
	cands, live, err := p.list(lctx, req.Policy)
	cancel()
	if err != nil {
		log.Error("listing failed; nothing was deleted", "error", err.Error(), "code", awsclient.ErrorCode(err))
		sum.AddFailed(runner.Entry{ID: "listing", Detail: err.Error() + "; nothing was deleted"})
		return sum, p.finish(ctx, run, log, sum)
	}
	sum.Selected = len(cands)
	plan, err := p.plan(cands, live, req, sum)
	if err != nil {
		return nil, err
	}
	// Before the guard and the dry run's answer: an image kept because
	// something still uses it is kept in both.
	refErr := p.keepReferenced(ctx, run, log, plan, sum)
	reportVerification(plan, sum)
	if err := refErr; err != nil {
		for _, c := range plan {
			sum.Plan = append(sum.Plan, c.entry)
		}
		if req.DryRun {
			sum.Warn("a real run would delete nothing and fail: %v", err)
			log.Warn("dry run: the image reference check failed; a real run would delete nothing", "error", err.Error(), "code", awsclient.ErrorCode(err))
			return sum, p.finish(ctx, run, log, sum)
		}
		log.Error("image reference check failed; nothing was deleted", "error", err.Error(), "code", awsclient.ErrorCode(err))
		sum.AddFailed(runner.Entry{ID: "image-references", Detail: err.Error()})
		return sum, p.finish(ctx, run, log, sum)
	}
	var toDelete []*candidate
	for _, c := range plan {
		sum.Plan = append(sum.Plan, c.entry)
		if !c.entry.Keep {
			toDelete = append(toDelete, c)
		}
	}
	if reason := guard(plan, p.Config.Prune.MaxDeleteShare); reason != "" {
		switch {
		case req.Force:
			sum.Warn("blast-radius guard overridden by force: %s", reason)
		case req.DryRun:
			// A dry run is the preview an operator asks for exactly when the
			// guard blocks: it answers with the whole plan and says why the
			// real run would be blocked, without failing (no alarm, no retry).
			sum.Blocked = "a real run would be blocked: " + reason + "; it would delete nothing and fail (alarm PruneBlocked). " +
				"Check the retention configuration and prune.maxDeleteShare, or send a manual \"Prune Requested\" event with \"force\": true to delete this plan"
			sum.Warn("a real run would be blocked by the blast-radius guard: %s", reason)
			log.Warn("dry run: the blast-radius guard would block the real run", "reason", reason)
		default:
			sum.Blocked = reason + "; nothing was deleted. Preview the whole plan with a manual \"Prune Requested\" event with \"dryRun\": true, " +
				"then check the retention configuration and prune.maxDeleteShare, or send \"force\": true to delete it"
			log.Error("prune blocked by the blast-radius guard", "reason", reason)
			p.finish(ctx, run, log, sum)
			return sum, fmt.Errorf("prune: %s", sum.Blocked)
		}
	}
	if req.DryRun {
		for _, c := range toDelete {
			log.Info("dry run: would delete", "image", c.entry.ImageID, "instance", c.entry.InstanceID, "reasons", c.entry.Reasons)
		}
	} else {
		left := runner.Each(ctx, run, toDelete, func(ctx context.Context, c *candidate) {
			p.deleteImage(ctx, log, c, sum)
		})
		runner.AddNotReached(&sum.Summary, left, func(c *candidate) string { return c.entry.ImageID })
	}
	if ctx.Err() == nil && len(sum.NotReached) == 0 {
		if err := p.sweepOrphans(ctx, run, log, req, plan, sum); err != nil {
			sum.AddFailed(runner.Entry{ID: "orphan-sweep", Detail: err.Error()})
		}
		if !req.DryRun {
			p.repairDeprecation(ctx, run, log, plan, req.Time, sum)
		}
	}
	return sum, p.finish(ctx, run, log, sum)
}

// finish ends the run (metrics, summary line, error) and logs prune's own
// records: the result, the full plan and the orphans deleted, in pages.
func (p *Pruner) finish(ctx context.Context, run *runner.Run, log *slog.Logger, sum *Summary) error {
	err := run.Finish(ctx, log, &sum.Summary, func(*runner.Summary) runner.Metrics { return sum.report() })
	kept := sum.kept()
	log.Info("prune result", "kept", kept, "delete", len(sum.Plan)-kept, "orphansDeleted", len(sum.OrphansDeleted),
		"keptByReference", len(sum.KeptByReference), "keptByReferenceSample", runner.CapEntries(sum.KeptByReference, runner.MaxEntries),
		"verificationFailed", len(sum.VerificationFailed), "verificationFailedSample", runner.CapEntries(sum.VerificationFailed, runner.MaxEntries),
		"snapshotsNotDeleted", len(sum.SnapshotsNotDeleted), "snapshotsNotDeletedSample", runner.CapEntries(sum.SnapshotsNotDeleted, runner.MaxEntries),
		"goneInstances", len(sum.GoneInstances), "goneInstancesSample", runner.CapIDs(sum.GoneInstances, runner.MaxIDs),
		"blocked", sum.Blocked)
	// The full plan goes to the log in pages: a CloudWatch Logs event holds
	// at most 256 KiB, and a 10,000-image plan is megabytes. The response
	// holds only a sample (MarshalJSON).
	for page := range slices.Chunk(sum.Plan, planPage) {
		log.Info("prune plan", "entries", page)
	}
	for page := range slices.Chunk(sum.OrphansDeleted, runner.LogPage) {
		log.Info("prune orphan snapshots", "entries", page)
	}
	return err
}

func (s *Summary) kept() int {
	kept := 0
	for _, e := range s.Plan {
		if e.Keep {
			kept++
		}
	}
	return kept
}

// report derives the run's metrics from its summary. The alarms watch
// Policy=all; a one-policy manual run reports there too, so a blocked or
// failing manual prune is heard.
func (s *Summary) report() runner.Metrics {
	blocked := 0.0
	if s.Blocked != "" {
		blocked = 1
	}
	m := runner.Metrics{Policies: []string{metrics.AllPolicies}, Values: []emf.Metric{
		emf.CountOf(metrics.ImagesPruned, len(s.Done)),
		emf.CountOf(metrics.ImagesKept, s.kept()),
		emf.CountOf(metrics.PruneFailures, len(s.Failed)+len(s.SnapshotsNotDeleted)),
		emf.CountOf(metrics.OrphanSnapshotsDeleted, len(s.OrphansDeleted)),
		{Name: metrics.PruneBlocked, Unit: emf.Count, Value: blocked},
		{Name: metrics.PruneDuration, Unit: emf.Milliseconds, Value: float64(s.DurationMS)},
	}}
	if s.Policy != "" && s.Policy != metrics.AllPolicies {
		m.Policies = append(m.Policies, s.Policy)
	}
	return m
}

// planPage entries (about 300 bytes each, at most about 2 KB with a long
// undecidable or reference reason and notes) keep a plan log line far
// below 256 KiB.
const planPage = 100

// MaxPlanEntries is how many plan entries the returned summary holds;
// deletions come first when the plan is longer (the full plan is in the log).
const MaxPlanEntries = 100

// Counts are the exact sizes of prune's own lists in the returned summary.
type Counts struct {
	Plan                int `json:"plan"`
	Keep                int `json:"keep"`
	Delete              int `json:"delete"`
	OrphansDeleted      int `json:"orphanSnapshotsDeleted"`
	SnapshotsNotDeleted int `json:"snapshotsNotDeleted"`
	DeprecationsSet     int `json:"deprecationsSet"`
	GoneInstances       int `json:"goneInstances"`
	KeptByReference     int `json:"keptByReference"`
	VerificationFailed  int `json:"verificationFailed"`
}

// MarshalJSON writes the bounded summary Lambda returns: runner's view
// (counts, first entries, counts by reason) plus a plan sample and prune's
// counts. A prune over any history stays far below Lambda's 6 MB response
// limit; the full plan is logged in "prune plan" pages.
func (s *Summary) MarshalJSON() ([]byte, error) {
	v := s.Summary.View()
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Counts{Plan: len(s.Plan), OrphansDeleted: len(s.OrphansDeleted), SnapshotsNotDeleted: len(s.SnapshotsNotDeleted),
		DeprecationsSet: len(s.DeprecationsSet), GoneInstances: len(s.GoneInstances),
		KeptByReference: len(s.KeptByReference), VerificationFailed: len(s.VerificationFailed)}
	for _, e := range s.Plan {
		if e.Keep {
			c.Keep++
		}
	}
	c.Delete = c.Plan - c.Keep
	v.Truncated = v.Truncated || c.Plan > MaxPlanEntries || c.OrphansDeleted > runner.MaxEntries ||
		c.SnapshotsNotDeleted > runner.MaxEntries || c.DeprecationsSet > runner.MaxIDs || c.GoneInstances > runner.MaxIDs ||
		c.KeptByReference > runner.MaxEntries || c.VerificationFailed > runner.MaxEntries
	return json.Marshal(struct {
		runner.View
		PruneCounts         Counts         `json:"pruneCounts"`
		Plan                []PlanEntry    `json:"plan"`
		OrphansDeleted      []runner.Entry `json:"orphanSnapshotsDeleted"`
		SnapshotsNotDeleted []runner.Entry `json:"snapshotsNotDeleted"`
		DeprecationsSet     []string       `json:"deprecationsSet"`
		GoneInstances       []string       `json:"goneInstances"`
		KeptByReference     []runner.Entry `json:"keptByReference"`
		VerificationFailed  []runner.Entry `json:"verificationFailed"`
		Blocked             string         `json:"blocked,omitempty"`
	}{v, c, planSample(s.Plan, MaxPlanEntries), runner.CapEntries(s.OrphansDeleted, runner.MaxEntries),
		runner.CapEntries(s.SnapshotsNotDeleted, runner.MaxEntries), runner.CapIDs(s.DeprecationsSet, runner.MaxIDs),
		runner.CapIDs(s.GoneInstances, runner.MaxIDs), runner.CapEntries(s.KeptByReference, runner.MaxEntries),
		runner.CapEntries(s.VerificationFailed, runner.MaxEntries), s.Blocked})
}

// planSample returns the plan if it has at most n entries, else n entries:
// the deletions first (what an operator checks in a dry run), then kept
// images, each in plan order.
func planSample(plan []PlanEntry, n int) []PlanEntry {
	if len(plan) <= n {
		return slices.Clone(plan)
	}
	out := make([]PlanEntry, 0, n)
	for _, keep := range []bool{false, true} {
		for _, e := range plan {
			if len(out) == n {
				return out
			}
			if e.Keep == keep {
				out = append(out, e)
			}
		}
	}
	return out
}

// list returns the candidates and which of their instances still exist.
func (p *Pruner) list(ctx context.Context, policy string) ([]*candidate, map[string]bool, error) {
	cands, err := p.listImages(ctx, policy)
	if err != nil {
		return nil, nil, err
	}
	live, err := p.liveInstances(ctx, cands)
	return cands, live, err
}

// listImages lists this deployment's images with a server-side filter on
// the exact managed-by tag, and checks the tag again client-side: an image
// without it is never a candidate, whatever its name.
func (p *Pruner) listImages(ctx context.Context, policy string) ([]*candidate, error) {
	var out []*candidate
	for im, err := range images.Managed(ctx, p.EC2, images.Query{Deployment: p.Config.Deployment, Policy: policy}) {
		if err != nil {
			return nil, fmt.Errorf("list images of deployment %s: %w", p.Config.Deployment, err)
		}
		t := awsclient.TagMap(im.Tags)
		c := &candidate{entry: PlanEntry{ImageID: aws.ToString(im.ImageId), Name: aws.ToString(im.Name),
			InstanceID: t[tags.InstanceID], Policy: t[tags.Policy], State: string(im.State)}}
		if !tags.ValidInstanceID(c.entry.InstanceID) {
			// Retention groups by instance: images without a valid
			// instance-id would pool into one history and an instance
			// could lose its only backup. Not decidable, so kept (and
			// its snapshots count as used by the orphan sweep).
			c.undecidable = fmt.Sprintf("tag %s is %q, not an instance ID: kept (fix the tag to let retention decide)", tags.InstanceID, c.entry.InstanceID)
		}
		if ts, err := tags.ParseTime(t[tags.Time]); err == nil {
			c.entry.Time = ts
		}
		c.created, _ = images.Created(im)
		if c.entry.Time.IsZero() {
			c.entry.Time = c.created
		}
		c.deprecate = im.DeprecationTime == nil
		c.snapshots = images.SnapshotIDs(im)
		vf, err := tags.ParseVerified(t)
		if err != nil {
			// Not verified as far as retention knows; today's floors still hold.
			c.entry.Notes = append(c.entry.Notes, err.Error()+": not counted as verified")
		}
		c.entry.Verified, c.verifyFailed, c.verifyError = vf.At, vf.Failed, vf.Error
		out = append(out, c)
	}
	return out, nil
}

// liveInstances returns the IDs of the candidates' instances that still
// exist (any state except terminated). Recovery copies are left out: their
// instances run in the source account, which this account cannot see.
func (p *Pruner) liveInstances(ctx context.Context, cands []*candidate) (map[string]bool, error) {
	var ids []string
	for _, c := range cands {
		if tracksInstance(c.entry.Policy) && c.entry.InstanceID != "" && !slices.Contains(ids, c.entry.InstanceID) {
			ids = append(ids, c.entry.InstanceID)
		}
	}
	live := map[string]bool{}
	// EC2 accepts up to 200 values per filter.
	for chunk := range slices.Chunk(ids, 200) {
		pg := ec2.NewDescribeInstancesPaginator(p.EC2, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000),
			Filters: []types.Filter{{Name: aws.String("instance-id"), Values: chunk}}})
		for pg.HasMorePages() {
			page, err := pg.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("check which instances still exist: %w", err)
			}
			for _, r := range page.Reservations {
				for _, in := range r.Instances {
					if in.State == nil || in.State.Name != types.InstanceStateNameTerminated {
						live[aws.ToString(in.InstanceId)] = true
					}
				}
			}
		}
	}
	return live, nil
}

func (p *Pruner) rulesFor(policy string) (retention.Rules, *config.Policy, error) {
	if pol, ok := p.Config.Policy(policy); ok {
		r, err := retention.RulesFromConfig(pol.Retention, pol.Schedule.TimeZone)
		return r, pol, err
	}
	if policy == config.CopyPolicy && p.Config.Recovery != nil {
		r, err := retention.RecoveryRules(p.Config.Recovery)
		return r, nil, err
	}
	return retention.Rules{}, nil, errUnknownPolicy
}

var errUnknownPolicy = errors.New("unknown policy")

// tracksInstance says whether images of the policy can tell that their
// instance is gone: a recovery copy's instance lives in the source account
// and never exists in the recovery account, so it is never "gone" there.
func tracksInstance(policy string) bool { return policy != config.CopyPolicy }

// plan decides for every candidate. Images of policies not in the
// configuration are kept: prune never deletes what it cannot reason about.
func (p *Pruner) plan(cands []*candidate, live map[string]bool, req trigger.Prune, sum *Summary) ([]*candidate, error) {
	byPolicy := map[string][]*candidate{}
	var order []string
	var out []*candidate
	for _, c := range cands {
		if c.undecidable != "" {
			c.entry.Keep, c.entry.Reasons = true, []string{c.undecidable}
			sum.AddSkipped(runner.Entry{ID: c.entry.ImageID, Name: c.entry.Name, Detail: c.undecidable})
			out = append(out, c)
			continue
		}
		if _, ok := byPolicy[c.entry.Policy]; !ok {
			order = append(order, c.entry.Policy)
		}
		byPolicy[c.entry.Policy] = append(byPolicy[c.entry.Policy], c)
	}
	slices.Sort(order)
	gone := map[string]bool{}
	for _, policy := range order {
		group := byPolicy[policy]
		rules, _, err := p.rulesFor(policy)
		if errors.Is(err, errUnknownPolicy) {
			for _, c := range group {
				c.undecidable = fmt.Sprintf("policy %q is not in the configuration: kept", policy)
				c.entry.Keep, c.entry.Reasons = true, []string{c.undecidable}
				sum.AddSkipped(runner.Entry{ID: c.entry.ImageID, Name: c.entry.Name, Detail: c.undecidable})
				out = append(out, c)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("retention of policy %s: %w", policy, err)
		}
		byID := map[string]*candidate{}
		var images []retention.Image
		for _, c := range group {
			byID[c.entry.ImageID] = c
			images = append(images, retention.Image{ID: c.entry.ImageID, InstanceID: c.entry.InstanceID, Policy: policy,
				Time: c.entry.Time, State: retention.State(c.entry.State),
				Verified: c.entry.Verified, VerifyFailed: c.verifyFailed, VerifyError: c.verifyError})
		}
		for _, d := range retention.Evaluate(images, rules, req.Time).Decisions {
			c := byID[d.Image.ID]
			c.entry.Keep, c.entry.Reasons = d.Keep, d.Reasons
			c.entry.Notes = append(c.entry.Notes, d.Notes...)
			if tracksInstance(policy) && c.entry.InstanceID != "" && !live[c.entry.InstanceID] {
				c.entry.InstanceGone = true
				gone[c.entry.InstanceID] = true
			}
			out = append(out, c)
		}
	}
	for id := range gone {
		sum.GoneInstances = append(sum.GoneInstances, id)
	}
	slices.Sort(sum.GoneInstances)
	return out, nil
}

// guard returns why a plan must not run: it would delete more than
// maxShare of the deployment's images, or every image of an instance.
// Only images retention decided count: failed images (deleting them never
// loses a backup) and images kept because they cannot be decided would
// otherwise dilute the share and hide a plan that deletes most backups.
func guard(plan []*candidate, maxShare float64) string {
	total, del := 0, 0
	type hist struct{ good, goodDeleted int }
	groups := map[string]*hist{}
	for _, c := range plan {
		if c.entry.State == string(retention.Failed) || c.undecidable != "" {
			continue
		}
		total++
		k := c.entry.Policy + "/" + c.entry.InstanceID
		if groups[k] == nil {
			groups[k] = &hist{}
		}
		groups[k].good++
		if !c.entry.Keep {
			del++
			groups[k].goodDeleted++
		}
	}
	var wiped []string
	for k, h := range groups {
		if h.good > 0 && h.goodDeleted == h.good {
			wiped = append(wiped, k)
		}
	}
	slices.Sort(wiped)
	switch {
	case len(wiped) > 0:
		// Bounded: the reason is part of the response, the log and the error.
		names := strings.Join(wiped[:min(len(wiped), maxWipedNamed)], ", ")
		if len(wiped) > maxWipedNamed {
			names += fmt.Sprintf(" and %d more (%d instances)", len(wiped)-maxWipedNamed, len(wiped))
		}
		return fmt.Sprintf("the plan would delete the whole history of %s", names)
	case total > 0 && float64(del)/float64(total) > maxShare:
		return fmt.Sprintf("the plan would delete %d of %d images (%.0f%%), more than prune.maxDeleteShare %.0f%%",
			del, total, 100*float64(del)/float64(total), 100*maxShare)
	}
	return ""
}

// maxWipedNamed is how many policy/instance histories the guard's reason names.
const maxWipedNamed = 10

func (p *Pruner) deleteImage(ctx context.Context, log *slog.Logger, c *candidate, sum *Summary) {
	e := runner.Entry{ID: c.entry.ImageID, ImageID: c.entry.ImageID, Name: c.entry.Name, Detail: strings.Join(c.entry.Reasons, "; ")}
	out, err := p.EC2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(c.entry.ImageID), DeleteAssociatedSnapshots: aws.Bool(true)})
	switch {
	case err == nil:
		sum.AddDone(e)
		log.Info("image deleted", "image", c.entry.ImageID, "instance", c.entry.InstanceID, "reasons", c.entry.Reasons)
		for _, r := range out.DeleteSnapshotResults {
			if r.ReturnCode != types.SnapshotReturnCodesSuccess {
				sum.mu.Lock()
				sum.SnapshotsNotDeleted = append(sum.SnapshotsNotDeleted, runner.Entry{ID: aws.ToString(r.SnapshotId), ImageID: c.entry.ImageID, Detail: string(r.ReturnCode)})
				sum.mu.Unlock()
				log.Warn("snapshot of deleted image not deleted; the orphan sweep retries it", "snapshot", aws.ToString(r.SnapshotId), "code", r.ReturnCode)
			}
		}
	case awsclient.ImageGone(err):
		e.Detail = "already deregistered"
		sum.AddExisted(e)
	default:
		e.Detail = fmt.Errorf("deregister image %s: %w", c.entry.ImageID, err).Error()
		sum.AddFailed(e)
		log.Error("deregister failed", "image", c.entry.ImageID, "error", err.Error())
	}
}

var descImageRE = regexp.MustCompile(`\bfor (ami-[0-9a-f]+)\b`)

// sweepOrphans deletes snapshots carrying this deployment's tag that no
// remaining image uses and that are older than the grace period. This heals
// runs that died between deregistering and deleting snapshots, and cleans
// snapshots EC2 skipped.
func (p *Pruner) sweepOrphans(ctx context.Context, run *runner.Run, log *slog.Logger, req trigger.Prune, plan []*candidate, sum *Summary) error {
	deleted := map[string]bool{}
	for _, e := range sum.Done {
		deleted[e.ImageID] = true
	}
	used := map[string]bool{}
	registered := map[string]bool{}
	for _, c := range plan {
		if !deleted[c.entry.ImageID] {
			registered[c.entry.ImageID] = true
			for _, s := range c.snapshots {
				used[s] = true
			}
		}
	}
	filters := []types.Filter{{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{p.Config.Deployment}}}
	if req.Policy != "" {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + tags.Policy), Values: []string{req.Policy}})
	}
	grace := p.Config.Prune.OrphanGrace.D()
	pg := ec2.NewDescribeSnapshotsPaginator(p.EC2, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: filters, MaxResults: aws.Int32(1000)})
	var orphans []types.Snapshot
	lctx, cancel := run.WorkContext(ctx)
	defer cancel()
	for pg.HasMorePages() {
		page, err := pg.NextPage(lctx)
		if err != nil {
			return fmt.Errorf("list snapshots of deployment %s: %w", p.Config.Deployment, err)
		}
		for _, s := range page.Snapshots {
			id := aws.ToString(s.SnapshotId)
			if used[id] || s.State == types.SnapshotStatePending || awsclient.TagMap(s.Tags)[tags.ManagedBy] != p.Config.Deployment {
				continue
			}
			if m := descImageRE.FindStringSubmatch(aws.ToString(s.Description)); m != nil && registered[m[1]] {
				continue
			}
			if s.StartTime == nil || req.Time.Sub(*s.StartTime) < grace {
				continue
			}
			orphans = append(orphans, s)
		}
	}
	if req.DryRun {
		for _, s := range orphans {
			sum.OrphansDeleted = append(sum.OrphansDeleted, runner.Entry{ID: aws.ToString(s.SnapshotId), Detail: "dry run: would delete orphaned snapshot"})
		}
		return nil
	}
	left := runner.Each(ctx, run, orphans, func(ctx context.Context, s types.Snapshot) {
		id := aws.ToString(s.SnapshotId)
		_, err := p.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
		switch {
		case err == nil, awsclient.SnapshotGone(err):
			sum.mu.Lock()
			sum.OrphansDeleted = append(sum.OrphansDeleted, runner.Entry{ID: id, Detail: "orphaned snapshot deleted"})
			sum.mu.Unlock()
		case awsclient.SnapshotInUse(err):
			// Someone registered an image from it: not ours to delete.
			sum.AddSkipped(runner.Entry{ID: id, Detail: "snapshot in use by an image amibackup does not manage: kept"})
		default:
			sum.AddFailed(runner.Entry{ID: id, Detail: fmt.Errorf("delete orphaned snapshot %s: %w", id, err).Error()})
			log.Error("delete orphaned snapshot failed", "snapshot", id, "error", err.Error())
		}
	})
	runner.AddNotReached(&sum.Summary, left, func(s types.Snapshot) string { return aws.ToString(s.SnapshotId) })
	return nil
}

// repairDeprecation sets the deprecation time on available images whose
// policy asks for one and that lack it (EC2 may refuse it while pending).
// Turning deprecation on for a policy with a long history means thousands
// of calls, so they run like the deletions: bounded, stopping before the
// deadline (the next run finishes the rest).
func (p *Pruner) repairDeprecation(ctx context.Context, run *runner.Run, log *slog.Logger, plan []*candidate, now time.Time, sum *Summary) {
	var todo []*candidate
	for _, c := range plan {
		if !c.entry.Keep || !c.deprecate || c.undecidable != "" || c.entry.State != string(retention.Available) {
			continue
		}
		if pol, ok := p.Config.Policy(c.entry.Policy); ok && pol.DeprecateAfter > 0 {
			todo = append(todo, c)
		}
	}
	left := runner.Each(ctx, run, todo, func(ctx context.Context, c *candidate) {
		pol, _ := p.Config.Policy(c.entry.Policy)
		created := c.created
		if created.IsZero() {
			created = c.entry.Time
		}
		at := images.DeprecationTime(created, pol.DeprecateAfter.D())
		// EC2 refuses times in the past: an overdue image is deprecated now.
		if floor := now.Add(time.Minute).Truncate(time.Minute); at.Before(floor) {
			at = floor
		}
		if _, err := p.EC2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(c.entry.ImageID), DeprecateAt: aws.Time(at)}); err != nil {
			sum.Warn("%s: deprecation not set: %v", c.entry.ImageID, err)
			return
		}
		sum.mu.Lock()
		sum.DeprecationsSet = append(sum.DeprecationsSet, c.entry.ImageID)
		sum.mu.Unlock()
		log.Info("deprecation time set", "image", c.entry.ImageID, "at", at)
	})
	if len(left) > 0 {
		sum.Warn("%d images still lack their deprecation time (deadline reached); the next run sets them", len(left))
	}
}
