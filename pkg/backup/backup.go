// Package backup takes file-system-consistent AMIs of the instances a
// policy selects: one CreateImage per instance, tagged in the same call,
// named deterministically so that a retried trigger never creates a second
// image.
package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// EC2 is the part of the EC2 API the backup needs; *ec2.Client satisfies it.
type EC2 interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	CreateImage(context.Context, *ec2.CreateImageInput, ...func(*ec2.Options)) (*ec2.CreateImageOutput, error)
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	EnableImageDeprecation(context.Context, *ec2.EnableImageDeprecationInput, ...func(*ec2.Options)) (*ec2.EnableImageDeprecationOutput, error)
}

// Function is the name used in summaries and metrics.
const Function = "backup"

// Backuper runs backups. Its clock (Job.Now) also dates deprecation times.
type Backuper struct {
	runner.Job
	EC2    EC2
	Config *config.Config
	// Batch: Run backs up one batch of a rollout (pkg/rollout, InstanceIDs
	// set by the workflow), which reports InstancesSelected for the whole
	// selection itself; a batch's count would feed the zero-selected alarm
	// with the size of a wave.
	Batch bool
	// Workflow and WorkflowARN: the hand-off of policies that reboot in
	// waves (handoff.go).
	Workflow    StepFunctions
	WorkflowARN string
}

type target struct {
	id          string
	tags        map[string]string
	noReboot    bool
	badNoReboot string // a value of the opt-out tag other than "true"
}

