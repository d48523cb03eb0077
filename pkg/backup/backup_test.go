package backup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

const cfgJSON = `{"deployment":"prod","concurrency":8,"policies":[
 {"name":"nightly","selector":{"tagKey":"Backup","tagValues":["nightly","yes"]},
  "copyTags":["Name","CostCenter"],"extraTags":{"team":"ops"},"deprecateAfter":"30d",
  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
  "availability":{"mode":"all-at-once"}},
 {"name":"weekly","selector":{"tagKey":"Weekly"},"reboot":false,
  "schedule":{"expression":"cron(0 3 ? * SUN *)"},"retention":{"weekly":4}}]}`

var slot = time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)

func cfg(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(cfgJSON), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newBackuper(t testing.TB, env *simtest.Env, metrics io.Writer) *backup.Backuper {
	if metrics == nil {
		metrics = io.Discard
	}
	return &backup.Backuper{EC2: env.Client("", ""), Config: cfg(t),
		Job: runner.Job{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: emf.New(metrics), Now: env.Sim.Now}}
}

func scheduled(policy string) trigger.Backup {
	return trigger.Backup{Policy: policy, Slot: slot, Trigger: tags.TriggerSchedule}
}

// seedMixed seeds n instances: every third is selected and running, the
// others carry a wrong tag value, no tag, or are terminated/pending.
func seedMixed(sim *ec2sim.Sim, n int) (selected map[string]bool) {
	selected = map[string]bool{}
	for i := range n {
		spec := ec2sim.InstanceSpec{Tags: map[string]string{"Name": fmt.Sprintf("web-%d", i), "CostCenter": "42", "Other": "x"},
			Volumes: make([]ec2sim.VolumeSpec, 1+i%3)}
		sel := false
		switch i % 6 {
		case 0:
			spec.Tags["Backup"] = "nightly"
			sel = true
		case 1:
			spec.Tags["Backup"] = "yes"
			spec.State = "stopped"
			sel = true
		case 2:
			spec.Tags["Backup"] = "never"
		case 3:
			spec.Tags["Backup"] = "nightly"
			spec.State = "terminated"
		case 4:
			spec.Tags["Backup"] = "nightly"
			spec.State = "pending"
		case 5:
		}
		id := sim.AddInstance(spec)
		if sel {
			selected[id] = true
		}
	}
	return selected
}

func TestBackupSelectsTagsAndReboots(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	selected := seedMixed(env.Sim, 2500)
	var metrics bytes.Buffer
	b := newBackuper(t, env, &metrics)
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if sum.Selected != len(selected) || len(sum.Done) != len(selected) {
		t.Fatalf("selected %d done %d, want %d", sum.Selected, len(sum.Done), len(selected))
	}
	imgs := env.Sim.Images("", "")
	if len(imgs) != len(selected) {
		t.Fatalf("%d images, want %d", len(imgs), len(selected))
	}
	snaps := map[string]ec2sim.Snapshot{}
	for _, s := range env.Sim.Snapshots("", "") {
		snaps[s.ID] = s
	}
	for _, im := range imgs {
		if !selected[im.InstanceID] {
			t.Fatalf("image %s of unselected instance %s", im.ID, im.InstanceID)
		}
		if im.NoReboot {
			t.Errorf("%s taken with NoReboot", im.ID)
		}
		in, _ := env.Sim.Instance("", "", im.InstanceID)
		want := map[string]string{
			tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: im.InstanceID,
			tags.Time: "2026-11-24T03:00:00Z", tags.Reboot: "true", tags.Trigger: "schedule",
			"team": "ops", "Name": in.Tags["Name"], "CostCenter": "42",
		}
		if im.Name != images.Name("nightly", im.InstanceID, slot) {
			t.Errorf("name %s", im.Name)
		}
		checkTags(t, "image "+im.ID, im.Tags, want)
		if _, copied := im.Tags["Other"]; copied {
			t.Errorf("tag Other copied although not in copyTags")
		}
		for _, sid := range im.SnapshotIDs {
			checkTags(t, "snapshot "+sid, snaps[sid].Tags, want)
		}
		// NoReboot=false reboots a running instance; a stopped one has no
		// I/O to stop and is imaged as it is.
		if want := map[string]int{"running": 1, "stopped": 0}[in.State]; in.Reboots != want {
			t.Errorf("%s (%s) rebooted %d times, want %d", in.ID, in.State, in.Reboots, want)
		}
		if im.DeprecationTime.IsZero() {
			t.Errorf("%s has no deprecation time", im.ID)
		}
	}
	calls := env.Sim.Calls()
	if calls.Count("CreateImage") != len(selected) || calls.Count("CreateTags") != 0 {
		t.Errorf("calls %v", calls.ByAction)
	}
	if got, want := calls.Count("DescribeInstances"), (len(selected)+999)/1000; got != want {
		t.Errorf("DescribeInstances pages %d, want %d", got, want)
	}
	if !strings.Contains(metrics.String(), `"ImagesCreated":834`) || !strings.Contains(metrics.String(), `"Policy":"nightly"`) {
		t.Errorf("metrics: %s", metrics.String())
	}
}

func checkTags(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d tags %v, want exactly %v", what, len(got), got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: tag %s = %q, want %q", what, k, got[k], v)
		}
	}
}

