package ec2sim_test

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// start serves a new emulator for one test.
func start(t *testing.T, opts ec2sim.Options) (*ec2sim.Sim, string) {
	t.Helper()
	sim := ec2sim.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv.URL
}

func TestDisableImageDeprecation(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	img, _ := sim.AddImage(ec2sim.ImageSpec{Name: "dep"})
	if _, err := c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(img), DeprecateAt: aws.Time(time.Now().Add(24 * time.Hour))}); err != nil {
		t.Fatal(err)
	}
	if got := sim.Images("", "")[0].DeprecationTime; got.IsZero() {
		t.Fatal("deprecation time not set")
	}
	if _, err := c.DisableImageDeprecation(ctx, &ec2.DisableImageDeprecationInput{ImageId: aws.String(img)}); err != nil {
		t.Fatal(err)
	}
	out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img}})
	if err != nil || out.Images[0].DeprecationTime != nil {
		t.Fatalf("after DisableImageDeprecation: %v %v", err, aws.ToString(out.Images[0].DeprecationTime))
	}
	if _, err := c.DisableImageDeprecation(ctx, &ec2.DisableImageDeprecationInput{ImageId: aws.String("ami-0123456789abcdef0")}); code(err) != "InvalidAMIID.NotFound" {
		t.Fatalf("unknown image: %v", err)
	}
}

func TestDescribeSnapshotAttribute(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	snap := sim.AddSnapshot(ec2sim.SnapshotSpec{})
	perms := func() []string {
		t.Helper()
		out, err := c.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: aws.String(snap), Attribute: types.SnapshotAttributeNameCreateVolumePermission})
		if err != nil {
			t.Fatal(err)
		}
		if aws.ToString(out.SnapshotId) != snap {
			t.Fatalf("snapshot ID %q", aws.ToString(out.SnapshotId))
		}
		var got []string
		for _, p := range out.CreateVolumePermissions {
			got = append(got, aws.ToString(p.UserId))
		}
		return got
	}
	modify := func(m types.CreateVolumePermissionModifications) {
		t.Helper()
		if _, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: aws.String(snap), Attribute: types.SnapshotAttributeNameCreateVolumePermission, CreateVolumePermission: &m}); err != nil {
			t.Fatal(err)
		}
	}
	if got := perms(); len(got) != 0 {
		t.Fatalf("new snapshot shared with %v", got)
	}
	modify(types.CreateVolumePermissionModifications{Add: []types.CreateVolumePermission{{UserId: aws.String("222222222222")}, {UserId: aws.String("333333333333")}}})
	if got := perms(); strings.Join(got, ",") != "222222222222,333333333333" {
		t.Fatalf("after add: %v", got)
	}
	modify(types.CreateVolumePermissionModifications{Remove: []types.CreateVolumePermission{{UserId: aws.String("222222222222")}}})
	if got := perms(); strings.Join(got, ",") != "333333333333" {
		t.Fatalf("after remove: %v", got)
	}
	stranger := client(t, u, "444444444444", ec2sim.DefaultRegion)
	if _, err := stranger.DescribeSnapshotAttribute(ctx, &ec2.DescribeSnapshotAttributeInput{SnapshotId: aws.String(snap), Attribute: types.SnapshotAttributeNameCreateVolumePermission}); code(err) != "InvalidSnapshot.NotFound" {
		t.Fatalf("another account: %v", err)
	}
}

func TestKMSDescribeKey(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	kc := kms.New(kms.Options{Region: ec2sim.DefaultRegion, BaseEndpoint: aws.String(u), HTTPClient: simtest.HTTPClient(),
		Credentials: credentials.NewStaticCredentialsProvider(ec2sim.DefaultAccount, "secret", "")})
	ctx := context.Background()
	for _, tc := range []struct {
		key, manager, code string
	}{
		{ec2sim.AWSManagedKey(ec2sim.DefaultAccount, ec2sim.DefaultRegion), string(kmstypes.KeyManagerTypeAws), ""},
		{"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab", string(kmstypes.KeyManagerTypeCustomer), ""},
		{"alias/not-an-arn", "", "NotFoundException"},
	} {
		out, err := kc.DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(tc.key)})
		if tc.code != "" {
			if code(err) != tc.code {
				t.Errorf("%s: %v, want %s", tc.key, err, tc.code)
			}
			continue
		}
		if err != nil || string(out.KeyMetadata.KeyManager) != tc.manager || aws.ToString(out.KeyMetadata.Arn) != tc.key {
			t.Errorf("%s: %v %+v, want KeyManager %s", tc.key, err, out, tc.manager)
		}
	}
	if n := sim.Calls().Count("kms:DescribeKey"); n != 3 {
		t.Fatalf("call log counts %d kms:DescribeKey, want 3", n)
	}
}

