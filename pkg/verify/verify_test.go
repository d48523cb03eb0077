package verify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/amibackup/amibackup/pkg/actionloop"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/runner"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
	"github.com/amibackup/amibackup/pkg/verify"
)

const cfgTmpl = `{"deployment":"prod","policies":[
 {"name":"nightly","selector":{"tagKey":"Backup"},
  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
  "verify":{"schedule":{"expression":"cron(0 5 ? * SUN *)"},"timeout":"20m","maxConcurrent":%d%s}},
 {"name":"plain","selector":{"tagKey":"Backup"},
  "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}]}`

var (
	slot    = time.Date(2026, 11, 29, 5, 0, 0, 0, time.UTC)
	network = verify.Network{Subnets: []string{"subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"}, SecurityGroup: "sg-0cccccccccccccccc"}
)

// frozen: simulated time moves only with Advance (the test is the Wait state).
const frozen = 1e-6

// recorder wraps the EC2 client and keeps what the verifier asked for.
type recorder struct {
	verify.EC2
	mu    sync.Mutex
	runs  []*ec2.RunInstancesInput
	terms []string
	// tagAttempts > 0 limits the SDK's attempts of CreateTags, so a fault
	// outlasts the SDK's retries and reaches the verifier.
	tagAttempts int
}

func (r *recorder) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, o ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	if r.tagAttempts > 0 {
		o = append(o, func(opts *ec2.Options) { opts.RetryMaxAttempts = r.tagAttempts })
	}
	return r.EC2.CreateTags(ctx, in, o...)
}

func (r *recorder) RunInstances(ctx context.Context, in *ec2.RunInstancesInput, o ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error) {
	r.mu.Lock()
	r.runs = append(r.runs, in)
	r.mu.Unlock()
	return r.EC2.RunInstances(ctx, in, o...)
}

func (r *recorder) TerminateInstances(ctx context.Context, in *ec2.TerminateInstancesInput, o ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error) {
	r.mu.Lock()
	r.terms = append(r.terms, in.InstanceIds...)
	r.mu.Unlock()
	return r.EC2.TerminateInstances(ctx, in, o...)
}

type world struct {
	env     *simtest.Env
	cfg     *config.Config
	rec     *recorder
	metrics bytes.Buffer
	log     bytes.Buffer
	// seen: first simulated time each verification instance was seen
	// alive and seen shutting down (instance-hours).
	born, ended map[string]time.Time
}

func newWorld(tb testing.TB, maxConcurrent int, extra string) *world {
	return newWorldScale(tb, maxConcurrent, extra, frozen)
}

// newWorldScale: a world whose simulated clock also runs at scale times
// real time (1: the buckets refill while the SDK backs off, as in EC2).
func newWorldScale(tb testing.TB, maxConcurrent int, extra string, scale float64) *world {
	tb.Helper()
	env := simtest.Start(tb, ec2sim.Options{Throttle: true, TimeScale: scale, Start: slot.Add(time.Minute)})
	c, err := config.Parse([]byte(fmt.Sprintf(cfgTmpl, maxConcurrent, extra)), "")
	if err != nil {
		tb.Fatal(err)
	}
	w := &world{env: env, cfg: c, born: map[string]time.Time{}, ended: map[string]time.Time{}}
	w.rec = &recorder{EC2: env.Client("", "")}
	return w
}

// verifier is a fresh process: new clients, nothing remembered.
func (w *world) verifier() *verify.Verifier {
	w.rec.EC2 = w.env.Client("", "")
	return &verify.Verifier{EC2: w.rec, Config: w.cfg, Network: network,
		Job: runner.Job{Log: slog.New(slog.NewJSONHandler(&w.log, nil)), Metrics: emf.New(&w.metrics), Now: w.env.Sim.Now}}
}

// seed adds n instances' images of policy nightly: per instance an older
// one (verified a week ago when olderVerified) and the newest, created
// before the slot. It returns the newest image per instance.
func (w *world) seed(n int, olderVerified bool) []string {
	var newest []string
	for i := range n {
		inst := fmt.Sprintf("i-%017x", 0x100+i)
		for k, age := range []time.Duration{8 * 24 * time.Hour, 2 * time.Hour} {
			created := slot.Add(-age)
			t := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: inst, tags.Time: tags.FormatTime(created)}
			if k == 0 && olderVerified {
				t[tags.Verified] = tags.FormatTime(slot.Add(-7 * 24 * time.Hour))
			}
			id, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", inst, created), InstanceID: inst, Tags: t, Created: created})
			if k == 1 {
				newest = append(newest, id)
			}
		}
	}
	return newest
}

func (w *world) call(tb testing.TB, req map[string]any) (json.RawMessage, error) {
	tb.Helper()
	raw, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := w.verifier().Handle(context.Background(), raw)
	if err != nil && out == nil {
		return nil, err
	}
	// finish answers its summary with its error.
	b, merr := json.Marshal(out)
	if merr != nil {
		tb.Fatal(merr)
	}
	if err != nil && string(b) == "null" {
		return nil, err
	}
	return b, err
}

type result struct {
	State       json.RawMessage `json:"state"`
	Done        bool            `json:"done"`
	WaitSeconds int             `json:"waitSeconds"`
}

type outcome struct {
	sum      *verify.Summary
	err      error
	maxState int
	steps    int
}

// observe notes when verification instances appear and end (simulated
// time), for instance-hours.
func (w *world) observe() {
	now := w.env.Sim.Now()
	for _, in := range w.env.Sim.Instances("", "") {
		if in.Tags[tags.VerifyOf] == "" {
			continue
		}
		if _, ok := w.born[in.ID]; !ok {
			w.born[in.ID] = now
		}
		if _, ok := w.ended[in.ID]; !ok && (in.State == "shutting-down" || in.State == "terminated") {
			w.ended[in.ID] = now
		}
	}
}

func (w *world) instanceHours() float64 {
	var h float64
	for id, b := range w.born {
		e, ok := w.ended[id]
		if !ok {
			e = w.env.Sim.Now()
		}
		h += e.Sub(b).Hours()
	}
	return h
}

// execute plays the state machine: start, step/wait until done, cleanup
// until done, finish. stopAfter > 0 abandons the execution after that many
// steps; with catch the Catch then runs cleanup and finish, without it
// the execution is simply gone (a crash: the state is dropped).
func (w *world) execute(tb testing.TB, input string, stopAfter int, catch bool) outcome {
	tb.Helper()
	var o outcome
	b, err := w.call(tb, map[string]any{"action": "start", "input": json.RawMessage(input)})
	if err != nil {
		tb.Fatalf("start: %v", err)
	}
	var r result
	json.Unmarshal(b, &r)
	o.maxState = len(r.State)
	for !r.Done {
		w.env.Sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
		if b, err = w.call(tb, map[string]any{"action": "step", "state": r.State}); err != nil {
			tb.Fatalf("step %d: %v", o.steps, err)
		}
		w.observe()
		r = result{}
		json.Unmarshal(b, &r)
		o.maxState = max(o.maxState, len(r.State))
		if o.steps++; o.steps == stopAfter {
			if !catch {
				return o
			}
			break
		}
		if o.steps > 5000 {
			tb.Fatal("not done after 5000 steps")
		}
	}
	for i := 0; ; i++ {
		if b, err = w.call(tb, map[string]any{"action": "cleanup", "state": r.State}); err != nil {
			tb.Fatalf("cleanup: %v", err)
		}
		w.observe()
		r = result{}
		json.Unmarshal(b, &r)
		if r.Done {
			break
		}
		w.env.Sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
		if i > 100 {
			tb.Fatal("cleanup not done after 100 rounds")
		}
	}
	b, o.err = w.call(tb, map[string]any{"action": "finish", "state": r.State})
	if b != nil {
		o.sum = &verify.Summary{}
		json.Unmarshal(b, o.sum)
	}
	return o
}

