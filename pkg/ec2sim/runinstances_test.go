package ec2sim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

const otherAccount = "222222222222"

// launchEnv starts an emulator on a frozen clock (tests move it with
// Advance) and returns it with a client that does not retry.
func launchEnv(t *testing.T, opts ec2sim.Options) (*simtest.Env, *ec2.Client) {
	t.Helper()
	opts.TimeScale = frozen
	opts.Start = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	env := simtest.Start(t, opts)
	return env, noRetryClient(env.URL, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
}

// verifyInput is the request issue 14's restore verification sends: no
// key pair, no public IP, shutdown terminates, tagged instance and volumes.
func verifyInput(image, itype string) *ec2.RunInstancesInput {
	tags := []types.Tag{{Key: aws.String("amibackup:managed-by"), Value: aws.String("amibackup")},
		{Key: aws.String("amibackup:verify-of"), Value: aws.String(image)}}
	return &ec2.RunInstancesInput{
		ImageId: aws.String(image), InstanceType: types.InstanceType(itype), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		InstanceInitiatedShutdownBehavior: types.ShutdownBehaviorTerminate,
		NetworkInterfaces: []types.InstanceNetworkInterfaceSpecification{{DeviceIndex: aws.Int32(0),
			SubnetId: aws.String("subnet-0a1b2c3d4e5f60718"), AssociatePublicIpAddress: aws.Bool(false),
			Groups: []string{"sg-0123456789abcdef0"}}},
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tags},
			{ResourceType: types.ResourceTypeVolume, Tags: tags}},
	}
}

// TestRunInstancesValidation: which images and parameters RunInstances
// accepts, and that a rejected request launches nothing.
func TestRunInstancesValidation(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{})
	sim := env.Sim
	own, _ := sim.AddImage(ec2sim.ImageSpec{Name: "own", Volumes: []ec2sim.VolumeSpec{{SizeGiB: 10}, {SizeGiB: 20}}})
	arm, _ := sim.AddImage(ec2sim.ImageSpec{Name: "graviton", Architecture: "arm64"})
	pending, _ := sim.AddImage(ec2sim.ImageSpec{Name: "pending", State: "pending"})
	failed, _ := sim.AddImage(ec2sim.ImageSpec{Name: "failed", State: "failed"})
	shared, _ := sim.AddImage(ec2sim.ImageSpec{Account: otherAccount, Name: "shared"})
	private, _ := sim.AddImage(ec2sim.ImageSpec{Account: otherAccount, Name: "private"})
	oc := noRetryClient(env.URL, otherAccount, ec2sim.DefaultRegion)
	if _, err := oc.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(shared),
		LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String(ec2sim.DefaultAccount)}}}}); err != nil {
		t.Fatal(err)
	}
	with := func(in *ec2.RunInstancesInput, f func(*ec2.RunInstancesInput)) *ec2.RunInstancesInput {
		f(in)
		return in
	}
	for _, tc := range []struct {
		name, code, msg string
		in              *ec2.RunInstancesInput
	}{
		{"own image", "", "", verifyInput(own, "t3.micro")},
		{"image shared by another account", "", "", verifyInput(shared, "t3.micro")},
		{"arm64 image on t4g", "", "", verifyInput(arm, "t4g.small")},
		{"default type m1.small", "", "", verifyInput(own, "")},
		{"other account's image without launch permission", "InvalidAMIID.NotFound", private, verifyInput(private, "t3.micro")},
		{"unknown image", "InvalidAMIID.NotFound", "", verifyInput("ami-0123456789abcdef0", "t3.micro")},
		{"malformed image", "InvalidAMIID.Malformed", "", verifyInput("image-1", "t3.micro")},
		{"pending image", "InvalidAMIID.Unavailable", "pending", verifyInput(pending, "t3.micro")},
		{"failed image", "InvalidAMIID.Unavailable", "failed", verifyInput(failed, "t3.micro")},
		{"arm64 image on x86_64 type", "InvalidParameterValue",
			"The architecture 'x86_64' of the specified instance type does not match the architecture 'arm64' of the specified AMI.", verifyInput(arm, "t3.micro")},
		{"x86_64 image on arm64 type", "InvalidParameterValue",
			"The architecture 'arm64' of the specified instance type does not match the architecture 'x86_64' of the specified AMI.", verifyInput(own, "t4g.micro")},
		{"unknown instance type", "InvalidParameterValue", "InstanceType", verifyInput(own, "t3.humongous")},
		{"key pair", "InvalidKeyPair.NotFound", "ops", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) { in.KeyName = aws.String("ops") })},
		{"image tag type", "InvalidParameterValue", "'image'", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.TagSpecifications = append(in.TagSpecifications, types.TagSpecification{ResourceType: types.ResourceTypeImage,
				Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}})
		})},
		{"reserved tag key", "InvalidParameterValue", "aws:", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.TagSpecifications[0].Tags = append(in.TagSpecifications[0].Tags, types.Tag{Key: aws.String("aws:x"), Value: aws.String("v")})
		})},
		{"subnet with network interface", "InvalidParameterCombination", "subnet", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.SubnetId = aws.String("subnet-0a1b2c3d4e5f60718")
		})},
		{"security group with network interface", "InvalidParameterCombination", "security groups", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.SecurityGroupIds = []string{"sg-0123456789abcdef0"}
		})},
		{"not a subnet", "InvalidSubnetID.NotFound", "vpc-1", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.NetworkInterfaces[0].SubnetId = aws.String("vpc-1")
		})},
		{"MaxCount below MinCount", "InvalidParameterValue", "maxCount", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.MinCount, in.MaxCount = aws.Int32(2), aws.Int32(1)
		})},
		{"MinCount zero", "InvalidParameterValue", "minCount", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) { in.MinCount = aws.Int32(0) })},
		{"MinCount above the instance limit", "InstanceLimitExceeded", "1001", with(verifyInput(own, "t3.micro"), func(in *ec2.RunInstancesInput) {
			in.MinCount, in.MaxCount = aws.Int32(1001), aws.Int32(1001)
		})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(sim.Instances("", ""))
			out, err := c.RunInstances(ctx, tc.in)
			if code(err) != tc.code || (err != nil && !strings.Contains(err.Error(), tc.msg)) {
				t.Fatalf("got %v, want %q containing %q", err, tc.code, tc.msg)
			}
			want := before
			if tc.code == "" {
				want++
				if len(out.Instances) != 1 || aws.ToString(out.Instances[0].ImageId) != aws.ToString(tc.in.ImageId) {
					t.Fatalf("instances %+v", out.Instances)
				}
			}
			if n := len(sim.Instances("", "")); n != want {
				t.Fatalf("%d instances after the call, want %d", n, want)
			}
		})
	}
}

