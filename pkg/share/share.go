// Package share shares this deployment's available backups with other
// accounts (launch permission for accounts, organizations and OUs; create-
// volume permission on the snapshots for accounts that copy them). Images
// whose snapshots use the AWS-managed EBS key cannot be shared: they are
// tagged amibackup:share=error with the fix, and every run that finds such
// an image fails (ShareErrors) until it is shared or gone: the tag records
// the problem for the console, it never silences it.
package share

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// EC2 is the part of the EC2 API sharing needs; *ec2.Client satisfies it.
type EC2 interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	ModifyImageAttribute(context.Context, *ec2.ModifyImageAttributeInput, ...func(*ec2.Options)) (*ec2.ModifyImageAttributeOutput, error)
	ModifySnapshotAttribute(context.Context, *ec2.ModifySnapshotAttributeInput, ...func(*ec2.Options)) (*ec2.ModifySnapshotAttributeOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
}

// KMS tells the AWS-managed key from customer keys; *kms.Client satisfies it.
type KMS interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

// Function is the name used in summaries and metrics.
const Function = "share"

// Fix is the remedy named in every error about the AWS-managed key.
const Fix = "snapshots encrypted with the AWS-managed key (alias/aws/ebs) cannot be shared; " +
	"fix: encrypt the instance's volumes with a customer-managed KMS key whose key policy allows the target accounts " +
	"(or copy this image with aws ec2 copy-image --encrypted --kms-key-id <customer key>), then the next backups are shared"

// Request is one share run: the images of an "EC2 AMI State Change"
// event, or a sweep of all this deployment's unshared available images.
type Request struct {
	ImageIDs []string
	Sweep    bool
	Time     time.Time
}

// Sharer shares images.
type Sharer struct {
	runner.Job
	EC2    EC2
	KMS    KMS
	Config *config.Config

	mu   sync.Mutex
	keys map[string]bool // key ARN -> AWS-managed
}

// Handle is the function's handler without the Lambda plumbing: it parses
// the raw trigger (rejecting bad input before any EC2 call) and runs it.
func (s *Sharer) Handle(ctx context.Context, raw []byte) (*runner.Summary, error) {
	req, err := trigger.ParseShare(raw)
	if err == nil && !req.Time.IsZero() {
		err = trigger.CheckNotFuture("time", req.Time, s.Clock()())
	}
	if err != nil {
		s.Log.Error("rejected input; nothing was changed", "error", err.Error())
		return nil, err
	}
	if req.Ignored != "" {
		s.Log.Info("nothing to do", "reason", req.Ignored)
		return &runner.Summary{Function: Function, Deployment: s.Config.Deployment}, nil
	}
	return s.Run(ctx, Request{ImageIDs: req.ImageIDs, Sweep: req.Sweep, Time: req.Time})
}

// Run shares the request's images.
func (s *Sharer) Run(ctx context.Context, req Request) (*runner.Summary, error) {
	run := s.Start(s.Config.Concurrency)
	sh := s.Config.Sharing
	if sh == nil {
		return nil, errors.New("share: sharing is not configured (config field \"sharing\")")
	}
	sum := &runner.Summary{Function: Function, Deployment: s.Config.Deployment, Slot: req.Time, Trigger: "event"}
	if req.Sweep {
		sum.Trigger = "sweep"
	}
	// The listing runs on the work context and the images through
	// runner.Each: a hung or slow EC2 is cut off before the deadline and
	// the run still ends with its summary and metrics.
	lctx, cancel := run.WorkContext(ctx)
	imgs, err := s.candidates(lctx, req, sum)
	cancel()
	if err != nil {
		s.Log.Error("listing failed; nothing was shared", "error", err.Error(), "code", awsclient.ErrorCode(err))
		sum.AddFailed(runner.Entry{ID: "listing", Detail: err.Error()})
	}
	sum.Selected = len(imgs)
	left := runner.Each(ctx, run, imgs, func(ctx context.Context, im types.Image) {
		s.shareOne(ctx, im, sh, sum)
	})
	runner.AddNotReached(sum, left, images.ID)
	return sum, run.Finish(ctx, s.Log, sum, report)
}