func TestInvalidAMIName(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	src, snaps := sim.AddImage(ec2sim.ImageSpec{Name: "source"})
	for _, name := range []string{"ab", strings.Repeat("a", 129), "bad*name", "comma,name", "ümlaut"} {
		t.Run(name, func(t *testing.T) {
			_, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(name)})
			if code(err) != "InvalidAMIName.Malformed" {
				t.Errorf("CreateImage: %v", err)
			}
			_, err = c.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(src), SourceRegion: aws.String(ec2sim.DefaultRegion), Name: aws.String(name)})
			if code(err) != "InvalidAMIName.Malformed" {
				t.Errorf("CopyImage: %v", err)
			}
			_, err = c.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String(name),
				BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String(snaps[0])}}}})
			if code(err) != "InvalidAMIName.Malformed" {
				t.Errorf("RegisterImage: %v", err)
			}
		})
	}
	// The longest and the most varied valid names pass.
	for _, name := range []string{strings.Repeat("a", 128), "ok (1) [x] a.b/c-d_e@f 'g'"} {
		if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(name)}); err != nil {
			t.Errorf("valid name %q: %v", name, err)
		}
	}
}

func TestAMINameUniquePerAccountAndRegion(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	ctx := context.Background()
	const a, b = "111111111111", "222222222222"
	for _, tc := range []struct {
		account, region, code string
	}{
		{a, "us-east-1", ""},
		{b, "us-east-1", ""},
		{a, "eu-west-1", ""},
		{a, "us-east-1", "InvalidAMIName.Duplicate"},
	} {
		id := sim.AddInstance(ec2sim.InstanceSpec{Account: tc.account, Region: tc.region})
		_, err := client(t, u, tc.account, tc.region).CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("same-name")})
		if code(err) != tc.code || (tc.code == "" && err != nil) {
			t.Errorf("account %s, Region %s: %v, want %q", tc.account, tc.region, err, tc.code)
		}
	}
}

func TestNoRebootCounter(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	for i, noReboot := range []bool{true, false, true} {
		if _, err := c.CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(fmt.Sprintf("nr-%d", i)), NoReboot: aws.Bool(noReboot)}); err != nil {
			t.Fatal(err)
		}
	}
	in, _ := sim.Instance("", "", id)
	if in.NoRebootImages != 2 || in.Reboots != 1 {
		t.Fatalf("NoRebootImages %d, Reboots %d; want 2 and 1", in.NoRebootImages, in.Reboots)
	}
	for _, im := range sim.Images("", "") {
		if want := im.Name != "nr-1"; im.NoReboot != want {
			t.Errorf("%s: NoReboot %v, want %v", im.Name, im.NoReboot, want)
		}
	}
}

func TestRandomFaultRate(t *testing.T) {
	sim, u := start(t, ec2sim.Options{FaultRate: 0.3, Seed: 7})
	c := noRetryClient(u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	codes := map[string]int{}
	const n = 300
	for range n {
		_, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
		if err != nil {
			codes[code(err)]++
		}
	}
	failed := codes["InternalError"] + codes["Unavailable"]
	if len(codes) != 2 || failed < n*15/100 || failed > n*45/100 {
		t.Fatalf("errors by code %v out of %d calls, want about 30%% split between InternalError and Unavailable", codes, n)
	}
	if f := sim.Calls().Faults["DescribeInstances"]; f != failed {
		t.Fatalf("call log counts %d faults, clients saw %d", f, failed)
	}
	sim.ClearFaults()
	if _, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}); err != nil {
		t.Fatalf("after ClearFaults: %v", err)
	}
}

func TestAddedLatency(t *testing.T) {
	const latency = 40 * time.Millisecond
	_, u := start(t, ec2sim.Options{Latency: latency})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	for range 3 {
		t0 := time.Now()
		if _, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d < latency {
			t.Fatalf("call took %v, want at least %v", d, latency)
		}
	}
}

