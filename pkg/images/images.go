// Package images holds "our images": the names amibackup gives the images
// it creates and copies (one naming contract, built and parsed here), and
// how every job finds them in EC2 (this deployment's images by tag, one
// image by name, an image's snapshots and deprecation time).
package images

import (
	"context"
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/tags"
)

// TimeLayout is the compact UTC form of the slot in image names.
const TimeLayout = "20060102T150405Z"

// Name is the deterministic name of the image of an instance for a
// trigger slot: a retried trigger produces the same name, and EC2's
// per-account uniqueness (InvalidAMIName.Duplicate) makes the retry harmless.
func Name(policy, instanceID string, slot time.Time) string {
	return fmt.Sprintf("amibackup-%s-%s-%s", policy, instanceID, slot.UTC().Format(TimeLayout))
}

// nameRE is Name's form: policy (config: a-z 0-9 -), instance ID, slot in
// TimeLayout.
var nameRE = regexp.MustCompile(`^amibackup-([a-z0-9][a-z0-9-]*)-(i-[0-9a-f]{8,17})-([0-9]{8}T[0-9]{6}Z)$`)

// Parsed is what an image name made by Name says.
type Parsed struct {
	Policy, InstanceID string
	// Slot is zero when the name's digits are not a valid time.
	Slot time.Time
}

// ParseName reads a name made by Name; ok is false for any other name. A
// recovery account relies on it: a shared image's tags are invisible to
// the accounts it is shared with, its name is not.
func ParseName(name string) (p Parsed, ok bool) {
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		return Parsed{}, false
	}
	p = Parsed{Policy: m[1], InstanceID: m[2]}
	if slot, err := time.Parse(TimeLayout, m[3]); err == nil {
		p.Slot = slot
	}
	return p, true
}

// Description is the description of a backup image. It names the
// deployment because an image's description, unlike its tags, is visible
// to the accounts it is shared with: recovery accounts use it to copy only
// the source deployment they are configured for.
func Description(deployment, policy, instanceID string, slot time.Time, reboot bool) string {
	return fmt.Sprintf("%s%s: %s of %s at %s (reboot=%t)", descPrefix, deployment, policy, instanceID, tags.FormatTime(slot), reboot)
}

const descPrefix = "amibackup deployment "

// DescribesDeployment reports whether an image description written by
// Description names deployment.
func DescribesDeployment(description, deployment string) bool {
	return strings.HasPrefix(description, descPrefix+deployment+":")
}

// CopyName is the deterministic name of a recovery deployment's copy of a
// source image. It names the recovery deployment: AMI names are unique per
// account and Region, and two recovery deployments there (e.g. with other
// retention) may copy the same source. At most 15+64+1+12+1+21 = 114 of
// EC2's 128 characters (deployment names are 1-64 of A-Z a-z 0-9 -, all
// allowed in AMI names); it ends in the image ID, so ParseName never
// takes it for a backup.
func CopyName(deployment, sourceAccount, sourceImageID string) string {
	return fmt.Sprintf("amibackup-copy-%s-%s-%s", deployment, sourceAccount, sourceImageID)
}

var validNameRE = regexp.MustCompile(`^[A-Za-z0-9()\[\]./\-'@_ ]{3,128}$`)

// ValidName reports whether EC2 accepts name as an AMI name.
func ValidName(name string) bool { return validNameRE.MatchString(name) }

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