// Handle is the function's handler without the Lambda plumbing: it parses
// the raw trigger (rejecting bad input before any EC2 call) and runs it.
func (b *Backuper) Handle(ctx context.Context, raw []byte) (*runner.Summary, error) {
	req, err := trigger.ParseBackup(raw, b.Config)
	if err == nil {
		err = trigger.CheckNotFuture("time", req.Slot, b.Clock()())
	}
	if err != nil {
		b.Log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	if pol, ok := b.Config.Policy(req.Policy); ok && RebootsInWaves(pol) {
		return b.handOff(ctx, pol, req, raw)
	}
	return b.Run(ctx, req)
}

// Run backs up the instances the request selects and returns the summary;
// the error is non-nil when any instance failed or was not reached. Every
// run that gets past input checks returns its summary, emits its metrics
// and logs its summary line before the deadline, also when a listing fails
// or hangs.
func (b *Backuper) Run(ctx context.Context, req trigger.Backup) (*runner.Summary, error) {
	run := b.Start(b.Config.Concurrency)
	now, start := b.Clock(), run.Began()
	pol, ok := b.Config.Policy(req.Policy)
	if !ok {
		return nil, fmt.Errorf("backup: unknown policy %q", req.Policy)
	}
	log := b.Log.With("policy", pol.Name, "slot", tags.FormatTime(req.Slot), "trigger", req.Trigger, "dryRun", req.DryRun)
	sum := &runner.Summary{Function: Function, Deployment: b.Config.Deployment, Policy: pol.Name,
		Trigger: req.Trigger, Slot: req.Slot, DryRun: req.DryRun}
	finish := func(selectionKnown bool) (*runner.Summary, error) {
		return sum, run.Finish(ctx, log, sum, func(s *runner.Summary) runner.Metrics { return report(s, selectionKnown && !b.Batch) })
	}
	// The listings run on the same work context as the workers: a hung or
	// endlessly retried listing is cut off half a margin before the
	// deadline, leaving time for the summary, metrics and log line (on the
	// full context Lambda would end the invocation with "Task timed out").
	lctx, cancel := run.WorkContext(ctx)
	defer cancel()

	targets, err := b.selectInstances(lctx, pol, req)
	if err != nil {
		log.Error("instance selection failed; nothing was backed up", "error", err.Error(), "code", awsclient.ErrorCode(err))
		sum.AddFailed(runner.Entry{ID: "DescribeInstances", Detail: err.Error() + "; nothing was backed up"})
		return finish(false)
	}
	sum.Selected = len(targets)
	for _, id := range req.InstanceIDs {
		if !slices.ContainsFunc(targets, func(t target) bool { return t.id == id }) {
			sum.AddSkipped(runner.Entry{ID: id, Detail: fmt.Sprintf("not selected by policy %q (needs tag %s and state running or stopped)", pol.Name, selectorText(pol.Selector))})
		}
	}
	if len(targets) == 0 {
		sum.Warn("zero instances selected by policy %q (tag %s, state running or stopped): check the tag on your instances", pol.Name, selectorText(pol.Selector))
		log.Warn("zero instances selected", "selector", selectorText(pol.Selector))
	}

	var existing map[string]types.Image
	if !req.DryRun && len(targets) > 0 {
		existing, err = b.slotImages(lctx, pol, req)
		if err != nil {
			// Without the listing every instance gets its CreateImage and a
			// duplicate name is resolved one by one, as before the listing
			// existed: slower on a retry, but nothing is skipped.
			log.Error("listing the slot's images failed; every instance gets a CreateImage", "error", err.Error(), "code", awsclient.ErrorCode(err))
			sum.AddFailed(runner.Entry{ID: "DescribeImages", Detail: err.Error() + "; images that exist were not recognised up front"})
		}
	}
	jobs := b.plan(log, pol, req, targets, existing, sum)
	notReached := runner.Each(ctx, run, jobs, func(ctx context.Context, j job) {
		if j.existing != nil {
			b.deprecate(ctx, log, pol, aws.ToString(j.existing.ImageId), createdAt(*j.existing, now), sum)
			return
		}
		b.backupOne(ctx, log, pol, req, j.t, start, sum)
	})
	for _, j := range notReached {
		if j.existing != nil {
			sum.Warn("%s: deprecation not set before the deadline; prune sets it once the image is available", aws.ToString(j.existing.ImageId))
			continue
		}
		sum.NotReached = append(sum.NotReached, j.t.id)
	}
	return finish(true)
}

// job is one unit of a run's work: a CreateImage for an instance, or only
// the deprecation time of an image an earlier delivery made (existing).
type job struct {
	t        target
	existing *types.Image
}

// plan settles the instances whose image of this slot exists (already
// done, or failed with the reason, without any EC2 call) and returns the
// work: first a CreateImage for every instance without an image, so a
// retried trigger spends its time on what is left, then the deprecation
// times an earlier delivery did not set.
func (b *Backuper) plan(log *slog.Logger, pol *config.Policy, req trigger.Backup, targets []target, existing map[string]types.Image, sum *runner.Summary) []job {
	var create, deprecate []job
	for _, t := range targets {
		name := images.Name(pol.Name, t.id, req.Slot)
		im, ok := existing[name]
		// A deregistered image stays listed for a short while, and other
		// states (disabled, error...) are not a backup either: only pending,
		// available and failed images settle the instance here. For the rest
		// the CreateImage is made; if the name is still held, the duplicate
		// path reports the holder.
		if !ok || !settles(im.State) {
			create = append(create, job{t: t})
			continue
		}
		entry := runner.Entry{ID: t.id, Name: name, ImageID: aws.ToString(im.ImageId),
			Detail: "reboot=" + awsclient.TagMap(im.Tags)[tags.Reboot]}
		if !b.settleExisting(log, pol, t.id, entry, im, sum) {
			continue
		}
		if pol.DeprecateAfter.D() > 0 && im.DeprecationTime == nil {
			deprecate = append(deprecate, job{t: t, existing: &im})
		}
	}
	return append(create, deprecate...)
}

// settles reports whether an image of the slot in this state decides the
// instance without a CreateImage: pending or available (done), failed
// (reported with the fix).
func settles(st types.ImageState) bool {
	return st == types.ImageStatePending || st == types.ImageStateAvailable || st == types.ImageStateFailed
}

// settleExisting records an image holding this trigger's name: already
// done if it is this backup, failed with the reason and the fix otherwise.
// It reports whether the image counts as done.
func (b *Backuper) settleExisting(log *slog.Logger, pol *config.Policy, instanceID string, entry runner.Entry, im types.Image, sum *runner.Summary) bool {
	if problem := b.notThisBackup(im, pol.Name, instanceID); problem != "" {
		entry.Detail = fmt.Sprintf("image name %s is taken by %s, which %s", entry.Name, entry.ImageID, problem)
		sum.AddFailed(entry)
		log.Error("image name taken", "instance", instanceID, "image", entry.ImageID, "name", entry.Name, "problem", problem)
		return false
	}
	sum.AddExisted(entry)
	log.Info("image already exists for this trigger", "instance", instanceID, "image", entry.ImageID, "name", entry.Name, "state", im.State)
	return true
}

// createdAt is the image's creation time (now if EC2's date is unreadable):
// deprecation age counts from the creation, not from a retry.
func createdAt(im types.Image, now func() time.Time) time.Time {
	created, err := images.Created(im)
	if err != nil {
		return now()
	}
	return created
}

// slotImages lists this deployment's images of the policy's slot, by name:
// one DescribeImages page per 1,000 images, instead of one CreateImage
// (answered InvalidAMIName.Duplicate, but paid for with a CreateImage
// token) and one DescribeImages per instance already done. The tags are
// the ones every backup image gets in its CreateImage call.
func (b *Backuper) slotImages(ctx context.Context, pol *config.Policy, req trigger.Backup) (map[string]types.Image, error) {
	out := map[string]types.Image{}
	for im, err := range images.Managed(ctx, b.EC2, images.Query{Deployment: b.Config.Deployment, Policy: pol.Name, Slot: req.Slot}) {
		if err != nil {
			return nil, fmt.Errorf("list images of policy %s for slot %s: %w", pol.Name, tags.FormatTime(req.Slot), err)
		}
		out[aws.ToString(im.Name)] = im
	}
	return out, nil
}

func selectorText(s config.Selector) string {
	if len(s.TagValues) == 0 {
		return s.TagKey + "=*"
	}
	return fmt.Sprintf("%s=%v", s.TagKey, s.TagValues)
}

// selectInstances lists the policy's instances with server-side filters; a
// manual subset is one more filter, so it can only narrow the selection.
func (b *Backuper) selectInstances(ctx context.Context, pol *config.Policy, req trigger.Backup) ([]target, error) {
	return b.selectIn(ctx, pol, req, []string{"running", "stopped"})
}

func (b *Backuper) selectIn(ctx context.Context, pol *config.Policy, req trigger.Backup, states []string) ([]target, error) {
	filters := []types.Filter{{Name: aws.String("instance-state-name"), Values: states}}
	if len(pol.Selector.TagValues) > 0 {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + pol.Selector.TagKey), Values: pol.Selector.TagValues})
	} else {
		filters = append(filters, types.Filter{Name: aws.String("tag-key"), Values: []string{pol.Selector.TagKey}})
	}
	if len(req.InstanceIDs) > 0 {
		filters = append(filters, types.Filter{Name: aws.String("instance-id"), Values: req.InstanceIDs})
	}
	pg := ec2.NewDescribeInstancesPaginator(b.EC2, &ec2.DescribeInstancesInput{Filters: filters, MaxResults: aws.Int32(1000)})
	var out []target
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("select instances of policy %s: %w", pol.Name, err)
		}
		for _, r := range page.Reservations {
			for _, in := range r.Instances {
				t := target{id: aws.ToString(in.InstanceId), tags: awsclient.TagMap(in.Tags)}
				switch v, ok := t.tags[tags.NoReboot]; {
				case !ok:
				case strings.EqualFold(strings.TrimSpace(v), "true"):
					t.noReboot = true
				default:
					// Only "true" (any case) opts out; say so rather than
					// silently rebooting an instance whose owner meant "yes".
					t.badNoReboot = v
				}
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// imageTags builds the tag set for image and snapshots: ours first (never
// dropped), then the policy's extra tags, then copied instance tags, up to
// EC2's 50. It returns the keys that did not fit.
func imageTags(deployment string, pol *config.Policy, req trigger.Backup, t target, reboot bool) ([]types.Tag, []string) {
	own := [][2]string{
		{tags.ManagedBy, deployment},
		{tags.Policy, pol.Name},
		{tags.InstanceID, t.id},
		{tags.Time, tags.FormatTime(req.Slot)},
		{tags.Reboot, strconv.FormatBool(reboot)},
		{tags.Trigger, req.Trigger},
	}
	set := map[string]bool{}
	var out []types.Tag
	var dropped []string
	add := func(k, v string, ours bool) {
		if set[k] {
			return
		}
		if !ours && len(out) >= tags.MaxTags {
			dropped = append(dropped, k)
			return
		}
		set[k] = true
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	for _, kv := range own {
		add(kv[0], kv[1], true)
	}
	extra := make([]string, 0, len(pol.ExtraTags))
	for k := range pol.ExtraTags {
		extra = append(extra, k)
	}
	sort.Strings(extra)
	for _, k := range extra {
		add(k, pol.ExtraTags[k], false)
	}
	for _, k := range pol.CopyTags {
		if v, ok := t.tags[k]; ok && !tags.IsReserved(k) {
			add(k, v, false)
		}
	}
	return out, dropped
}

func (b *Backuper) backupOne(ctx context.Context, log *slog.Logger, pol *config.Policy, req trigger.Backup, t target, runStart time.Time, sum *runner.Summary) {
	reboot := pol.RebootEnabled()
	if req.Reboot != nil {
		reboot = *req.Reboot
	}
	if t.badNoReboot != "" && reboot {
		log.Warn("opt-out tag ignored: only \"true\" (any case) opts out of the reboot", "instance", t.id, "tag", tags.NoReboot, "value", t.badNoReboot)
		sum.Warn("%s: %s=%q is not \"true\": the instance was rebooted for a consistent image", t.id, tags.NoReboot, t.badNoReboot)
	}
	if t.noReboot && reboot {
		reboot = false
		log.Warn("instance opted out of the reboot: its image is crash-consistent, not file-system-consistent",
			"instance", t.id, "tag", tags.NoReboot+"=true")
		sum.Warn("%s: %s=true, image taken without reboot (crash-consistent)", t.id, tags.NoReboot)
	}
	name := images.Name(pol.Name, t.id, req.Slot)
	tagList, dropped := imageTags(b.Config.Deployment, pol, req, t, reboot)
	if len(dropped) > 0 {
		sum.Warn("%s: %d tags did not fit EC2's limit of 50 and were not written: %v", t.id, len(dropped), dropped)
	}
	in := &ec2.CreateImageInput{
		InstanceId:  aws.String(t.id),
		Name:        aws.String(name),
		Description: aws.String(images.Description(b.Config.Deployment, pol.Name, t.id, req.Slot, reboot)),
		NoReboot:    aws.Bool(!reboot),
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeImage, Tags: tagList},
			{ResourceType: types.ResourceTypeSnapshot, Tags: tagList},
		},
	}
	entry := runner.Entry{ID: t.id, Name: name, Detail: "reboot=" + strconv.FormatBool(reboot)}
	if req.DryRun {
		in.DryRun = aws.Bool(true)
		_, err := b.EC2.CreateImage(ctx, in)
		if awsclient.DryRunOK(err) {
			entry.Detail += "; dry run: CreateImage permitted, nothing created"
			sum.AddDone(entry)
			return
		}
		entry.Detail = fmt.Sprintf("dry run: create image for %s: %v", t.id, err)
		sum.AddFailed(entry)
		return
	}
	var lost lostAnswer
	out, err := b.EC2.CreateImage(ctx, in, ec2.WithAPIOptions(lost.record))
	switch {
	case err == nil:
		entry.ImageID = aws.ToString(out.ImageId)
		sum.AddDone(entry)
		log.Info("image created", "instance", t.id, "image", entry.ImageID, "name", name, "reboot", reboot)
		b.deprecate(ctx, log, pol, entry.ImageID, b.Clock()(), sum)
	case awsclient.DuplicateName(err):
		// The name is deterministic and the slot's images were listed at
		// the start: a duplicate now is a race with another delivery, or
		// this call's own image when EC2's answer to an earlier attempt was
		// lost. It counts only if it is ours for this instance and not failed.
		im, lerr := b.findByName(ctx, name)
		if lerr != nil {
			entry.Detail = fmt.Sprintf("image name %s exists but cannot be looked up: %v", name, lerr)
			sum.AddFailed(entry)
			return
		}
		entry.ImageID = aws.ToString(im.ImageId)
		created := createdAt(im, b.Clock())
		if lost.maybe() && !created.Before(runStart.Add(-clockSkew)) {
			if problem := b.notThisBackup(im, pol.Name, t.id); problem == "" {
				entry.Detail += "; created by this run (EC2's answer to the first attempt was lost, the retry found the image)"
				sum.AddDone(entry)
				log.Info("image created; EC2's first answer was lost", "instance", t.id, "image", entry.ImageID, "name", name, "reboot", reboot)
				if im.DeprecationTime == nil {
					b.deprecate(ctx, log, pol, entry.ImageID, created, sum)
				}
				return
			}
		}
		if !b.settleExisting(log, pol, t.id, entry, im, sum) {
			return
		}
		if im.DeprecationTime == nil {
			// The earlier delivery may have died before setting it.
			b.deprecate(ctx, log, pol, entry.ImageID, created, sum)
		}
	default:
		entry.Detail = fmt.Errorf("create image for %s: %w", t.id, err).Error()
		sum.AddFailed(entry)
		log.Error("create image failed", "instance", t.id, "error", err.Error(), "code", awsclient.ErrorCode(err))
	}
}

// clockSkew is how far EC2's clock (an image's creation date) and the
// function's may disagree. The creation-time check keeps an earlier
// delivery's image "already done" when the slot listing failed and an
// attempt of this call failed ambiguously; an image a concurrent delivery
// made during this run while this call also lost an answer cannot be told
// apart and counts as created (both deliveries then report it).
const clockSkew = 5 * time.Second

// lostAnswer records whether an attempt of one call may have taken effect
// in EC2 although the caller never saw its answer: the SDK's retry of a
// CreateImage whose first answer was lost meets the image under its name.
type lostAnswer struct {
	mu      sync.Mutex
	applied bool
}

// record adds a middleware that sees every attempt (it runs after the
// SDK's retry middleware, inside its loop).
func (l *lostAnswer) record(st *middleware.Stack) error {
	return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("amibackup.LostAnswer",
		func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleFinalize(ctx, in)
			if err != nil && mayHaveApplied(ctx, err) {
				l.mu.Lock()
				l.applied = true
				l.mu.Unlock()
			}
			return out, md, err
		}), "Retry", middleware.After)
}

