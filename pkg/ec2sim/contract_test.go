package ec2sim_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// target is one EC2 implementation the contract suite runs against: our
// emulator always, moto as a second opinion when it is installed.
type target struct {
	name string
	url  string
	sim  *ec2sim.Sim // nil for moto
	// seed creates a running instance with tags and n volumes.
	seed func(t *testing.T, tags map[string]string, volumes int) string
}

func (tg target) client(account, region string) *ec2.Client {
	o := ec2.Options{Region: region, BaseEndpoint: aws.String(tg.url),
		Credentials: credentials.NewStaticCredentialsProvider(account, "secret", ""), Retryer: awsclient.NewRetryer(),
		HTTPClient: simtest.HTTPClient()}
	if tg.sim == nil {
		// ec2sim takes the account from a 12-digit access key; moto 5.2.1
		// maps access keys to accounts only for IAM users it created, but
		// reads the account from this header, so the multi-account cases
		// run against moto too.
		o.APIOptions = append(o.APIOptions, smithyhttp.SetHeaderValue("x-moto-account-id", account))
	}
	return ec2.New(o)
}

// motoGap skips a case moto is known to get wrong, saying why; EC2's
// documented behaviour is the reference.
func (tg target) motoGap(t *testing.T, why string) {
	t.Helper()
	if tg.sim == nil {
		t.Skipf("moto differs from EC2 here: %s", why)
	}
}

func simTarget(t *testing.T) target {
	sim, srvURL := start(t, ec2sim.Options{})
	return target{name: "ec2sim", url: srvURL, sim: sim, seed: func(t *testing.T, tags map[string]string, volumes int) string {
		return sim.AddInstance(ec2sim.InstanceSpec{Tags: tags, Volumes: make([]ec2sim.VolumeSpec, volumes)})
	}}
}

