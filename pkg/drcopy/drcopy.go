// Package drcopy copies backups shared with this (recovery) account into
// it, re-encrypted with the recovery account's own customer-managed key:
// each source image once, under a deterministic name, with at most
// MaxInFlight copies pending so EC2's concurrent-copy limit (20 per
// destination Region) is never hit; what does not fit waits for the next run.
// A copy that failed is deregistered (only if it carries this deployment's
// tags) and the source copied again.
package drcopy

import (
	"context"
	"errors"
	"fmt"
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

// EC2 is the part of the EC2 API copying needs; *ec2.Client satisfies it.
type EC2 interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	CopyImage(context.Context, *ec2.CopyImageInput, ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
	DeregisterImage(context.Context, *ec2.DeregisterImageInput, ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error)
}

// Function is the name used in summaries and metrics.
const Function = "copy"

// Copier copies shared images into this account and Region.
type Copier struct {
	runner.Job
	EC2    EC2
	Config *config.Config
	// Region is this (destination) Region; SourceRegion defaults to it.
	Region string
}

// Handle is the function's handler without the Lambda plumbing: it parses
// the raw trigger (rejecting bad input before any EC2 call) and runs it.
func (c *Copier) Handle(ctx context.Context, raw []byte) (*runner.Summary, error) {
	at, err := trigger.ParseCopy(raw)
	if err == nil {
		// at is "now" for the recovery retention that decides what is worth
		// copying: a future time would skip every source as already expired.
		err = trigger.CheckNotFuture("time", at, c.Clock()())
	}
	if err != nil {
		c.Log.Error("rejected input; nothing was copied", "error", err.Error())
		return nil, err
	}
	return c.Run(ctx, at)
}

// Run copies what is shared and not yet copied.
func (c *Copier) Run(ctx context.Context, at time.Time) (*runner.Summary, error) {
	run := c.Start(c.Config.Concurrency)
	r := c.Config.Recovery
	if r == nil {
		return nil, errors.New("copy: recovery is not configured (config field \"recovery\")")
	}
	srcRegion := r.SourceRegion
	if srcRegion == "" {
		srcRegion = c.Region
	}
	sum := &runner.Summary{Function: Function, Deployment: c.Config.Deployment, Policy: config.CopyPolicy, Slot: at, Trigger: tags.TriggerSchedule}
	// The listings run on the work context and the copies through
	// runner.Each: a hung or endlessly retried call is cut off half a
	// margin before the deadline, and the run still ends with its summary
	// and metrics.
	lctx, cancel := run.WorkContext(ctx)
	sources, copies, inFlight, err := c.list(lctx, srcRegion)
	cancel()
	if err != nil {
		c.Log.Error("listing failed; nothing was copied", "error", err.Error(), "code", awsclient.ErrorCode(err))
		sum.AddFailed(runner.Entry{ID: "listing", Detail: err.Error()})
		return sum, run.Finish(ctx, c.Log, sum, report)
	}
	sum.Selected = len(sources)
	expired, err := c.expired(sources, copies, at)
	if err != nil {
		return nil, err
	}
	pending := &slots{used: inFlight, max: r.MaxInFlight}
	left := runner.Each(ctx, run, sources, func(ctx context.Context, im types.Image) {
		c.copyOne(ctx, im, srcRegion, copies[aws.ToString(im.ImageId)], expired, pending, sum)
	})
	// Out of time: the next run copies the rest.
	runner.AddNotReached(sum, left, images.ID)
	return sum, run.Finish(ctx, c.Log, sum, report)
}

// report derives the run's metrics from its summary.
func report(sum *runner.Summary) runner.Metrics {
	return runner.Metrics{Policies: []string{config.CopyPolicy}, Values: []emf.Metric{
		emf.CountOf(metrics.CopiesStarted, len(sum.Done)),
		emf.CountOf(metrics.CopiesWaiting, len(sum.Skipped)+len(sum.NotReached)),
		emf.CountOf(metrics.CopyFailures, len(sum.Failed))}}
}

// slots counts this deployment's copies pending in EC2, so that the
// concurrent workers of a run never start more than MaxInFlight: a worker
// takes a slot before CopyImage and gives it back when no copy started.
type slots struct {
	mu        sync.Mutex
	used, max int
}

// take reserves a slot; when none is free it returns how many are used.
func (s *slots) take() (used int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used >= s.max {
		return s.used, false
	}
	s.used++
	return s.used, true
}

// release gives back a slot whose copy did not start.
func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used--
}