func TestControlCallsEndpoint(t *testing.T) {
	_, u := start(t, ec2sim.Options{})
	ctx := context.Background()
	for range 3 {
		if _, err := client(t, u, "222222222222", ec2sim.DefaultRegion).DescribeInstances(ctx, &ec2.DescribeInstancesInput{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion).DescribeImages(ctx, &ec2.DescribeImagesInput{DryRun: aws.Bool(true)}); code(err) != "DryRunOperation" {
		t.Fatal(err)
	}
	get := func() ec2sim.CallLog {
		t.Helper()
		resp, err := http.Get(u + "/_sim/calls")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET /_sim/calls: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var cl ec2sim.CallLog
		if err := json.NewDecoder(resp.Body).Decode(&cl); err != nil {
			t.Fatalf("decode /_sim/calls: %v", err)
		}
		return cl
	}
	cl := get()
	if cl.Total != 4 || cl.ByAction["DescribeInstances"] != 3 || cl.ByAccount["222222222222"]["DescribeInstances"] != 3 || cl.DryRun["DescribeImages"] != 1 || cl.ByAction["DescribeImages"] != 0 {
		t.Fatalf("call log %+v", cl)
	}
	resp, err := http.Post(u+"/_sim/calls/reset", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cl := get(); cl.Total != 0 || len(cl.ByAction) != 0 {
		t.Fatalf("after reset: %+v", cl)
	}
}

func TestDescribeSnapshotsPaginatorOver1000(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	const n = 1234
	for range n {
		sim.AddSnapshot(ec2sim.SnapshotSpec{Tags: map[string]string{"Bulk": "yes"}})
	}
	sim.AddSnapshot(ec2sim.SnapshotSpec{})
	for _, tc := range []struct {
		max   int32
		pages int
	}{{1000, 2}, {500, 3}, {5, 247}} {
		pg := ec2.NewDescribeSnapshotsPaginator(c, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, MaxResults: aws.Int32(tc.max),
			Filters: []types.Filter{{Name: aws.String("tag:Bulk"), Values: []string{"yes"}}}})
		seen, pages := map[string]bool{}, 0
		for pg.HasMorePages() {
			out, err := pg.NextPage(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, sn := range out.Snapshots {
				seen[aws.ToString(sn.SnapshotId)] = true
			}
		}
		if len(seen) != n || pages != tc.pages {
			t.Errorf("MaxResults %d: %d distinct snapshots in %d pages, want %d in %d", tc.max, len(seen), pages, n, tc.pages)
		}
	}
}

func TestCopyImageWithinRegion(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	src, srcSnaps := sim.AddImage(ec2sim.ImageSpec{Name: "source", Tags: map[string]string{"k": "v"}})
	out, err := c.CopyImage(context.Background(), &ec2.CopyImageInput{SourceImageId: aws.String(src), SourceRegion: aws.String(ec2sim.DefaultRegion),
		Name: aws.String("copy"), CopyImageTags: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	var cp ec2sim.Image
	for _, im := range sim.Images("", "") {
		if im.ID == aws.ToString(out.ImageId) {
			cp = im
		}
	}
	if cp.SourceImageID != src || cp.SourceRegion != ec2sim.DefaultRegion || cp.State != "available" || cp.Tags["k"] != "v" ||
		len(cp.SnapshotIDs) != 1 || cp.SnapshotIDs[0] == srcSnaps[0] {
		t.Fatalf("copy %+v of %s (snapshots %v)", cp, src, srcSnaps)
	}
	if n := len(sim.Snapshots("", "")); n != 2 {
		t.Fatalf("%d snapshots, want the source's and the copy's", n)
	}
}

func TestImagePendingBeforeAvailable(t *testing.T) {
	sim, u := start(t, ec2sim.Options{ImageDelay: 10 * time.Minute})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("slow")})
	if err != nil {
		t.Fatal(err)
	}
	states := func() (types.ImageState, types.SnapshotState) {
		t.Helper()
		im, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(out.ImageId)}})
		if err != nil {
			t.Fatal(err)
		}
		sn, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{aws.ToString(im.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)}})
		if err != nil {
			t.Fatal(err)
		}
		return im.Images[0].State, sn.Snapshots[0].State
	}
	for _, step := range []struct {
		advance time.Duration
		image   types.ImageState
		snap    types.SnapshotState
	}{
		{0, types.ImageStatePending, types.SnapshotStatePending},
		{9 * time.Minute, types.ImageStatePending, types.SnapshotStatePending},
		{time.Minute, types.ImageStateAvailable, types.SnapshotStateCompleted},
	} {
		sim.Advance(step.advance)
		if im, sn := states(); im != step.image || sn != step.snap {
			t.Fatalf("after +%v: image %s, snapshot %s; want %s, %s", step.advance, im, sn, step.image, step.snap)
		}
	}
}