// report derives the run's metrics from its summary, under Policy=all
// (sharing is not per policy).
func report(sum *runner.Summary) runner.Metrics {
	return runner.Metrics{Policies: []string{metrics.AllPolicies}, Values: []emf.Metric{
		emf.CountOf(metrics.ImagesShared, len(sum.Done)),
		emf.CountOf(metrics.ShareErrors, len(sum.Failed))}}
}

// candidates returns the available images of this deployment to share.
func (s *Sharer) candidates(ctx context.Context, req Request, sum *runner.Summary) ([]types.Image, error) {
	listing := images.Managed(ctx, s.EC2, images.Query{Deployment: s.Config.Deployment, States: []string{string(types.ImageStateAvailable)}})
	if !req.Sweep {
		// By ID without filters: filters would hide why an image is skipped.
		listing = images.List(ctx, s.EC2, &ec2.DescribeImagesInput{Owners: []string{"self"}, ImageIds: req.ImageIDs})
	}
	var out []types.Image
	for im, err := range listing {
		if err != nil {
			if awsclient.ImageGone(err) {
				for _, id := range req.ImageIDs {
					sum.AddSkipped(runner.Entry{ID: id, Detail: "image no longer exists"})
				}
				return nil, nil
			}
			return nil, fmt.Errorf("list images to share: %w", err)
		}
		t := awsclient.TagMap(im.Tags)
		id := aws.ToString(im.ImageId)
		switch {
		case t[tags.ManagedBy] != s.Config.Deployment:
			sum.AddSkipped(runner.Entry{ID: id, Detail: "not created by this deployment: not shared"})
		case im.State != types.ImageStateAvailable:
			sum.AddSkipped(runner.Entry{ID: id, Detail: "image is " + string(im.State) + ": shared once available"})
		case t[tags.Share] == tags.ShareDone:
			sum.AddExisted(runner.Entry{ID: id, ImageID: id, Detail: "already shared"})
		default:
			// Images tagged share=error are checked again on every run:
			// each run fails while one cannot be shared (the README
			// promises it, and the alarm must not go quiet after the
			// first hour), and one whose problem was fixed (a key that
			// KMS could not describe, a permission) is shared now.
			out = append(out, im)
		}
	}
	return out, nil
}