func TestNoRebootOptOutAndPolicyReboot(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	optOut := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly", tags.NoReboot: "true"}})
	normal := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly"}})
	weekly := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Weekly": "any"}})
	b := newBackuper(t, env, nil)
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Warnings) == 0 || !strings.Contains(strings.Join(sum.Warnings, ";"), optOut) {
		t.Errorf("no warning for the opted-out instance: %v", sum.Warnings)
	}
	if _, err := b.Run(context.Background(), scheduled("weekly")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id            string
		reboots       int
		noRebootImage int
		tag           string
	}{{optOut, 0, 1, "false"}, {normal, 1, 0, "true"}, {weekly, 0, 1, "false"}} {
		in, _ := env.Sim.Instance("", "", tc.id)
		if in.Reboots != tc.reboots || in.NoRebootImages != tc.noRebootImage {
			t.Errorf("%s: reboots %d noReboot %d", tc.id, in.Reboots, in.NoRebootImages)
		}
		for _, im := range env.Sim.Images("", "") {
			if im.InstanceID == tc.id && im.Tags[tags.Reboot] != tc.tag {
				t.Errorf("%s: reboot tag %q want %q", tc.id, im.Tags[tags.Reboot], tc.tag)
			}
		}
	}
}

// TestDuplicateTriggers: the same trigger delivered twice, then ten times
// concurrently, still leaves one image per instance and no failure.
func TestDuplicateTriggers(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.SeedFleet("", "", 40, map[string]string{"Backup": "nightly"})
	b := newBackuper(t, env, nil)
	first, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil || len(first.Done) != 40 {
		t.Fatalf("first run: %v, done %d", err, len(first.Done))
	}
	second, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil || len(second.Done) != 0 || len(second.Existed) != 40 {
		t.Fatalf("second run: %v, done %d existed %d", err, len(second.Done), len(second.Existed))
	}
	ids := map[string]string{}
	for _, e := range first.Done {
		ids[e.ID] = e.ImageID
	}
	for _, e := range second.Existed {
		if ids[e.ID] != e.ImageID {
			t.Errorf("%s: existing image reported as %s, created %s", e.ID, e.ImageID, ids[e.ID])
		}
	}
	later := scheduled("nightly")
	later.Slot = slot.Add(24 * time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.Run(context.Background(), later)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent run: %v", err)
		}
	}
	perInstance := map[string]int{}
	for _, im := range env.Sim.Images("", "") {
		perInstance[im.InstanceID]++
	}
	for id, n := range perInstance {
		if n != 2 {
			t.Errorf("%s has %d images, want 2 (one per slot)", id, n)
		}
	}
}

func TestThrottledRunHasNoFailures(t *testing.T) {
	if testing.Short() {
		t.Skip("throttled 1,000-instance run skipped in -short mode")
	}
	env := simtest.Start(t, ec2sim.Options{Throttle: true, TimeScale: 50})
	env.Sim.SeedFleet("", "", 1000, map[string]string{"Backup": "nightly"})
	b := newBackuper(t, env, nil)
	b.Config.Policies[0].DeprecateAfter = 0 // count CreateImage alone
	t0 := env.Sim.Now()
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil {
		t.Fatalf("Run under throttling: %v", err)
	}
	calls := env.Sim.Calls()
	if len(sum.Done) != 1000 || calls.Count("CreateImage") != 1000 || calls.Count("CreateTags") != 0 || calls.Count("DescribeInstances") != 1 {
		t.Fatalf("done %d, calls %v", len(sum.Done), calls.ByAction)
	}
	if calls.Throttled["CreateImage"] == 0 {
		t.Fatalf("no throttling happened; the test does not test what it claims")
	}
	// EC2's bucket: 50 at once, then 5 per second.
	if el := env.Sim.Now().Sub(t0); el < 180*time.Second {
		t.Errorf("1,000 CreateImage in %v simulated: faster than EC2's bucket allows", el)
	}
	t.Logf("throttled attempts %d, simulated %v", calls.Throttled["CreateImage"], env.Sim.Now().Sub(t0))
}