func schedInput(at time.Time) string {
	return `{"policy":"nightly","time":"` + tags.FormatTime(at) + `"}`
}

// alive are the verification-tagged instances not shutting down or terminated.
func (w *world) alive() []ec2sim.Instance {
	var out []ec2sim.Instance
	for _, in := range w.env.Sim.Instances("", "") {
		if in.State != "shutting-down" && in.State != "terminated" {
			out = append(out, in)
		}
	}
	return out
}

func (w *world) aliveOurs() []string {
	var out []string
	for _, in := range w.alive() {
		if in.Tags[tags.ManagedBy] == "prod" && in.Tags[tags.VerifyOf] != "" {
			out = append(out, in.ID)
		}
	}
	return out
}

func (w *world) imageTags(id string) map[string]string {
	for _, im := range w.env.Sim.Images("", "") {
		if im.ID == id {
			return im.Tags
		}
	}
	return nil
}

// metric returns the last value of a metric in the EMF output.
func (w *world) metric(tb testing.TB, name string) (float64, bool) {
	tb.Helper()
	var v float64
	found := false
	for _, line := range bytes.Split(w.metrics.Bytes(), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(line, &m) != nil {
			continue
		}
		if x, ok := m[name].(float64); ok {
			v, found = x, true
		}
	}
	return v, found
}