// fill marks every slot used: EC2 says its limit is reached.
func (s *slots) fill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used = max(s.used, s.max)
}

// list returns the source images to consider, this deployment's copies
// by source image and how many copies are pending.
func (c *Copier) list(ctx context.Context, srcRegion string) ([]types.Image, map[string]ownCopy, int, error) {
	r := c.Config.Recovery
	copies, inFlight, err := c.ownCopies(ctx)
	if err != nil {
		return nil, nil, 0, err
	}
	var sources []types.Image
	// EC2 hides deprecated AMIs of other owners unless asked: a source
	// deprecated before its turn in the copy backlog would be skipped silently.
	in := &ec2.DescribeImagesInput{Owners: r.SourceAccountIDs, MaxResults: aws.Int32(images.PageSize),
		IncludeDeprecated: aws.Bool(true),
		Filters:           []types.Filter{{Name: aws.String("state"), Values: []string{"available"}}, {Name: aws.String("name"), Values: []string{"amibackup-*"}}}}
	for im, err := range images.List(ctx, c.EC2, in, func(o *ec2.Options) { o.Region = srcRegion }) {
		if err != nil {
			return nil, nil, 0, fmt.Errorf("list images shared by %v in %s: %w", r.SourceAccountIDs, srcRegion, err)
		}
		// The source's tags are invisible to the accounts an image is
		// shared with: it is recognised by amibackup's name (which also
		// carries the instance and the slot) and by its description, which
		// names the deployment (another deployment in a source account may
		// share with this account too).
		if _, ok := images.ParseName(aws.ToString(im.Name)); ok && slices.Contains(r.SourceAccountIDs, aws.ToString(im.OwnerId)) &&
			images.DescribesDeployment(aws.ToString(im.Description), r.SourceDeployment) {
			sources = append(sources, im)
		}
	}
	return sources, copies, inFlight, nil
}

// copyOne copies one source unless it is copied, expired or over the
// in-flight limit; cp is its existing copy, if any.
func (c *Copier) copyOne(ctx context.Context, im types.Image, srcRegion string, cp ownCopy, expired map[string]string, pending *slots, sum *runner.Summary) {
	id, owner := aws.ToString(im.ImageId), aws.ToString(im.OwnerId)
	e := runner.Entry{ID: id, Name: images.CopyName(c.Config.Deployment, owner, id)}
	haveCopy := cp.id != ""
	if haveCopy && cp.state != types.ImageStateFailed {
		e.ImageID = cp.id
		sum.AddExisted(e)
		return
	}
	if why, ok := expired[id]; ok {
		// The recovery prune would delete this copy at once, and the
		// next copy run would copy it again: never start that loop.
		e.Detail = "not copied: recovery.retention would not keep it (" + why + ")"
		sum.AddSkipped(e)
		return
	}
	if used, ok := pending.take(); !ok {
		e.Detail = fmt.Sprintf("%d copies in flight (limit %d): copied by a later run", used, pending.max)
		sum.AddSkipped(e)
		return
	}
	if haveCopy {
		// The failed copy holds the deterministic name: without removing
		// it the source would never be copied again.
		if err := c.deregister(ctx, cp.id); err != nil {
			pending.release()
			e.Detail = fmt.Errorf("remove failed copy %s of %s: %w", cp.id, id, err).Error()
			sum.AddFailed(e)
			return
		}
		c.Log.Warn("failed copy deregistered; copying again", "source", id, "failedCopy", cp.id)
	}
	out, err := c.EC2.CopyImage(ctx, c.copyInput(im, srcRegion))
	switch {
	case err == nil:
		e.ImageID = aws.ToString(out.ImageId)
		sum.AddDone(e)
		c.Log.Info("copy started", "source", id, "copy", e.ImageID)
	case awsclient.DuplicateName(err):
		pending.release()
		c.duplicate(ctx, &e, sum)
	case awsclient.LimitExceeded(err):
		// Someone else's copies count too: wait for the next run.
		pending.fill()
		e.Detail = "EC2's concurrent copy limit reached: copied by a later run"
		sum.AddSkipped(e)
	default:
		pending.release()
		e.Detail = fmt.Errorf("copy image %s: %w", id, err).Error()
		sum.AddFailed(e)
	}
}

