package images

import (
	"context"
	"iter"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/tags"
)

// DescribeImagesAPI is the one EC2 call the listings need; *ec2.Client
// satisfies it.
type DescribeImagesAPI interface {
	DescribeImages(context.Context, *ec2.DescribeImagesInput, ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
}

// PageSize is how many images one DescribeImages page of a listing holds.
const PageSize = 1000

// List yields the images of every page of in (one DescribeImages call a
// page); after an error it yields that error once and stops. optFns apply
// to every page's call (e.g. another Region).
func List(ctx context.Context, api DescribeImagesAPI, in *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) iter.Seq2[types.Image, error] {
	return func(yield func(types.Image, error) bool) {
		pg := ec2.NewDescribeImagesPaginator(api, in)
		for pg.HasMorePages() {
			page, err := pg.NextPage(ctx, optFns...)
			if err != nil {
				yield(types.Image{}, err)
				return
			}
			for _, im := range page.Images {
				if !yield(im, nil) {
					return
				}
			}
		}
	}
}

// Query selects a deployment's images. Deployment is required; the other
// fields narrow the selection when set.
type Query struct {
	Deployment string
	Policy     string
	// Slot selects the images of one trigger slot (tag amibackup:time).
	Slot time.Time
	// States selects image states ("available", ...).
	States []string
}

// Managed yields the images this account owns that carry the query's tags:
// filtered by EC2 (PageSize a page) and checked again here, so an image
// without the exact managed-by tag is never yielded, whatever its name.
// After an error it yields the error once and stops.
func Managed(ctx context.Context, api DescribeImagesAPI, q Query) iter.Seq2[types.Image, error] {
	filters := []types.Filter{{Name: aws.String("tag:" + tags.ManagedBy), Values: []string{q.Deployment}}}
	if q.Policy != "" {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + tags.Policy), Values: []string{q.Policy}})
	}
	if !q.Slot.IsZero() {
		filters = append(filters, types.Filter{Name: aws.String("tag:" + tags.Time), Values: []string{tags.FormatTime(q.Slot)}})
	}
	if len(q.States) > 0 {
		filters = append(filters, types.Filter{Name: aws.String("state"), Values: q.States})
	}
	in := &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: filters, MaxResults: aws.Int32(PageSize)}
	return func(yield func(types.Image, error) bool) {
		for im, err := range List(ctx, api, in) {
			if err == nil && !q.matches(im) {
				continue
			}
			if !yield(im, err) {
				return
			}
		}
	}
}

func (q Query) matches(im types.Image) bool {
	t := awsclient.TagMap(im.Tags)
	return t[tags.ManagedBy] == q.Deployment &&
		(q.Policy == "" || t[tags.Policy] == q.Policy) &&
		(q.Slot.IsZero() || t[tags.Time] == tags.FormatTime(q.Slot)) &&
		(len(q.States) == 0 || slices.Contains(q.States, string(im.State)))
}

// FindByName returns this account's image of that name (AMI names are
// unique per account and Region); found is false when there is none. The
// error is EC2's, for the caller to wrap.
func FindByName(ctx context.Context, api DescribeImagesAPI, name string) (im types.Image, found bool, err error) {
	out, err := api.DescribeImages(ctx, &ec2.DescribeImagesInput{
		Owners:  []string{"self"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{name}}},
	})
	if err != nil {
		return types.Image{}, false, err
	}
	if len(out.Images) == 0 {
		return types.Image{}, false, nil
	}
	return out.Images[0], true, nil
}

// ID is the image's ID.
func ID(im types.Image) string { return aws.ToString(im.ImageId) }

// SnapshotIDs are the EBS snapshots of an image, in block-device order.
func SnapshotIDs(im types.Image) []string {
	var out []string
	for _, b := range im.BlockDeviceMappings {
		if b.Ebs != nil && b.Ebs.SnapshotId != nil {
			out = append(out, *b.Ebs.SnapshotId)
		}
	}
	return out
}

// Created is the image's creation time as EC2 reports it.
func Created(im types.Image) (time.Time, error) {
	return time.Parse(time.RFC3339, aws.ToString(im.CreationDate))
}

// DeprecationTime is creation plus age, rounded up to a whole minute so
// EC2 (which rounds to the nearest minute) stores it unchanged and never
// earlier than asked.
func DeprecationTime(created time.Time, age time.Duration) time.Time {
	at := created.UTC().Add(age)
	if r := at.Truncate(time.Minute); !r.Equal(at) {
		at = r.Add(time.Minute)
	}
	return at
}