// TestVerify: the newest image of each instance boots; the unbootable one
// is tagged failed with the reason, the others verified; every instance
// launched is terminated; the launches are what the stack's IAM allows;
// finish fails naming the failed image; the metrics say so.
func TestVerify(t *testing.T) {
	w := newWorld(t, 5, "")
	newest := w.seed(4, true)
	// An arm64 backup boots on the arm64 type.
	armInst := "i-00000000000000aaa"
	arm, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{InstanceID: armInst, Architecture: "arm64", Created: slot.Add(-time.Hour),
		Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: armInst,
			// An earlier failure, to be cleared.
			tags.Verify: tags.VerifyFailed, tags.VerifyError: "old reason"}})
	w.env.Sim.UnbootableImage(newest[2])
	o := w.execute(t, schedInput(slot), 0, false)
	if o.err == nil || !strings.Contains(o.err.Error(), newest[2]) {
		t.Fatalf("finish error %v, want one naming %s", o.err, newest[2])
	}
	for i, id := range append(slices.Clone(newest), arm) {
		tg := w.imageTags(id)
		if i == 2 {
			if tg[tags.Verify] != tags.VerifyFailed || !strings.Contains(tg[tags.VerifyError], "status checks not ok within 20m0s") || tg[tags.Verified] != "" {
				t.Errorf("unbootable %s: tags %v", id, tg)
			}
			if len(tg[tags.VerifyError]) > 256 {
				t.Errorf("reason longer than a tag value: %d", len(tg[tags.VerifyError]))
			}
			continue
		}
		at, err := tags.ParseTime(tg[tags.Verified])
		if err != nil || at.Before(slot) || tg[tags.Verify] != "" || tg[tags.VerifyError] != "" {
			t.Errorf("%s: tags %v", id, tg)
		}
	}
	// Older images are not touched.
	for _, im := range w.env.Sim.Images("", "") {
		if !slices.Contains(newest, im.ID) && im.ID != arm && im.Tags[tags.Verified] != tags.FormatTime(slot.Add(-7*24*time.Hour)) {
			t.Errorf("older image %s: tags %v", im.ID, im.Tags)
		}
	}
	w.env.Sim.Advance(time.Minute)
	if left := w.aliveOurs(); len(left) > 0 {
		t.Errorf("verification instances left: %v", left)
	}
	for _, vol := range w.env.Sim.Volumes("", "") {
		if vol.Tags[tags.VerifyOf] != "" {
			t.Errorf("volume %s of a verification instance left (%v)", vol.ID, vol.Tags)
		}
	}
	if len(w.rec.runs) != 5 {
		t.Errorf("%d RunInstances calls, want 5 (one per image)", len(w.rec.runs))
	}
	for _, in := range w.rec.runs {
		id := aws.ToString(in.ImageId)
		wantType := "t3.small"
		if id == arm {
			wantType = "t4g.small"
		}
		ni := in.NetworkInterfaces
		tg := map[types.ResourceType]map[string]string{}
		for _, ts := range in.TagSpecifications {
			tg[ts.ResourceType] = map[string]string{}
			for _, x := range ts.Tags {
				tg[ts.ResourceType][aws.ToString(x.Key)] = aws.ToString(x.Value)
			}
		}
		want := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.VerifyOf: id}
		switch {
		case string(in.InstanceType) != wantType:
			t.Errorf("%s: type %s", id, in.InstanceType)
		case aws.ToInt32(in.MinCount) != 1 || aws.ToInt32(in.MaxCount) != 1 || in.KeyName != nil:
			t.Errorf("%s: counts %d/%d key %v", id, aws.ToInt32(in.MinCount), aws.ToInt32(in.MaxCount), in.KeyName)
		case len(ni) != 1 || aws.ToBool(ni[0].AssociatePublicIpAddress) || aws.ToString(ni[0].SubnetId) != network.Subnets[0] ||
			!slices.Equal(ni[0].Groups, []string{network.SecurityGroup}):
			t.Errorf("%s: network %+v", id, ni)
		case in.InstanceInitiatedShutdownBehavior != types.ShutdownBehaviorTerminate:
			t.Errorf("%s: shutdown %s", id, in.InstanceInitiatedShutdownBehavior)
		case len(tg) != 2 || !mapsEqual(tg[types.ResourceTypeInstance], want) || !mapsEqual(tg[types.ResourceTypeVolume], want):
			t.Errorf("%s: tag specifications %v", id, tg)
		case len(aws.ToString(in.ClientToken)) == 0 || len(aws.ToString(in.ClientToken)) > 64:
			t.Errorf("%s: client token %q", id, aws.ToString(in.ClientToken))
		case len(in.BlockDeviceMappings) != 1 || aws.ToString(in.BlockDeviceMappings[0].DeviceName) != "/dev/xvda" ||
			!aws.ToBool(in.BlockDeviceMappings[0].Ebs.DeleteOnTermination) || in.BlockDeviceMappings[0].Ebs.SnapshotId != nil:
			t.Errorf("%s: block devices %+v: want the image's device, deleted on termination", id, in.BlockDeviceMappings)
		}
	}
	// What the emulator launched matches: no public IP, isolated subnet.
	for _, in := range w.env.Sim.Instances("", "") {
		if in.Tags[tags.VerifyOf] != "" && (in.PublicIP || in.SubnetID != network.Subnets[0] || in.ShutdownBehavior != "terminate") {
			t.Errorf("launched %s: %+v", in.ID, in)
		}
	}
	for name, want := range map[string]float64{metrics.ImagesVerified: 4, metrics.VerifyFailures: 1, metrics.VerifyInstancesLeft: 0} {
		if got, ok := w.metric(t, name); !ok || got != want {
			t.Errorf("metric %s = %v (%v), want %v", name, got, ok, want)
		}
	}
	// The unbootable instance's newest verified image is its older one,
	// created 8 days before the slot: that is the policy's age.
	if got, ok := w.metric(t, metrics.VerifiedAgeHours); !ok || got < 8*24 || got > 8*24+2 {
		t.Errorf("VerifiedAgeHours = %v (%v), want about 192", got, ok)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestVerifyAgain: a second run of the next slot boots nothing new (the
// newest images are verified already) but retries the failed one.
func TestVerifyAgain(t *testing.T) {
	w := newWorld(t, 5, "")
	newest := w.seed(3, false)
	w.env.Sim.UnbootableImage(newest[0])
	if o := w.execute(t, schedInput(slot), 0, false); o.err == nil {
		t.Fatal("first run succeeded with an unbootable image")
	}
	w.env.Sim.ClearFaults() // e.g. it was the instance type's problem
	runs := len(w.rec.runs)
	w.env.Sim.Advance(time.Hour)
	o := w.execute(t, schedInput(slot.Add(time.Hour)), 0, false)
	if o.err != nil {
		t.Fatal(o.err)
	}
	if got := len(w.rec.runs) - runs; got != 1 || aws.ToString(w.rec.runs[runs].ImageId) != newest[0] {
		t.Errorf("second run launched %d, want only %s", got, newest[0])
	}
	if o.sum.Images.AlreadyVerified != 2 || o.sum.Images.Verified != 1 {
		t.Errorf("summary %+v", o.sum)
	}
	if tg := w.imageTags(newest[0]); tg[tags.Verified] == "" || tg[tags.Verify] != "" || tg[tags.VerifyError] != "" {
		t.Errorf("retried image tags %v", tg)
	}
}

// launchRaw launches an instance directly (not through the verifier).
func (w *world) launchRaw(t *testing.T, image string, tg map[string]string) string {
	t.Helper()
	var ts []types.Tag
	for k, v := range tg {
		ts = append(ts, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	in := &ec2.RunInstancesInput{ImageId: aws.String(image), InstanceType: types.InstanceTypeT3Small, MinCount: aws.Int32(1), MaxCount: aws.Int32(1)}
	if len(ts) > 0 {
		in.TagSpecifications = []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: ts}}
	}
	w.env.Sim.Advance(3 * time.Second) // the RunInstances bucket refills 2 a second
	out, err := w.env.Client("", "").RunInstances(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

// TestVerifyForeign: instances with look-alike tags (another deployment,
// a deployment whose name starts like ours, our managed-by without
// verify-of, verify-of without managed-by, no tags) are never terminated,
// however old; a real leftover of ours is. Images that are not the
// policy's (another deployment's, another policy's, pending, another
// account's) are never launched.
func TestVerifyForeign(t *testing.T) {
	w := newWorld(t, 5, "")
	newest := w.seed(2, false)
	foreignImage, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{InstanceID: "i-0000000000000f001", Created: slot.Add(-time.Hour),
		Tags: map[string]string{tags.ManagedBy: "prod-2", tags.Policy: "nightly", tags.InstanceID: "i-0000000000000f001"}})
	otherPolicy, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{InstanceID: "i-0000000000000f002", Created: slot.Add(-time.Hour),
		Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "plain", tags.InstanceID: "i-0000000000000f002"}})
	pending, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{InstanceID: "i-0000000000000f003", Created: slot.Add(-time.Hour), State: "pending",
		Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: "i-0000000000000f003"}})
	otherAccount, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{Account: "210987654321", InstanceID: "i-0000000000000f004", Created: slot.Add(-time.Hour),
		Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: "i-0000000000000f004"}})
	foreign := map[string]string{}
	for name, tg := range map[string]map[string]string{
		"other deployment":  {tags.ManagedBy: "staging", tags.Policy: "nightly", tags.VerifyOf: newest[0]},
		"prefix deployment": {tags.ManagedBy: "prod-2", tags.Policy: "nightly", tags.VerifyOf: newest[0]},
		"no verify-of":      {tags.ManagedBy: "prod", tags.Policy: "nightly"},
		"no managed-by":     {tags.Policy: "nightly", tags.VerifyOf: newest[0]},
		"empty verify-of":   {tags.ManagedBy: "prod", tags.VerifyOf: ""},
		"untagged":          nil,
	} {
		foreign[w.launchRaw(t, foreignImage, tg)] = name
	}
	leftover := w.launchRaw(t, newest[1], map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.VerifyOf: newest[1]})
	// Everything is older than any timeout and the margin.
	w.env.Sim.Advance(3 * time.Hour)
	w.rec.runs = nil
	o := w.execute(t, schedInput(slot.Add(3*time.Hour)), 0, false)
	if o.err != nil {
		t.Fatal(o.err)
	}
	for _, in := range w.rec.runs {
		if id := aws.ToString(in.ImageId); !slices.Contains(newest, id) {
			t.Errorf("launched from %s, not one of the policy's images", id)
		}
	}
	if len(w.rec.runs) != 2 {
		t.Errorf("%d launches, want 2", len(w.rec.runs))
	}
	for _, id := range w.rec.terms {
		if name, ok := foreign[id]; ok {
			t.Errorf("TerminateInstances called on foreign %s (%s)", id, name)
		}
	}
	for id, name := range foreign {
		in, _ := w.env.Sim.Instance("", "", id)
		if in.State != "running" {
			t.Errorf("foreign %s (%s) is %s", id, name, in.State)
		}
	}
	if in, _ := w.env.Sim.Instance("", "", leftover); in.State == "running" || o.sum.Swept != 1 {
		t.Errorf("leftover %s is %s, swept %d", leftover, in.State, o.sum.Swept)
	}
	for _, id := range []string{foreignImage, otherPolicy, pending, otherAccount} {
		if tg := w.imageTags(id); tg[tags.Verified] != "" || tg[tags.Verify] != "" {
			t.Errorf("foreign image %s tagged %v", id, tg)
		}
	}
}