func (l *lostAnswer) maybe() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applied
}

// mayHaveApplied reports whether a failed attempt may still have been
// carried out by EC2: a 5xx, no answer at all (connection reset, the
// attempt timeout) or an answer lost while it was read (a 2xx whose body
// broke off) may come after the work; a 4xx answer, RequestLimitExceeded
// included (EC2 throttles before acting, though it answers 503), never
// does. Whether the caller gave up is read from the call's own context:
// the attempt timeout also matches context.DeadlineExceeded, and the SDK
// retries it.
func mayHaveApplied(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		// The caller gave up; there is no retry that could meet the image.
		return false
	}
	if awsclient.Throttled(err) {
		return false
	}
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		code := re.HTTPStatusCode()
		return code >= 500 || code < 400
	}
	return true
}

// deprecate sets the image's deprecation time. EC2 may refuse while the
// image is pending; prune sets it later on available images that lack it.
func (b *Backuper) deprecate(ctx context.Context, log *slog.Logger, pol *config.Policy, imageID string, created time.Time, sum *runner.Summary) {
	age := pol.DeprecateAfter.D()
	if age <= 0 {
		return
	}
	at := images.DeprecationTime(created, age)
	if _, err := b.EC2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(imageID), DeprecateAt: aws.Time(at)}); err != nil {
		log.Warn("deprecation not set yet; prune will set it once the image is available", "image", imageID, "error", err.Error())
		sum.Warn("%s: deprecation not set (%s); prune sets it later", imageID, awsclient.ErrorCode(err))
	}
}