// TestRunInstancesLaunch: the response and the launched instance as the
// SDK sees them: pending, type, subnet, no public IP, tags, one volume per
// image snapshot tagged from the volume TagSpecification; filters by tag,
// image and state; CreateImage of a launched Graviton instance is arm64.
func TestRunInstancesLaunch(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{})
	sim := env.Sim
	img, snaps := sim.AddImage(ec2sim.ImageSpec{Name: "backup", Volumes: []ec2sim.VolumeSpec{{SizeGiB: 10}, {SizeGiB: 30, Encrypted: true}}})
	sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"app": "web"}}) // not a verification instance
	out, err := c.RunInstances(ctx, verifyInput(img, "t3.micro"))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Instances) != 1 || !strings.HasPrefix(aws.ToString(out.ReservationId), "r-") || aws.ToString(out.OwnerId) != ec2sim.DefaultAccount {
		t.Fatalf("reservation %+v", out)
	}
	got := out.Instances[0]
	id := aws.ToString(got.InstanceId)
	if got.State.Name != types.InstanceStateNamePending || aws.ToInt32(got.State.Code) != 0 || got.InstanceType != types.InstanceTypeT3Micro ||
		aws.ToString(got.SubnetId) != "subnet-0a1b2c3d4e5f60718" || got.PublicIpAddress != nil || got.KeyName != nil ||
		aws.ToString(got.Placement.AvailabilityZone) != "us-east-1a" || got.Architecture != types.ArchitectureValuesX8664 ||
		tagsOf(got.Tags)["amibackup:verify-of"] != img || len(got.SecurityGroups) != 1 || got.LaunchTime == nil {
		t.Fatalf("instance %+v", got)
	}
	bySnapshot := map[string]ec2sim.Volume{}
	for _, v := range sim.Volumes("", "") {
		if v.InstanceID == id {
			bySnapshot[v.SnapshotID] = v
		}
	}
	if len(bySnapshot) != 2 {
		t.Fatalf("%d volumes attached, want one per image snapshot (2)", len(bySnapshot))
	}
	for i, sid := range snaps {
		v := bySnapshot[sid]
		if v.Tags["amibackup:verify-of"] != img || v.Tags["amibackup:managed-by"] != "amibackup" ||
			v.SizeGiB != []int{10, 30}[i] || v.Encrypted != (i == 1) {
			t.Fatalf("volume from %s: %+v", sid, v)
		}
	}
	in, _ := sim.Instance("", "", id)
	if in.ShutdownBehavior != "terminate" || in.PublicIP || in.ImageID != img {
		t.Fatalf("instance state %+v", in)
	}

	// Without a subnet the default subnet maps a public IP: the
	// verification must ask for none explicitly.
	def, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String(img), InstanceType: types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil || def.Instances[0].PublicIpAddress == nil || def.Instances[0].SubnetId == nil {
		t.Fatalf("default subnet launch: %v %+v", err, def)
	}

	for _, tc := range []struct {
		name    string
		filters []types.Filter
		want    int
	}{
		{"verify-of tag", []types.Filter{{Name: aws.String("tag:amibackup:verify-of"), Values: []string{img}}}, 1},
		{"managed-by tag and pending", []types.Filter{{Name: aws.String("tag:amibackup:managed-by"), Values: []string{"amibackup"}},
			{Name: aws.String("instance-state-name"), Values: []string{"pending"}}}, 1},
		{"image-id", []types.Filter{{Name: aws.String("image-id"), Values: []string{img}}}, 2},
		{"running", []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"running"}}}, 1},
		{"instance-type", []types.Filter{{Name: aws.String("instance-type"), Values: []string{"t3.micro"}}}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: tc.filters})
			if err != nil || len(d.Reservations) != tc.want {
				t.Fatalf("%v: %d reservations, want %d", err, len(d.Reservations), tc.want)
			}
		})
	}

	// A Graviton backup of a launched t4g instance is an arm64 image.
	arm, _ := sim.AddImage(ec2sim.ImageSpec{Name: "graviton", Architecture: "arm64"})
	a, err := c.RunInstances(ctx, verifyInput(arm, "t4g.micro"))
	if err != nil {
		t.Fatal(err)
	}
	env.Sim.Advance(5 * time.Minute)
	ci, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: a.Instances[0].InstanceId, Name: aws.String("of-graviton"), NoReboot: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	di, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(ci.ImageId), img}})
	if err != nil || len(di.Images) != 2 {
		t.Fatalf("%v %+v", err, di)
	}
	for _, im := range di.Images {
		want := types.ArchitectureValuesX8664
		if aws.ToString(im.ImageId) == aws.ToString(ci.ImageId) {
			want = types.ArchitectureValuesArm64
		}
		if im.Architecture != want {
			t.Fatalf("image %s architecture %s, want %s", aws.ToString(im.ImageId), im.Architecture, want)
		}
	}
}

