package prune_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/prune"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// now is the prune run's trigger time; histories end the night before.
var now = time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)

func cfg(t testing.TB, retention string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`{"deployment":"prod","concurrency":8,"policies":[
	 {"name":"nightly","selector":{"tagKey":"Backup"},"deprecateAfter":"90d",
	  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":`+retention+`}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pruner(t testing.TB, env *simtest.Env, c *config.Config, api prune.EC2) *prune.Pruner {
	if api == nil {
		api = env.Client("", "")
	}
	return &prune.Pruner{EC2: api, Config: c, Job: runner.Job{Log: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: emf.New(io.Discard)}}
}

// seedHistory gives each instance one nightly image per day for days days,
// tagged as the backup function tags them. It returns image IDs by instance,
// newest first.
func seedHistory(sim *ec2sim.Sim, deployment string, instances []string, days int) map[string][]string {
	out := map[string][]string{}
	for d := range days {
		at := now.Add(-2*time.Hour).AddDate(0, 0, -d) // 03:00 UTC
		for _, in := range instances {
			tg := map[string]string{tags.ManagedBy: deployment, tags.Policy: "nightly", tags.InstanceID: in,
				tags.Time: tags.FormatTime(at), tags.Reboot: "true", tags.Trigger: "schedule"}
			id, _ := sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", in, at), InstanceID: in, Tags: tg, SnapshotTags: tg, Created: at})
			out[in] = append(out[in], id)
		}
	}
	return out
}

func req() trigger.Prune { return trigger.Prune{Time: now, Trigger: tags.TriggerSchedule} }

func imageIDs(sim *ec2sim.Sim) []string {
	var ids []string
	for _, im := range sim.Images("", "") {
		ids = append(ids, im.ID)
	}
	sort.Strings(ids)
	return ids
}

func TestPruneKeepsExactlyWhatRetentionSays(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 3, map[string]string{"Backup": "nightly"})
	hist := seedHistory(env.Sim, "prod", instances, 10)
	// A failed image is deregistered; a pending one is kept whatever its age.
	failed, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "amibackup-nightly-failed", State: "failed", InstanceID: instances[0],
		Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: instances[0], tags.Time: tags.FormatTime(now.Add(-time.Hour))}})
	pending, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "amibackup-nightly-pending", State: "pending", InstanceID: instances[1],
		Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: instances[1], tags.Time: tags.FormatTime(now.AddDate(0, 0, -30))}})
	env.Sim.ResetCalls()
	c := cfg(t, `{"last":3}`)
	c.Prune.MaxDeleteShare = 0.9
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var want []string
	for _, in := range instances {
		want = append(want, hist[in][:3]...)
	}
	want = append(want, pending)
	sort.Strings(want)
	if got := imageIDs(env.Sim); !slices.Equal(got, want) {
		t.Fatalf("remaining %v\nwant %v", got, want)
	}
	if len(sum.Done) != 3*7+1 || !slices.ContainsFunc(sum.Done, func(e runner.Entry) bool { return e.ImageID == failed }) {
		t.Fatalf("deleted %d: %v", len(sum.Done), sum.Done)
	}
	// One DeregisterImage per deleted image, and its snapshots went with it.
	calls := env.Sim.Calls()
	if calls.Count("DeregisterImage") != len(sum.Done) || calls.Count("DeleteSnapshot") != 0 {
		t.Fatalf("calls %v", calls.ByAction)
	}
	assertNoSnapshotsOfDeletedImages(t, env.Sim)
	// Kept images got their missing deprecation time.
	for _, im := range env.Sim.Images("", "") {
		if im.State == "available" && im.DeprecationTime.IsZero() {
			t.Errorf("%s has no deprecation time after prune", im.ID)
		}
	}
}

// assertNoSnapshotsOfDeletedImages: every snapshot that remains is used by
// a registered image or was never ours.
func assertNoSnapshotsOfDeletedImages(t *testing.T, sim *ec2sim.Sim) {
	t.Helper()
	used := map[string]bool{}
	for _, im := range sim.Images("", "") {
		for _, s := range im.SnapshotIDs {
			used[s] = true
		}
	}
	for _, s := range sim.Snapshots("", "") {
		if !used[s.ID] && s.Tags[tags.ManagedBy] == "prod" {
			t.Errorf("snapshot %s (%s) left behind", s.ID, s.Description)
		}
	}
}

// TestForeignImagesSurvive: 1,000 images and snapshots that are not this
// deployment's (no tag, another deployment's tag, our names) are untouched.
func TestForeignImagesSurvive(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 10)
	var foreignImages, foreignSnaps []string
	for i := range 1000 {
		at := now.AddDate(0, 0, -100-i)
		var tg map[string]string
		switch i % 3 {
		case 0: // no tags at all, but our naming scheme
		case 1:
			tg = map[string]string{tags.ManagedBy: "staging", tags.Policy: "nightly", tags.InstanceID: instances[0], tags.Time: tags.FormatTime(at)}
		case 2:
			tg = map[string]string{tags.ManagedBy: "prod-old", tags.Policy: "nightly"}
		}
		id, snaps := env.Sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", instances[i%2], at), Tags: tg, SnapshotTags: tg, Created: at})
		foreignImages = append(foreignImages, id)
		foreignSnaps = append(foreignSnaps, snaps...)
		foreignSnaps = append(foreignSnaps, env.Sim.AddSnapshot(ec2sim.SnapshotSpec{Description: "Created by CreateImage(i-1) for ami-0000000000000dead from vol-1", Tags: tg, Created: at}))
	}
	c := cfg(t, `{"last":2}`)
	c.Prune.MaxDeleteShare = 1
	if _, err := pruner(t, env, c, nil).Run(context.Background(), req()); err != nil {
		t.Fatal(err)
	}
	images := imageIDs(env.Sim)
	for _, id := range foreignImages {
		if _, found := slices.BinarySearch(images, id); !found {
			t.Fatalf("foreign image %s deleted", id)
		}
	}
	snaps := map[string]bool{}
	for _, s := range env.Sim.Snapshots("", "") {
		snaps[s.ID] = true
	}
	for _, id := range foreignSnaps {
		if !snaps[id] {
			t.Fatalf("foreign snapshot %s deleted", id)
		}
	}
	if len(images) != 1000+2*2 {
		t.Fatalf("%d images remain, want %d", len(images), 1004)
	}
}

// TestPrune10kUnderThrottling deletes thousands of images with EC2's
// buckets on: exactly the expected set goes, one call per image.
func TestPrune10kUnderThrottling(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000-image run skipped in -short mode")
	}
	env := simtest.Start(t, ec2sim.Options{Start: now, Throttle: true, TimeScale: 400})
	instances := env.Sim.SeedFleet("", "", 100, map[string]string{"Backup": "nightly"})
	hist := seedHistory(env.Sim, "prod", instances, 100)
	env.Sim.ResetCalls()
	c := cfg(t, `{"daily":7,"weekly":4}`)
	c.Policies[0].DeprecateAfter = 0
	c.Prune.MaxDeleteShare = 1
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	kept := map[string]bool{}
	for _, e := range sum.Plan {
		if e.Keep {
			kept[e.ImageID] = true
		}
	}
	// 7 dailies plus the 3 older week-ends of the 4 most recent ISO weeks.
	for _, in := range instances {
		n := 0
		for _, id := range hist[in] {
			if kept[id] {
				n++
			}
		}
		if n < 9 || n > 11 {
			t.Fatalf("%s keeps %d images", in, n)
		}
	}
	remaining := imageIDs(env.Sim)
	if len(remaining) != len(kept) || len(sum.Done) != 10000-len(kept) {
		t.Fatalf("remaining %d kept %d deleted %d", len(remaining), len(kept), len(sum.Done))
	}
	calls := env.Sim.Calls()
	if calls.Count("DeregisterImage") != len(sum.Done) || calls.Count("DeleteSnapshot") != 0 {
		t.Fatalf("calls %v", calls.ByAction)
	}
	// The reference check asks for 10 images per call (EC2's maximum).
	if n, want := calls.Count("DescribeImageReferences"), (len(sum.Done)+9)/10; n != want {
		t.Fatalf("%d DescribeImageReferences calls for %d deletions, want %d", n, len(sum.Done), want)
	}
	perImage := float64(accepted(calls)) / float64(len(sum.Done))
	if perImage > 1.11 {
		t.Fatalf("%.3f calls per deleted image: %v", perImage, calls.ByAction)
	}
	assertNoSnapshotsOfDeletedImages(t, env.Sim)
	t.Logf("%.3f calls per deleted image (%v), throttled %v", perImage, calls.ByAction, calls.Throttled)
}

// accepted counts the calls EC2 accepted (throttled attempts are the
// retryer's waiting, not API work).
func accepted(c ec2sim.CallLog) int {
	n := c.Total
	for _, v := range c.Throttled {
		n -= v
	}
	return n
}

// killAfter cancels the run's context after k successful deregistrations,
// like a Lambda that dies mid-run.
type killAfter struct {
	*ec2.Client
	k      int64
	n      atomic.Int64
	cancel context.CancelFunc
}

func (c *killAfter) DeregisterImage(ctx context.Context, in *ec2.DeregisterImageInput, opts ...func(*ec2.Options)) (*ec2.DeregisterImageOutput, error) {
	out, err := c.Client.DeregisterImage(ctx, in, opts...)
	if err == nil && c.n.Add(1) >= c.k {
		c.cancel()
	}
	return out, err
}

func TestKilledRunThenRerunMatchesCleanRun(t *testing.T) {
	run := func(kill bool) ([]string, int) {
		env := simtest.Start(t, ec2sim.Options{Start: now, Seed: 7})
		instances := env.Sim.SeedFleet("", "", 5, map[string]string{"Backup": "nightly"})
		seedHistory(env.Sim, "prod", instances, 20)
		// A run that died between deregistering and deleting snapshots left these.
		for i := range 4 {
			env.Sim.AddSnapshot(ec2sim.SnapshotSpec{Description: fmt.Sprintf("Created by CreateImage(%s) for ami-00000000000000%03d from vol-1", instances[0], i),
				Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly"}, Created: now.AddDate(0, 0, -3)})
		}
		c := cfg(t, `{"last":5}`)
		c.Prune.MaxDeleteShare = 1
		c.Concurrency = 2
		if kill {
			ctx, cancel := context.WithCancel(context.Background())
			api := &killAfter{Client: env.Client("", ""), k: 17, cancel: cancel}
			sum, err := pruner(t, env, c, api).Run(ctx, req())
			if err == nil || len(sum.NotReached) == 0 {
				t.Fatalf("killed run: err %v, not reached %d", err, len(sum.NotReached))
			}
		}
		if _, err := pruner(t, env, c, nil).Run(context.Background(), req()); err != nil {
			t.Fatalf("re-run: %v", err)
		}
		var names []string
		for _, im := range env.Sim.Images("", "") {
			names = append(names, im.Name)
		}
		sort.Strings(names)
		assertNoSnapshotsOfDeletedImages(t, env.Sim)
		return names, len(env.Sim.Snapshots("", ""))
	}
	cleanNames, cleanSnaps := run(false)
	killedNames, killedSnaps := run(true)
	if !slices.Equal(cleanNames, killedNames) || cleanSnaps != killedSnaps {
		t.Fatalf("end states differ:\nclean  %v (%d snapshots)\nkilled %v (%d snapshots)", cleanNames, cleanSnaps, killedNames, killedSnaps)
	}
	if len(cleanNames) != 25 {
		t.Fatalf("%d images remain, want 25", len(cleanNames))
	}
}

func TestOrphanSweepRespectsGraceAndUse(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 1, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 2)
	ours := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly"}
	old := env.Sim.AddSnapshot(ec2sim.SnapshotSpec{Description: "Created by CreateImage(i-1) for ami-0000000000000beef from vol-1", Tags: ours, Created: now.AddDate(0, 0, -2)})
	young := env.Sim.AddSnapshot(ec2sim.SnapshotSpec{Description: "Created by CreateImage(i-1) for ami-0000000000000cafe from vol-1", Tags: ours, Created: now.Add(-time.Hour)})
	// Someone registered their own image from one of our snapshots.
	_, theirs := env.Sim.AddImage(ec2sim.ImageSpec{Name: "their-image", SnapshotTags: ours, Created: now.AddDate(0, 0, -5)})
	c := cfg(t, `{"last":5}`)
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	remaining := map[string]bool{}
	for _, s := range env.Sim.Snapshots("", "") {
		remaining[s.ID] = true
	}
	if remaining[old] || !remaining[young] || !remaining[theirs[0]] {
		t.Fatalf("old %v young %v theirs %v", remaining[old], remaining[young], remaining[theirs[0]])
	}
	if len(sum.OrphansDeleted) != 1 || sum.OrphansDeleted[0].ID != old {
		t.Fatalf("orphans %v", sum.OrphansDeleted)
	}
	if calls := env.Sim.Calls(); calls.Count("DeleteSnapshot") != 2 {
		t.Fatalf("DeleteSnapshot calls %d (one orphan, one in-use attempt)", calls.Count("DeleteSnapshot"))
	}
}

func TestBlastRadiusGuard(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 4, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 5)
	env.Sim.ResetCalls()
	c := cfg(t, `{"last":1}`) // would delete 80%
	p := pruner(t, env, c, nil)
	sum, err := p.Run(context.Background(), req())
	if err == nil || sum.Blocked == "" || !strings.Contains(err.Error(), "maxDeleteShare") || !strings.Contains(err.Error(), "force") {
		t.Fatalf("guard did not block: %v %+v", err, sum.Blocked)
	}
	if calls := env.Sim.Calls(); calls.Mutating() != 0 || len(env.Sim.Images("", "")) != 20 {
		t.Fatalf("blocked run changed state: %v", calls.ByAction)
	}
	forced := req()
	forced.Force = true
	sum, err = p.Run(context.Background(), forced)
	if err != nil || len(sum.Done) != 16 || len(env.Sim.Images("", "")) != 4 {
		t.Fatalf("forced run: %v, deleted %d", err, len(sum.Done))
	}
}

func TestDryRunChangesNothingAndExplains(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 6)
	env.Sim.AddSnapshot(ec2sim.SnapshotSpec{Description: "Created by CreateImage(i-1) for ami-0000000000000beef from vol-1",
		Tags: map[string]string{tags.ManagedBy: "prod"}, Created: now.AddDate(0, 0, -2)})
	env.Sim.ResetCalls()
	r := req()
	r.DryRun = true
	sum, err := pruner(t, env, cfg(t, `{"last":3}`), nil).Run(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if calls := env.Sim.Calls(); calls.Mutating() != 0 || len(env.Sim.Images("", "")) != 12 {
		t.Fatalf("dry run changed state: %v", calls.ByAction)
	}
	del, keep := 0, 0
	for _, e := range sum.Plan {
		if len(e.Reasons) == 0 {
			t.Fatalf("plan entry without reason: %+v", e)
		}
		if e.Keep {
			keep++
		} else {
			del++
		}
	}
	if del != 6 || keep != 6 || len(sum.OrphansDeleted) != 1 {
		t.Fatalf("plan: keep %d delete %d orphans %d", keep, del, len(sum.OrphansDeleted))
	}
}

func TestGoneInstancesAndUnknownPolicies(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	hist := seedHistory(env.Sim, "prod", instances, 4)
	if err := env.Sim.SetInstanceState("", "", instances[1], "terminated"); err != nil {
		t.Fatal(err)
	}
	legacy, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "amibackup-legacy-x", Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "legacy",
		tags.Time: tags.FormatTime(now.AddDate(-1, 0, 0))}, Created: now.AddDate(-1, 0, 0)})
	c := cfg(t, `{"within":"1h"}`)
	c.Prune.MaxDeleteShare = 1
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sum.GoneInstances, []string{instances[1]}) {
		t.Fatalf("gone %v", sum.GoneInstances)
	}
	ids := imageIDs(env.Sim)
	want := []string{hist[instances[0]][0], hist[instances[1]][0], legacy}
	sort.Strings(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("remaining %v want %v (the terminated server keeps its last backup; unknown policy kept)", ids, want)
	}
}

func TestParsePruneRejects(t *testing.T) {
	c := cfg(t, `{"last":1}`)
	ev := func(dt, src, detail string) string {
		return `{"version":"0","id":"1","detail-type":"` + dt + `","source":"` + src + `","account":"1","time":"2026-11-24T05:00:00Z","region":"r","resources":[],"detail":` + detail + `}`
	}
	good := []string{`{"time":"2026-11-24T05:00:00Z"}`, `{"policy":"nightly","time":"2026-11-24T05:00:00Z"}`,
		ev("Prune Requested", "amibackup", `{}`), ev("Prune Requested", "amibackup", `{"policy":"nightly","dryRun":true,"force":true}`)}
	for _, g := range good {
		if _, err := trigger.ParsePrune([]byte(g), c); err != nil {
			t.Errorf("%s: %v", g, err)
		}
	}
	bad := []struct{ in, want string }{
		{``, "JSON object"},
		{`{}`, "input.time"},
		{`{"policy":"weekly","time":"2026-11-24T05:00:00Z"}`, `unknown policy "weekly"`},
		{`{"time":"2026-11-24"}`, "RFC 3339"},
		{`{"time":"2026-11-24T05:00:00Z","force":true}`, `"force" is not allowed`},
		{ev("Backup Requested", "amibackup", `{}`), "not a prune trigger"},
		{ev("Prune Requested", "someone", `{}`), "not a prune trigger"},
		{ev("Prune Requested", "amibackup", `{"policy":"nightly","dry_run":true}`), `"dry_run" is not allowed`},
		{ev("Prune Requested", "amibackup", `{"force":"yes"}`), "event.detail"},
		{ev("Prune Requested", "amibackup", `[]`), "event.detail"},
	}
	for _, b := range bad {
		_, err := trigger.ParsePrune([]byte(b.in), c)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: error %v, want %q", b.in, err, b.want)
		}
	}
}

func FuzzParsePrune(f *testing.F) {
	c := cfg(f, `{"last":1}`)
	f.Add([]byte(`{"policy":"nightly","time":"2026-11-24T05:00:00Z"}`))
	f.Add([]byte(`{"detail-type":"Prune Requested","source":"amibackup","time":"2026-11-24T05:00:00Z","detail":{"force":true}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := trigger.ParsePrune(raw, c)
		if err != nil {
			return
		}
		if r.Time.IsZero() || (r.Policy != "" && r.Policy != "nightly") {
			t.Fatalf("accepted incomplete request %+v", r)
		}
		// Only a manual request may force.
		if r.Force && r.Trigger != tags.TriggerManual {
			t.Fatalf("scheduled input carries force: %q", raw)
		}
	})
}

