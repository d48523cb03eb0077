package ec2sim_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
)

// TestPendingSnapshotProgress: a pending snapshot reports progress below
// 100%, growing with the simulated clock; a completed one 100%.
func TestPendingSnapshotProgress(t *testing.T) {
	sim, u := start(t, ec2sim.Options{ImageDelay: 10 * time.Minute, TimeScale: 1e-9})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("progress")}); err != nil {
		t.Fatal(err)
	}
	progress := func() (types.SnapshotState, int) {
		t.Helper()
		out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
		if err != nil || len(out.Snapshots) != 1 {
			t.Fatalf("%v %+v", err, out)
		}
		p, err := strconv.Atoi(strings.TrimSuffix(aws.ToString(out.Snapshots[0].Progress), "%"))
		if err != nil {
			t.Fatalf("progress %q", aws.ToString(out.Snapshots[0].Progress))
		}
		return out.Snapshots[0].State, p
	}
	for _, step := range []struct {
		advance  time.Duration
		state    types.SnapshotState
		min, max int
	}{
		{0, types.SnapshotStatePending, 0, 5},
		{5 * time.Minute, types.SnapshotStatePending, 45, 55},
		{299 * time.Second, types.SnapshotStatePending, 90, 99},
		{time.Second, types.SnapshotStateCompleted, 100, 100},
	} {
		sim.Advance(step.advance)
		if st, p := progress(); st != step.state || p < step.min || p > step.max {
			t.Fatalf("after +%v: %s at %d%%, want %s at %d-%d%%", step.advance, st, p, step.state, step.min, step.max)
		}
	}
}

// TestRebootOnlyForRunningInstances: CreateImage without NoReboot reboots
// a running instance, not a stopped one.
func TestRebootOnlyForRunningInstances(t *testing.T) {
	for _, tc := range []struct {
		state              string
		noReboot           bool
		reboots, noReboots int
	}{
		{"running", false, 1, 0},
		{"running", true, 0, 1},
		{"stopped", false, 0, 0},
		{"stopped", true, 0, 1},
	} {
		t.Run(tc.state+"/NoReboot="+strconv.FormatBool(tc.noReboot), func(t *testing.T) {
			sim, u := start(t, ec2sim.Options{})
			id := sim.AddInstance(ec2sim.InstanceSpec{State: tc.state})
			_, err := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion).CreateImage(context.Background(),
				&ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("img"), NoReboot: aws.Bool(tc.noReboot)})
			if err != nil {
				t.Fatal(err)
			}
			if in, _ := sim.Instance("", "", id); in.Reboots != tc.reboots || in.NoRebootImages != tc.noReboots {
				t.Fatalf("Reboots %d, NoRebootImages %d; want %d, %d", in.Reboots, in.NoRebootImages, tc.reboots, tc.noReboots)
			}
		})
	}
}

// TestPublicSnapshot: createVolumePermission group all is reported as
// <group>all</group> and makes the snapshot visible to every account.
func TestPublicSnapshot(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	other := client(t, u, "222222222222", ec2sim.DefaultRegion)
	ctx := context.Background()
	snap := sim.AddSnapshot(ec2sim.SnapshotSpec{})
	visible := func() bool {
		t.Helper()
		out, err := other.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{RestorableByUserIds: []string{"all"}})
		if err != nil {
			t.Fatal(err)
		}
		_, byID := other.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		listed := slices.ContainsFunc(out.Snapshots, func(s types.Snapshot) bool { return aws.ToString(s.SnapshotId) == snap })
		if listed != (byID == nil) {
			t.Fatalf("RestorableBy=all lists it: %v, but by ID: %v", listed, byID)
		}
		return listed
	}
	for _, step := range []struct {
		name   string
		mod    types.CreateVolumePermissionModifications
		groups []types.PermissionGroup
	}{
		{"make public", types.CreateVolumePermissionModifications{Add: []types.CreateVolumePermission{{Group: types.PermissionGroupAll}}}, []types.PermissionGroup{types.PermissionGroupAll}},
		{"make private", types.CreateVolumePermissionModifications{Remove: []types.CreateVolumePermission{{Group: types.PermissionGroupAll}}}, nil},
	} {
		if _, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: aws.String(snap), Attribute: types.SnapshotAttributeNameCreateVolumePermission, CreateVolumePermission: &step.mod}); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		attr, err := c.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: aws.String(snap), Attribute: types.SnapshotAttributeNameCreateVolumePermission})
		if err != nil {
			t.Fatal(err)
		}
		var groups []types.PermissionGroup
		for _, p := range attr.CreateVolumePermissions {
			if p.UserId != nil {
				t.Fatalf("%s: group reported as user %q", step.name, aws.ToString(p.UserId))
			}
			groups = append(groups, p.Group)
		}
		if !slices.Equal(groups, step.groups) {
			t.Fatalf("%s: groups %v, want %v", step.name, groups, step.groups)
		}
		if got := visible(); got != (len(step.groups) > 0) {
			t.Fatalf("%s: visible to another account: %v", step.name, got)
		}
	}
}

// TestDeprecationRoundsToNearestMinute follows the EnableImageDeprecation
// reference: seconds are rounded to the nearest minute.
func TestDeprecationRoundsToNearestMinute(t *testing.T) {
	base := time.Date(2030, 5, 1, 12, 0, 0, 0, time.UTC)
	sim, u := start(t, ec2sim.Options{Start: base.Add(-24 * time.Hour)})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "round"})
	for _, tc := range []struct {
		at, want time.Time
	}{
		{base.Add(29 * time.Second), base},
		{base.Add(30 * time.Second), base.Add(time.Minute)},
		{base.Add(59 * time.Second), base.Add(time.Minute)},
		{base, base},
	} {
		if _, err := c.EnableImageDeprecation(context.Background(), &ec2.EnableImageDeprecationInput{ImageId: aws.String(img), DeprecateAt: aws.Time(tc.at)}); err != nil {
			t.Fatal(err)
		}
		if got := sim.Images("", "")[0].DeprecationTime; !got.Equal(tc.want) {
			t.Errorf("DeprecateAt %s: deprecation %s, want %s", tc.at.Format(time.TimeOnly), got.Format(time.TimeOnly), tc.want.Format(time.TimeOnly))
		}
	}
}
