// Package drcopy copies backups shared with this (recovery) account into
// it, re-encrypted with the recovery account's own customer-managed key:
// each source image once, under a deterministic name, with at most
// MaxInFlight copies pending so EC2's concurrent-copy limit (20 per
// destination Region) is never hit; what does not fit waits for the next run.
package drcopy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
)

// EC2 is the part of the EC2 API copying needs; *ec2.Client satisfies it.
type EC2 interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	CopyImage(context.Context, *ec2.CopyImageInput, ...func(*ec2.Options)) (*ec2.CopyImageOutput, error)
}

// Function is the name used in summaries and metrics.
const Function = "copy"

// Copier copies shared images into this account and Region.
type Copier struct {
	EC2    EC2
	Config *config.Config
	// Region is this (destination) Region; SourceRegion defaults to it.
	Region  string
	Log     *slog.Logger
	Metrics *emf.Writer
}

// sourceNameRE: the source's tags are invisible to the accounts an image
// is shared with, so the source image is recognised by amibackup's name,
// which also carries the instance and the slot.
var sourceNameRE = regexp.MustCompile(`^amibackup-([a-z0-9][a-z0-9-]*)-(i-[0-9a-f]{8,17})-([0-9]{8}T[0-9]{6}Z)$`)

// Run copies what is shared and not yet copied.
func (c *Copier) Run(ctx context.Context, at time.Time) (*runner.Summary, error) {
	start := time.Now()
	r := c.Config.Recovery
	if r == nil {
		return nil, errors.New("copy: recovery is not configured (config field \"recovery\")")
	}
	srcRegion := r.SourceRegion
	if srcRegion == "" {
		srcRegion = c.Region
	}
	sum := &runner.Summary{Function: Function, Deployment: c.Config.Deployment, Policy: config.CopyPolicy, Slot: at, Trigger: tags.TriggerSchedule}

	copies, inFlight, err := c.ownCopies(ctx)
	if err != nil {
		return nil, err
	}
	var sources []types.Image
	pg := ec2.NewDescribeImagesPaginator(c.EC2, &ec2.DescribeImagesInput{Owners: r.SourceAccountIDs, MaxResults: aws.Int32(1000),
		Filters: []types.Filter{{Name: aws.String("state"), Values: []string{"available"}}, {Name: aws.String("name"), Values: []string{"amibackup-*"}}}},
	)
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx, func(o *ec2.Options) { o.Region = srcRegion })
		if err != nil {
			return nil, fmt.Errorf("list images shared by %v in %s: %w", r.SourceAccountIDs, srcRegion, err)
		}
		for _, im := range page.Images {
			if sourceNameRE.MatchString(aws.ToString(im.Name)) && slices.Contains(r.SourceAccountIDs, aws.ToString(im.OwnerId)) {
				sources = append(sources, im)
			}
		}
	}
	sum.Selected = len(sources)
	for _, im := range sources {
		id, owner := aws.ToString(im.ImageId), aws.ToString(im.OwnerId)
		e := runner.Entry{ID: id, Name: tags.CopyName(owner, id)}
		if cp, ok := copies[id]; ok {
			e.ImageID = cp
			sum.AddExisted(e)
			continue
		}
		if inFlight >= r.MaxInFlight {
			e.Detail = fmt.Sprintf("%d copies in flight (limit %d): copied by a later run", inFlight, r.MaxInFlight)
			sum.AddSkipped(e)
			continue
		}
		out, err := c.EC2.CopyImage(ctx, c.copyInput(im, srcRegion))
		switch {
		case err == nil:
			e.ImageID = aws.ToString(out.ImageId)
			inFlight++
			sum.AddDone(e)
			c.Log.Info("copy started", "source", id, "copy", e.ImageID)
		case awsclient.ErrorCode(err) == "InvalidAMIName.Duplicate":
			e.Detail = "copy exists"
			sum.AddExisted(e)
		case awsclient.ErrorCode(err) == "ResourceLimitExceeded":
			// Someone else's copies count too: wait for the next run.
			inFlight = r.MaxInFlight
			e.Detail = "EC2's concurrent copy limit reached: copied by a later run"
			sum.AddSkipped(e)
		default:
			e.Detail = fmt.Errorf("copy image %s: %w", id, err).Error()
			sum.AddFailed(e)
		}
	}
	sum.DurationMS = time.Since(start).Milliseconds()
	if c.Metrics != nil {
		c.Metrics.Emit(start, map[string]string{"Policy": config.CopyPolicy},
			emf.Metric{Name: "CopiesStarted", Unit: emf.Count, Value: float64(len(sum.Done))},
			emf.Metric{Name: "CopiesWaiting", Unit: emf.Count, Value: float64(len(sum.Skipped))},
			emf.Metric{Name: "CopyFailures", Unit: emf.Count, Value: float64(len(sum.Failed))})
	}
	sum.Log(ctx, c.Log)
	return sum, sum.Err()
}

// ownCopies maps source image IDs to this deployment's copies and counts
// the copies still pending.
func (c *Copier) ownCopies(ctx context.Context) (map[string]string, int, error) {
	copies := map[string]string{}
	inFlight := 0
	pg := ec2.NewDescribeImagesPaginator(c.EC2, &ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(1000),
		Filters: []types.Filter{{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{c.Config.Deployment}},
			{Name: aws.String("tag:" + tags.Policy), Values: []string{config.CopyPolicy}}}})
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, 0, fmt.Errorf("list existing copies: %w", err)
		}
		for _, im := range page.Images {
			for _, t := range im.Tags {
				if aws.ToString(t.Key) == tags.SourceImage {
					copies[aws.ToString(t.Value)] = aws.ToString(im.ImageId)
				}
			}
			if im.State == types.ImageStatePending {
				inFlight++
			}
		}
	}
	return copies, inFlight, nil
}

func (c *Copier) copyInput(im types.Image, srcRegion string) *ec2.CopyImageInput {
	id, owner := aws.ToString(im.ImageId), aws.ToString(im.OwnerId)
	m := sourceNameRE.FindStringSubmatch(aws.ToString(im.Name))
	slot, _ := time.Parse("20060102T150405Z", m[3])
	tl := []types.Tag{
		{Key: aws.String(tags.ManagedBy), Value: aws.String(c.Config.Deployment)},
		{Key: aws.String(tags.Policy), Value: aws.String(config.CopyPolicy)},
		{Key: aws.String(tags.InstanceID), Value: aws.String(m[2])},
		{Key: aws.String(tags.Time), Value: aws.String(tags.FormatTime(slot))},
		{Key: aws.String(tags.SourceAccount), Value: aws.String(owner)},
		{Key: aws.String(tags.SourceImage), Value: aws.String(id)},
		{Key: aws.String(tags.SourceRegion), Value: aws.String(srcRegion)},
	}
	token := sha256.Sum256([]byte(owner + "/" + srcRegion + "/" + id))
	in := &ec2.CopyImageInput{
		SourceImageId: aws.String(id),
		SourceRegion:  aws.String(srcRegion),
		Name:          aws.String(tags.CopyName(owner, id)),
		Description:   aws.String(fmt.Sprintf("amibackup copy of %s from account %s, %s", id, owner, srcRegion)),
		Encrypted:     aws.Bool(true),
		// Same source, same token: EC2 returns the first copy for a retry.
		ClientToken: aws.String(hex.EncodeToString(token[:16])),
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