// TestVerifyKilled: an execution that dies in the middle (its state lost,
// no Catch) leaves instances running; the next run sweeps them once they
// are older than the timeout and the margin, and verifies the images the
// dead one never tagged. With the Catch, cleanup ends them at once.
func TestVerifyKilled(t *testing.T) {
	t.Run("no catch, next run sweeps", func(t *testing.T) {
		w := newWorld(t, 3, "")
		newest := w.seed(6, false)
		w.execute(t, schedInput(slot), 2, false)
		if n := len(w.aliveOurs()); n != 3 {
			t.Fatalf("%d instances alive after the crash, want 3 (maxConcurrent)", n)
		}
		w.env.Sim.Advance(20*time.Minute + verify.SweepMargin + time.Minute)
		o := w.execute(t, schedInput(w.env.Sim.Now()), 0, false)
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.sum.Swept != 3 {
			t.Errorf("swept %d, want 3", o.sum.Swept)
		}
		w.env.Sim.Advance(time.Minute)
		if left := w.aliveOurs(); len(left) > 0 {
			t.Errorf("left: %v", left)
		}
		for _, id := range newest {
			if w.imageTags(id)[tags.Verified] == "" {
				t.Errorf("%s not verified by the next run", id)
			}
		}
	})
	t.Run("no catch, young leftovers survive a run right after (they may be a live run's)", func(t *testing.T) {
		w := newWorld(t, 2, "")
		w.seed(2, false)
		w.execute(t, schedInput(slot), 1, false)
		crashed := w.aliveOurs()
		if len(crashed) != 2 {
			t.Fatalf("alive %v", crashed)
		}
		// A manual run right away: the leftovers may belong to a live run.
		w.env.Sim.Advance(time.Minute)
		ev := string(trigger.MarshalVerifyEvent(w.env.Sim.Now(), trigger.VerifyDetail{Policy: "nightly", DryRun: true}))
		w.execute(t, ev, 0, false)
		if n := len(w.aliveOurs()); n != 2 {
			t.Errorf("dry run right after: %d alive, want the 2 young ones untouched", n)
		}
	})
	t.Run("finish without cleanup reports what is left", func(t *testing.T) {
		w := newWorld(t, 2, "")
		w.seed(2, false)
		b, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(slot))})
		if err != nil {
			t.Fatal(err)
		}
		var r result
		json.Unmarshal(b, &r)
		if b, err = w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
			t.Fatal(err)
		}
		json.Unmarshal(b, &r)
		alive := w.aliveOurs()
		_, err = w.call(t, map[string]any{"action": "finish", "state": r.State})
		if len(alive) != 2 || err == nil || !strings.Contains(err.Error(), "2 verification instances still running") || !strings.Contains(err.Error(), alive[0]) {
			t.Fatalf("alive %v, finish %v", alive, err)
		}
		if got, _ := w.metric(t, metrics.VerifyInstancesLeft); got != 2 {
			t.Errorf("VerifyInstancesLeft %v", got)
		}
	})
	t.Run("catch runs cleanup", func(t *testing.T) {
		w := newWorld(t, 3, "")
		w.seed(6, false)
		o := w.execute(t, schedInput(slot), 2, true)
		if o.err == nil || !strings.Contains(o.err.Error(), "not reached") {
			t.Errorf("finish after an abandoned run: %v", o.err)
		}
		w.env.Sim.Advance(time.Minute)
		if left := w.aliveOurs(); len(left) > 0 {
			t.Errorf("left after cleanup: %v", left)
		}
		if got, ok := w.metric(t, metrics.VerifyInstancesLeft); !ok || got != 0 {
			t.Errorf("VerifyInstancesLeft %v %v", got, ok)
		}
	})
}

// TestVerifyLostLaunch: RunInstances launches but its answer is lost (a
// 5xx after the change); the retry with the same client token gets the
// same instance: one instance per image. A step whose answer is lost
// after it launched (the state machine retries it with the old state)
// does not launch twice either. Throttling and 5xx on the other calls are
// retried; the run still verifies everything and leaves nothing.
func TestVerifyFaults(t *testing.T) {
	// Real time runs too: the retries of throttled calls find their
	// bucket refilled, as in EC2 (frozen, every SDK retry would be
	// throttled again).
	w := newWorldScale(t, 5, "", 1)
	newest := w.seed(8, false)
	sim := w.env.Sim
	sim.Inject(ec2sim.Fault{Action: "RunInstances", Nth: 1, Code: "InternalError", After: true})
	sim.Inject(ec2sim.Fault{Action: "RunInstances", Nth: 3, Code: "RequestLimitExceeded"})
	sim.Inject(ec2sim.Fault{Action: "DescribeInstanceStatus", Nth: 2, Code: "Unavailable"})
	sim.Inject(ec2sim.Fault{Action: "DescribeInstances", Nth: 3, Code: "InternalError"})
	sim.Inject(ec2sim.Fault{Action: "TerminateInstances", Times: 2, Code: "Unavailable"})
	sim.Inject(ec2sim.Fault{Action: "DescribeImages", Nth: 1, Code: "RequestLimitExceeded"})

	// A step whose answer is lost: run it, drop its result, run it again
	// with the same state.
	b, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(slot))})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	json.Unmarshal(b, &r)
	if _, err := w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
		t.Fatal(err)
	}
	sim.Advance(5 * time.Second) // the state machine's retry interval
	if _, err := w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
		t.Fatal(err)
	}
	launched := map[string]int{}
	for _, in := range sim.Instances("", "") {
		if in.Tags[tags.VerifyOf] != "" {
			launched[in.Tags[tags.VerifyOf]]++
		}
	}
	for img, n := range launched {
		if n != 1 {
			t.Errorf("%s: %d instances after a repeated step", img, n)
		}
	}
	// Then the whole run (a new execution: new tokens; the first one's
	// instances are ended by its cleanup, found by their client tokens).
	// CreateTags fails more often than the SDK retries it: the verifier
	// records the outcome in a later step.
	if _, err := w.call(t, map[string]any{"action": "cleanup", "state": r.State}); err != nil {
		t.Fatal(err)
	}
	sim.Inject(ec2sim.Fault{Action: "CreateTags", Times: 3, Code: "InternalError"})
	w.rec.tagAttempts = 1
	o := w.execute(t, schedInput(slot), 0, false)
	if o.err != nil {
		t.Fatal(o.err)
	}
	for _, id := range newest {
		if w.imageTags(id)[tags.Verified] == "" {
			t.Errorf("%s not verified", id)
		}
	}
	sim.Advance(time.Minute)
	if left := w.aliveOurs(); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
	c := sim.Calls()
	for _, a := range []string{"RunInstances", "CreateTags", "TerminateInstances", "DescribeInstanceStatus", "DescribeInstances", "DescribeImages"} {
		if c.Faults[a] == 0 {
			t.Errorf("%s: fault never fired: %+v", a, c.Faults)
		}
	}
	per := map[string]int{}
	for _, in := range sim.Instances("", "") {
		if in.Tags[tags.VerifyOf] != "" {
			per[in.Tags[tags.VerifyOf]]++
		}
	}
	for _, id := range newest {
		if per[id] > 2 { // one of the abandoned first execution, one of the run
			t.Errorf("%s: %d instances", id, per[id])
		}
	}
}