// statusOf returns the state and the instance and system checks as
// DescribeInstances and DescribeInstanceStatus (IncludeAllInstances) report them.
func statusOf(t *testing.T, c *ec2.Client, id string) (state, inst, sys string) {
	t.Helper()
	ctx := context.Background()
	d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	state = string(d.Reservations[0].Instances[0].State.Name)
	st, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, IncludeAllInstances: aws.Bool(true)})
	if err != nil || len(st.InstanceStatuses) != 1 {
		t.Fatalf("%v %+v", err, st)
	}
	s := st.InstanceStatuses[0]
	if string(s.InstanceState.Name) != state {
		t.Fatalf("DescribeInstanceStatus state %s, DescribeInstances %s", s.InstanceState.Name, state)
	}
	return state, string(s.InstanceStatus.Status), string(s.SystemStatus.Status)
}

// TestLaunchProgression: pending for Launch.Pending, then running with
// both checks initializing for Launch.StatusInit, then ok; an instance of
// an UnbootableImage gets an impaired instance check (system ok) and keeps
// it. A launch with ClearFaults after the mark boots normally.
func TestLaunchProgression(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{Launch: ec2sim.LaunchTiming{Pending: 40 * time.Second, StatusInit: 3 * time.Minute}})
	good, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "good"})
	bad, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "bad"})
	env.Sim.UnbootableImage(bad)
	launch := func(img string) string {
		out, err := c.RunInstances(ctx, verifyInput(img, "t3.micro"))
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	g, b := launch(good), launch(bad)
	for _, step := range []struct {
		advance          time.Duration
		state            string
		goodInst, badIns string
	}{
		{0, "pending", "not-applicable", "not-applicable"},
		{39 * time.Second, "pending", "not-applicable", "not-applicable"},
		{time.Second, "running", "initializing", "initializing"},
		{3*time.Minute - time.Second, "running", "initializing", "initializing"},
		{time.Second, "running", "ok", "impaired"},
		{24 * time.Hour, "running", "ok", "impaired"},
	} {
		env.Sim.Advance(step.advance)
		for _, inst := range []struct{ id, want string }{{g, step.goodInst}, {b, step.badIns}} {
			state, is, ss := statusOf(t, c, inst.id)
			wantSys := step.goodInst // the host is fine either way
			if state != step.state || is != inst.want || ss != wantSys {
				t.Fatalf("after +%v: %s is %s/%s/%s, want %s/%s/%s", step.advance, inst.id, state, is, ss, step.state, inst.want, wantSys)
			}
		}
	}
	// The running-only listing (what a verifier polls) shows the impaired check.
	st, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{Filters: []types.Filter{
		{Name: aws.String("instance-status.status"), Values: []string{"impaired"}}}})
	if err != nil || len(st.InstanceStatuses) != 1 || aws.ToString(st.InstanceStatuses[0].InstanceId) != b {
		t.Fatalf("%v %+v", err, st)
	}
	env.Sim.ClearFaults()
	again := launch(bad)
	env.Sim.Advance(4 * time.Minute)
	if _, is, _ := statusOf(t, c, again); is != "ok" {
		t.Fatalf("after ClearFaults the image still boots impaired: %s", is)
	}
}