func (b *Backuper) findByName(ctx context.Context, name string) (types.Image, error) {
	im, found, err := images.FindByName(ctx, b.EC2, name)
	if err != nil {
		return types.Image{}, fmt.Errorf("describe image %s: %w", name, err)
	}
	if !found {
		return types.Image{}, fmt.Errorf("no image named %s owned by this account", name)
	}
	return im, nil
}

// notThisBackup says why an image holding this trigger's name is not the
// backup it should be ("" when it is).
func (b *Backuper) notThisBackup(im types.Image, policy, instanceID string) string {
	t := awsclient.TagMap(im.Tags)
	switch {
	case t[tags.ManagedBy] != b.Config.Deployment:
		return fmt.Sprintf("is not managed by deployment %q (%s=%q): another deployment or a person uses this policy name in this account and Region; rename one of the policies", b.Config.Deployment, tags.ManagedBy, t[tags.ManagedBy])
	case t[tags.Policy] != policy || t[tags.InstanceID] != instanceID:
		return fmt.Sprintf("carries %s=%q and %s=%q", tags.Policy, t[tags.Policy], tags.InstanceID, t[tags.InstanceID])
	case im.State == types.ImageStateFailed:
		return "failed: prune deregisters failed images; the next trigger takes a new backup (or deregister it and re-run this one)"
	case im.State != types.ImageStatePending && im.State != types.ImageStateAvailable:
		return fmt.Sprintf("is %s, not a usable backup: enable or deregister it, then re-run this trigger", im.State)
	}
	return ""
}