func TestFailuresAreIsolatedAndExact(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	ids := env.Sim.SeedFleet("", "", 20, map[string]string{"Backup": "nightly"})
	// A non-retryable error on one instance, a persistent 5xx on another,
	// and transient 5xx (recovered by the retryer) on a third.
	env.Sim.Inject(ec2sim.Fault{Action: "CreateImage", InstanceID: ids[3], Code: "IncorrectState", Message: "instance is stopping"})
	env.Sim.Inject(ec2sim.Fault{Action: "CreateImage", InstanceID: ids[7], Code: "InternalError"})
	env.Sim.Inject(ec2sim.Fault{Action: "CreateImage", InstanceID: ids[9], Code: "Unavailable", Times: 2})
	b := newBackuper(t, env, nil)
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err == nil {
		t.Fatal("Run succeeded although instances failed")
	}
	if len(sum.Done) != 18 || len(sum.Failed) != 2 {
		t.Fatalf("done %d failed %v", len(sum.Done), sum.Failed)
	}
	failed := map[string]string{}
	for _, f := range sum.Failed {
		failed[f.ID] = f.Detail
	}
	if !strings.Contains(failed[ids[3]], "IncorrectState") || !strings.Contains(failed[ids[7]], "InternalError") {
		t.Errorf("failures %v", failed)
	}
	if !strings.Contains(err.Error(), ids[3]) || !strings.Contains(err.Error(), ids[7]) {
		t.Errorf("error does not name the failed instances: %v", err)
	}
	if len(env.Sim.Images("", "")) != 18 {
		t.Errorf("%d images", len(env.Sim.Images("", "")))
	}
	// The retry is safe: the failed ones are created, nothing is duplicated.
	env.Sim.ClearFaults()
	sum, err = b.Run(context.Background(), scheduled("nightly"))
	if err != nil || len(sum.Done) != 2 || len(sum.Existed) != 18 {
		t.Fatalf("retry: %v done %d existed %d", err, len(sum.Done), len(sum.Existed))
	}
}

func TestConcurrentSnapshotLimitIsPerInstance(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{ImageDelay: time.Hour})
	cold := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly"}, Volumes: []ec2sim.VolumeSpec{{Type: "sc1"}}})
	warm := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly"}})
	b := newBackuper(t, env, nil)
	b.Config.Policies[0].DeprecateAfter = 0
	if _, err := b.Run(context.Background(), scheduled("nightly")); err != nil {
		t.Fatal(err)
	}
	next := scheduled("nightly")
	next.Slot = slot.Add(time.Hour)
	sum, err := b.Run(context.Background(), next)
	if err == nil || len(sum.Failed) != 1 || sum.Failed[0].ID != cold || len(sum.Done) != 1 || sum.Done[0].ID != warm {
		t.Fatalf("err %v failed %v done %v", err, sum.Failed, sum.Done)
	}
}

func TestManualSubsetNeverWidens(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	in := env.Sim.SeedFleet("", "", 3, map[string]string{"Backup": "nightly"})
	out := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "never"}})
	b := newBackuper(t, env, nil)
	reboot := false
	req := trigger.Backup{Policy: "nightly", Slot: slot, Trigger: tags.TriggerManual, InstanceIDs: []string{in[1], out}, Reboot: &reboot}
	sum, err := b.Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Done) != 1 || sum.Done[0].ID != in[1] || len(sum.Skipped) != 1 || sum.Skipped[0].ID != out {
		t.Fatalf("done %v skipped %v", sum.Done, sum.Skipped)
	}
	im := env.Sim.Images("", "")[0]
	if im.Tags[tags.Trigger] != "manual" || im.Tags[tags.Reboot] != "false" || !im.NoReboot {
		t.Errorf("manual image tags %v noReboot %v", im.Tags, im.NoReboot)
	}
}

func TestDryRunCreatesNothing(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.SeedFleet("", "", 12, map[string]string{"Backup": "nightly"})
	b := newBackuper(t, env, nil)
	req := scheduled("nightly")
	req.DryRun = true
	sum, err := b.Run(context.Background(), req)
	if err != nil || len(sum.Done) != 12 {
		t.Fatalf("dry run: %v done %d", err, len(sum.Done))
	}
	calls := env.Sim.Calls()
	if len(env.Sim.Images("", "")) != 0 || calls.Mutating() != 0 || calls.DryRun["CreateImage"] != 12 {
		t.Fatalf("dry run changed state: images %d, calls %+v", len(env.Sim.Images("", "")), calls)
	}
}