// TestTerminateInstances: shutting-down then terminated; idempotent with
// previous/current state; all or nothing for unknown IDs; volumes deleted
// at termination; visible (filterable by instance-state-name) for an hour,
// excluded from DescribeInstanceStatus unless IncludeAllInstances; then
// gone.
func TestTerminateInstances(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{})
	sim := env.Sim
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "backup", Volumes: []ec2sim.VolumeSpec{{}, {}}})
	out, err := c.RunInstances(ctx, verifyInput(img, "t3.micro"))
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	keep := sim.AddInstance(ec2sim.InstanceSpec{})
	sim.Advance(time.Minute) // running

	verifyVolumes := func() []types.Volume {
		t.Helper()
		d, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []types.Filter{
			{Name: aws.String("tag:amibackup:verify-of"), Values: []string{img}}}})
		if err != nil {
			t.Fatal(err)
		}
		return d.Volumes
	}
	vols := verifyVolumes()
	if len(vols) != 2 {
		t.Fatalf("%d tagged volumes before termination, want 2", len(vols))
	}
	for _, v := range vols {
		if v.State != types.VolumeStateInUse || len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != id ||
			!aws.ToBool(v.Attachments[0].DeleteOnTermination) || tagsOf(v.Tags)["amibackup:managed-by"] != "amibackup" {
			t.Fatalf("volume %+v", v)
		}
	}
	if _, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{"vol-0123456789abcdef0"}}); code(err) != "InvalidVolume.NotFound" {
		t.Fatalf("unknown volume: %v", err)
	}

	terminate := func(ids ...string) (*ec2.TerminateInstancesOutput, error) {
		return c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
	}
	if _, err := terminate(keep, "i-0123456789abcdef0"); code(err) != "InvalidInstanceID.NotFound" {
		t.Fatalf("unknown ID: %v", err)
	}
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}, DryRun: aws.Bool(true)}); code(err) != "DryRunOperation" {
		t.Fatalf("dry run: %v", err)
	}
	if in, _ := sim.Instance("", "", keep); in.State != "running" {
		t.Fatalf("a failed request terminated %s: %s", keep, in.State)
	}
	if in, _ := sim.Instance("", "", id); in.State != "running" {
		t.Fatalf("a dry run terminated %s: %s", id, in.State)
	}
	for _, step := range []struct {
		advance   time.Duration
		prev, cur string
	}{
		{0, "running", "shutting-down"},
		{10 * time.Second, "shutting-down", "shutting-down"}, // idempotent
		{20 * time.Second, "terminated", "terminated"},
	} {
		sim.Advance(step.advance)
		res, err := terminate(id)
		if err != nil || len(res.TerminatingInstances) != 1 {
			t.Fatalf("+%v: %v %+v", step.advance, err, res)
		}
		ti := res.TerminatingInstances[0]
		if string(ti.PreviousState.Name) != step.prev || string(ti.CurrentState.Name) != step.cur || aws.ToString(ti.InstanceId) != id {
			t.Fatalf("+%v: %s -> %s, want %s -> %s", step.advance, ti.PreviousState.Name, ti.CurrentState.Name, step.prev, step.cur)
		}
		// The volumes go with the instance, not before.
		if n, want := len(verifyVolumes()), map[bool]int{true: 0, false: 2}[step.cur == "terminated"]; n != want {
			t.Fatalf("+%v: %d tagged volumes while %s, want %d", step.advance, n, step.cur, want)
		}
	}
	for _, v := range sim.Volumes("", "") {
		if v.InstanceID == id || v.Tags["amibackup:verify-of"] == img {
			t.Fatalf("volume %s of the terminated instance remains", v.ID)
		}
	}
	count := func(in *ec2.DescribeInstancesInput) int {
		d, err := c.DescribeInstances(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return len(d.Reservations)
	}
	statuses := func(all bool) int {
		st, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{IncludeAllInstances: aws.Bool(all)})
		if err != nil {
			t.Fatal(err)
		}
		return len(st.InstanceStatuses)
	}
	terminated := &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("instance-state-name"), Values: []string{"terminated"}},
		{Name: aws.String("tag:amibackup:verify-of"), Values: []string{img}}}}
	if n := count(terminated); n != 1 {
		t.Fatalf("%d terminated instances listed, want 1", n)
	}
	if n, all := statuses(false), statuses(true); n != 1 || all != 2 {
		t.Fatalf("DescribeInstanceStatus lists %d (all: %d), want 1 (2)", n, all)
	}
	sim.Advance(59 * time.Minute)
	if n := count(terminated); n != 1 {
		t.Fatalf("terminated instance gone before an hour: %d", n)
	}
	sim.Advance(time.Minute)
	if n := count(terminated); n != 0 {
		t.Fatalf("terminated instance still listed after an hour: %d", n)
	}
	if _, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}}); code(err) != "InvalidInstanceID.NotFound" {
		t.Fatalf("by ID after an hour: %v", err)
	}
	if _, err := terminate(id); code(err) != "InvalidInstanceID.NotFound" {
		t.Fatalf("terminate after an hour: %v", err)
	}
}