// ownCopy is one of this deployment's copies.
type ownCopy struct {
	id, instance string
	state        types.ImageState
	slot         time.Time
}

// expired returns the uncopied sources (by image ID, with the reason) that
// recovery.retention would delete as soon as they were copied: retention is
// evaluated over the existing copies plus every uncopied source, exactly as
// the recovery prune will see them once copied.
func (c *Copier) expired(sources []types.Image, copies map[string]ownCopy, at time.Time) (map[string]string, error) {
	rules, err := retention.RecoveryRules(c.Config.Recovery)
	if err != nil {
		return nil, fmt.Errorf("copy: recovery.retention: %w", err)
	}
	var imgs []retention.Image
	for _, cp := range copies {
		if cp.state != types.ImageStateFailed && tags.ValidInstanceID(cp.instance) {
			imgs = append(imgs, retention.Image{ID: cp.id, InstanceID: cp.instance, Policy: config.CopyPolicy, Time: cp.slot, State: retention.State(cp.state)})
		}
	}
	uncopied := map[string]bool{}
	for _, im := range sources {
		id := aws.ToString(im.ImageId)
		if cp, ok := copies[id]; ok && cp.state != types.ImageStateFailed {
			continue
		}
		name, _ := images.ParseName(aws.ToString(im.Name))
		if name.Slot.IsZero() {
			continue // no slot to reason about: copy it, prune keeps what it cannot date
		}
		imgs = append(imgs, retention.Image{ID: id, InstanceID: name.InstanceID, Policy: config.CopyPolicy, Time: name.Slot, State: retention.Available})
		uncopied[id] = true
	}
	out := map[string]string{}
	for _, d := range retention.Evaluate(imgs, rules, at).Delete() {
		if uncopied[d.Image.ID] {
			out[d.Image.ID] = strings.Join(d.Reasons, "; ")
		}
	}
	return out, nil
}

// ownCopies maps source image IDs to this deployment's copies (failed ones
// included, so they can be replaced) and counts the copies still pending.
func (c *Copier) ownCopies(ctx context.Context) (map[string]ownCopy, int, error) {
	copies := map[string]ownCopy{}
	inFlight := 0
	// Managed checks the tags again client-side: only an image carrying
	// our tags may ever be deregistered as a failed copy.
	for im, err := range images.Managed(ctx, c.EC2, images.Query{Deployment: c.Config.Deployment, Policy: config.CopyPolicy}) {
		if err != nil {
			return nil, 0, fmt.Errorf("list existing copies: %w", err)
		}
		t := awsclient.TagMap(im.Tags)
		if src := t[tags.SourceImage]; src != "" {
			slot, _ := tags.ParseTime(t[tags.Time])
			copies[src] = ownCopy{id: aws.ToString(im.ImageId), state: im.State, instance: t[tags.InstanceID], slot: slot}
		}
		if im.State == types.ImageStatePending {
			inFlight++
		}
	}
	return copies, inFlight, nil
}

func (c *Copier) isOurs(im types.Image) bool {
	t := awsclient.TagMap(im.Tags)
	return t[tags.ManagedBy] == c.Config.Deployment && t[tags.Policy] == config.CopyPolicy
}