func (s *Sharer) shareOne(ctx context.Context, im types.Image, sh *config.Sharing, sum *runner.Summary) {
	id := aws.ToString(im.ImageId)
	e := runner.Entry{ID: id, ImageID: id, Name: aws.ToString(im.Name)}
	snaps := images.SnapshotIDs(im)
	t := awsclient.TagMap(im.Tags)
	if bad, err := s.awsManagedSnapshot(ctx, snaps); err != nil {
		e.Detail = err.Error()
		sum.AddFailed(e)
		return
	} else if bad != "" {
		msg := fmt.Sprintf("image %s not shared: snapshot %s: %s", id, bad, Fix)
		s.Log.Error("image cannot be shared", "image", id, "snapshot", bad, "fix", Fix)
		why := "snapshot " + bad + " uses the AWS-managed key; re-encrypt volumes with a customer-managed key"
		if t[tags.Share] != tags.ShareError || t[tags.ShareMessage] != why {
			// Tagged once; later runs report it again without re-tagging.
			s.tag(ctx, id, tags.ShareError, why)
		}
		e.Detail = msg
		sum.AddFailed(e)
		return
	}
	// Snapshots first: a launch permission without them would let the
	// target account see an image it cannot copy.
	if len(sh.AccountIDs) > 0 {
		var perms []types.CreateVolumePermission
		for _, a := range sh.AccountIDs {
			perms = append(perms, types.CreateVolumePermission{UserId: aws.String(a)})
		}
		for _, sid := range snaps {
			if _, err := s.EC2.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: aws.String(sid),
				Attribute: types.SnapshotAttributeNameCreateVolumePermission, CreateVolumePermission: &types.CreateVolumePermissionModifications{Add: perms}}); err != nil {
				e.Detail = fmt.Errorf("share snapshot %s of %s: %w", sid, id, err).Error()
				sum.AddFailed(e)
				return
			}
		}
	}
	var lp []types.LaunchPermission
	for _, a := range sh.AccountIDs {
		lp = append(lp, types.LaunchPermission{UserId: aws.String(a)})
	}
	for _, o := range sh.OrganizationARNs {
		lp = append(lp, types.LaunchPermission{OrganizationArn: aws.String(o)})
	}
	for _, o := range sh.OrganizationalUnitARNs {
		lp = append(lp, types.LaunchPermission{OrganizationalUnitArn: aws.String(o)})
	}
	if _, err := s.EC2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(id),
		LaunchPermission: &types.LaunchPermissionModifications{Add: lp}}); err != nil {
		e.Detail = fmt.Errorf("share image %s: %w", id, err).Error()
		sum.AddFailed(e)
		return
	}
	s.tag(ctx, id, tags.ShareDone, t[tags.ShareMessage])
	e.Detail = fmt.Sprintf("shared with %d accounts, %d organizations/OUs", len(sh.AccountIDs), len(sh.OrganizationARNs)+len(sh.OrganizationalUnitARNs))
	sum.AddDone(e)
	s.Log.Info("image shared", "image", id)
}

// tag records the share state. For done, msg is the image's current
// share-error message: a non-empty one is cleared (set to ""), so a fixed
// image does not keep showing an old error in the console.
func (s *Sharer) tag(ctx context.Context, id, state, msg string) {
	t := []types.Tag{{Key: aws.String(tags.Share), Value: aws.String(state)}}
	switch {
	case state == tags.ShareDone && msg != "":
		t = append(t, types.Tag{Key: aws.String(tags.ShareMessage), Value: aws.String("")})
	case state != tags.ShareDone && msg != "":
		t = append(t, types.Tag{Key: aws.String(tags.ShareMessage), Value: aws.String(msg)})
	}
	if _, err := s.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: t}); err != nil {
		s.Log.Warn("could not record the share state; the next sweep tries again", "image", id, "error", err.Error())
	}
}

// awsManagedSnapshot returns the first snapshot encrypted with the
// AWS-managed key, asking KMS once per key.
func (s *Sharer) awsManagedSnapshot(ctx context.Context, snaps []string) (string, error) {
	if len(snaps) == 0 {
		return "", nil
	}
	out, err := s.EC2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: snaps})
	if err != nil {
		return "", fmt.Errorf("check snapshot encryption: %w", err)
	}
	for _, sn := range out.Snapshots {
		if !aws.ToBool(sn.Encrypted) {
			continue
		}
		key := aws.ToString(sn.KmsKeyId)
		awsManaged, err := s.isAWSManaged(ctx, key)
		if err != nil {
			return "", err
		}
		if awsManaged {
			return aws.ToString(sn.SnapshotId), nil
		}
	}
	return "", nil
}

func (s *Sharer) isAWSManaged(ctx context.Context, key string) (bool, error) {
	s.mu.Lock()
	v, ok := s.keys[key]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	out, err := s.KMS.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(key)})
	if err != nil {
		return false, fmt.Errorf("describe KMS key %s (the share role needs kms:DescribeKey): %w", key, err)
	}
	v = out.KeyMetadata.KeyManager == kmstypes.KeyManagerTypeAws
	s.mu.Lock()
	if s.keys == nil {
		s.keys = map[string]bool{}
	}
	s.keys[key] = v
	s.mu.Unlock()
	return v, nil
}