// TestDryRun: mutating actions with DryRun=true answer DryRunOperation
// (HTTP 412) and change nothing.
func TestDryRun(t *testing.T) {
	sim, u := start(t, ec2sim.Options{})
	c := client(t, u, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	img, snaps := sim.AddImage(ec2sim.ImageSpec{Name: "dry", Tags: map[string]string{"k": "v"}})
	loose := sim.AddSnapshot(ec2sim.SnapshotSpec{})
	dry := aws.Bool(true)
	tag := []types.Tag{{Key: aws.String("new"), Value: aws.String("x")}}
	for _, tc := range []struct {
		action string
		call   func() error
	}{
		{"CreateImage", func() error {
			_, err := c.CreateImage(ctx, &ec2.CreateImageInput{DryRun: dry, InstanceId: aws.String(id), Name: aws.String("dry-new")})
			return err
		}},
		{"DeregisterImage", func() error {
			_, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{DryRun: dry, ImageId: aws.String(img), DeleteAssociatedSnapshots: aws.Bool(true)})
			return err
		}},
		{"CreateTags", func() error {
			_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{DryRun: dry, Resources: []string{img}, Tags: tag})
			return err
		}},
		{"DeleteTags", func() error {
			_, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{DryRun: dry, Resources: []string{img}})
			return err
		}},
		{"DeleteSnapshot", func() error {
			_, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{DryRun: dry, SnapshotId: aws.String(loose)})
			return err
		}},
		{"EnableImageDeprecation", func() error {
			_, err := c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{DryRun: dry, ImageId: aws.String(img), DeprecateAt: aws.Time(time.Now().Add(time.Hour))})
			return err
		}},
		{"ModifyImageAttribute", func() error {
			_, err := c.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{DryRun: dry, ImageId: aws.String(img),
				LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String("222222222222")}}}})
			return err
		}},
		{"ModifySnapshotAttribute", func() error {
			_, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{DryRun: dry, SnapshotId: aws.String(loose), Attribute: types.SnapshotAttributeNameCreateVolumePermission,
				CreateVolumePermission: &types.CreateVolumePermissionModifications{Add: []types.CreateVolumePermission{{UserId: aws.String("222222222222")}}}})
			return err
		}},
		{"CopyImage", func() error {
			_, err := c.CopyImage(ctx, &ec2.CopyImageInput{DryRun: dry, SourceImageId: aws.String(img), SourceRegion: aws.String(ec2sim.DefaultRegion), Name: aws.String("dry-copy")})
			return err
		}},
		{"RegisterImage", func() error {
			_, err := c.RegisterImage(ctx, &ec2.RegisterImageInput{DryRun: dry, Name: aws.String("dry-reg"),
				BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String(snaps[0])}}}})
			return err
		}},
	} {
		if err := tc.call(); code(err) != "DryRunOperation" {
			t.Errorf("%s: %v, want DryRunOperation", tc.action, err)
		}
		if calls := sim.Calls(); calls.DryRun[tc.action] != 1 || calls.Count(tc.action) != 0 {
			t.Errorf("%s: call log DryRun %d, accepted %d; want 1 and 0", tc.action, calls.DryRun[tc.action], calls.Count(tc.action))
		}
	}
	images, snapshots := sim.Images("", ""), sim.Snapshots("", "")
	if len(images) != 1 || len(snapshots) != 2 || len(images[0].Tags) != 1 || !images[0].DeprecationTime.IsZero() ||
		len(images[0].LaunchPermissions) != 0 || len(snapshots[1].CreateVolumePermissions) != 0 {
		t.Fatalf("dry runs changed state: images %+v snapshots %+v", images, snapshots)
	}
	if in, _ := sim.Instance("", "", id); in.Reboots != 0 {
		t.Fatalf("dry-run CreateImage rebooted the instance")
	}

	// The SDK hides the status; EC2 sends DryRunOperation as HTTP 412.
	form := url.Values{"Action": {"DeleteSnapshot"}, "Version": {"2016-11-15"}, "SnapshotId": {loose}, "DryRun": {"true"}}
	resp, err := http.PostForm(u+"/", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Errors []struct{ Code string } `xml:"Errors>Error"`
	}
	if err := xmlDecode(resp, &body); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusPreconditionFailed || len(body.Errors) != 1 || body.Errors[0].Code != "DryRunOperation" {
		t.Fatalf("raw dry run: HTTP %d %+v, want 412 DryRunOperation", resp.StatusCode, body)
	}
}

func xmlDecode(resp *http.Response, v any) error {
	if err := xml.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decode XML response (HTTP %d): %w", resp.StatusCode, err)
	}
	return nil
}