// motoTarget starts `python3 -m moto.server` on a free port, or skips
// visibly when moto is not installed.
func motoTarget(t *testing.T) target {
	if err := exec.Command("python3", "-c", "import moto").Run(); err != nil {
		t.Skip("moto is not installed (python3 -c 'import moto' failed): contract suite ran against ec2sim only")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command("python3", "-m", "moto.server", "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Env = append(os.Environ(), "MOTO_EC2_LOAD_DEFAULT_AMIS=false")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	for i := 0; ; i++ {
		if resp, err := http.Get(url + "/moto-api/"); err == nil {
			resp.Body.Close()
			break
		}
		if i > 150 {
			t.Fatal("moto server did not start within 15s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	tg := target{name: "moto", url: url}
	tg.seed = func(t *testing.T, tags map[string]string, volumes int) string {
		var tl []types.Tag
		for k, v := range tags {
			tl = append(tl, types.Tag{Key: aws.String(k), Value: aws.String(v)})
		}
		in := &ec2.RunInstancesInput{ImageId: aws.String("ami-12345678"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
		if len(tl) > 0 {
			in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: tl}}
		}
		out, err := tg.client(ec2sim.DefaultAccount, ec2sim.DefaultRegion).RunInstances(context.Background(), in)
		if err != nil {
			t.Fatalf("moto RunInstances: %v", err)
		}
		return aws.ToString(out.Instances[0].InstanceId)
	}
	return tg
}

func TestContractEC2Sim(t *testing.T) { runContract(t, simTarget(t)) }

func TestContractMoto(t *testing.T) {
	if testing.Short() {
		t.Skip("moto cross-check skipped in -short mode (it runs in the full suite)")
	}
	runContract(t, motoTarget(t))
}

func tagsOf(ts []types.Tag) map[string]string {
	m := map[string]string{}
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

func runContract(t *testing.T, tg target) {
	ctx := context.Background()
	c := tg.client(ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	tagged := func(k, v string) []types.TagSpecification {
		return []types.TagSpecification{{ResourceType: types.ResourceTypeImage, Tags: []types.Tag{{Key: aws.String(k), Value: aws.String(v)}}}}
	}

	t.Run("DescribeInstances filters and pagination", func(t *testing.T) {
		n := 60
		if tg.sim != nil {
			n = 2500
			tg.sim.SeedFleet("", "", n, map[string]string{"Contract": "pages"})
		} else {
			for range n {
				tg.seed(t, map[string]string{"Contract": "pages"}, 1)
			}
		}
		tg.seed(t, map[string]string{"Contract": "other"}, 1)
		pg := ec2.NewDescribeInstancesPaginator(c, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(25),
			Filters: []types.Filter{{Name: aws.String("tag:Contract"), Values: []string{"pages"}}, {Name: aws.String("instance-state-name"), Values: []string{"running"}}}})
		got, pages := 0, 0
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, r := range out.Reservations {
				got += len(r.Instances)
			}
		}
		if got != n || pages != (n+24)/25 {
			t.Fatalf("%d instances in %d pages, want %d in %d", got, pages, n, (n+24)/25)
		}
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("tag-key"), Values: []string{"Contract"}}, {Name: aws.String("tag:Contract"), Values: []string{"other"}}}})
		if err != nil || len(out.Reservations) != 1 {
			t.Fatalf("tag-key filter: %v %d", err, len(out.Reservations))
		}
	})

	t.Run("DescribeImages pagination over 2,500 images", func(t *testing.T) {
		tg.motoGap(t, "moto ignores MaxResults on DescribeImages")
		for i := range 2500 {
			tg.sim.AddImage(ec2sim.ImageSpec{Name: fmt.Sprintf("page-%04d", i), Tags: map[string]string{"Contract": "pages"}})
		}
		pg := ec2.NewDescribeImagesPaginator(c, &ec2.DescribeImagesInput{Owners: []string{"self"}, MaxResults: aws.Int32(100),
			Filters: []types.Filter{{Name: aws.String("tag:Contract"), Values: []string{"pages"}}}})
		got, pages, names := 0, 0, map[string]bool{}
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, im := range out.Images {
				names[aws.ToString(im.Name)] = true
				got++
			}
		}
		if got != 2500 || len(names) != 2500 || pages != 25 {
			t.Fatalf("%d images (%d distinct) in %d pages", got, len(names), pages)
		}
	})

	id := tg.seed(t, map[string]string{"Backup": "nightly"}, 2)
	var imageID string
	t.Run("CreateImage with image tags, DescribeImages", func(t *testing.T) {
		out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-1"), TagSpecifications: tagged("k", "v")})
		if err != nil {
			t.Fatal(err)
		}
		imageID = aws.ToString(out.ImageId)
		imgs, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{{Name: aws.String("tag:k"), Values: []string{"v"}}}})
		if err != nil || len(imgs.Images) != 1 || aws.ToString(imgs.Images[0].ImageId) != imageID || aws.ToString(imgs.Images[0].Name) != "contract-1" {
			t.Fatalf("DescribeImages by tag: %v %+v", err, imgs)
		}
		byName, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}, Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"contract-*"}}}})
		if err != nil || len(byName.Images) != 1 || len(byName.Images[0].BlockDeviceMappings) == 0 || byName.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId == nil {
			t.Fatalf("DescribeImages by name: %v %+v", err, byName)
		}
	})

	t.Run("snapshot TagSpecifications in CreateImage", func(t *testing.T) {
		tg.motoGap(t, "moto rejects snapshot TagSpecifications in CreateImage with HTTP 500")
		spec := append(tagged("k", "v"), types.TagSpecification{ResourceType: types.ResourceTypeSnapshot, Tags: []types.Tag{{Key: aws.String("s"), Value: aws.String("1")}}})
		out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-snaptags"), TagSpecifications: spec})
		if err != nil {
			t.Fatal(err)
		}
		snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{{Name: aws.String("tag:s"), Values: []string{"1"}}}})
		if err != nil || len(snaps.Snapshots) != 2 {
			t.Fatalf("snapshots: %v %d", err, len(snaps.Snapshots))
		}
		want := "for " + aws.ToString(out.ImageId) + " from vol-"
		if d := aws.ToString(snaps.Snapshots[0].Description); !strings.Contains(d, "Created by CreateImage("+id+")") || !strings.Contains(d, want) {
			t.Errorf("snapshot description %q", d)
		}
		_, err = c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-badtype"),
			TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeVolume, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}}}})
		if code(err) != "InvalidParameterValue" {
			t.Errorf("volume tag spec: %v", err)
		}
	})

	t.Run("duplicate AMI name", func(t *testing.T) {
		tg.motoGap(t, "moto accepts duplicate AMI names")
		_, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-1")})
		if code(err) != "InvalidAMIName.Duplicate" {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("CreateImage errors", func(t *testing.T) {
		_, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String("i-0123456789abcdef0"), Name: aws.String("contract-missing")})
		if code(err) != "InvalidInstanceID.NotFound" {
			t.Errorf("unknown instance: %v", err)
		}
		_, err = c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-dry"), DryRun: aws.Bool(true)})
		if code(err) != "DryRunOperation" {
			t.Errorf("dry run: %v", err)
		}
	})

	t.Run("CreateTags and DeleteTags on images", func(t *testing.T) {
		if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{imageID}, Tags: []types.Tag{{Key: aws.String("x"), Value: aws.String("y")}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{imageID}, Tags: []types.Tag{{Key: aws.String("k")}}}); err != nil {
			t.Fatal(err)
		}
		out, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
		if err != nil {
			t.Fatal(err)
		}
		if m := tagsOf(out.Images[0].Tags); m["x"] != "y" || m["k"] != "" {
			t.Fatalf("tags %v", m)
		}
	})

	t.Run("launch permissions", func(t *testing.T) {
		_, err := c.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(imageID),
			LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String("111111111111")}}}})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(imageID), Attribute: types.ImageAttributeNameLaunchPermission})
		if err != nil || len(out.LaunchPermissions) != 1 || aws.ToString(out.LaunchPermissions[0].UserId) != "111111111111" {
			t.Fatalf("launch permissions: %v %+v", err, out)
		}
	})

	t.Run("organization and OU launch permissions", func(t *testing.T) {
		owner := ec2sim.DefaultAccount
		const (
			nested   = "333333333333" // in the organization, in a child of the shared OU
			sibling  = "444444444444" // in the organization, in another OU
			outsider = "555555555555"
			org      = "o-abc123def4"
		)
		orgARN := "arn:aws:organizations::" + owner + ":organization/" + org
		ouARN := "arn:aws:organizations::" + owner + ":ou/" + org + "/ou-ab12-11111111"
		if tg.sim != nil {
			tg.sim.SetOrganization(nested, ec2sim.Membership{OrgID: org, OUPath: []string{"ou-ab12-11111111", "ou-ab12-22222222"}})
			tg.sim.SetOrganization(sibling, ec2sim.Membership{OrgID: org, OUPath: []string{"ou-ab12-33333333"}})
		}
		out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-org")})
		if err != nil {
			t.Fatal(err)
		}
		img := aws.ToString(out.ImageId)
		if tg.sim != nil {
			tg.sim.CompletePending()
			// Share the storage with the nested account up front, so its
			// CopyImage depends on the AMI's launch permission alone.
			desc, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img}})
			if err != nil {
				t.Fatal(err)
			}
			for _, bdm := range desc.Images[0].BlockDeviceMappings {
				if _, err := c.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: bdm.Ebs.SnapshotId, Attribute: types.SnapshotAttributeNameCreateVolumePermission,
					CreateVolumePermission: &types.CreateVolumePermissionModifications{Add: []types.CreateVolumePermission{{UserId: aws.String(nested)}}}}); err != nil {
					t.Fatal(err)
				}
			}
		}
		user := types.LaunchPermission{UserId: aws.String(outsider)}
		orgPerm := types.LaunchPermission{OrganizationArn: aws.String(orgARN)}
		ouPerm := types.LaunchPermission{OrganizationalUnitArn: aws.String(ouARN)}
		for i, step := range []struct {
			name        string
			add, remove []types.LaunchPermission
			attr        []string
			sees        map[string]bool
		}{
			{"add UserId", []types.LaunchPermission{user}, nil, []string{"user:" + outsider},
				map[string]bool{nested: false, sibling: false, outsider: true}},
			{"add OrganizationalUnitArn", []types.LaunchPermission{ouPerm}, nil, []string{"ou:" + ouARN, "user:" + outsider},
				map[string]bool{nested: true, sibling: false, outsider: true}},
			{"add OrganizationArn", []types.LaunchPermission{orgPerm}, nil, []string{"org:" + orgARN, "ou:" + ouARN, "user:" + outsider},
				map[string]bool{nested: true, sibling: true, outsider: true}},
			{"remove UserId", nil, []types.LaunchPermission{user}, []string{"org:" + orgARN, "ou:" + ouARN},
				map[string]bool{nested: true, sibling: true, outsider: false}},
			{"remove OrganizationArn", nil, []types.LaunchPermission{orgPerm}, []string{"ou:" + ouARN},
				map[string]bool{nested: true, sibling: false, outsider: false}},
			{"remove OrganizationalUnitArn", nil, []types.LaunchPermission{ouPerm}, nil,
				map[string]bool{nested: false, sibling: false, outsider: false}},
		} {
			if _, err := c.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(img),
				LaunchPermission: &types.LaunchPermissionModifications{Add: step.add, Remove: step.remove}}); err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			attr, err := c.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: aws.String(img), Attribute: types.ImageAttributeNameLaunchPermission})
			if err != nil {
				t.Fatalf("%s: %v", step.name, err)
			}
			var got []string
			for _, lp := range attr.LaunchPermissions {
				switch {
				case lp.UserId != nil:
					got = append(got, "user:"+aws.ToString(lp.UserId))
				case lp.OrganizationArn != nil:
					got = append(got, "org:"+aws.ToString(lp.OrganizationArn))
				case lp.OrganizationalUnitArn != nil:
					got = append(got, "ou:"+aws.ToString(lp.OrganizationalUnitArn))
				default:
					got = append(got, "group:"+string(lp.Group))
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, step.attr) {
				t.Fatalf("%s: launch permissions %v, want %v", step.name, got, step.attr)
			}
			if tg.sim == nil {
				// moto keeps each account's images in its own backend, so
				// even a direct UserId share is invisible to the other
				// account; visibility is checked on ec2sim only.
				continue
			}
			for account, want := range step.sees {
				ac := tg.client(account, ec2sim.DefaultRegion)
				execBy, err := ac.DescribeImages(ctx, &ec2.DescribeImagesInput{ExecutableUsers: []string{"self"}})
				if err != nil {
					t.Fatal(err)
				}
				byOwner, err := ac.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{owner}})
				if err != nil {
					t.Fatal(err)
				}
				_, byIDErr := ac.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{img}})
				has := func(ims []types.Image) bool {
					return slices.ContainsFunc(ims, func(im types.Image) bool { return aws.ToString(im.ImageId) == img })
				}
				if has(execBy.Images) != want || has(byOwner.Images) != want || (byIDErr == nil) != want {
					t.Errorf("%s: account %s sees the image: ExecutableUsers=self %v, Owners %v, ImageIds %v; want %v",
						step.name, account, has(execBy.Images), has(byOwner.Images), byIDErr == nil, want)
				}
				// Asked by another account, ExecutableUsers=<account> lists
				// only direct shares, not those to its organization or OU.
				direct, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ExecutableUsers: []string{account}})
				if err != nil {
					t.Fatal(err)
				}
				if wantDirect := slices.Contains(step.attr, "user:"+account); has(direct.Images) != wantDirect {
					t.Errorf("%s: owner's ExecutableUsers=%s lists the image: %v, want %v", step.name, account, has(direct.Images), wantDirect)
				}
				if account != nested {
					continue
				}
				_, err = ac.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(img), SourceRegion: aws.String(ec2sim.DefaultRegion), Name: aws.String(fmt.Sprintf("org-copy-%d", i))})
				if want && err != nil {
					t.Errorf("%s: CopyImage by the nested OU's account: %v", step.name, err)
				}
				if !want && code(err) != "InvalidAMIID.NotFound" {
					t.Errorf("%s: CopyImage without permission: %v, want InvalidAMIID.NotFound", step.name, err)
				}
			}
		}
	})

	t.Run("snapshot in use, deregister with snapshots", func(t *testing.T) {
		img, _ := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{imageID}})
		snap := aws.ToString(img.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
		if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); code(err) != "InvalidSnapshot.InUse" {
			t.Errorf("delete snapshot in use: %v", err)
		}
		if tg.sim == nil {
			t.Skip("moto differs from EC2 here: moto ignores DeleteAssociatedSnapshots")
		}
		out, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(imageID), DeleteAssociatedSnapshots: aws.Bool(true)})
		if err != nil || len(out.DeleteSnapshotResults) != 2 {
			t.Fatalf("deregister: %v %+v", err, out)
		}
		if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); code(err) != "InvalidSnapshot.NotFound" {
			t.Errorf("deleted snapshot: %v", err)
		}
	})

	t.Run("snapshot shared by two AMIs survives DeregisterImage", func(t *testing.T) {
		tg.motoGap(t, "moto's RegisterImage ignores BlockDeviceMappings and DeregisterImage ignores DeleteAssociatedSnapshots")
		a, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-shared-a")})
		if err != nil {
			t.Fatal(err)
		}
		img, err := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(a.ImageId)}})
		if err != nil || len(img.Images) != 1 || len(img.Images[0].BlockDeviceMappings) != 2 {
			t.Fatalf("image A: %v %+v", err, img)
		}
		shared := aws.ToString(img.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId)
		own := aws.ToString(img.Images[0].BlockDeviceMappings[1].Ebs.SnapshotId)
		b, err := c.RegisterImage(ctx, &ec2.RegisterImageInput{Name: aws.String("contract-shared-b"), RootDeviceName: aws.String("/dev/xvda"),
			BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: aws.String(shared)}}}})
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: a.ImageId, DeleteAssociatedSnapshots: aws.Bool(true)})
		if err != nil {
			t.Fatal(err)
		}
		codes := map[string]types.SnapshotReturnCodes{}
		for _, r := range out.DeleteSnapshotResults {
			codes[aws.ToString(r.SnapshotId)] = r.ReturnCode
		}
		if len(codes) != 2 || codes[own] != types.SnapshotReturnCodesSuccess || codes[shared] == "" || codes[shared] == types.SnapshotReturnCodesSuccess {
			t.Fatalf("delete results %v: want success for %s and a non-success code for the shared %s", codes, own, shared)
		}
		snaps, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{shared}})
		if err != nil || len(snaps.Snapshots) != 1 {
			t.Fatalf("shared snapshot gone: %v", err)
		}
		if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(shared)}); code(err) != "InvalidSnapshot.InUse" || !strings.Contains(err.Error(), aws.ToString(b.ImageId)) {
			t.Fatalf("delete of a snapshot image B uses: %v", err)
		}
		if _, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: b.ImageId}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(shared)}); err != nil {
			t.Fatalf("delete once no AMI uses it: %v", err)
		}
	})

	t.Run("deregister unknown image", func(t *testing.T) {
		_, err := c.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String("ami-0123456789abcdef0")})
		if code(err) != "InvalidAMIID.NotFound" {
			t.Fatalf("got %v", err)
		}
	})

	t.Run("deprecation", func(t *testing.T) {
		tg.motoGap(t, "moto has no image deprecation")
		out, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("contract-dep")})
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(48 * time.Hour).Truncate(time.Minute).UTC()
		if _, err := c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: out.ImageId, DeprecateAt: aws.Time(at)}); err != nil {
			t.Fatal(err)
		}
		imgs, _ := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(out.ImageId)}})
		if !strings.HasPrefix(aws.ToString(imgs.Images[0].DeprecationTime), at.Format("2006-01-02T15:04")) {
			t.Errorf("deprecation time %v, want %v", aws.ToString(imgs.Images[0].DeprecationTime), at)
		}
		if _, err := c.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: out.ImageId, DeprecateAt: aws.Time(time.Now().Add(-time.Hour))}); code(err) != "InvalidParameterValue" {
			t.Errorf("past deprecation: %v", err)
		}
	})

	t.Run("two accounts are isolated", func(t *testing.T) {
		other := tg.client("222222222222", ec2sim.DefaultRegion)
		out, err := other.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
		if err != nil || len(out.Images) != 0 {
			t.Fatalf("other account sees %d images: %v", len(out.Images), err)
		}
		if _, err := other.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("steal")}); code(err) != "InvalidInstanceID.NotFound" {
			t.Fatalf("other account imaged our instance: %v", err)
		}
	})

	t.Run("unknown action", func(t *testing.T) {
		tg.motoGap(t, "moto routes requests it cannot match to other services")
		resp, err := http.Post(tg.url+"/", "application/x-www-form-urlencoded", strings.NewReader("Action=LaunchRockets&Version=2016-11-15"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := make([]byte, 1024)
		n, _ := resp.Body.Read(b)
		if resp.StatusCode != 400 || !strings.Contains(string(b[:n]), "<Code>InvalidAction</Code>") {
			t.Fatalf("%d %s", resp.StatusCode, b[:n])
		}
	})
}

// TestThrottlingIsRecoveredBySDK: a burst beyond CreateImage's bucket gets
// RequestLimitExceeded, and the production retryer rides it out.
func TestThrottlingIsRecoveredBySDK(t *testing.T) {
	sim, srvURL := start(t, ec2sim.Options{Throttle: true, TimeScale: 20})
	ids := sim.SeedFleet("", "", 120, nil)
	tg := target{url: srvURL, sim: sim}
	c := tg.client(ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	errs := make(chan error, len(ids))
	for i, id := range ids {
		go func() {
			_, err := c.CreateImage(context.Background(), &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(fmt.Sprintf("burst-%d", i))})
			errs <- err
		}()
	}
	for range ids {
		if err := <-errs; err != nil {
			t.Fatalf("call failed despite retries: %v", err)
		}
	}
	calls := sim.Calls()
	if calls.Throttled["CreateImage"] == 0 || calls.Count("CreateImage") != 120 {
		t.Fatalf("throttled %d, accepted %d", calls.Throttled["CreateImage"], calls.Count("CreateImage"))
	}
}

// TestInjectedFaultsAndConcurrentSnapshotLimit covers the fault knobs.
func TestInjectedFaultsAndConcurrentSnapshotLimit(t *testing.T) {
	sim, srvURL := start(t, ec2sim.Options{ImageDelay: time.Hour})
	c := target{url: srvURL}.client(ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	ctx := context.Background()
	id := sim.AddInstance(ec2sim.InstanceSpec{})
	sim.Inject(ec2sim.Fault{Action: "CreateImage", Nth: 1, Code: "InternalError"})
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("f-0")}); err != nil {
		t.Fatalf("a single 500 should be retried: %v", err)
	}
	if f := sim.Calls().Faults["CreateImage"]; f != 1 {
		t.Fatalf("faults %d", f)
	}
	for i := 1; i < 5; i++ {
		if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String(fmt.Sprintf("f-%d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("f-5")})
	if code(err) != "SnapshotCreationPerVolumeRateExceeded" {
		t.Fatalf("sixth concurrent snapshot: %v", err)
	}
	sim.Advance(2 * time.Hour)
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("f-6")}); err != nil {
		t.Fatalf("after completion: %v", err)
	}
	if err := sim.SetInstanceState("", "", id, "terminated"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("f-7")}); code(err) != "IncorrectState" {
		t.Fatalf("terminated instance: %v", err)
	}
	sim.FailImagesOf(id)
	other := sim.AddInstance(ec2sim.InstanceSpec{})
	sim.FailImagesOf(other)
	out, _ := c.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(other), Name: aws.String("f-8")})
	sim.CompletePending()
	imgs, _ := c.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(out.ImageId)}})
	if imgs.Images[0].State != types.ImageStateFailed {
		t.Fatalf("state %s", imgs.Images[0].State)
	}
}