// TestRunInstancesDryRunAndClientToken: DryRun validates and launches
// nothing; a client token makes a repeated call return the same
// reservation, a changed call with it fail IdempotentParameterMismatch; the
// SDK's own token makes its retry of a lost answer launch nothing more.
func TestRunInstancesDryRunAndClientToken(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{})
	sim := env.Sim
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "backup"})
	arm, _ := sim.AddImage(ec2sim.ImageSpec{Name: "graviton", Architecture: "arm64"})
	dry := func(in *ec2.RunInstancesInput) *ec2.RunInstancesInput { in.DryRun = aws.Bool(true); return in }
	tok := func(in *ec2.RunInstancesInput, t string) *ec2.RunInstancesInput {
		in.ClientToken = aws.String(t)
		return in
	}
	for _, tc := range []struct {
		name string
		in   *ec2.RunInstancesInput
		code string
	}{
		{"dry run", dry(verifyInput(img, "t3.micro")), "DryRunOperation"},
		{"dry run of a mismatch", dry(verifyInput(arm, "t3.micro")), "InvalidParameterValue"},
	} {
		if _, err := c.RunInstances(ctx, tc.in); code(err) != tc.code {
			t.Fatalf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if n := len(sim.Instances("", "")); n != 0 {
		t.Fatalf("dry runs launched %d instances", n)
	}

	first, err := c.RunInstances(ctx, tok(verifyInput(img, "t3.micro"), "verify-1"))
	if err != nil {
		t.Fatal(err)
	}
	sim.Advance(time.Minute)
	again, err := c.RunInstances(ctx, tok(verifyInput(img, "t3.micro"), "verify-1"))
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(again.ReservationId) != aws.ToString(first.ReservationId) ||
		aws.ToString(again.Instances[0].InstanceId) != aws.ToString(first.Instances[0].InstanceId) ||
		again.Instances[0].State.Name != types.InstanceStateNameRunning || aws.ToString(again.Instances[0].ClientToken) != "verify-1" {
		t.Fatalf("retry with the token: %+v, first %+v", again, first)
	}
	if _, err := c.RunInstances(ctx, tok(verifyInput(img, "t3.small"), "verify-1")); code(err) != "IdempotentParameterMismatch" {
		t.Fatalf("changed parameters with the same token: %v", err)
	}
	// The same token in another Region is another request.
	west := noRetryClient(env.URL, ec2sim.DefaultAccount, "eu-west-1")
	imgWest, _ := sim.AddImage(ec2sim.ImageSpec{Region: "eu-west-1", Name: "backup"})
	if _, err := west.RunInstances(ctx, tok(verifyInput(imgWest, "t3.micro"), "verify-1")); err != nil {
		t.Fatal(err)
	}
	if n := len(sim.Instances("", "")); n != 1 {
		t.Fatalf("%d instances after the token's retries, want 1", n)
	}

	// A lost answer: the SDK retries with the token it generated.
	sim.Inject(ec2sim.Fault{Action: "RunInstances", ImageID: img, Code: "InternalError", After: true, Times: 1})
	sc := env.Client("", "")
	out, err := sc.RunInstances(ctx, verifyInput(img, "t3.micro"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(sim.Instances("", "")); n != 2 || sim.Calls().Faults["RunInstances"] != 1 {
		t.Fatalf("%d instances after a lost answer and the SDK's retry, want 2 (calls %+v)", n, sim.Calls())
	}
	if _, ok := sim.Instance("", "", aws.ToString(out.Instances[0].InstanceId)); !ok {
		t.Fatal("the retry's answer names an instance that does not exist")
	}
}

// TestLaunchThrottling: RunInstances' request bucket (5, +2/s) and
// resource bucket (1000 instances, +2/s), TerminateInstances' request
// bucket (100, +5/s) and resource bucket (1000, +20/s), and
// DescribeInstanceStatus in the unfiltered-and-unpaginated class (50, +10/s).
func TestLaunchThrottling(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{Throttle: true})
	sim := env.Sim
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "backup"})
	run := func(minN, maxN int32) (int, error) {
		in := verifyInput(img, "t3.micro")
		in.MinCount, in.MaxCount = aws.Int32(minN), aws.Int32(maxN)
		out, err := c.RunInstances(ctx, in)
		if err != nil {
			return 0, err
		}
		return len(out.Instances), nil
	}
	// Request bucket: 5 calls, then throttled; 2 more a second later.
	for i := range 5 {
		if _, err := run(1, 1); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
	}
	if _, err := run(1, 1); code(err) != "RequestLimitExceeded" {
		t.Fatalf("6th call: %v", err)
	}
	sim.Advance(time.Second)
	for i := range 2 {
		if _, err := run(1, 1); err != nil {
			t.Fatalf("refilled call %d: %v", i+1, err)
		}
	}
	// Resource bucket, full again after 10 s (+20, capped at 1000): one
	// launch leaves 999; MinCount above that is throttled, MaxCount above
	// it launches what is left.
	sim.Advance(10 * time.Second)
	if _, err := run(1, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := run(1000, 1000); code(err) != "RequestLimitExceeded" {
		t.Fatalf("MinCount above the resource bucket: %v", err)
	}
	if n, err := run(1, 2000); err != nil || n != 999 {
		t.Fatalf("MaxCount above the resource bucket: %d, %v; want 999", n, err)
	}
	if _, err := run(1, 1); code(err) != "RequestLimitExceeded" {
		t.Fatalf("empty resource bucket: %v", err)
	}
	sim.Advance(time.Second) // +2 tokens, not 4: Advance used to refill buckets twice
	if n, err := run(1, 5); err != nil || n != 2 {
		t.Fatalf("a second later: %d, %v; want 2", n, err)
	}
	if th := sim.Calls().Throttled["RunInstances"]; th != 3 {
		t.Fatalf("%d RunInstances throttled, want 3", th)
	}

	// TerminateInstances: resource bucket 1000 (+20/s).
	var ids []string
	for _, in := range sim.Instances("", "") {
		ids = append(ids, in.ID)
	}
	if len(ids) != 1009 {
		t.Fatalf("%d instances", len(ids))
	}
	term := func(ids []string) error {
		_, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
		return err
	}
	for i := 0; i < 1000; i += 100 {
		if err := term(ids[i : i+100]); err != nil {
			t.Fatalf("terminate %d..: %v", i, err)
		}
	}
	if err := term(ids[1000:1001]); code(err) != "RequestLimitExceeded" {
		t.Fatalf("terminate beyond the resource bucket: %v", err)
	}
	sim.Advance(time.Second)
	if err := term(ids[1000:1009]); err != nil {
		t.Fatalf("a second later: %v", err)
	}

	// DescribeInstanceStatus without filter or pagination: 50, +10/s; a
	// filtered call draws from the larger bucket.
	for i := range 50 {
		if _, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{}); err != nil {
			t.Fatalf("status call %d: %v", i+1, err)
		}
	}
	if _, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{}); code(err) != "RequestLimitExceeded" {
		t.Fatalf("51st unfiltered status call: %v", err)
	}
	if _, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{MaxResults: aws.Int32(5)}); err != nil {
		t.Fatalf("paginated status call: %v", err)
	}
}