// TestVerifyLaunchErrors: launch errors become failures with the reason
// (an architecture without a type, EC2 refusing the image), an instance
// that shuts down before its checks are ok fails, a type missing in the
// first subnet's zone is launched in the next one, and capacity missing
// everywhere leaves the image untagged ("not tested").
func TestVerifyLaunchErrors(t *testing.T) {
	w := newWorld(t, 5, "")
	sim := w.env.Sim
	add := func(inst, arch string) string {
		id, _ := sim.AddImage(ec2sim.ImageSpec{InstanceID: inst, Architecture: arch, Created: slot.Add(-time.Hour),
			Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: inst}})
		return id
	}
	i386 := add("i-00000000000000001", "i386")
	refused := add("i-00000000000000002", "")
	shutdown := add("i-00000000000000003", "")
	nextZone := add("i-00000000000000004", "")
	noCapacity := add("i-00000000000000005", "")
	sim.Inject(ec2sim.Fault{Action: "RunInstances", ImageID: refused, Code: "InvalidBlockDeviceMapping", Message: "snapshot key is not usable"})
	sim.Inject(ec2sim.Fault{Action: "RunInstances", ImageID: nextZone, Nth: 1, Code: "Unsupported", Message: "t3.small is not supported in us-east-1a"})
	sim.Inject(ec2sim.Fault{Action: "RunInstances", ImageID: noCapacity, Code: "InsufficientInstanceCapacity", Message: "no capacity"})

	b, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(slot))})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	json.Unmarshal(b, &r)
	sim.Advance(time.Second)
	b, err = w.call(t, map[string]any{"action": "step", "state": r.State})
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &r)
	// The guest of one shuts itself down while booting.
	sim.Advance(40 * time.Second)
	for _, in := range sim.Instances("", "") {
		if in.Tags[tags.VerifyOf] == shutdown {
			if err := sim.ShutdownFromOS("", "", in.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	for !r.Done {
		sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
		if b, err = w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
			t.Fatal(err)
		}
		r = result{}
		json.Unmarshal(b, &r)
	}
	b, _ = w.call(t, map[string]any{"action": "cleanup", "state": r.State})
	json.Unmarshal(b, &r)
	_, err = w.call(t, map[string]any{"action": "finish", "state": r.State})
	if err == nil {
		t.Fatal("finish succeeded")
	}
	for id, want := range map[string]string{i386: `no instance type for architecture "i386"`, refused: "InvalidBlockDeviceMapping",
		shutdown: "before both status checks were ok"} {
		if tg := w.imageTags(id); tg[tags.Verify] != tags.VerifyFailed || !strings.Contains(tg[tags.VerifyError], want) {
			t.Errorf("%s: tags %v, want failed with %q", id, tg, want)
		}
	}
	if tg := w.imageTags(nextZone); tg[tags.Verified] == "" {
		t.Errorf("next zone: %v", tg)
	}
	for _, in := range sim.Instances("", "") {
		if in.Tags[tags.VerifyOf] == nextZone && in.SubnetID != network.Subnets[1] {
			t.Errorf("next zone launched in %s", in.SubnetID)
		}
	}
	if tg := w.imageTags(noCapacity); tg[tags.Verify] != "" || tg[tags.Verified] != "" {
		t.Errorf("no capacity: tagged %v", tg)
	}
	if !strings.Contains(err.Error(), noCapacity) || !strings.Contains(err.Error(), "not tested") {
		t.Errorf("finish error %v", err)
	}
	sim.Advance(time.Minute)
	if left := w.aliveOurs(); len(left) > 0 {
		t.Errorf("left: %v", left)
	}
}

// TestVerifySample: a count takes the instances verified longest ago
// first (never verified first); the newest image of each is booted.
func TestVerifySample(t *testing.T) {
	w := newWorld(t, 5, `,"sample":2`)
	sim := w.env.Sim
	img := func(inst string, age time.Duration, verified time.Duration) string {
		tg := map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: inst}
		if verified > 0 {
			tg[tags.Verified] = tags.FormatTime(slot.Add(-verified))
		}
		id, _ := sim.AddImage(ec2sim.ImageSpec{InstanceID: inst, Created: slot.Add(-age), Tags: tg})
		return id
	}
	// a: verified 2 days ago, new image since; b: never verified; c:
	// verified 10 days ago, new image since; d: verified 1 day ago; e: its
	// newest is verified already.
	img("i-0000000000000000a", 3*24*time.Hour, 2*24*time.Hour)
	a := img("i-0000000000000000a", time.Hour, 0)
	b := img("i-0000000000000000b", time.Hour, 0)
	img("i-0000000000000000c", 11*24*time.Hour, 10*24*time.Hour)
	c := img("i-0000000000000000c", time.Hour, 0)
	img("i-0000000000000000d", 3*24*time.Hour, 24*time.Hour)
	img("i-0000000000000000d", time.Hour, 0)
	img("i-0000000000000000e", time.Hour, time.Hour)
	o := w.execute(t, schedInput(slot), 0, false)
	if o.err != nil {
		t.Fatal(o.err)
	}
	var got []string
	for _, in := range w.rec.runs {
		got = append(got, aws.ToString(in.ImageId))
	}
	slices.Sort(got)
	want := []string{b, c}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("launched %v, want b and c %v (a: %s)", got, want, a)
	}
	if c := o.sum.Images; c.Candidates != 5 || c.AlreadyVerified != 1 || c.NotSampled != 2 || c.Planned != 2 || c.Verified != 2 {
		t.Errorf("summary %+v", o.sum)
	}
}

// TestVerifyManual: a manual request's imageIds are verified as named
// (also an image verified already); one that is not the policy's is
// skipped and reported, never launched.
func TestVerifyManual(t *testing.T) {
	w := newWorld(t, 5, "")
	newest := w.seed(2, true)
	var older string
	for _, im := range w.env.Sim.Images("", "") {
		if im.Tags[tags.Verified] != "" {
			older = im.ID
			break
		}
	}
	foreign, _ := w.env.Sim.AddImage(ec2sim.ImageSpec{Created: slot.Add(-time.Hour), Tags: map[string]string{tags.ManagedBy: "other", tags.Policy: "nightly"}})
	ev := string(trigger.MarshalVerifyEvent(slot, trigger.VerifyDetail{Policy: "nightly", ImageIDs: []string{older, foreign}}))
	o := w.execute(t, ev, 0, false)
	if o.err != nil {
		t.Fatal(o.err)
	}
	if len(w.rec.runs) != 1 || aws.ToString(w.rec.runs[0].ImageId) != older {
		t.Errorf("launches %d", len(w.rec.runs))
	}
	if at := w.imageTags(older)[tags.Verified]; at == tags.FormatTime(slot.Add(-7*24*time.Hour)) {
		t.Errorf("re-verified image kept its old time %s", at)
	}
	if w.imageTags(newest[0])[tags.Verified] != "" {
		t.Error("an image not named was verified")
	}
	if !slices.ContainsFunc(o.sum.Warnings, func(s string) bool { return strings.Contains(s, foreign) }) {
		t.Errorf("foreign image not reported: %v", o.sum.Warnings)
	}
	if len(o.sum.Done) != 1 || o.sum.Done[0].ID != older || o.sum.Counts.Done != 1 || o.sum.Images.Planned != 1 || o.sum.Trigger != "manual" {
		t.Errorf("summary %+v", o.sum)
	}
}

