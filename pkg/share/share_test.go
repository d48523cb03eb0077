package share_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/share"
	"github.com/amibackup/amibackup/pkg/tags"
)

const (
	target = "222222222222"
	cmk    = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
)

var slot = time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)

func sharer(t *testing.T, env *simtest.Env, metrics io.Writer) *share.Sharer {
	t.Helper()
	c, err := config.Parse([]byte(`{"deployment":"prod","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},
	  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"last":3}}],"sharing":{"accountIds":["`+target+`"]}}`), "")
	if err != nil {
		t.Fatal(err)
	}
	kmsClient := kms.New(kms.Options{Region: ec2sim.DefaultRegion, BaseEndpoint: aws.String(env.URL),
		Credentials: credentials.NewStaticCredentialsProvider(ec2sim.DefaultAccount, "s", ""), Retryer: awsclient.NewRetryer(), HTTPClient: simtest.HTTPClient()})
	return &share.Sharer{EC2: env.Client("", ""), KMS: kmsClient, Config: c, Job: runner.Job{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: emf.New(metrics)}}
}

// backupImage seeds one of this deployment's available images; extra tags
// (e.g. a share state left by an earlier run) are added to ours.
func backupImage(env *simtest.Env, vol ec2sim.VolumeSpec, extra map[string]string) string {
	tg := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: "i-0123456789abcdef0", tags.Time: tags.FormatTime(slot)}
	for k, v := range extra {
		tg[k] = v
	}
	seeded++
	id, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: fmt.Sprintf("amibackup-nightly-%d", seeded), Tags: tg,
		SnapshotTags: tg, Volumes: []ec2sim.VolumeSpec{vol}, Created: slot})
	return id
}

var seeded int

func image(env *simtest.Env, id string) ec2sim.Image {
	for _, im := range env.Sim.Images("", "") {
		if im.ID == id {
			return im
		}
	}
	return ec2sim.Image{}
}

// TestShareErrorsKeepFailing: an image that cannot be shared (AWS-managed
// key) fails every run and counts in ShareErrors, not only the first one,
// without being tagged again; an image tagged share=error whose problem is
// fixed is shared by the next run, its error message cleared; once the
// unshareable image is gone (the operator copied it with a customer key
// and deregistered it, or prune removed it), runs pass again.
func TestShareErrorsKeepFailing(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: slot})
	good := backupImage(env, ec2sim.VolumeSpec{Encrypted: true, KmsKeyID: cmk}, nil)
	bad := backupImage(env, ec2sim.VolumeSpec{Encrypted: true}, nil)
	// Tagged share=error by an earlier run (e.g. KMS could not describe
	// its key then); the key is fine now.
	fixed := backupImage(env, ec2sim.VolumeSpec{Encrypted: true, KmsKeyID: cmk},
		map[string]string{tags.Share: tags.ShareError, tags.ShareMessage: "earlier problem"})

	for run := 1; run <= 3; run++ {
		var metrics bytes.Buffer
		createTags := env.Sim.Calls().Count("CreateTags")
		sum, err := sharer(t, env, &metrics).Run(context.Background(), share.Request{Sweep: true, Time: slot})
		if err == nil || len(sum.Failed) != 1 || sum.Failed[0].ID != bad || !strings.Contains(err.Error(), "alias/aws/ebs") {
			t.Fatalf("run %d: err %v, failed %+v", run, err, sum.Failed)
		}
		if !strings.Contains(metrics.String(), `"ShareErrors":1`) {
			t.Fatalf("run %d: metrics %s", run, metrics.String())
		}
		if im := image(env, bad); im.Tags[tags.Share] != tags.ShareError || len(im.LaunchPermissions) != 0 {
			t.Fatalf("run %d: unshareable image tags %v, launch %v", run, im.Tags, im.LaunchPermissions)
		}
		if run > 1 && env.Sim.Calls().Count("CreateTags") != createTags {
			t.Fatalf("run %d tagged again", run)
		}
		if want := map[bool]int{true: 2, false: 0}[run == 1]; len(sum.Done) != want {
			t.Fatalf("run %d shared %d images, want %d", run, len(sum.Done), want)
		}
	}
	for _, id := range []string{good, fixed} {
		im := image(env, id)
		if im.Tags[tags.Share] != tags.ShareDone || !slices.Contains(im.LaunchPermissions, target) {
			t.Errorf("%s not shared: tags %v, launch %v", id, im.Tags, im.LaunchPermissions)
		}
	}
	if msg := image(env, fixed).Tags[tags.ShareMessage]; msg != "" {
		t.Errorf("shared image still shows the error %q", msg)
	}

	// The operator's fix for the AWS-managed-key image: copy it with a
	// customer-managed key (not shown), then deregister it.
	if _, err := env.Client("", "").DeregisterImage(context.Background(), &ec2.DeregisterImageInput{ImageId: aws.String(bad)}); err != nil {
		t.Fatal(err)
	}
	var metrics bytes.Buffer
	if sum, err := sharer(t, env, &metrics).Run(context.Background(), share.Request{Sweep: true, Time: slot}); err != nil || len(sum.Existed) != 2 {
		t.Fatalf("after the fix: err %v, %+v", err, sum)
	}
	if !strings.Contains(metrics.String(), `"ShareErrors":0`) {
		t.Fatalf("after the fix: metrics %s", metrics.String())
	}
}

// TestHungListingEndsWithSummary: a DescribeImages call that hangs is cut
// off before the deadline; the run ends with its own summary and error.
func TestHungListingEndsWithSummary(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: slot})
	backupImage(env, ec2sim.VolumeSpec{}, nil)
	env.Sim.Inject(ec2sim.Fault{Action: "DescribeImages", Delay: time.Hour})
	var logs bytes.Buffer
	s := sharer(t, env, io.Discard)
	s.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	s.Margin = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	dl, _ := ctx.Deadline()
	sum, err := s.Run(ctx, share.Request{Sweep: true, Time: slot})
	if ended := time.Now(); !ended.Before(dl) {
		t.Fatalf("run ended %v after the deadline", ended.Sub(dl))
	}
	if sum == nil || err == nil || !strings.Contains(err.Error(), "deadline") || !strings.Contains(logs.String(), `"msg":"run summary"`) {
		t.Fatalf("summary %+v, err %v, logs %s", sum, err, logs.String())
	}
}