func BenchmarkPrune10k(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		env := simtest.Start(b, ec2sim.Options{Start: now, Throttle: true, TimeScale: 400})
		instances := env.Sim.SeedFleet("", "", 100, map[string]string{"Backup": "nightly"})
		seedHistory(env.Sim, "prod", instances, 100)
		env.Sim.ResetCalls()
		c := cfg(b, `{"last":7}`)
		c.Policies[0].DeprecateAfter = 0
		c.Prune.MaxDeleteShare = 1
		p := pruner(b, env, c, nil)
		t0 := env.Sim.Now()
		b.StartTimer()
		sum, err := p.Run(context.Background(), req())
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		calls := env.Sim.Calls()
		b.ReportMetric(float64(accepted(calls))/float64(len(sum.Done)), "calls/deleted-image")
		b.ReportMetric(float64(calls.Count("DescribeImageReferences"))/float64(len(sum.Done)), "reference-checks/deleted-image")
		b.ReportMetric(env.Sim.Now().Sub(t0).Seconds(), "simulated-s")
		b.ReportMetric(float64(len(sum.Done)), "deleted")
		b.StartTimer()
	}
}

// TestImagesWithoutInstanceIDAreKept: images of ours whose instance-id tag
// is missing or garbled would pool into one history; they are kept and
// reported instead.
func TestImagesWithoutInstanceIDAreKept(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	var odd []string
	for i, v := range []string{"", "", "web-1", "i-XYZ"} {
		tg := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.Time: tags.FormatTime(now.AddDate(0, 0, -i-1))}
		if v != "" {
			tg[tags.InstanceID] = v
		}
		id, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: fmt.Sprintf("amibackup-nightly-odd-%d", i), Tags: tg, SnapshotTags: tg, Created: now.AddDate(0, 0, -i-1)})
		odd = append(odd, id)
	}
	c := cfg(t, `{"last":1}`)
	c.Prune.MaxDeleteShare = 1
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	if got := imageIDs(env.Sim); len(got) != len(odd) {
		t.Fatalf("remaining %v, want all of %v", got, odd)
	}
	if len(sum.Skipped) != len(odd) || !strings.Contains(sum.Skipped[0].Detail, "not an instance ID") || sum.Selected != len(odd) {
		t.Fatalf("skipped %+v selected %d", sum.Skipped, sum.Selected)
	}
	if n := env.Sim.Calls().Mutating(); n != 0 {
		t.Fatalf("%d mutating calls", n)
	}
}