// TestVerifyDryRun: the plan comes back, nothing is launched, terminated
// or tagged (the RunInstances permission check is DryRun=true).
func TestVerifyDryRun(t *testing.T) {
	w := newWorld(t, 5, "")
	newest := w.seed(3, false)
	leftover := w.launchRaw(t, newest[0], map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.VerifyOf: newest[0]})
	w.env.Sim.Advance(3 * time.Hour)
	w.env.Sim.ResetCalls()
	ev := string(trigger.MarshalVerifyEvent(w.env.Sim.Now(), trigger.VerifyDetail{Policy: "nightly", DryRun: true}))
	o := w.execute(t, ev, 0, false)
	if o.err != nil {
		t.Fatal(o.err)
	}
	c := w.env.Sim.Calls()
	for _, a := range []string{"RunInstances", "TerminateInstances", "CreateTags", "DeleteTags"} {
		if c.ByAction[a] != 0 {
			t.Errorf("dry run called %s %d times", a, c.ByAction[a])
		}
	}
	if c.DryRun["RunInstances"] == 0 {
		t.Error("no RunInstances permission check")
	}
	for _, want := range append(slices.Clone(newest), "t3.small", network.Subnets[0], network.SecurityGroup, "3 images to boot") {
		if !strings.Contains(o.sum.Plan, want) {
			t.Errorf("plan %q lacks %q", o.sum.Plan, want)
		}
	}
	if in, _ := w.env.Sim.Instance("", "", leftover); in.State != "running" {
		t.Errorf("dry run terminated the leftover: %s", in.State)
	}
	if !slices.ContainsFunc(o.sum.Warnings, func(s string) bool { return strings.Contains(s, leftover) }) {
		t.Errorf("leftover not reported: %v", o.sum.Warnings)
	}
	if _, ok := w.metric(t, metrics.ImagesVerified); ok {
		t.Error("a dry run emitted metrics")
	}
}

// TestVerifyBadInput: bad input is an error naming the field, with zero
// EC2 calls.
func TestVerifyBadInput(t *testing.T) {
	w := newWorld(t, 5, "")
	w.seed(1, false)
	good := json.RawMessage(schedInput(slot))
	okState := func() json.RawMessage {
		b, err := w.call(t, map[string]any{"action": "start", "input": good})
		if err != nil {
			t.Fatal(err)
		}
		var r result
		json.Unmarshal(b, &r)
		return r.State
	}()
	mutate := func(f func(m map[string]any)) json.RawMessage {
		var m map[string]any
		json.Unmarshal(okState, &m)
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	future := slot.Add(time.Hour)
	tests := []struct {
		name, raw, want string
	}{
		{"not json", `{"action":`, "input"},
		{"unknown action", `{"action":"run","input":{}}`, `input.action: "run" is not allowed`},
		{"unknown field", `{"action":"start","input":` + string(good) + `,"force":true}`, `"force" is not allowed`},
		{"duplicate key", `{"action":"start","action":"finish","input":` + string(good) + `}`, "more than once"},
		{"null state", `{"action":"step","state":null}`, "input.state: is null"},
		{"step without state", `{"action":"step"}`, "takes state"},
		{"start with state", `{"action":"start","input":` + string(good) + `,"state":` + string(okState) + `}`, "takes input"},
		{"policy without verify", `{"action":"start","input":{"policy":"plain","time":"2026-11-29T05:00:00Z"}}`, `policy "plain" has no verify section`},
		{"unknown policy", `{"action":"start","input":{"policy":"weekly","time":"2026-11-29T05:00:00Z"}}`, "input.policy"},
		{"time before EC2", `{"action":"start","input":{"policy":"nightly","time":"2001-01-01T00:00:00Z"}}`, "before 2006-08-25"},
		{"time in the future", `{"action":"start","input":{"policy":"nightly","time":"` + tags.FormatTime(future) + `"}}`, "ahead of the clock"},
		{"input null field", `{"action":"start","input":{"policy":"nightly","time":null}}`, "input.time: is null"},
		{"input unknown field", `{"action":"start","input":{"policy":"nightly","time":"2026-11-29T05:00:00Z","imageIds":["ami-01234567"]}}`, `"imageIds" is not allowed`},
		{"manual bad image", `{"action":"start","input":` + string(trigger.MarshalVerifyEvent(slot, trigger.VerifyDetail{Policy: "nightly", ImageIDs: []string{"i-01234567"}})) + `}`, "event.detail.imageIds[0]"},
		{"backup event", `{"action":"start","input":` + string(trigger.MarshalBackupEvent(slot, trigger.BackupDetail{Policy: "nightly"})) + `}`, "is not a verify trigger"},
		{"state version", `{"action":"step","state":` + string(mutate(func(m map[string]any) { m["v"] = 9 })) + `}`, "input.state.v"},
		{"state run", `{"action":"cleanup","state":` + string(mutate(func(m map[string]any) { m["run"] = "x/y/z" })) + `}`, "input.state.run"},
		{"state plan", `{"action":"finish","state":` + string(mutate(func(m map[string]any) { m["plan"] = "bm90IGd6aXA=" })) + `}`, "input.state.plan"},
		{"state progress", `{"action":"step","state":` + string(mutate(func(m map[string]any) { m["progress"] = "..." })) + `}`, "input.state.progress"},
		{"state unknown field", `{"action":"step","state":` + string(mutate(func(m map[string]any) { m["extra"] = 1 })) + `}`, `"extra" is not allowed`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.env.Sim.ResetCalls()
			_, err := w.verifier().Handle(context.Background(), []byte(tt.raw))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			if c := w.env.Sim.Calls(); c.Total != 0 {
				t.Errorf("%d EC2 calls: %v", c.Total, c.ByAction)
			}
		})
	}
	// Without the network, an isolated policy is refused before any call.
	w.env.Sim.ResetCalls()
	v := w.verifier()
	v.Network = verify.Network{}
	if _, err := v.Handle(context.Background(), []byte(`{"action":"start","input":`+string(good)+`}`)); err == nil || !strings.Contains(err.Error(), verify.EnvSubnets) {
		t.Errorf("no network: %v", err)
	}
	if c := w.env.Sim.Calls(); c.Total != 0 {
		t.Errorf("%d EC2 calls without a network", c.Total)
	}
}

