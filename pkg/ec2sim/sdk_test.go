package ec2sim_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// client returns a real EC2 client for the account and Region, pointed at
// the emulator through the SDK's standard BaseEndpoint, with the SDK's
// default retryer and simtest's HTTPClient (see there for why).
func client(t testing.TB, url, account, region string) *ec2.Client {
	t.Helper()
	return ec2.New(ec2.Options{
		Region:       region,
		BaseEndpoint: aws.String(url),
		Credentials:  credentials.NewStaticCredentialsProvider(account, "secret", ""),
		HTTPClient:   simtest.HTTPClient(),
	})
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func TestSDKSmoke(t *testing.T) {
	sim, srvURL := start(t, ec2sim.Options{})
	ctx := context.Background()
	ids := sim.SeedFleet("", "", 30, map[string]string{"Backup": "nightly"})
	sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "weekly"}})
	c := client(t, srvURL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)

	pg := ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{
		MaxResults: aws.Int32(7),
		Filters:    []types.Filter{{Name: aws.String("tag:Backup"), Values: []string{"nightly"}}},
	})
	n, pages := 0, 0
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range out.Reservations {
			n += len(r.Instances)
		}
	}
	if n != 30 || pages != 5 {
		t.Fatalf("got %d instances in %d pages, want 30 in 5", n, pages)
	}
	out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(ids[2]), Name: aws.String("test-image"),
		TagSpecifications: []types.TagSpecification{
			{ResourceType: types.ResourceTypeImage, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}},
			{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("s")}}},
		}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(ids[2]), Name: aws.String("test-image")})
	if apiCode(err) != "InvalidAMIName.Duplicate" {
		t.Fatalf("duplicate: %v", err)
	}
	imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, ImageIds: []string{*out.ImageId}})
	if err != nil {
		t.Fatal(err)
	}
	im := imgs.Images[0]
	if len(im.BlockDeviceMappings) != 3 || *im.Tags[0].Value != "v" || im.State != types.ImageStateAvailable {
		t.Fatalf("image %+v", im)
	}
	de, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: out.ImageId, DeleteAssociatedSnapshots: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if len(de.DeleteSnapshotResults) != 3 || de.DeleteSnapshotResults[0].ReturnCode != types.SnapshotReturnCodesSuccess {
		t.Fatalf("delete results %+v", de.DeleteSnapshotResults)
	}
	if in, _ := sim.Instance("", "", ids[2]); in.Reboots != 1 {
		t.Fatalf("reboots = %d", in.Reboots)
	}
	_, err = c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String("ami-0123456789abcdef0"), DeprecateAt: aws.Time(time.Now().Add(time.Hour))})
	if apiCode(err) != "InvalidAMIID.NotFound" {
		t.Fatalf("deprecation of unknown image: %v", err)
	}
	_, err = c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(ids[3]), Name: aws.String("dry"), DryRun: aws.Bool(true)})
	if apiCode(err) != "DryRunOperation" {
		t.Fatalf("dry run: %v", err)
	}
	if len(sim.Images("", "")) != 0 {
		t.Fatal("dry run created an image")
	}
}

// TestSeededImagesShareSnapshot: ImageSpec.SnapshotIDs builds two images on
// one snapshot without going through the API.
func TestSeededImagesShareSnapshot(t *testing.T) {
	sim, srvURL := start(t, ec2sim.Options{})
	c := client(t, srvURL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	a, snaps := sim.AddImage(ec2sim.ImageSpec{Name: "seed-a"})
	b, bSnaps := sim.AddImage(ec2sim.ImageSpec{Name: "seed-b", SnapshotIDs: snaps})
	if len(bSnaps) != 1 || bSnaps[0] != snaps[0] {
		t.Fatalf("image B snapshots %v, want %v", bSnaps, snaps)
	}
	out, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(a), DeleteAssociatedSnapshots: aws.Bool(true)})
	if err != nil || len(out.DeleteSnapshotResults) != 1 || out.DeleteSnapshotResults[0].ReturnCode == types.SnapshotReturnCodesSuccess {
		t.Fatalf("deregister A: %v %+v", err, out)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snaps[0])}); apiCode(err) != "InvalidSnapshot.InUse" || !strings.Contains(err.Error(), b) {
		t.Fatalf("delete shared snapshot: %v", err)
	}
	if got := sim.Snapshots("", ""); len(got) != 1 {
		t.Fatalf("snapshots %+v", got)
	}
}