// TestFailedImagesDoNotDiluteTheGuard: the share is computed over usable
// images, so a pile of failed images cannot hide a plan that deletes most
// good backups.
func TestFailedImagesDoNotDiluteTheGuard(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	seedHistory(env.Sim, "prod", instances, 5)
	for i := range 10 {
		in := instances[i%2]
		tg := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: in, tags.Time: tags.FormatTime(now.Add(-time.Duration(i+1) * time.Minute))}
		env.Sim.AddImage(ec2sim.ImageSpec{Name: fmt.Sprintf("amibackup-nightly-failed-%d", i), State: "failed", InstanceID: in, Tags: tg, SnapshotTags: tg})
	}
	env.Sim.ResetCalls()
	var metrics strings.Builder
	p := pruner(t, env, cfg(t, `{"last":1}`), nil)
	p.Metrics = emf.New(&metrics)
	sum, err := p.Run(context.Background(), req())
	if err == nil || !strings.Contains(sum.Blocked, "8 of 10 images") {
		t.Fatalf("guard: err %v blocked %q", err, sum.Blocked)
	}
	if n := env.Sim.Calls().Mutating(); n != 0 {
		t.Fatalf("blocked run made %d mutating calls", n)
	}
	// The alarms watch PruneBlocked under Policy=all.
	if !strings.Contains(metrics.String(), `"Policy":"all"`) || !strings.Contains(metrics.String(), `"PruneBlocked":1`) {
		t.Fatalf("metrics do not report the block under Policy=all: %s", metrics.String())
	}
}

