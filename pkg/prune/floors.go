package prune

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/runner"
)

// reportVerification lists the images whose last restore verification
// failed. The verdict stays retention's: a failed test may be the test's
// fault, and deleting an image because of it could remove the last backup
// that does restore.
func reportVerification(plan []*candidate, sum *Summary) {
	for _, c := range plan {
		if !c.verifyFailed {
			continue
		}
		verdict := "deleted by retention"
		if c.entry.Keep {
			verdict = "kept"
		}
		why := c.verifyError
		if why == "" {
			why = "no reason recorded"
		}
		sum.VerificationFailed = append(sum.VerificationFailed, runner.Entry{ID: c.entry.ImageID, ImageID: c.entry.ImageID, Name: c.entry.Name,
			Detail: fmt.Sprintf("restore verification failed: %s (%s; a failed verification alone deletes nothing)", why, verdict)})
	}
}

// Image reference check. EC2's DescribeImageReferences (EC2 API reference;
// user guide "Identify your resources referencing specified AMIs") takes at
// most 10 image IDs per call, so prune asks in batches of 10 for the images
// the plan would delete: about 0.1 extra calls per deleted image, in the
// non-mutating bucket (100, refill 20/s) and never more than the deletions
// themselves (DeregisterImage refills at 5/s).
const maxReferenceIDs = 10

// referenceTypes are what keeps an image: an instance launched from it that
// still exists and is not going away (pending, running, stopping, stopped: a
// stopped instance can be started and replaced from the same image; a
// terminated or shutting-down one needs nothing), a launch template (EC2's
// default depth: the 10 most recent versions) and an SSM parameter. Image
// Builder recipes are not checked: amibackup's images are backups, not
// build inputs, and the check would need imagebuilder permissions.
var referenceTypes = []types.ResourceTypeRequest{
	{ResourceType: types.ImageReferenceResourceTypeEc2Instance, ResourceTypeOptions: []types.ResourceTypeOption{
		{OptionName: types.ImageReferenceOptionNameStateName, OptionValues: []string{"pending", "running", "stopping", "stopped"}}}},
	{ResourceType: types.ImageReferenceResourceTypeEc2LaunchTemplate},
	{ResourceType: types.ImageReferenceResourceTypeSsmParameter},
}

// maxReferencesNamed is how many references an image's reason names.
const maxReferencesNamed = 3