// TestCrossAccountCopy: sharing then copying into another account and Region.
func TestCrossAccountCopy(t *testing.T) {
	sim, srvURL := start(t, ec2sim.Options{})
	tg := target{url: srvURL, sim: sim}
	src := tg.client("111111111111", "eu-west-1")
	dst := tg.client("222222222222", "eu-central-1")
	ctx := context.Background()
	cmk := "arn:aws:kms:eu-west-1:111111111111:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	id := sim.AddInstance(ec2sim.InstanceSpec{Account: "111111111111", Region: "eu-west-1", Volumes: []ec2sim.VolumeSpec{{Encrypted: true, KmsKeyID: cmk}}})
	awsKey := sim.AddInstance(ec2sim.InstanceSpec{Account: "111111111111", Region: "eu-west-1", Volumes: []ec2sim.VolumeSpec{{Encrypted: true}}})
	img, err := src.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(id), Name: aws.String("shared")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = dst.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: img.ImageId, SourceRegion: aws.String("eu-west-1"), Name: aws.String("copy")})
	if code(err) != "InvalidAMIID.NotFound" {
		t.Fatalf("copy before sharing: %v", err)
	}
	imgs, _ := src.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{aws.ToString(img.ImageId)}})
	snap := imgs.Images[0].BlockDeviceMappings[0].Ebs.SnapshotId
	if _, err := src.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: img.ImageId, LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String("222222222222")}}}}); err != nil {
		t.Fatal(err)
	}
	_, err = dst.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: img.ImageId, SourceRegion: aws.String("eu-west-1"), Name: aws.String("copy")})
	if code(err) != "AuthFailure" {
		t.Fatalf("copy without snapshot permission: %v", err)
	}
	if _, err := src.ModifySnapshotAttribute(ctx, &ec2.ModifySnapshotAttributeInput{SnapshotId: snap, Attribute: types.SnapshotAttributeNameCreateVolumePermission,
		CreateVolumePermission: &types.CreateVolumePermissionModifications{Add: []types.CreateVolumePermission{{UserId: aws.String("222222222222")}}}}); err != nil {
		t.Fatal(err)
	}
	dstKey := "arn:aws:kms:eu-central-1:222222222222:key/abcd"
	cp, err := dst.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: img.ImageId, SourceRegion: aws.String("eu-west-1"), Name: aws.String("copy"), Encrypted: aws.Bool(true), KmsKeyId: aws.String(dstKey)})
	if err != nil {
		t.Fatal(err)
	}
	copies := sim.Images("222222222222", "eu-central-1")
	if len(copies) != 1 || copies[0].ID != aws.ToString(cp.ImageId) || copies[0].KmsKeyID != dstKey || copies[0].SourceImageID != aws.ToString(img.ImageId) {
		t.Fatalf("copy %+v", copies)
	}
	// Images on the AWS-managed key cannot be shared.
	img2, _ := src.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(awsKey), Name: aws.String("aws-key")})
	_, err = src.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: img2.ImageId, LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String("222222222222")}}}})
	if code(err) != "InvalidParameter" || !strings.Contains(err.Error(), "customer managed key") {
		t.Fatalf("sharing an AWS-managed-key image: %v", err)
	}
}

func code(err error) string { return apiCode(err) }