// TestNetworkFromEnv: the stack's variables, strictly.
func TestNetworkFromEnv(t *testing.T) {
	tests := []struct {
		name, subnets, sg, want string
		n                       int
	}{
		{"both", "subnet-0aaaaaaaaaaaaaaaa, subnet-0bbbbbbbbbbbbbbbb", "sg-0cccccccccccccccc", "", 2},
		{"neither", "", "", "", 0},
		{"bad subnet", "subnet-x", "sg-0cccccccccccccccc", verify.EnvSubnets + ": item 0", 0},
		{"bad group", "subnet-0aaaaaaaaaaaaaaaa", "default", verify.EnvSecurityGroup, 0},
		{"subnets only", "subnet-0aaaaaaaaaaaaaaaa", "", "go together", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{verify.EnvSubnets: tt.subnets, verify.EnvSecurityGroup: tt.sg}
			n, err := verify.NetworkFromEnv(func(k string) string { return env[k] })
			if tt.want == "" {
				if err != nil || len(n.Subnets) != tt.n {
					t.Fatalf("%+v %v", n, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestVerifyStateSize: the state of 1,000 images (and of MaxImages) stays
// far below Step Functions' 256 KB, at start and on every step.
func TestVerifyStateSize(t *testing.T) {
	for _, n := range []int{1000, verify.MaxImages} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			w := newWorld(t, 100, "")
			for i := range n {
				inst := fmt.Sprintf("i-%017x", 0x9e3779b97f4a7c15*uint64(i+1)>>4)
				w.env.Sim.AddImage(ec2sim.ImageSpec{InstanceID: inst, Created: slot.Add(-time.Hour),
					Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: inst}})
			}
			b, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(slot))})
			if err != nil {
				t.Fatal(err)
			}
			var r result
			json.Unmarshal(b, &r)
			size := len(r.State)
			// A few steps with 100 in flight and outcomes recorded.
			for range 20 {
				w.env.Sim.Advance(verify.StepWait * time.Second)
				if b, err = w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
					t.Fatal(err)
				}
				r = result{}
				json.Unmarshal(b, &r)
				size = max(size, len(r.State))
			}
			t.Logf("%d images: largest state %d bytes", n, size)
			if size > 128*1024 {
				t.Errorf("state %d bytes for %d images", size, n)
			}
		})
	}
}

// BenchmarkVerify1000: 1,000 images, maxConcurrent 20, throttling on:
// simulated time, API calls per image by action, instance-hours, largest
// state; all booting, and with 1% unbootable (each holds its slot for the
// 20-minute timeout).
func BenchmarkVerify1000(b *testing.B) {
	for _, unbootable := range []int{0, 10} {
		b.Run(fmt.Sprintf("unbootable=%d", unbootable), func(b *testing.B) {
			for range b.N {
				w := newWorld(b, 20, "")
				newest := w.seed(1000, false)
				for _, id := range newest[:unbootable] {
					w.env.Sim.UnbootableImage(id)
				}
				w.env.Sim.ResetCalls()
				t0 := w.env.Sim.Now()
				o := w.execute(b, schedInput(slot), 0, false)
				if (o.err != nil) != (unbootable > 0) {
					b.Fatal(o.err)
				}
				c := w.env.Sim.Calls()
				b.ReportMetric(w.env.Sim.Now().Sub(t0).Hours(), "sim-hours")
				b.ReportMetric(float64(o.steps), "steps")
				b.ReportMetric(w.instanceHours(), "instance-hours")
				b.ReportMetric(float64(o.maxState), "state-bytes")
				b.ReportMetric(float64(c.Total)/1000, "calls/image")
				for _, a := range []string{"RunInstances", "DescribeInstances", "DescribeInstanceStatus", "CreateTags", "DeleteTags", "TerminateInstances", "DescribeImages"} {
					b.ReportMetric(float64(c.ByAction[a])/1000, a+"/image")
				}
				var th int
				for _, n := range c.Throttled {
					th += n
				}
				b.ReportMetric(float64(th), "throttled")
			}
		})
	}
}

// TestVerifyTagFails: an image that boots but whose amibackup:verified tag
// cannot be written (CreateTags keeps failing past the SDK's and the
// verifier's retries) is not counted verified: prune could not know, so the
// run fails naming it; the others are tagged.
func TestVerifyTagFails(t *testing.T) {
	w := newWorld(t, 5, "")
	newest := w.seed(3, false)
	w.rec.tagAttempts = 1
	w.env.Sim.Inject(ec2sim.Fault{Action: "CreateTags", ImageID: newest[1], Code: "InternalError"})
	o := w.execute(t, schedInput(slot), 0, false)
	if o.err == nil || !strings.Contains(o.err.Error(), newest[1]) || !strings.Contains(o.err.Error(), "could not be written") {
		t.Fatalf("finish: %v", o.err)
	}
	for i, id := range newest {
		if got := w.imageTags(id)[tags.Verified] != ""; got != (i != 1) {
			t.Errorf("%s verified tag %v", id, got)
		}
	}
	if got, _ := w.metric(t, metrics.ImagesVerified); got != 2 {
		t.Errorf("ImagesVerified %v", got)
	}
}

// TestVerifyNotTheImage (M1, M6): only conditions caused by the image tag
// it failed; a quota, the network, the configuration, an instance
// terminated by someone else or never seen leave it "not tested" (no tag:
// a verify=failed tag would take it off retention's newest-verified
// floor), and the run fails naming it.
func TestVerifyNotTheImage(t *testing.T) {
	cases := []struct {
		name   string
		code   string // RunInstances error injected ("": the launch succeeds)
		during func(w *world, instance string)
		failed bool
	}{
		{name: "block device mapping", code: "InvalidBlockDeviceMapping", failed: true},
		{name: "vCPU quota", code: "VcpuLimitExceeded"},
		{name: "instance quota", code: "InstanceLimitExceeded"},
		{name: "subnet full", code: "InsufficientFreeAddressesInSubnet"},
		{name: "subnet gone", code: "InvalidSubnetID.NotFound"},
		{name: "group gone", code: "InvalidGroup.NotFound"},
		{name: "parameter combination", code: "InvalidParameterCombination"},
		{name: "token mismatch", code: "IdempotentParameterMismatch"},
		{name: "unknown code", code: "SomethingNew"},
		{name: "guest shuts down", during: func(w *world, id string) {
			if err := w.env.Sim.ShutdownFromOS("", "", id); err != nil {
				t.Fatal(err)
			}
		}, failed: true},
		{name: "terminated by someone", during: func(w *world, id string) {
			if _, err := w.env.Client("", "").TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "gone from the listing at the timeout", during: func(w *world, id string) {
			if _, err := w.env.Client("", "").TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
				t.Fatal(err)
			}
			w.env.Sim.Advance(3 * time.Hour) // past the timeout and the terminated instance's visibility
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := newWorld(t, 5, "")
			sim := w.env.Sim
			inst := "i-00000000000000001"
			img, _ := sim.AddImage(ec2sim.ImageSpec{InstanceID: inst, Created: slot.Add(-time.Hour),
				Tags: map[string]string{tags.ManagedBy: "prod", tags.Policy: "nightly", tags.InstanceID: inst}})
			if c.code != "" {
				sim.Inject(ec2sim.Fault{Action: "RunInstances", ImageID: img, Code: c.code, Message: "injected"})
			}
			b, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(slot))})
			if err != nil {
				t.Fatal(err)
			}
			var r result
			json.Unmarshal(b, &r)
			for steps := 0; !r.Done; steps++ {
				sim.Advance(time.Duration(r.WaitSeconds) * time.Second)
				if steps == 2 && c.during != nil {
					for _, in := range sim.Instances("", "") {
						if in.Tags[tags.VerifyOf] == img {
							c.during(w, in.ID)
						}
					}
				}
				if b, err = w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
					t.Fatal(err)
				}
				r = result{}
				json.Unmarshal(b, &r)
				if steps > 500 {
					t.Fatal("not done")
				}
			}
			b, _ = w.call(t, map[string]any{"action": "cleanup", "state": r.State})
			json.Unmarshal(b, &r)
			out, err := w.call(t, map[string]any{"action": "finish", "state": r.State})
			if err == nil {
				t.Fatalf("finish succeeded: %s", out)
			}
			tg := w.imageTags(img)
			if tg[tags.Verified] != "" {
				t.Errorf("tagged verified: %v", tg)
			}
			if c.failed {
				if tg[tags.Verify] != tags.VerifyFailed {
					t.Errorf("tags %v, want %s=%s", tg, tags.Verify, tags.VerifyFailed)
				}
				return
			}
			if tg[tags.Verify] != "" || tg[tags.VerifyError] != "" {
				t.Errorf("not the image's fault, but tagged %v", tg)
			}
			if !strings.Contains(err.Error(), "not tested") || !strings.Contains(err.Error(), img) {
				t.Errorf("finish error %v, want %s not tested", err, img)
			}
		})
	}
}