// TestOnePolicyRunReportsUnderAll: a manual prune of one policy emits its
// metrics under that policy and under Policy=all, where the alarms look.
func TestOnePolicyRunReportsUnderAll(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	seedHistory(env.Sim, "prod", env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"}), 4)
	var metrics strings.Builder
	p := pruner(t, env, cfg(t, `{"last":2}`), nil)
	p.Metrics = emf.New(&metrics)
	r := req()
	r.Policy = "nightly"
	sum, err := p.Run(context.Background(), r)
	if err != nil || len(sum.Done) != 4 {
		t.Fatalf("run: %v, deleted %d", err, len(sum.Done))
	}
	lines := strings.Split(strings.TrimSpace(metrics.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"Policy":"all"`) || !strings.Contains(lines[1], `"Policy":"nightly"`) ||
		!strings.Contains(lines[0], `"ImagesPruned":4`) {
		t.Fatalf("metrics: %s", metrics.String())
	}
}

// TestFutureTimeRejected: prune treats its trigger time as "now"; a time
// ahead of the clock is refused before any EC2 call.
func TestFutureTimeRejected(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	seedHistory(env.Sim, "prod", env.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"}), 10)
	env.Sim.ResetCalls()
	p := pruner(t, env, cfg(t, `{"within":"30d"}`), nil)
	p.Now = func() time.Time { return now }
	for _, in := range []string{
		`{"time":"` + tags.FormatTime(now.AddDate(5, 0, 0)) + `"}`,
		`{"detail-type":"Prune Requested","source":"amibackup","time":"` + tags.FormatTime(now.Add(time.Hour)) + `","detail":{"force":true}}`,
	} {
		if _, err := p.Handle(context.Background(), []byte(in)); err == nil || !strings.Contains(err.Error(), "ahead of the clock") {
			t.Errorf("%s: err %v", in, err)
		}
	}
	if c := env.Sim.Calls(); c.Total != 0 || len(env.Sim.Images("", "")) != 20 {
		t.Fatalf("future time reached EC2: %v", c.ByAction)
	}
}

// TestSnapshotInUseByForeignImage: someone registered their own AMI from
// one of our snapshots. Deleting our image reports that snapshot with
// EC2's code, and the orphan sweep leaves it alone: it is not ours to break.
func TestSnapshotInUseByForeignImage(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{Start: now})
	instances := env.Sim.SeedFleet("", "", 1, map[string]string{"Backup": "nightly"})
	hist := seedHistory(env.Sim, "prod", instances, 3)
	oldest := hist[instances[0]][2]
	var shared string
	for _, im := range env.Sim.Images("", "") {
		if im.ID == oldest {
			shared = im.SnapshotIDs[0]
		}
	}
	theirs, _ := env.Sim.AddImage(ec2sim.ImageSpec{Name: "restored-by-hand", SnapshotIDs: []string{shared}})
	c := cfg(t, `{"last":2}`)
	c.Prune.OrphanGrace = config.Duration(time.Hour)
	sum, err := pruner(t, env, c, nil).Run(context.Background(), req())
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Done) != 1 || sum.Done[0].ImageID != oldest {
		t.Fatalf("deleted %+v, want %s", sum.Done, oldest)
	}
	if len(sum.SnapshotsNotDeleted) != 1 || sum.SnapshotsNotDeleted[0].ID != shared || sum.SnapshotsNotDeleted[0].ImageID != oldest ||
		sum.SnapshotsNotDeleted[0].Detail == "" || sum.SnapshotsNotDeleted[0].Detail == "success" {
		t.Fatalf("snapshots not deleted %+v, want %s with its code", sum.SnapshotsNotDeleted, shared)
	}
	if len(sum.OrphansDeleted) != 0 {
		t.Fatalf("sweep deleted %+v", sum.OrphansDeleted)
	}
	if !slices.Contains(imageIDs(env.Sim), theirs) {
		t.Fatal("the foreign image is gone")
	}
	found := false
	for _, s := range env.Sim.Snapshots("", "") {
		found = found || s.ID == shared
	}
	if !found {
		t.Fatal("the snapshot the foreign image uses was deleted")
	}
}