// report derives the run's metrics from its summary. InstancesSelected
// feeds the zero-selected alarm (dimension Policy, Minimum <= 0 in an
// hour), which is about the scheduled selection: it is reported only for
// scheduled runs whose selection succeeded. A manual run that names an
// untagged instance, or a failed DescribeInstances, is not "zero instances
// carry the tag"; both are reported (InstancesSkipped, ImagesFailed and
// the function's error).
func report(sum *runner.Summary, selectionKnown bool) runner.Metrics {
	var values []emf.Metric
	if selectionKnown && sum.Trigger == tags.TriggerSchedule {
		values = append(values, emf.CountOf(metrics.InstancesSelected, sum.Selected))
	}
	return runner.Metrics{Policies: []string{sum.Policy}, Values: append(values,
		emf.CountOf(metrics.ImagesCreated, len(sum.Done)),
		emf.CountOf(metrics.ImagesExisting, len(sum.Existed)),
		emf.CountOf(metrics.ImagesFailed, len(sum.Failed)),
		emf.CountOf(metrics.InstancesSkipped, len(sum.Skipped)),
		emf.CountOf(metrics.InstancesNotReached, len(sum.NotReached)),
		emf.Metric{Name: metrics.BackupDuration, Unit: emf.Milliseconds, Value: float64(sum.DurationMS)},
	)}
}
