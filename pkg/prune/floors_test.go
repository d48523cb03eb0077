package prune_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/prune"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
)

// referencedFleet: 2 instances with 6 nights each, retention last 2, so the
// 4 oldest of each would go. Of those, one image launched a running
// instance, one a stopped one, one a terminated one (no longer a reason),
// one is in a launch template and one in an SSM parameter.
type referencedFleet struct {
	env                                     *simtest.Env
	hist                                    map[string][]string
	instances                               []string
	running, stopped, terminated, lt, param string
	runningARN, stoppedARN, ltARN, paramARN string
	keptByRef, deletable                    []string
}

func newReferencedFleet(t *testing.T) *referencedFleet {
	t.Helper()
	f := &referencedFleet{env: simtest.Start(t, ec2sim.Options{Start: now})}
	sim := f.env.Sim
	f.instances = sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	f.hist = seedHistory(sim, "prod", f.instances, 6)
	a, b := f.hist[f.instances[0]], f.hist[f.instances[1]]
	f.running, f.stopped, f.terminated, f.lt, f.param = a[2], a[3], a[4], b[2], b[3]
	restored := sim.AddInstance(ec2sim.InstanceSpec{ImageID: f.running})
	parked := sim.AddInstance(ec2sim.InstanceSpec{ImageID: f.stopped, State: "stopped"})
	sim.AddInstance(ec2sim.InstanceSpec{ImageID: f.terminated, State: "terminated"})
	f.runningARN = "arn:aws:ec2:us-east-1:123456789012:instance/" + restored
	f.stoppedARN = "arn:aws:ec2:us-east-1:123456789012:instance/" + parked
	f.ltARN = "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-0123456789abcdef0"
	f.paramARN = "arn:aws:ssm:us-east-1:123456789012:parameter/golden/web"
	sim.AddImageReference("", "", f.lt, ec2sim.RefLaunchTemplate, f.ltARN)
	sim.AddImageReference("", "", f.param, ec2sim.RefSSMParameter, f.paramARN)
	f.keptByRef = []string{f.running, f.stopped, f.lt, f.param}
	f.deletable = []string{f.terminated, a[5], b[4], b[5]}
	sim.ResetCalls()
	return f
}

func (f *referencedFleet) config(t *testing.T) *prune.Pruner {
	c := cfg(t, `{"last":2}`)
	c.Prune.MaxDeleteShare = 1
	return pruner(t, f.env, c, nil)
}

func entryOf(sum *prune.Summary, id string) prune.PlanEntry {
	for _, e := range sum.Plan {
		if e.ImageID == id {
			return e
		}
	}
	return prune.PlanEntry{}
}