// deregister removes one of our failed copies with its snapshots (if any).
func (c *Copier) deregister(ctx context.Context, imageID string) error {
	_, err := c.EC2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(imageID), DeleteAssociatedSnapshots: aws.Bool(true)})
	if err != nil && !awsclient.ImageGone(err) {
		return err
	}
	return nil
}

// duplicate decides an InvalidAMIName.Duplicate answer: the name is taken
// by an image the listing did not show (another run's copy, or an image
// that is not ours). Only a live copy of this deployment counts as done.
func (c *Copier) duplicate(ctx context.Context, e *runner.Entry, sum *runner.Summary) {
	im, found, err := images.FindByName(ctx, c.EC2, e.Name)
	if err != nil {
		e.Detail = fmt.Errorf("copy name %s is taken; look up the image holding it: %w", e.Name, err).Error()
		sum.AddFailed(*e)
		return
	}
	if !found {
		e.Detail = "copy name taken by an image that is gone now: copied by a later run"
		sum.AddSkipped(*e)
		return
	}
	holder := aws.ToString(im.ImageId)
	switch {
	case !c.isOurs(im):
		e.Detail = fmt.Sprintf("copy name %s is taken by %s, which does not carry %s=%s and %s=%s: deregister or rename it",
			e.Name, holder, tags.ManagedBy, c.Config.Deployment, tags.Policy, config.CopyPolicy)
		sum.AddFailed(*e)
	case im.State == types.ImageStateFailed:
		// Ours but missing from the listing (no source-image tag): remove
		// it here, or no later run would ever replace it.
		e.ImageID = holder
		if err := c.deregister(ctx, holder); err != nil {
			e.Detail = fmt.Errorf("remove failed copy %s holding the name %s: %w", holder, e.Name, err).Error()
			sum.AddFailed(*e)
			return
		}
		e.Detail = "copy name was held by a failed copy, now deregistered: copied by the next run"
		sum.AddSkipped(*e)
	default:
		e.ImageID = holder
		e.Detail = "copy exists"
		sum.AddExisted(*e)
	}
}

func (c *Copier) copyInput(im types.Image, srcRegion string) *ec2.CopyImageInput {
	id, owner := aws.ToString(im.ImageId), aws.ToString(im.OwnerId)
	name, _ := images.ParseName(aws.ToString(im.Name))
	tl := []types.Tag{
		{Key: aws.String(tags.ManagedBy), Value: aws.String(c.Config.Deployment)},
		{Key: aws.String(tags.Policy), Value: aws.String(config.CopyPolicy)},
		{Key: aws.String(tags.InstanceID), Value: aws.String(name.InstanceID)},
		{Key: aws.String(tags.Time), Value: aws.String(tags.FormatTime(name.Slot))},
		{Key: aws.String(tags.SourceAccount), Value: aws.String(owner)},
		{Key: aws.String(tags.SourceImage), Value: aws.String(id)},
		{Key: aws.String(tags.SourceRegion), Value: aws.String(srcRegion)},
	}
	in := &ec2.CopyImageInput{
		SourceImageId: aws.String(id),
		SourceRegion:  aws.String(srcRegion),
		Name:          aws.String(images.CopyName(c.Config.Deployment, owner, id)),
		Description:   aws.String(fmt.Sprintf("amibackup copy of %s from account %s, %s", id, owner, srcRegion)),
		Encrypted:     aws.Bool(true),
		// No ClientToken: the SDK generates one per call, so its own retries
		// stay idempotent, while a deterministic token would make EC2 answer
		// a copy of a source whose failed copy was removed with the removed
		// image's ID. The deterministic name prevents duplicates instead.
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeImage, Tags: tl},
			{ResourceType: types.ResourceTypeSnapshot, Tags: tl},
		},
	}
	if k := c.Config.Recovery.KMSKeyARN; k != "" {
		in.KmsKeyId = aws.String(k)
	}
	return in
}
