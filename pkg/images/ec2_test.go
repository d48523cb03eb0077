package images

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/tags"
)

// pages is a DescribeImages that ignores filters (as a careless emulator
// or a changed API might) and answers fixed pages, then fails if asked.
type pages struct {
	pages [][]types.Image
	fail  error
	calls []*ec2.DescribeImagesInput
}

func (p *pages) DescribeImages(_ context.Context, in *ec2.DescribeImagesInput, _ ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	i := len(p.calls)
	p.calls = append(p.calls, in)
	if i >= len(p.pages) {
		return nil, p.fail
	}
	out := &ec2.DescribeImagesOutput{Images: p.pages[i]}
	if i+1 < len(p.pages) || p.fail != nil {
		out.NextToken = aws.String("next")
	}
	return out, nil
}

func img(id string, kv ...string) types.Image {
	im := types.Image{ImageId: aws.String(id), State: types.ImageStateAvailable}
	for i := 0; i+1 < len(kv); i += 2 {
		im.Tags = append(im.Tags, types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return im
}

// TestManaged: the listing filters in EC2 and checks the tags again here,
// across pages; an error ends it after the images before it.
func TestManaged(t *testing.T) {
	slot, _ := tags.ParseTime("2026-11-24T03:00:00Z") // a slot as the tag holds it
	ours := func(id, policy string) types.Image {
		return img(id, tags.ManagedBy, "prod", tags.Policy, policy, tags.Time, tags.FormatTime(slot))
	}
	api := &pages{pages: [][]types.Image{
		{ours("ami-1", "nightly"), img("ami-2", tags.ManagedBy, "other", tags.Policy, "nightly"), ours("ami-3", "weekly")},
		{img("ami-4"), ours("ami-5", "nightly")},
	}}
	var got []string
	for im, err := range Managed(context.Background(), api, Query{Deployment: "prod", Policy: "nightly", Slot: slot}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, aws.ToString(im.ImageId))
	}
	if !slices.Equal(got, []string{"ami-1", "ami-5"}) || len(api.calls) != 2 {
		t.Fatalf("yielded %v in %d calls, want [ami-1 ami-5] in 2", got, len(api.calls))
	}
	in := api.calls[0]
	var filters []string
	for _, f := range in.Filters {
		filters = append(filters, fmt.Sprint(aws.ToString(f.Name), "=", f.Values))
	}
	want := []string{"tag:" + tags.ManagedBy + "=[prod]", "tag:" + tags.Policy + "=[nightly]", "tag:" + tags.Time + "=[" + tags.FormatTime(slot) + "]"}
	if !slices.Equal(filters, want) || !slices.Equal(in.Owners, []string{"self"}) || aws.ToInt32(in.MaxResults) != PageSize {
		t.Fatalf("request filters %v owners %v max %d", filters, in.Owners, aws.ToInt32(in.MaxResults))
	}

	boom := errors.New("boom")
	api = &pages{pages: [][]types.Image{{ours("ami-1", "nightly")}}, fail: boom}
	got, errs := nil, 0
	for im, err := range Managed(context.Background(), api, Query{Deployment: "prod", States: []string{"available"}}) {
		if err != nil {
			errs++
			if !errors.Is(err, boom) {
				t.Fatalf("error %v", err)
			}
			continue
		}
		got = append(got, aws.ToString(im.ImageId))
	}
	if !slices.Equal(got, []string{"ami-1"}) || errs != 1 || len(api.calls) != 2 {
		t.Fatalf("yielded %v and %d errors in %d calls", got, errs, len(api.calls))
	}

	// Stopping early asks for no further page.
	api = &pages{pages: [][]types.Image{{ours("ami-1", "nightly")}, {ours("ami-2", "nightly")}}}
	for range Managed(context.Background(), api, Query{Deployment: "prod"}) {
		break
	}
	if len(api.calls) != 1 {
		t.Fatalf("%d calls after stopping at the first image", len(api.calls))
	}
}

func TestFindByNameAndSnapshots(t *testing.T) {
	im := img("ami-1")
	im.BlockDeviceMappings = []types.BlockDeviceMapping{{Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-1")}},
		{VirtualName: aws.String("ephemeral0")}, {Ebs: &types.EbsBlockDevice{SnapshotId: aws.String("snap-2")}}}
	api := &pages{pages: [][]types.Image{{im}, {}}}
	got, found, err := FindByName(context.Background(), api, "n")
	if err != nil || !found || aws.ToString(got.ImageId) != "ami-1" {
		t.Fatalf("FindByName = %v, %v, %v", got.ImageId, found, err)
	}
	if f := api.calls[0].Filters; len(f) != 1 || aws.ToString(f[0].Name) != "name" || f[0].Values[0] != "n" || api.calls[0].Owners[0] != "self" {
		t.Fatalf("request %+v", api.calls[0])
	}
	if _, found, err := FindByName(context.Background(), api, "n"); found || err != nil {
		t.Fatalf("no image: found %v, err %v", found, err)
	}
	if s := SnapshotIDs(im); !slices.Equal(s, []string{"snap-1", "snap-2"}) {
		t.Fatalf("SnapshotIDs = %v", s)
	}
}