// TestShutdownFromOS: a guest that shuts itself down is terminated under
// InstanceInitiatedShutdownBehavior=terminate (state reason
// Client.InstanceInitiatedShutdown), stopped otherwise.
func TestShutdownFromOS(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{})
	img, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "backup"})
	for _, tc := range []struct {
		behavior      types.ShutdownBehavior
		state, reason string
	}{
		{types.ShutdownBehaviorTerminate, "shutting-down", "Client.InstanceInitiatedShutdown"},
		{"", "stopped", ""},
		{types.ShutdownBehaviorStop, "stopped", ""},
	} {
		in := verifyInput(img, "t3.micro")
		in.InstanceInitiatedShutdownBehavior = tc.behavior
		out, err := c.RunInstances(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		id := aws.ToString(out.Instances[0].InstanceId)
		if err := env.Sim.ShutdownFromOS("", "", id); err == nil {
			t.Fatalf("%q: a pending instance shut down", tc.behavior)
		}
		env.Sim.Advance(time.Minute)
		if err := env.Sim.ShutdownFromOS("", "", id); err != nil {
			t.Fatal(err)
		}
		d, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		got := d.Reservations[0].Instances[0]
		reason := ""
		if got.StateReason != nil {
			reason = aws.ToString(got.StateReason.Code)
		}
		if string(got.State.Name) != tc.state || reason != tc.reason {
			t.Fatalf("%q: %s (%s), want %s (%s)", tc.behavior, got.State.Name, reason, tc.state, tc.reason)
		}
	}
}