// TestVerifyDelayedStepNotSwept (M6): a live run's step can be late by
// its retries, each attempt running up to the function timeout; another
// execution starting meanwhile must not sweep the live run's instances
// as leftovers. The live run then verifies its image.
func TestVerifyDelayedStepNotSwept(t *testing.T) {
	w := newWorld(t, 1, "")
	newest := w.seed(1, false)
	b, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(slot))})
	if err != nil {
		t.Fatal(err)
	}
	var r result
	json.Unmarshal(b, &r)
	if b, err = w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
		t.Fatal(err)
	}
	r = result{}
	json.Unmarshal(b, &r)
	if len(w.aliveOurs()) != 1 {
		t.Fatalf("alive %v", w.aliveOurs())
	}
	// The next step: all its attempts time out (the retriers' waits in
	// between), the last one answers; meanwhile another execution starts.
	delay := time.Duration(actionloop.Retries)*runner.FunctionTimeout + 70*time.Second
	w.env.Sim.Advance(verify.StepWait*time.Second + delay)
	if _, err := w.call(t, map[string]any{"action": "start", "input": json.RawMessage(schedInput(w.env.Sim.Now()))}); err != nil {
		t.Fatal(err)
	}
	if n := len(w.aliveOurs()); n != 1 {
		t.Fatalf("another execution swept the live run's instance (%s after launch; timeout 20m, SweepMargin %s)", delay, verify.SweepMargin)
	}
	w.env.Sim.Advance(runner.FunctionTimeout - time.Minute)
	if b, err = w.call(t, map[string]any{"action": "step", "state": r.State}); err != nil {
		t.Fatal(err)
	}
	if tg := w.imageTags(newest[0]); tg[tags.Verified] == "" || tg[tags.Verify] != "" {
		t.Errorf("live run's image: tags %v, want verified", tg)
	}
}

// TestSweepMargin: the margin covers the longest a live run's step can be
// late: its retries, each attempt up to the function timeout.
func TestSweepMargin(t *testing.T) {
	min := verify.StepWait*time.Second + (actionloop.Retries+1)*runner.FunctionTimeout + 70*time.Second
	if verify.SweepMargin < min {
		t.Errorf("SweepMargin %s < %s", verify.SweepMargin, min)
	}
	t.Logf("SweepMargin %s", verify.SweepMargin)
}

// TestVerifyHistoryBudget (H4): at low maxConcurrent and a long timeout a
// run of many images stays inside Step Functions' 25,000 history events
// (counted here from the rounds the test plays: 9 events a step or cleanup
// round, the head and the finish), decides every image it launched, and
// reports the images it could not reach as not reached (not failed, not
// tested, untagged): the next run takes them.
func TestVerifyHistoryBudget(t *testing.T) {
	cases := []struct {
		mc, images int
		unbootable bool
	}{
		{mc: 1, images: 30, unbootable: true}, // every image holds its slot for the 2 h timeout
		{mc: 5, images: 2000},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("maxConcurrent=%d,images=%d,unbootable=%v", c.mc, c.images, c.unbootable), func(t *testing.T) {
			if testing.Short() && c.images > 100 {
				t.Skip("long")
			}
			w := newWorld(t, c.mc, "")
			cfg, err := config.Parse([]byte(strings.Replace(fmt.Sprintf(cfgTmpl, c.mc, ""), `"timeout":"20m"`, `"timeout":"2h"`, 1)), "")
			if err != nil {
				t.Fatal(err)
			}
			w.cfg = cfg
			newest := w.seed(c.images, false)
			if c.unbootable {
				for _, id := range newest {
					w.env.Sim.UnbootableImage(id)
				}
			}
			o := w.execute(t, schedInput(slot), 0, false)
			// Rounds: every step and every cleanup round is a 9-event round
			// (Wait, task, Choice); head: ExecutionStarted, Start, Started?;
			// end: Finish, its end state, the execution's end.
			events := 8 + o.steps*9 + 2*9 + 8
			if o.sum == nil {
				t.Fatalf("finish: no summary (%v)", o.err)
			}
			im := o.sum.Images
			t.Logf("steps %d, history events ~%d, images %+v", o.steps, events, im)
			if events > 25000 {
				t.Fatalf("%d steps: ~%d history events, over Step Functions' 25,000", o.steps, events)
			}
			if im.NotReached+im.NotSampled == 0 {
				t.Errorf("nothing left for the next run: %+v", im)
			}
			if (o.err != nil) != (im.NotReached+im.Failed > 0) {
				t.Errorf("finish error %v with images %+v", o.err, im)
			}
			if im.NotTested != 0 {
				t.Errorf("%d images not tested: the run ran out of steps with instances in flight (%+v)", im.NotTested, im)
			}
			if c.unbootable && (im.Failed == 0 || im.Verified != 0) || !c.unbootable && (im.Verified == 0 || im.Failed != 0) {
				t.Errorf("images %+v", im)
			}
			if im.Planned != im.Verified+im.Failed+im.NotReached {
				t.Errorf("planned %d != verified + failed + not reached: %+v", im.Planned, im)
			}
			tagged := 0
			for _, id := range newest {
				tg := w.imageTags(id)
				if tg[tags.Verified] != "" || tg[tags.Verify] != "" {
					tagged++
				}
			}
			if tagged != im.Verified+im.Failed {
				t.Errorf("%d images tagged, want %d (verified + failed)", tagged, im.Verified+im.Failed)
			}
			if left := w.aliveOurs(); len(left) > 0 {
				w.env.Sim.Advance(time.Minute)
				if left = w.aliveOurs(); len(left) > 0 {
					t.Errorf("left: %v", left)
				}
			}
		})
	}
}