func TestZeroSelectedIsLoud(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.SeedFleet("", "", 3, map[string]string{"Backup": "typo"})
	var metrics bytes.Buffer
	b := newBackuper(t, env, &metrics)
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil {
		t.Fatal(err)
	}
	if sum.Selected != 0 || len(sum.Warnings) == 0 || !strings.Contains(sum.Warnings[0], "zero instances selected") {
		t.Fatalf("summary %+v", sum)
	}
	var rec map[string]any
	if err := json.Unmarshal(metrics.Bytes(), &rec); err != nil || rec["InstancesSelected"] != 0.0 {
		t.Fatalf("metric InstancesSelected=0 not emitted: %s", metrics.String())
	}
}

// TestDeadlineReportsNotReached: with a deadline inside the margin after a
// few images, the rest are reported and a re-run finishes them.
func TestDeadlineReportsNotReached(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Latency: 20 * time.Millisecond})
	env.Sim.SeedFleet("", "", 30, map[string]string{"Backup": "nightly"})
	b := newBackuper(t, env, nil)
	b.Config.Concurrency = 1
	b.Config.Policies[0].DeprecateAfter = 0
	b.Margin = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	sum, err := b.Run(ctx, scheduled("nightly"))
	if err == nil || len(sum.NotReached) == 0 || len(sum.Done)+len(sum.NotReached) != 30 {
		t.Fatalf("err %v done %d notReached %d", err, len(sum.Done), len(sum.NotReached))
	}
	if !strings.Contains(err.Error(), "not reached before the deadline") {
		t.Errorf("error %v", err)
	}
	b.Margin = time.Millisecond
	sum2, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil || len(sum2.Done) != len(sum.NotReached) || len(env.Sim.Images("", "")) != 30 {
		t.Fatalf("re-run: %v done %d images %d", err, len(sum2.Done), len(env.Sim.Images("", "")))
	}
}

func TestTagBudget(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	instTags := map[string]string{"Backup": "nightly"}
	c := cfg(t)
	c.Policies[0].CopyTags = nil
	for i := range 40 {
		k := fmt.Sprintf("k%02d", i)
		instTags[k] = "v"
		c.Policies[0].CopyTags = append(c.Policies[0].CopyTags, k)
	}
	c.Policies[0].ExtraTags = map[string]string{"team": "ops", "env": "prod", "tier": "1", "x": "1", "y": "2"}
	env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: instTags})
	b := newBackuper(t, env, nil)
	b.Config = c
	sum, err := b.Run(context.Background(), scheduled("nightly"))
	if err != nil {
		t.Fatal(err)
	}
	im := env.Sim.Images("", "")[0]
	if len(im.Tags) != 50 || im.Tags[tags.ManagedBy] != "prod" || im.Tags["team"] != "ops" {
		t.Fatalf("%d tags: %v", len(im.Tags), im.Tags)
	}
	if len(sum.Warnings) == 0 || !strings.Contains(sum.Warnings[0], "did not fit") {
		t.Fatalf("overflow not reported: %v", sum.Warnings)
	}
}