// TestUnbootableSurvivesReboot: a backup of an unbootable backup's
// instance (a reboot-mode CreateImage under RebootModel) does not cure it;
// RegisterImage records the architecture it is given.
func TestUnbootableSurvivesReboot(t *testing.T) {
	ctx := context.Background()
	env, c := launchEnv(t, ec2sim.Options{RebootModel: true})
	bad, snaps := env.Sim.AddImage(ec2sim.ImageSpec{Name: "bad"})
	env.Sim.UnbootableImage(bad)
	out, err := c.RunInstances(ctx, verifyInput(bad, "t3.micro"))
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	env.Sim.Advance(10 * time.Minute)
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("rebooted")}); err != nil {
		t.Fatal(err)
	}
	env.Sim.Advance(10 * time.Minute)
	if state, is, ss := statusOf(t, c, id); state != "running" || is != "impaired" || ss != "ok" {
		t.Fatalf("after a reboot: %s/%s/%s, want running/impaired/ok", state, is, ss)
	}
	for _, tc := range []struct{ arch, code string }{{"arm64", ""}, {"sparc", "InvalidParameterValue"}} {
		r, err := c.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("registered-" + tc.arch), Architecture: types.ArchitectureValues(tc.arch),
			BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String(snaps[0])}}}})
		if code(err) != tc.code {
			t.Fatalf("%s: %v", tc.arch, err)
		}
		if err != nil {
			continue
		}
		if _, err := c.RunInstances(ctx, verifyInput(aws.ToString(r.ImageId), "t3.micro")); code(err) != "InvalidParameterValue" {
			t.Fatalf("x86_64 type from a registered arm64 image: %v", err)
		}
	}
}
