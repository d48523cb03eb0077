package ec2sim_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// volumeOf returns the instance's first volume as DescribeInstances reports it.
func volumeOf(t *testing.T, c *ec2.Client, id string) string {
	t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Reservations[0].Instances[0].BlockDeviceMappings[0].Ebs.VolumeId)
}

// TestConcurrentSnapshotLimitCountsPendingAndError: snapshots pending or
// left in error count against the per-volume limit; completed ones do not.
func TestConcurrentSnapshotLimitCountsPendingAndError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		volType string
		states  []string
		limited bool
	}{
		{"five completed", "gp3", []string{"", "", "", "", ""}, false},
		{"four in error", "gp3", []string{"error", "error", "error", "error"}, false},
		{"five in error", "gp3", []string{"error", "error", "error", "error", "error"}, true},
		{"four pending and one in error", "gp3", []string{"pending", "pending", "pending", "pending", "error"}, true},
		{"sc1 with one in error", "sc1", []string{"error"}, true},
		{"sc1 with one completed", "sc1", []string{"completed"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim, srvURL := start(t, ec2sim.Options{})
			c := client(t, srvURL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
			id := sim.AddInstance(ec2sim.InstanceSpec{Volumes: []ec2sim.VolumeSpec{{Type: tc.volType}}})
			vol := volumeOf(t, c, id)
			for _, st := range tc.states {
				sim.AddSnapshot(ec2sim.SnapshotSpec{VolumeID: vol, State: st})
			}
			_, err := c.CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("limit")})
			if got := code(err) == "SnapshotCreationPerVolumeRateExceeded"; got != tc.limited || (!tc.limited && err != nil) {
				t.Fatalf("CreateImage: %v, want limited=%v", err, tc.limited)
			}
		})
	}
}

// TestFailedImageSnapshotsKeepCountingAfterDeregister: the error snapshots
// of failed images outlive the images and still block the volume.
func TestFailedImageSnapshotsKeepCountingAfterDeregister(t *testing.T) {
	sim, srvURL := start(t, ec2sim.Options{})
	c := client(t, srvURL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	sim.FailImagesOf(id)
	var images []string
	for i := range 5 {
		out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(fmt.Sprintf("failed-%d", i))})
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, aws.ToString(out.ImageId))
	}
	for _, im := range images {
		if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(im)}); err != nil {
			t.Fatal(err)
		}
	}
	snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil || len(snaps.Snapshots) != 5 {
		t.Fatalf("snapshots: %v %d", err, len(snaps.Snapshots))
	}
	for _, sn := range snaps.Snapshots {
		if sn.State != "error" {
			t.Fatalf("snapshot %s is %s after its failed image was deregistered, want error", aws.ToString(sn.SnapshotId), sn.State)
		}
	}
	sim.ClearFaults()
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("blocked")}); code(err) != "SnapshotCreationPerVolumeRateExceeded" {
		t.Fatalf("with five error snapshots: %v", err)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: snaps.Snapshots[0].SnapshotId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("unblocked")}); err != nil {
		t.Fatalf("after deleting one error snapshot: %v", err)
	}
}
