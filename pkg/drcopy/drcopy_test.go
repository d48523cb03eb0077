package drcopy_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drcopy"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/prune"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/share"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

const (
	srcAcct, srcRegion = "111111111111", "eu-west-1"
	dstAcct, dstRegion = "222222222222", "eu-central-1"
	srcCMK             = "arn:aws:kms:eu-west-1:111111111111:key/11111111-2222-3333-4444-555555555555"
	dstCMK             = "arn:aws:kms:eu-central-1:222222222222:key/99999999-8888-7777-6666-555555555555"
)

var (
	quiet = slog.New(slog.NewJSONHandler(io.Discard, nil))
	slot  = time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
)

func parse(t *testing.T, doc string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(doc), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type world struct {
	env    *simtest.Env
	src    *config.Config
	dst    *config.Config
	sharer *share.Sharer
	copier *drcopy.Copier
}

func newWorld(t *testing.T, opts ec2sim.Options) *world {
	env := simtest.Start(t, opts)
	w := &world{env: env}
	w.src = parse(t, `{"deployment":"src","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
	  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"last":3}}],"sharing":{"accountIds":["222222222222"]}}`)
	w.dst = parse(t, `{"deployment":"dr","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"src",
	  "sourceRegion":"eu-west-1","kmsKeyArn":"`+dstCMK+`","retention":{"last":1}},"prune":{"maxDeleteShare":1}}`)
	kmsClient := kms.New(kms.Options{Region: srcRegion, BaseEndpoint: aws.String(env.URL),
		Credentials: credentials.NewStaticCredentialsProvider(srcAcct, "s", ""), Retryer: awsclient.NewRetryer()})
	w.sharer = &share.Sharer{EC2: env.Client(srcAcct, srcRegion), KMS: kmsClient, Config: w.src, Job: runner.Job{Log: quiet}}
	w.copier = &drcopy.Copier{EC2: env.Client(dstAcct, dstRegion), Config: w.dst, Region: dstRegion, Job: runner.Job{Log: quiet}}
	return w
}

func (w *world) backup(t *testing.T, at time.Time) {
	t.Helper()
	b := &backup.Backuper{EC2: w.env.Client(srcAcct, srcRegion), Config: w.src, Job: runner.Job{Log: quiet}}
	if _, err := b.Run(context.Background(), trigger.Backup{Policy: "nightly", Slot: at, Trigger: tags.TriggerSchedule}); err != nil {
		t.Fatal(err)
	}
	w.env.Sim.CompletePending()
}

func (w *world) instance(vol ec2sim.VolumeSpec) string {
	return w.env.Sim.AddInstance(ec2sim.InstanceSpec{Account: srcAcct, Region: srcRegion, Tags: map[string]string{"Backup": "yes"}, Volumes: []ec2sim.VolumeSpec{vol}})
}

func imageOf(sim *ec2sim.Sim, account, region, instance string) ec2sim.Image {
	for _, im := range sim.Images(account, region) {
		if im.InstanceID == instance || im.Tags[tags.InstanceID] == instance {
			return im
		}
	}
	return ec2sim.Image{}
}

func TestShareAndCopyAcrossAccountsAndRegions(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	plain := w.instance(ec2sim.VolumeSpec{})
	cmk := w.instance(ec2sim.VolumeSpec{Encrypted: true, KmsKeyID: srcCMK})
	awsKey := w.instance(ec2sim.VolumeSpec{Encrypted: true})
	w.backup(t, slot)

	sum, err := w.sharer.Run(ctx, share.Request{Sweep: true, Time: slot})
	if err == nil || len(sum.Done) != 2 || len(sum.Failed) != 1 {
		t.Fatalf("share sweep: err %v, done %d, failed %v", err, len(sum.Done), sum.Failed)
	}
	if !strings.Contains(err.Error(), "customer-managed KMS key") || !strings.Contains(err.Error(), "alias/aws/ebs") {
		t.Errorf("error does not name the fix: %v", err)
	}
	for _, id := range []string{plain, cmk} {
		im := imageOf(w.env.Sim, srcAcct, srcRegion, id)
		if !slices.Contains(im.LaunchPermissions, dstAcct) || im.Tags[tags.Share] != tags.ShareDone {
			t.Errorf("%s: launch %v, share tag %q", id, im.LaunchPermissions, im.Tags[tags.Share])
		}
		for _, s := range w.env.Sim.Snapshots(srcAcct, srcRegion) {
			if slices.Contains(im.SnapshotIDs, s.ID) && !slices.Contains(s.CreateVolumePermissions, dstAcct) {
				t.Errorf("snapshot %s of %s not shared", s.ID, im.ID)
			}
		}
	}
	bad := imageOf(w.env.Sim, srcAcct, srcRegion, awsKey)
	if len(bad.LaunchPermissions) != 0 || bad.Tags[tags.Share] != tags.ShareError || !strings.Contains(bad.Tags[tags.ShareMessage], "customer-managed key") {
		t.Errorf("AWS-managed-key image: launch %v, tags %v", bad.LaunchPermissions, bad.Tags)
	}

	// Duplicate event and repeated sweep: nothing shared twice; the image
	// that cannot be shared fails the sweep again (the alarm keeps firing
	// until it is fixed), without being tagged again.
	before := w.env.Sim.Calls()
	im := imageOf(w.env.Sim, srcAcct, srcRegion, plain)
	sum, err = w.sharer.Run(ctx, share.Request{ImageIDs: []string{im.ID}, Time: slot})
	if err != nil || len(sum.Existed) != 1 {
		t.Fatalf("duplicate event: %v %+v", err, sum)
	}
	if sum, err := w.sharer.Run(ctx, share.Request{Sweep: true, Time: slot}); err == nil || len(sum.Failed) != 1 || sum.Failed[0].ID != bad.ID {
		t.Fatalf("repeated sweep: %v, want the AWS-managed-key image failed again", err)
	}
	after := w.env.Sim.Calls()
	for _, a := range []string{"ModifyImageAttribute", "ModifySnapshotAttribute", "CreateTags"} {
		if after.Count(a) != before.Count(a) {
			t.Errorf("%s called again: %d -> %d", a, before.Count(a), after.Count(a))
		}
	}

	// The recovery account copies both shareable images, once.
	csum, err := w.copier.Run(ctx, slot.Add(time.Hour))
	if err != nil || len(csum.Done) != 2 {
		t.Fatalf("copy: %v, done %d %+v", err, len(csum.Done), csum)
	}
	copies := w.env.Sim.Images(dstAcct, dstRegion)
	if len(copies) != 2 {
		t.Fatalf("%d copies", len(copies))
	}
	for _, cp := range copies {
		if cp.Account != dstAcct || cp.KmsKeyID != dstCMK || cp.Tags[tags.ManagedBy] != "dr" || cp.Tags[tags.Policy] != config.CopyPolicy ||
			cp.Tags[tags.SourceAccount] != srcAcct || cp.Tags[tags.SourceRegion] != srcRegion || cp.Tags[tags.Time] != "2026-11-24T03:00:00Z" || cp.SourceImageID == "" {
			t.Errorf("copy %+v", cp)
		}
	}
	w.env.Sim.CompletePending()
	csum, err = w.copier.Run(ctx, slot.Add(2*time.Hour))
	if err != nil || len(csum.Done) != 0 || len(csum.Existed) != 2 || w.env.Sim.Calls().Count("CopyImage") != 2 {
		t.Fatalf("second copy run: %v %+v, CopyImage %d", err, csum, w.env.Sim.Calls().Count("CopyImage"))
	}

	// Copies follow the recovery deployment's own retention (last 1).
	w.backup(t, slot.AddDate(0, 0, 1))
	if _, err := w.sharer.Run(ctx, share.Request{Sweep: true, Time: slot}); err == nil {
		t.Fatal("the AWS-managed-key instance's new image should fail again")
	}
	if _, err := w.copier.Run(ctx, slot.AddDate(0, 0, 1).Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	w.env.Sim.CompletePending()
	p := &prune.Pruner{EC2: w.env.Client(dstAcct, dstRegion), Config: w.dst, Job: runner.Job{Log: quiet}}
	psum, err := p.Run(ctx, trigger.Prune{Time: slot.AddDate(0, 0, 1).Add(2 * time.Hour), Trigger: tags.TriggerSchedule})
	if err != nil || len(psum.Done) != 2 {
		t.Fatalf("prune copies: %v, deleted %d", err, len(psum.Done))
	}
	for _, cp := range w.env.Sim.Images(dstAcct, dstRegion) {
		if cp.Tags[tags.Time] != "2026-11-25T03:00:00Z" {
			t.Errorf("older copy %s survived", cp.ID)
		}
	}
	if n := len(w.env.Sim.Images(srcAcct, srcRegion)); n != 6 {
		t.Errorf("prune in the recovery account touched the source: %d source images", n)
	}
	// The source still holds the older images its own retention keeps; the
	// next copy run must not copy again what the recovery prune just
	// deleted (a copy/prune loop), and says why.
	csum, err = w.copier.Run(ctx, slot.AddDate(0, 0, 1).Add(3*time.Hour))
	if err != nil || len(csum.Done) != 0 {
		t.Fatalf("copy run after prune: %v, started %d: %+v", err, len(csum.Done), csum.Done)
	}
	expired := 0
	for _, e := range csum.Skipped {
		if strings.Contains(e.Detail, "recovery.retention would not keep it") {
			expired++
		}
	}
	if expired != 2 {
		t.Fatalf("skipped %+v, want the 2 older sources skipped by retention", csum.Skipped)
	}
}

// TestCopyRespectsInFlightLimit: 25 images to copy with copies pending for
// a while: never more than the limit in flight, all copied over runs.
func TestCopyRespectsInFlightLimit(t *testing.T) {
	w := newWorld(t, ec2sim.Options{CopyDelay: time.Hour})
	ctx := context.Background()
	for range 25 {
		w.instance(ec2sim.VolumeSpec{})
	}
	w.backup(t, slot)
	if _, err := w.sharer.Run(ctx, share.Request{Sweep: true, Time: slot}); err != nil {
		t.Fatal(err)
	}
	sum, err := w.copier.Run(ctx, slot)
	if err != nil || len(sum.Done) != 20 || len(sum.Skipped) != 5 {
		t.Fatalf("first run: %v, started %d, waiting %d", err, len(sum.Done), len(sum.Skipped))
	}
	sum, err = w.copier.Run(ctx, slot.Add(time.Minute))
	if err != nil || len(sum.Done) != 0 {
		t.Fatalf("run while 20 are in flight started %d", len(sum.Done))
	}
	w.env.Sim.CompletePending()
	sum, err = w.copier.Run(ctx, slot.Add(2*time.Hour))
	if err != nil || len(sum.Done) != 5 || len(sum.Existed) != 20 {
		t.Fatalf("second run: %v, started %d, existing %d", err, len(sum.Done), len(sum.Existed))
	}
	if m := w.env.Sim.MaxInFlightCopies(dstAcct, dstRegion); m > 20 || m < 5 {
		t.Fatalf("max in flight %d", m)
	}
	if n := len(w.env.Sim.Images(dstAcct, dstRegion)); n != 25 {
		t.Fatalf("%d copies", n)
	}
}

func TestParseShareInputs(t *testing.T) {
	ok := []string{`{"sweep":true,"time":"2026-11-24T03:00:00Z"}`,
		`{"version":"0","id":"1","detail-type":"EC2 AMI State Change","source":"aws.ec2","account":"1","time":"2026-11-24T03:00:00Z","region":"r","resources":[],"detail":{"RequestId":"x","ImageId":"ami-0123456789abcdef0","State":"available","ErrorMessage":""}}`}
	for _, in := range ok {
		if _, err := trigger.ParseShare([]byte(in)); err != nil {
			t.Errorf("%s: %v", in, err)
		}
	}
	pending, err := trigger.ParseShare([]byte(strings.Replace(ok[1], `"available"`, `"pending"`, 1)))
	if err != nil || pending.Ignored == "" || len(pending.ImageIDs) != 0 {
		t.Errorf("pending event: %+v %v", pending, err)
	}
	bad := map[string]string{
		`{}`:                                     "input.sweep",
		`{"sweep":true}`:                         "input.time",
		`{"sweep":true,"time":"x","policy":"p"}`: `"policy" is not allowed`,
		strings.Replace(ok[1], "aws.ec2", "amibackup", 1):                         "not handled",
		strings.Replace(ok[1], "ami-0123456789abcdef0", "i-0123456789abcdef0", 1): "ImageId",
		strings.Replace(ok[1], `"State":"available",`, ``, 1):                     "State",
	}
	for in, want := range bad {
		if _, err := trigger.ParseShare([]byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}

// TestSameAccountOtherRegion: a recovery deployment in another Region of
// the source account copies without any sharing.
func TestSameAccountOtherRegion(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	for range 3 {
		w.instance(ec2sim.VolumeSpec{Encrypted: true, KmsKeyID: srcCMK})
	}
	w.backup(t, slot)
	dr := parse(t, `{"deployment":"dr-eu","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"src",
	  "sourceRegion":"eu-west-1","kmsKeyArn":"arn:aws:kms:eu-central-1:111111111111:key/abc","retention":{"last":2}}}`)
	c := &drcopy.Copier{EC2: w.env.Client(srcAcct, dstRegion), Config: dr, Region: dstRegion, Job: runner.Job{Log: quiet}}
	sum, err := c.Run(context.Background(), slot)
	if err != nil || len(sum.Done) != 3 {
		t.Fatalf("copy: %v %+v", err, sum)
	}
	copies := w.env.Sim.Images(srcAcct, dstRegion)
	if len(copies) != 3 || copies[0].SourceRegion != srcRegion || copies[0].KmsKeyID != "arn:aws:kms:eu-central-1:111111111111:key/abc" {
		t.Fatalf("copies %+v", copies)
	}
	// Its own copies in the destination Region are never copied again.
	w.env.Sim.CompletePending()
	if sum, err := c.Run(context.Background(), slot.Add(time.Hour)); err != nil || len(sum.Done) != 0 {
		t.Fatalf("second run: %v %+v", err, sum)
	}
}

// recordingEC2 records the copy function's requests and, like EC2, hides
// other owners' deprecated images unless IncludeDeprecated is set.
// recordingEC2 records the calls; copy's workers call it concurrently.
type recordingEC2 struct {
	drcopy.EC2
	now      func() time.Time
	mu       sync.Mutex
	describe []*ec2.DescribeImagesInput
	copies   []*ec2.CopyImageInput
}

func (r *recordingEC2) DescribeImages(ctx context.Context, in *ec2.DescribeImagesInput, opts ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error) {
	r.mu.Lock()
	r.describe = append(r.describe, in)
	r.mu.Unlock()
	out, err := r.EC2.DescribeImages(ctx, in, opts...)
	if err != nil || aws.ToBool(in.IncludeDeprecated) {
		return out, err
	}
	var shown []types.Image
	for _, im := range out.Images {
		if aws.ToString(im.OwnerId) != dstAcct && im.DeprecationTime != nil {
			if at, _ := time.Parse(time.RFC3339, *im.DeprecationTime); !at.After(r.now()) {
				continue
			}
		}
		shown = append(shown, im)
	}
	out.Images = shown
	return out, nil
}

func (r *recordingEC2) CopyImage(ctx context.Context, in *ec2.CopyImageInput, opts ...func(*ec2.Options)) (*ec2.CopyImageOutput, error) {
	r.mu.Lock()
	r.copies = append(r.copies, in)
	r.mu.Unlock()
	return r.EC2.CopyImage(ctx, in, opts...)
}

func (w *world) sharedBackup(t *testing.T, n int) {
	t.Helper()
	for range n {
		w.instance(ec2sim.VolumeSpec{Encrypted: true, KmsKeyID: srcCMK})
	}
	w.backup(t, slot)
	if _, err := w.sharer.Run(context.Background(), share.Request{Sweep: true, Time: slot}); err != nil {
		t.Fatal(err)
	}
}

// TestFailedCopyIsReplaced: a copy that ends failed is deregistered and
// the source copied again, under the same name, with a new image.
func TestFailedCopyIsReplaced(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	w.sharedBackup(t, 1)
	rec := &recordingEC2{EC2: w.copier.EC2, now: w.env.Sim.Now}
	w.copier.EC2 = rec
	sum, err := w.copier.Run(ctx, slot)
	if err != nil || len(sum.Done) != 1 {
		t.Fatalf("first run: %v %+v", err, sum)
	}
	first := sum.Done[0].ImageID
	w.env.Sim.CompletePending()
	if err := w.env.Sim.SetImageState(dstAcct, dstRegion, first, "failed"); err != nil {
		t.Fatal(err)
	}

	sum, err = w.copier.Run(ctx, slot.Add(time.Hour))
	if err != nil || len(sum.Done) != 1 || len(sum.Existed) != 0 {
		t.Fatalf("run after the copy failed: %v %+v", err, sum)
	}
	second := sum.Done[0].ImageID
	copies := w.env.Sim.Images(dstAcct, dstRegion)
	if second == first || len(copies) != 1 || copies[0].ID != second || copies[0].Name != sum.Done[0].Name {
		t.Fatalf("failed copy %s not replaced: new %s, copies %+v", first, second, copies)
	}
	if n := w.env.Sim.Calls().Count("DeregisterImage"); n != 1 {
		t.Errorf("DeregisterImage called %d times", n)
	}
	// A deterministic token would let EC2 answer with the removed copy (the
	// SDK fills in a fresh token per call when none is given).
	if len(rec.copies) != 2 || aws.ToString(rec.copies[0].ClientToken) == aws.ToString(rec.copies[1].ClientToken) {
		t.Errorf("both copies of the source were requested with ClientToken %q", aws.ToString(rec.copies[0].ClientToken))
	}

	w.env.Sim.CompletePending()
	sum, err = w.copier.Run(ctx, slot.Add(2*time.Hour))
	if err != nil || len(sum.Existed) != 1 || len(sum.Done) != 0 || w.env.Sim.Calls().Count("CopyImage") != 2 {
		t.Fatalf("run after the new copy completed: %v %+v", err, sum)
	}
}

// TestFailedCopyRemovalDenied: when the failed copy cannot be removed the
// source is reported failed and not copied (the name is still taken).
func TestFailedCopyRemovalDenied(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	w.sharedBackup(t, 1)
	sum, err := w.copier.Run(ctx, slot)
	if err != nil || len(sum.Done) != 1 {
		t.Fatalf("first run: %v %+v", err, sum)
	}
	w.env.Sim.CompletePending()
	w.env.Sim.SetImageState(dstAcct, dstRegion, sum.Done[0].ImageID, "failed")
	w.env.Sim.Inject(ec2sim.Fault{Action: "DeregisterImage", Code: "UnauthorizedOperation", Message: "denied (injected)"})
	sum, err = w.copier.Run(ctx, slot.Add(time.Hour))
	if err == nil || len(sum.Failed) != 1 || !strings.Contains(sum.Failed[0].Detail, "remove failed copy") {
		t.Fatalf("want a failed entry naming the removal: %v %+v", err, sum)
	}
	if n := w.env.Sim.Calls().Count("CopyImage"); n != 1 {
		t.Errorf("CopyImage called %d times; the second run must not copy", n)
	}
}

// TestNameTakenByForeignImage: an image that is not ours holding the copy
// name is never counted as a copy, nor deregistered, even when failed.
func TestNameTakenByForeignImage(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	w.sharedBackup(t, 1)
	src := w.env.Sim.Images(srcAcct, srcRegion)[0]
	for _, tc := range []struct {
		state string
		tags  map[string]string
	}{
		{"available", nil},
		{"failed", map[string]string{tags.ManagedBy: "someone-else", tags.Policy: config.CopyPolicy, tags.SourceImage: src.ID}},
	} {
		w.env.Sim.ResetCalls()
		foreign, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{Account: dstAcct, Region: dstRegion, Name: images.CopyName(w.dst.Deployment, srcAcct, src.ID), State: tc.state, Tags: tc.tags})
		sum, err := w.copier.Run(ctx, slot)
		if err == nil || len(sum.Failed) != 1 || len(sum.Existed) != 0 || !strings.Contains(sum.Failed[0].Detail, foreign) ||
			!strings.Contains(sum.Failed[0].Detail, "does not carry") {
			t.Errorf("%s foreign image: %v %+v", tc.state, err, sum)
		}
		if n := w.env.Sim.Calls().Count("DeregisterImage"); n != 0 {
			t.Errorf("%s foreign image: DeregisterImage called %d times", tc.state, n)
		}
		if _, err := w.env.Client(dstAcct, dstRegion).DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: aws.String(foreign)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDeprecatedSourcesAreCopied: a source deprecated before the copy run
// reaches it is still listed and copied.
func TestDeprecatedSourcesAreCopied(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	w.sharedBackup(t, 2)
	srcEC2 := w.env.Client(srcAcct, srcRegion)
	for _, im := range w.env.Sim.Images(srcAcct, srcRegion) {
		if _, err := srcEC2.EnableImageDeprecation(ctx, &ec2.EnableImageDeprecationInput{ImageId: aws.String(im.ID),
			DeprecateAt: aws.Time(w.env.Sim.Now().Add(time.Hour))}); err != nil {
			t.Fatal(err)
		}
	}
	w.env.Sim.Advance(2 * time.Hour)
	rec := &recordingEC2{EC2: w.copier.EC2, now: w.env.Sim.Now}
	w.copier.EC2 = rec
	sum, err := w.copier.Run(ctx, slot)
	if err != nil || len(sum.Done) != 2 {
		t.Fatalf("deprecated sources not copied: %v %+v", err, sum)
	}
	for _, in := range rec.describe {
		if !slices.Contains(in.Owners, "self") && !aws.ToBool(in.IncludeDeprecated) {
			t.Errorf("source listing without IncludeDeprecated: %+v", in)
		}
	}
}

// TestCopiesOnlyTheSourceDeployment: another deployment in the same source
// account shares its backups with the recovery account too; only the
// configured deployment's images (named in their description, which the
// recovery account can see) are copied.
func TestCopiesOnlyTheSourceDeployment(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	ours := w.instance(ec2sim.VolumeSpec{})
	w.backup(t, slot)
	theirs := w.instance(ec2sim.VolumeSpec{})
	src := w.env.Client(srcAcct, srcRegion)
	out, err := src.CreateImage(ctx, &ec2.CreateImageInput{InstanceId: aws.String(theirs), Name: aws.String(images.Name("nightly", theirs, slot)),
		Description: aws.String(images.Description("staging", "nightly", theirs, slot, true))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: out.ImageId,
		LaunchPermission: &types.LaunchPermissionModifications{Add: []types.LaunchPermission{{UserId: aws.String(dstAcct)}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := w.sharer.Run(ctx, share.Request{Sweep: true, Time: slot}); err != nil {
		t.Fatal(err)
	}
	w.env.Sim.CompletePending()
	sum, err := w.copier.Run(ctx, slot.Add(time.Hour))
	if err != nil || sum.Selected != 1 || len(sum.Done) != 1 {
		t.Fatalf("copy run: %v, selected %d, started %d", err, sum.Selected, len(sum.Done))
	}
	copies := w.env.Sim.Images(dstAcct, dstRegion)
	if len(copies) != 1 || copies[0].Tags[tags.InstanceID] != ours {
		t.Fatalf("copies %+v, want one copy of %s's backup", copies, ours)
	}
}

// TestTwoRecoveryDeploymentsInOneRegion: two recovery deployments in the
// same account and Region (e.g. with different retention) copy the same
// source; each gets its own copy under a name that carries its deployment,
// and neither reports the other's copy as a name conflict.
func TestTwoRecoveryDeploymentsInOneRegion(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	w.sharedBackup(t, 2)
	long := strings.Repeat("dr-long", 9) + "x" // 64 characters, the longest deployment name
	other := parse(t, `{"deployment":"`+long+`","recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"src",
	  "sourceRegion":"eu-west-1","kmsKeyArn":"`+dstCMK+`","retention":{"last":5}}}`)
	copiers := []*drcopy.Copier{w.copier, {EC2: w.env.Client(dstAcct, dstRegion), Config: other, Region: dstRegion, Job: runner.Job{Log: quiet}}}
	for run := range 2 {
		for _, c := range copiers {
			sum, err := c.Run(ctx, slot.Add(time.Duration(run+1)*time.Hour))
			if err != nil || len(sum.Failed) != 0 || len(sum.Done)+len(sum.Existed) != 2 || (run == 1) != (len(sum.Existed) == 2) {
				t.Fatalf("run %d of %s: %v, %+v", run, c.Config.Deployment, err, sum)
			}
		}
		w.env.Sim.CompletePending()
	}
	byDeployment := map[string]int{}
	for _, cp := range w.env.Sim.Images(dstAcct, dstRegion) {
		dep := cp.Tags[tags.ManagedBy]
		byDeployment[dep]++
		if cp.Name != images.CopyName(dep, srcAcct, cp.SourceImageID) || !images.ValidName(cp.Name) || !strings.Contains(cp.Name, dep) {
			t.Errorf("copy %s of %s is named %q", cp.ID, dep, cp.Name)
		}
	}
	if byDeployment["dr"] != 2 || byDeployment[long] != 2 {
		t.Fatalf("copies by deployment %v", byDeployment)
	}
}

// TestRecoveryPruneReportsNoGoneInstances: the copies' instances run in
// the source account and never exist in the recovery account; the recovery
// prune does not look for them and reports none as gone.
func TestRecoveryPruneReportsNoGoneInstances(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	ctx := context.Background()
	w.sharedBackup(t, 3)
	if _, err := w.copier.Run(ctx, slot.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	w.env.Sim.CompletePending()
	w.env.Sim.ResetCalls()
	p := &prune.Pruner{EC2: w.env.Client(dstAcct, dstRegion), Config: w.dst, Job: runner.Job{Log: quiet}}
	sum, err := p.Run(ctx, trigger.Prune{Time: slot.Add(2 * time.Hour), Trigger: tags.TriggerSchedule})
	if err != nil || len(sum.Plan) != 3 {
		t.Fatalf("prune: %v, plan %d", err, len(sum.Plan))
	}
	for _, e := range sum.Plan {
		if e.InstanceGone {
			t.Errorf("copy %s reported as instanceGone", e.ImageID)
		}
	}
	if len(sum.GoneInstances) != 0 {
		t.Errorf("gone instances %v", sum.GoneInstances)
	}
	if n := w.env.Sim.Calls().ByAccount[dstAcct]["DescribeInstances"]; n != 0 {
		t.Errorf("%d DescribeInstances calls in the recovery account", n)
	}
}

// TestHungListingEndsWithSummary: a DescribeImages call that hangs is cut
// off before the deadline; the copy run ends with its own summary and error.
func TestHungListingEndsWithSummary(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	w.sharedBackup(t, 1)
	w.env.Sim.Inject(ec2sim.Fault{Action: "DescribeImages", Delay: time.Hour})
	var logs strings.Builder
	c := *w.copier
	c.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	c.Margin = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	sum, err := c.Run(ctx, slot)
	if ended := time.Now(); !ended.Before(dl) {
		t.Fatalf("run ended %v after the deadline", ended.Sub(dl))
	}
	if sum == nil || err == nil || !strings.Contains(err.Error(), "deadline") || !strings.Contains(logs.String(), `"msg":"run summary"`) {
		t.Fatalf("summary %+v, err %v, logs %s", sum, err, logs.String())
	}
}

// TestHandleBoundsTriggerTime: the share and copy handlers reject a trigger
// time ahead of the clock (copy's time is "now" for the recovery
// retention, which would skip every source as expired) before any EC2
// call, and run a valid one.
func TestHandleBoundsTriggerTime(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	w.instance(ec2sim.VolumeSpec{})
	w.backup(t, slot)
	now := slot.Add(time.Hour)
	w.sharer.Now = func() time.Time { return now }
	w.copier.Now = func() time.Time { return now }
	ctx := context.Background()
	future := `{"sweep":true,"time":"` + now.Add(time.Hour).Format(time.RFC3339) + `"}`
	present := `{"sweep":true,"time":"` + now.Format(time.RFC3339) + `"}`

	w.env.Sim.ResetCalls()
	if _, err := w.sharer.Handle(ctx, []byte(future)); err == nil || !strings.Contains(err.Error(), "time") {
		t.Fatalf("share with a future time: %v, want an error naming time", err)
	}
	if _, err := w.copier.Handle(ctx, []byte(future)); err == nil || !strings.Contains(err.Error(), "time") {
		t.Fatalf("copy with a future time: %v, want an error naming time", err)
	}
	if n := w.env.Sim.Calls().Total; n != 0 {
		t.Fatalf("%d EC2 calls for rejected input, want 0", n)
	}
	if sum, err := w.sharer.Handle(ctx, []byte(present)); err != nil || len(sum.Done) == 0 {
		t.Fatalf("share sweep: %v %+v", err, sum)
	}
	if sum, err := w.copier.Handle(ctx, []byte(present)); err != nil || len(sum.Done) == 0 {
		t.Fatalf("copy sweep: %v %+v", err, sum)
	}
}

// TestCopyStopsBeforeTheDeadline: like every job, copy starts no new
// CopyImage once the deadline is less than the margin away; the sources
// are reported not reached and the run fails so the next run copies them.
// (Copy used to check only its work context, which ends half a margin
// before the deadline, so it still started copies inside the margin.)
func TestCopyStopsBeforeTheDeadline(t *testing.T) {
	w := newWorld(t, ec2sim.Options{})
	w.sharedBackup(t, 3)
	w.env.Sim.ResetCalls()
	c := *w.copier
	c.Margin = 4 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sum, err := c.Run(ctx, slot)
	if err == nil || len(sum.NotReached) != 3 || len(sum.Done) != 0 {
		t.Fatalf("err %v, summary %+v", err, sum)
	}
	if n := w.env.Sim.Calls().Count("CopyImage"); n != 0 {
		t.Fatalf("%d CopyImage calls inside the margin", n)
	}
}