// keepReferenced asks which images the plan would delete are still
// referenced and keeps those, with the references as the reason.
//
// Failure policy: fail closed. If any check fails (after the SDK's
// retries) or does not finish before the deadline, the references of the
// remaining images are unknown; prune then deletes nothing in this run,
// marks every image it would have deleted as kept with the reason, and the
// run fails (PruneFailures alarm) with an error naming the fix. Deleting
// only the images whose batch succeeded would be possible, but a permission
// or availability error fails every batch alike, and a transient one is
// over by the next run: keeping one more day of backups is cheap, deleting
// the image an Auto Scaling group launches from is not.
func (p *Pruner) keepReferenced(ctx context.Context, run *runner.Run, log *slog.Logger, plan []*candidate, sum *Summary) error {
	var ids []string
	for _, c := range plan {
		if !c.entry.Keep {
			ids = append(ids, c.entry.ImageID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	// Each bounds the calls by the run's deadline; cancel stops starting
	// new checks once one has failed.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		refs  = map[string][]types.ImageReference{}
		first error
	)
	left := runner.Each(wctx, run, slices.Collect(slices.Chunk(ids, maxReferenceIDs)), func(ctx context.Context, batch []string) {
		got, err := p.references(ctx, batch)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if first == nil {
				first = err
				cancel() // the answer is "delete nothing" now: start no more checks
			}
			return
		}
		for _, r := range got {
			id := *r.ImageId
			refs[id] = append(refs[id], r)
		}
	})
	if first == nil && len(left) > 0 {
		n := 0
		for _, b := range left {
			n += len(b)
		}
		first = fmt.Errorf("%d of %d images not checked before the deadline: %w", n, len(ids), context.DeadlineExceeded)
	}
	for _, c := range plan {
		if c.entry.Keep {
			continue
		}
		rs := refs[c.entry.ImageID]
		switch {
		case len(rs) > 0:
			reason := referencedReason(rs)
			c.entry.Notes = append(c.entry.Notes, "retention alone would delete it: "+strings.Join(c.entry.Reasons, "; "))
			c.entry.Keep, c.entry.Reasons = true, []string{reason}
			sum.KeptByReference = append(sum.KeptByReference, runner.Entry{ID: c.entry.ImageID, ImageID: c.entry.ImageID, Name: c.entry.Name, Detail: reason})
			log.Info("image kept: still referenced", "image", c.entry.ImageID, "instance", c.entry.InstanceID, "reason", reason)
		case first != nil:
			c.entry.Notes = append(c.entry.Notes, "retention alone would delete it: "+strings.Join(c.entry.Reasons, "; "))
			c.entry.Keep, c.entry.Reasons = true, []string{"not deleted: its references could not be checked (nothing is deleted while they are unknown)"}
		}
	}
	if first != nil {
		return referenceError(first)
	}
	return nil
}

// references returns the references to a batch of images. EC2 documents no
// NotFound answer for an unknown ID (a resource can hold the ID of an image
// that is gone); if a batch is refused because one image is gone, each image
// is asked alone so one concurrent deregistration cannot fail the run.
func (p *Pruner) references(ctx context.Context, batch []string) ([]types.ImageReference, error) {
	got, err := p.referencePages(ctx, batch)
	if err == nil || !awsclient.ImageGone(err) {
		return got, err
	}
	if len(batch) == 1 {
		return nil, nil // gone: nothing can launch it, the deletion reports it as already done
	}
	var all []types.ImageReference
	for _, id := range batch {
		got, err := p.references(ctx, []string{id})
		if err != nil {
			return nil, err
		}
		all = append(all, got...)
	}
	return all, nil
}

func (p *Pruner) referencePages(ctx context.Context, batch []string) ([]types.ImageReference, error) {
	var out []types.ImageReference
	// No MaxResults: EC2 documents only its minimum (5), and without it the
	// answer is whole unless EC2 pages anyway, which the paginator follows.
	pg := ec2.NewDescribeImageReferencesPaginator(p.EC2, &ec2.DescribeImageReferencesInput{ImageIds: batch, ResourceTypes: referenceTypes})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("check image references of %s and %d more: %w", batch[0], len(batch)-1, err)
		}
		for _, r := range page.ImageReferences {
			if r.ImageId != nil && slices.Contains(batch, *r.ImageId) {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// referencedReason names up to maxReferencesNamed references; an image
// launched by a large fleet would otherwise make one reason megabytes long.
func referencedReason(rs []types.ImageReference) string {
	var named []string
	for _, r := range rs[:min(len(rs), maxReferencesNamed)] {
		named = append(named, string(r.ResourceType)+" "+runner.Truncate(*r.Arn, maxReferenceReason/maxReferencesNamed-40))
	}
	s := "referenced by " + strings.Join(named, ", ")
	if len(rs) > maxReferencesNamed {
		s += fmt.Sprintf(" and %d more (%d references)", len(rs)-maxReferencesNamed, len(rs))
	}
	// An SSM parameter's ARN can be 2,000 characters long; the reason goes
	// into plan log pages, which must stay below CloudWatch's event size.
	return runner.Truncate(s, maxReferenceReason-len(inUse)) + inUse
}

const (
	maxReferenceReason = 700
	inUse              = ": kept while it is in use"
)

// referenceError says that nothing was deleted and the fix first: the
// run's error (Lambda's errorMessage, the alarm's trail) shows the first
// 500 characters of a failure.
func referenceError(err error) error {
	code := awsclient.ErrorCode(err)
	fix := "the next run checks again; if this repeats, check that EC2 DescribeImageReferences is available in this Region"
	switch {
	case awsclient.Unauthorized(err):
		fix = "give the prune role ec2:DescribeImageReferences and, via EC2 (aws:CalledVia ec2-images.amazonaws.com), ec2:DescribeInstances, " +
			"ec2:DescribeLaunchTemplates, ec2:DescribeLaunchTemplateVersions, ssm:DescribeParameters, ssm:GetParameters " +
			"(the stack grants them: redeploy it; check SCPs and permission boundaries)"
	case code == "" && errors.Is(err, context.DeadlineExceeded):
		code = "deadline"
	case code == "":
		code = "error"
	}
	return fmt.Errorf("nothing was deleted: the image reference check failed (%s); fix: %s; prune never deletes an image that an instance, "+
		"launch template or SSM parameter uses, and cannot tell which do: %w", code, fix, err)
}