// TestReferencedImagesAreKept: an image retention would delete but that a
// live instance, a launch template or an SSM parameter still references is
// kept, with the reference as the reason; the dry run shows the same.
func TestReferencedImagesAreKept(t *testing.T) {
	for _, dry := range []bool{true, false} {
		name := "real run"
		if dry {
			name = "dry run"
		}
		t.Run(name, func(t *testing.T) {
			f := newReferencedFleet(t)
			r := req()
			r.DryRun = dry
			sum, err := f.config(t).Run(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			for id, ref := range map[string]string{f.running: "ec2:Instance " + f.runningARN, f.stopped: "ec2:Instance " + f.stoppedARN,
				f.lt: "ec2:LaunchTemplate " + f.ltARN, f.param: "ssm:Parameter " + f.paramARN} {
				e := entryOf(sum, id)
				if !e.Keep || len(e.Reasons) != 1 || !strings.Contains(e.Reasons[0], "referenced by "+ref) ||
					!slices.ContainsFunc(e.Notes, func(n string) bool {
						return strings.Contains(n, "retention alone would delete it: not kept by any rule")
					}) {
					t.Errorf("%s: %+v, want kept by %s", id, e, ref)
				}
			}
			var byRef []string
			for _, e := range sum.KeptByReference {
				byRef = append(byRef, e.ImageID)
			}
			slices.Sort(byRef)
			want := slices.Sorted(slices.Values(f.keptByRef))
			if !slices.Equal(byRef, want) {
				t.Fatalf("keptByReference %v, want %v", byRef, want)
			}
			del := 0
			for _, e := range sum.Plan {
				if !e.Keep {
					del++
					if !slices.Contains(f.deletable, e.ImageID) {
						t.Errorf("plan deletes %s", e.ImageID)
					}
				}
			}
			if del != len(f.deletable) {
				t.Fatalf("plan deletes %d, want %d", del, len(f.deletable))
			}
			calls := f.env.Sim.Calls()
			// 8 images to check, one call (at most 10 per call).
			if n := calls.Count("DescribeImageReferences"); n != 1 {
				t.Fatalf("%d DescribeImageReferences calls, want 1", n)
			}
			remaining := imageIDs(f.env.Sim)
			if dry {
				if calls.Mutating() != 0 || len(remaining) != 12 {
					t.Fatalf("dry run changed state: %v", calls.ByAction)
				}
				return
			}
			for _, id := range f.keptByRef {
				if !slices.Contains(remaining, id) {
					t.Errorf("referenced image %s deleted", id)
				}
			}
			if len(remaining) != 8 || len(sum.Done) != 4 || calls.Count("DeregisterImage") != 4 {
				t.Fatalf("remaining %d, deleted %d", len(remaining), len(sum.Done))
			}
			// The bounded response carries the list and its count.
			b, _ := json.Marshal(sum)
			var v struct {
				PruneCounts     prune.Counts   `json:"pruneCounts"`
				KeptByReference []runner.Entry `json:"keptByReference"`
			}
			if err := json.Unmarshal(b, &v); err != nil || v.PruneCounts.KeptByReference != 4 || len(v.KeptByReference) != 4 {
				t.Fatalf("response: %s", b)
			}
		})
	}
}

// noRetry is an SDK client for the emulator that sees every error.
func noRetry(env *simtest.Env) *ec2.Client {
	return ec2.New(ec2.Options{Region: ec2sim.DefaultRegion, BaseEndpoint: aws.String(env.URL), Retryer: aws.NopRetryer{},
		Credentials: credentials.NewStaticCredentialsProvider(ec2sim.DefaultAccount, "secret", ""), HTTPClient: simtest.HTTPClient()})
}

// TestReferenceCheckFailsClosed: when references cannot be checked, prune
// deletes nothing (not even the images whose batch was answered), keeps
// every image with the reason, and fails the run with the fix; the dry run
// answers with that plan and a warning instead.
func TestReferenceCheckFailsClosed(t *testing.T) {
	tests := []struct {
		name  string
		fault func(f *referencedFleet) ec2sim.Fault
		// want in the real run's error.
		want []string
	}{
		{"permission denied", func(*referencedFleet) ec2sim.Fault {
			return ec2sim.Fault{Action: "DescribeImageReferences", Code: "UnauthorizedOperation",
				Message: "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/prune is not authorized to perform: ec2:DescribeImageReferences"}
		}, []string{"nothing was deleted", "UnauthorizedOperation", "give the prune role ec2:DescribeImageReferences", "ssm:GetParameters", "redeploy"}},
		{"not available", func(*referencedFleet) ec2sim.Fault {
			return ec2sim.Fault{Action: "DescribeImageReferences", Code: "InvalidAction", Message: "The action DescribeImageReferences is not valid for this web service."}
		}, []string{"nothing was deleted", "InvalidAction", "available in this Region"}},
		// One batch of two keeps failing after retries: the other's answer
		// does not let its images go.
		{"one batch fails", func(f *referencedFleet) ec2sim.Fault {
			return ec2sim.Fault{Action: "DescribeImageReferences", ImageID: f.deletable[0], Code: "InternalError"}
		}, []string{"nothing was deleted", "InternalError", "the next run checks again"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newReferencedFleet(t)
			c := cfg(t, `{"last":2}`)
			c.Prune.MaxDeleteShare = 1
			var metrics strings.Builder
			p := pruner(t, f.env, c, noRetry(f.env))
			p.Metrics = emf.New(&metrics)
			ids := []string{}
			if tt.name == "one batch fails" {
				// 12 to-check images with a second history: two batches.
				more := seedHistory(f.env.Sim, "prod", f.env.Sim.SeedFleet("", "", 1, map[string]string{"Backup": "nightly"}), 4)
				for _, h := range more {
					ids = append(ids, h[2:]...)
				}
			}
			f.env.Sim.Inject(tt.fault(f))
			before := len(f.env.Sim.Images("", ""))

			dry := req()
			dry.DryRun = true
			sum, err := p.Run(context.Background(), dry)
			if err != nil || !slices.ContainsFunc(sum.Warnings, func(w string) bool { return strings.Contains(w, "a real run would delete nothing and fail") }) {
				t.Fatalf("dry run: err %v, warnings %v", err, sum.Warnings)
			}
			sum, err = p.Run(context.Background(), req())
			if err == nil {
				t.Fatal("run succeeded without knowing the references")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			if n := f.env.Sim.Calls().Mutating(); n != 0 || len(f.env.Sim.Images("", "")) != before {
				t.Fatalf("%d mutating calls: %v", n, f.env.Sim.Calls().ByAction)
			}
			for _, e := range sum.Plan {
				if !e.Keep {
					t.Errorf("plan deletes %s although nothing was deleted", e.ImageID)
				}
			}
			for _, id := range append(slices.Clone(f.deletable), ids...) {
				if e := entryOf(sum, id); !strings.Contains(strings.Join(e.Reasons, ";"), "references could not be checked") {
					t.Errorf("%s: %v", id, e.Reasons)
				}
			}
			if !strings.Contains(metrics.String(), `"PruneFailures":1`) {
				t.Fatalf("failure not in metrics: %s", metrics.String())
			}
		})
	}
}

// TestReferenceCheckSurvivesAGoneImage: if EC2 refuses a batch because one
// image is gone (deregistered by someone else meanwhile), the batch is
// asked image by image and the run goes on.
func TestReferenceCheckSurvivesAGoneImage(t *testing.T) {
	f := newReferencedFleet(t)
	gone := f.deletable[1]
	f.env.Sim.Inject(ec2sim.Fault{Action: "DescribeImageReferences", ImageID: gone, Code: "InvalidAMIID.NotFound"})
	sum, err := f.config(t).Run(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Done) != 4 || len(sum.KeptByReference) != 4 {
		t.Fatalf("deleted %v, kept by reference %v", sum.Done, sum.KeptByReference)
	}
	// One batch of 8, then each of the 8 alone.
	if n := f.env.Sim.Calls().Count("DescribeImageReferences"); n != 9 {
		t.Fatalf("%d DescribeImageReferences calls, want 9", n)
	}
}

// TestGuardCountsReferencedImagesAsKept: a plan the guard would block
// (80% deleted) passes once references keep enough images, and a
// referenced image is counted once, as kept.
func TestGuardCountsReferencedImagesAsKept(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 4, map[string]string{"Backup": "nightly"})
	hist := seedHistory(env.Sim, "prod", instances, 5)
	p := pruner(t, env, cfg(t, `{"last":1}`), nil) // maxDeleteShare 50%
	r := req()
	r.DryRun = true
	sum, err := p.Run(context.Background(), r)
	if err != nil || !strings.Contains(sum.Blocked, "16 of 20 images") {
		t.Fatalf("without references: err %v, blocked %q", err, sum.Blocked)
	}
	// 7 of the 16 are in launch templates: 9 of 20 (45%) remain to delete.
	n := 0
	for _, in := range instances {
		for _, id := range hist[in][1:] {
			if n < 7 {
				env.Sim.AddImageReference("", "", id, ec2sim.RefLaunchTemplate, "arn:aws:ec2:us-east-1:123456789012:launch-template/lt-"+id[4:])
				n++
			}
		}
	}
	sum, err = p.Run(context.Background(), req())
	if err != nil || sum.Blocked != "" || len(sum.Done) != 9 || len(sum.KeptByReference) != 7 || len(env.Sim.Images("", "")) != 11 {
		t.Fatalf("with references: err %v, blocked %q, deleted %d, kept by reference %d", err, sum.Blocked, len(sum.Done), len(sum.KeptByReference))
	}
}

// TestVerificationFloorsInPrune: the tags the verification workflow writes
// reach retention. The newest verified image survives rules that keep only
// the newest; failed verifications are reported, kept or deleted by the
// rules, never deleted for failing.
func TestVerificationFloorsInPrune(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 1, map[string]string{"Backup": "nightly"})
	hist := seedHistory(env.Sim, "prod", instances, 6)[instances[0]]
	verifiedAt := now.AddDate(0, 0, -2)
	settag := func(id string, kv map[string]string) {
		t.Helper()
		if _, err := env.Client("", "").CreateTags(context.Background(), ec2Tags(id, kv)); err != nil {
			t.Fatal(err)
		}
	}
	settag(hist[0], map[string]string{tags.Verify: tags.VerifyFailed, tags.VerifyError: "no SSH within 10m"})
	settag(hist[1], map[string]string{tags.Verify: tags.VerifyFailed, tags.VerifyError: "kernel panic", tags.Verified: tags.FormatTime(verifiedAt.AddDate(0, 0, -1))})
	settag(hist[3], map[string]string{tags.Verified: tags.FormatTime(verifiedAt)})
	settag(hist[4], map[string]string{tags.Verified: tags.FormatTime(verifiedAt.AddDate(0, 0, -1))})
	settag(hist[5], map[string]string{tags.Verify: tags.VerifyFailed})
	c := cfg(t, `{"last":1}`)
	c.Prune.MaxDeleteShare = 1
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	remaining := imageIDs(env.Sim)
	want := slices.Sorted(slices.Values([]string{hist[0], hist[3]}))
	if !slices.Equal(remaining, want) {
		t.Fatalf("remaining %v, want the newest %s and the newest verified %s", remaining, hist[0], hist[3])
	}
	e := entryOf(sum, hist[3])
	if !slices.Contains(e.Reasons, "floor: newest verified ("+tags.FormatTime(verifiedAt)+")") || !e.Verified.Equal(verifiedAt) {
		t.Fatalf("verified floor: %+v", e)
	}
	failed := map[string]string{}
	for _, v := range sum.VerificationFailed {
		failed[v.ImageID] = v.Detail
	}
	if len(failed) != 3 || !strings.Contains(failed[hist[0]], "no SSH within 10m") || !strings.Contains(failed[hist[0]], "kept") ||
		!strings.Contains(failed[hist[1]], "kernel panic") || !strings.Contains(failed[hist[1]], "deleted by retention") ||
		!strings.Contains(failed[hist[5]], "no reason recorded") {
		t.Fatalf("verification failures: %v", failed)
	}
	if n := entryOf(sum, hist[0]).Notes; len(n) != 1 || !strings.Contains(n[0], "restore verification failed: no SSH within 10m") {
		t.Fatalf("notes %v", n)
	}
}

func ec2Tags(id string, kv map[string]string) *ec2.CreateTagsInput {
	in := &ec2.CreateTagsInput{Resources: []string{id}}
	for k, v := range kv {
		in.Tags = append(in.Tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return in
}