// TestNameTakenIsNotAlwaysDone: a duplicate name counts as this trigger's
// image only when the image is ours, for this instance, and not failed.
func TestNameTakenIsNotAlwaysDone(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	sel := map[string]string{"Backup": "nightly"}
	foreign, failed, resumed := env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: sel}), env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: sel}),
		env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: sel})
	ours := func(id string) map[string]string {
		return map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: id, tags.Time: tags.FormatTime(slot)}
	}
	other := ours(foreign)
	other[tags.ManagedBy] = "staging"
	foreignImg, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", foreign, slot), InstanceID: foreign, Tags: other})
	failedImg, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", failed, slot), InstanceID: failed, Tags: ours(failed), State: "failed"})
	// An earlier delivery created this one and died before deprecating it.
	created := slot.Add(90 * time.Second)
	resumedImg, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", resumed, slot), InstanceID: resumed, Tags: ours(resumed),
		State: "pending", Created: created})

	sum, err := newBackuper(t, env, nil).Run(context.Background(), scheduled("nightly"))
	if err == nil {
		t.Fatal("run with two unusable name clashes succeeded")
	}
	failedBy := map[string]string{}
	for _, f := range sum.Failed {
		failedBy[f.ID] = f.Detail
	}
	if d := failedBy[foreign]; !strings.Contains(d, foreignImg) || !strings.Contains(d, `not managed by deployment "prod"`) {
		t.Errorf("foreign clash: %q", d)
	}
	if d := failedBy[failed]; !strings.Contains(d, failedImg) || !strings.Contains(d, "failed") {
		t.Errorf("failed clash: %q", d)
	}
	if len(sum.Existed) != 1 || sum.Existed[0].ID != resumed || sum.Existed[0].ImageID != resumedImg || len(sum.Failed) != 2 {
		t.Fatalf("existed %+v failed %+v", sum.Existed, sum.Failed)
	}
	for _, im := range env.Sim.Images("", "") {
		if want := im.ID == resumedImg; im.DeprecationTime.IsZero() == want {
			t.Errorf("%s: deprecation %v (only the resumed image of ours gets one)", im.ID, im.DeprecationTime)
		}
		// 30d from its creation (rounded up to the minute), not from this retry.
		if want := created.Add(30*24*time.Hour + 30*time.Second); im.ID == resumedImg && !im.DeprecationTime.Equal(want) {
			t.Errorf("resumed image deprecates at %v, want %v", im.DeprecationTime, want)
		}
	}
}

// TestOptOutTagValues: "true" in any case opts out; any other value is
// reported and the instance is rebooted as the policy says.
func TestOptOutTagValues(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	byValue := map[string]string{}
	for _, v := range []string{"True", " TRUE ", "yes", "false"} {
		byValue[v] = env.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly", tags.NoReboot: v}})
	}
	sum, err := newBackuper(t, env, nil).Run(context.Background(), scheduled("nightly"))
	if err != nil {
		t.Fatal(err)
	}
	warnings := strings.Join(sum.Warnings, "\n")
	for v, id := range byValue {
		optOut := strings.EqualFold(strings.TrimSpace(v), "true")
		in, _ := env.Sim.Instance("", "", id)
		if (in.Reboots == 0) != optOut {
			t.Errorf("%s=%q: reboots %d, want opt-out %v", tags.NoReboot, v, in.Reboots, optOut)
		}
		if !strings.Contains(warnings, id) {
			t.Errorf("%s=%q: no warning for %s in %q", tags.NoReboot, v, id, warnings)
		}
	}
}

// TestFutureTriggerTimeRejected: a hand-made event cannot name a slot ahead
// of the clock (prune would age every image by the difference).
func TestFutureTriggerTimeRejected(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.SeedFleet("", "", 3, map[string]string{"Backup": "nightly"})
	b := newBackuper(t, env, nil)
	now := env.Sim.Now()
	for _, tc := range []struct {
		at time.Time
		ok bool
	}{{now.Add(4 * time.Minute), true}, {now.Add(10 * time.Minute), false}, {now.AddDate(5, 0, 0), false}} {
		in := fmt.Sprintf(`{"policy":"nightly","time":%q}`, tc.at.UTC().Format(time.RFC3339))
		_, err := b.Handle(context.Background(), []byte(in))
		if (err == nil) != tc.ok || (err != nil && !strings.Contains(err.Error(), "ahead of the clock")) {
			t.Errorf("time %v: err %v, want accepted %v", tc.at, err, tc.ok)
		}
	}
	if n := len(env.Sim.Images("", "")); n != 3 {
		t.Fatalf("%d images, want 3 from the one accepted trigger", n)
	}
}

// TestSelectionFailureIsLoggedAndChangesNothing: when the role may not
// describe instances, the run fails before any CreateImage and says so in
// the log (the invocation error alone may never reach CloudWatch Logs).
func TestSelectionFailureIsLoggedAndChangesNothing(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.SeedFleet("", "", 3, map[string]string{"Backup": "nightly"})
	env.Sim.Inject(ec2sim.Fault{Action: "DescribeInstances", Code: "UnauthorizedOperation", Message: "You are not authorized to perform this operation."})
	var logs bytes.Buffer
	b := newBackuper(t, env, nil)
	b.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	if _, err := b.Run(context.Background(), scheduled("nightly")); err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Fatalf("err = %v", err)
	}
	if n := env.Sim.Calls().Count("CreateImage"); n != 0 {
		t.Fatalf("%d CreateImage calls", n)
	}
	if !strings.Contains(logs.String(), `"msg":"instance selection failed; nothing was backed up"`) || !strings.Contains(logs.String(), `"code":"UnauthorizedOperation"`) {
		t.Fatalf("log: %s", logs.String())
	}
}
