// Package e2e drives the built bootstrap binaries under the AWS Lambda
// Runtime Interface Emulator against ec2sim, with the configuration taken
// from the synthesized template, and asserts on the emulator's state.
package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

var prepared *localrun.Prepared

func TestMain(m *testing.M) {
	root, _ := filepath.Abs("../..")
	work, err := os.MkdirTemp("", "amibackup-e2e-")
	if err != nil {
		panic(err)
	}
	prepared, err = localrun.Prepare(context.Background(), root, work)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: cannot prepare (run via `make test`): %v\n", err)
		os.RemoveAll(work)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(work)
	if workflow.work != "" {
		os.RemoveAll(workflow.work)
	}
	os.Exit(code)
}

// start is fixed so retention outcomes are exact (a Friday; the nights end
// on Sunday Nov 15), and in the past, because the functions reject trigger
// times ahead of their clock.
var start = time.Date(2026, 11, 6, 2, 0, 0, 0, time.UTC)

func harness(t *testing.T) *localrun.Harness {
	t.Helper()
	sim := ec2sim.New(ec2sim.Options{Start: start, ImageDelay: 20 * time.Minute})
	h, err := prepared.Start(context.Background(), sim)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func schedInput(policy string, at time.Time) []byte {
	b, _ := json.Marshal(map[string]string{"policy": policy, "time": at.Format(time.RFC3339)})
	if policy == "" {
		b, _ = json.Marshal(map[string]string{"time": at.Format(time.RFC3339)})
	}
	return b
}

type backupSummary struct {
	Selected int
	Done     []struct{ ID, ImageID string }
	Existed  []struct{ ID, ImageID string } `json:"alreadyDone"`
	Warnings []string
}

func TestNightUnderRIE(t *testing.T) {
	h := harness(t)
	ctx := context.Background()
	sel := map[string]string{"Backup": "nightly", "Name": "web"}
	ids := h.Sim.SeedFleet("", "", 3, sel)
	optOut := h.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly", tags.NoReboot: "true"}})
	other := h.Sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "weekly"}})
	foreign, _ := h.Sim.AddImage(ec2sim.ImageSpec{Name: "golden-base", Created: start.AddDate(0, -6, 0)})

	night := start.Add(time.Hour)
	out, rep, err := h.Backup.Invoke(ctx, schedInput("nightly", night))
	if err != nil {
		t.Fatalf("backup: %v\n%s", err, h.Backup.Logs())
	}
	var s backupSummary
	json.Unmarshal(out, &s)
	if s.Selected != 4 || len(s.Done) != 4 {
		t.Fatalf("summary %s", out)
	}
	if rep.InitMS <= 0 || rep.DurationMS <= 0 {
		t.Errorf("no RIE report: %+v", rep)
	}
	checkLogs(t, h.Backup.Logs())
	// The functions reached EC2 the way a user's proxied, TLS-inspected
	// network allows only: through HTTPS_PROXY, trusting AWS_CA_BUNDLE.
	if h.Proxy.Tunnels() == 0 {
		t.Error("the functions reached EC2 without the proxy")
	}
	if got := sdkSettings(t, h.Backup.Logs()); got["retryMode"] != "adaptive" || got["maxAttempts"] != 12.0 || got["maxAttemptsFrom"] != "default" {
		t.Errorf("cold-start SDK settings %v, want amibackup's defaults", got)
	}
	// Emulator state: one image per selected instance, rebooted unless opted out, tagged.
	images := h.Sim.Images("", "")
	if len(images) != 5 { // 4 new + the foreign one
		t.Fatalf("%d images", len(images))
	}
	for _, im := range images {
		if im.ID == foreign {
			continue
		}
		if im.Tags[tags.ManagedBy] != localrun.Stack || im.Tags[tags.Policy] != "nightly" || im.Tags[tags.Time] != "2026-11-06T03:00:00Z" {
			t.Errorf("%s tags %v", im.ID, im.Tags)
		}
		wantReboot := im.InstanceID != optOut
		if im.NoReboot == wantReboot || im.Tags[tags.Reboot] != fmt.Sprint(wantReboot) {
			t.Errorf("%s of %s: NoReboot %v, tag %s", im.ID, im.InstanceID, im.NoReboot, im.Tags[tags.Reboot])
		}
		if im.InstanceID == other {
			t.Errorf("unselected instance backed up")
		}
	}
	for _, id := range ids {
		if in, _ := h.Sim.Instance("", "", id); in.Reboots != 1 {
			t.Errorf("%s rebooted %d times", id, in.Reboots)
		}
	}

	// Same trigger again: nothing new.
	out, _, err = h.Backup.Invoke(ctx, schedInput("nightly", night))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(out, &s)
	if len(s.Done) != 0 || len(s.Existed) != 4 || len(h.Sim.Images("", "")) != 5 {
		t.Fatalf("retry created images: %s", out)
	}

	// A manual request for one instance.
	ev := trigger.MarshalBackupEvent(start.Add(8*time.Hour), trigger.BackupDetail{Policy: "nightly", InstanceIDs: []string{ids[0]}})
	if out, _, err = h.Backup.Invoke(ctx, ev); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(out, &s)
	if len(s.Done) != 1 || s.Done[0].ID != ids[0] {
		t.Fatalf("manual: %s", out)
	}

	// Nine more nights, then prune with the template's retention.
	for d := 1; d <= 9; d++ {
		h.Sim.Advance(24 * time.Hour)
		if _, _, err := h.Backup.Invoke(ctx, schedInput("nightly", night.AddDate(0, 0, d))); err != nil {
			t.Fatalf("night %d: %v", d, err)
		}
	}
	h.Sim.Advance(time.Hour)
	before := len(h.Sim.Images("", ""))
	pruneAt := night.AddDate(0, 0, 9).Add(2 * time.Hour)
	if _, _, err := h.Prune.Invoke(ctx, []byte(`{"detail-type":"Prune Requested","source":"amibackup","time":"`+pruneAt.Format(time.RFC3339)+`","detail":{"dryRun":true}}`)); err != nil {
		t.Fatal(err)
	}
	if len(h.Sim.Images("", "")) != before {
		t.Fatal("dry run deleted images")
	}
	out, _, err = h.Prune.Invoke(ctx, schedInput("", pruneAt))
	if err != nil {
		t.Fatalf("prune: %v\n%s", err, h.Prune.Logs())
	}
	after := h.Sim.Images("", "")
	// cdk.json keeps daily 7, weekly 4, monthly 3: of Nov 6-15 the 7 newest
	// days plus Sunday Nov 8 stay; Nov 6 and 7 (and the manual image) go.
	perInstance := map[string]int{}
	for _, im := range after {
		perInstance[im.InstanceID]++
		if im.ID != foreign && (im.Tags[tags.Time] < "2026-11-08" || strings.HasPrefix(im.Tags[tags.Time], "2026-11-06")) {
			t.Errorf("%s from %s survived", im.ID, im.Tags[tags.Time])
		}
	}
	for _, id := range append(ids, optOut) {
		if perInstance[id] != 8 {
			t.Errorf("%s keeps %d images, want 8", id, perInstance[id])
		}
	}
	if _, ok := perInstance[""]; !ok {
		t.Error("the foreign image was deleted")
	}
	if len(after) != before-4*2-1 {
		t.Errorf("%d images after prune, %d before: %s", len(after), before, out)
	}
}

// TestBadInputUnderRIE: malformed inputs come back as function errors and
// change nothing.
func TestBadInputUnderRIE(t *testing.T) {
	h := harness(t)
	h.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	for _, in := range []string{`{}`, `{"policy":"nope","time":"2026-11-06T03:00:00Z"}`, `[1,2]`,
		`{"detail-type":"Backup Requested","source":"amibackup","time":"2026-11-06T03:00:00Z","detail":{"policy":"nightly","instanceIds":["x"]}}`} {
		_, _, err := h.Backup.Invoke(context.Background(), []byte(in))
		if err == nil {
			t.Errorf("backup accepted %s", in)
		}
		_, _, err = h.Prune.Invoke(context.Background(), []byte(in))
		if err == nil {
			t.Errorf("prune accepted %s", in)
		}
	}
	if c := h.Sim.Calls(); c.Total != 0 {
		t.Fatalf("bad input reached EC2: %v", c.ByAction)
	}
}

// checkLogs: the function's stdout, as CloudWatch Logs would receive it,
// holds the run summary as one JSON line in Lambda's JSON log format
// (lambdacontext's handler: "timestamp", "message", "requestId"), and an EMF
// record CloudWatch turns into metrics. Every other application line carries
// the request ID too.
func checkLogs(t *testing.T, logs string) {
	t.Helper()
	var summary, emfRecord bool
	for line := range strings.SplitSeq(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(strings.TrimSpace(line)), &rec) != nil {
			continue
		}
		if _, app := rec["level"]; app && rec["message"] != coldstart.SDKSettingsMessage { // the cold start is no invocation
			if id, _ := rec["requestId"].(string); id == "" || rec["timestamp"] == nil || rec["function"] != "backup" {
				t.Errorf("application line without request ID, timestamp or function: %s", line)
			}
		}
		if rec["message"] == "run summary" {
			summary = rec["done"] == 4.0 && rec["level"] == "WARN"
			if !summary {
				t.Errorf("summary line %s", line)
			}
		}
		if aws, ok := rec["_aws"].(map[string]any); ok && aws["CloudWatchMetrics"] != nil && rec["ImagesCreated"] == 4.0 {
			emfRecord = true
		}
	}
	if !summary || !emfRecord {
		t.Errorf("logs lack the summary line (%v) or the EMF record (%v):\n%s", summary, emfRecord, logs)
	}
}

// sdkSettings returns the attributes of the cold-start line reporting the
// SDK's retry settings.
func sdkSettings(t *testing.T, logs string) map[string]any {
	t.Helper()
	for line := range strings.SplitSeq(logs, "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(strings.TrimSpace(line)), &rec) == nil && rec["message"] == coldstart.SDKSettingsMessage {
			return rec
		}
	}
	t.Fatalf("no %q line at cold start:\n%s", coldstart.SDKSettingsMessage, logs)
	return nil
}

// TestRetryEnvironmentUnderRIE: the bootstraps honour the user's
// AWS_RETRY_MODE and AWS_MAX_ATTEMPTS (they used to be replaced by
// amibackup's retryer): the cold start reports them, and an EC2 call that
// fails every time is attempted exactly AWS_MAX_ATTEMPTS times.
func TestRetryEnvironmentUnderRIE(t *testing.T) {
	sim := ec2sim.New(ec2sim.Options{Start: start})
	h, err := prepared.Start(context.Background(), sim, "AWS_RETRY_MODE=standard", "AWS_MAX_ATTEMPTS=3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
	sim.Inject(ec2sim.Fault{Action: "DescribeInstances", Code: "InternalError"})
	if _, _, err := h.Backup.Invoke(context.Background(), schedInput("nightly", start.Add(time.Hour))); err == nil {
		t.Fatalf("backup succeeded although every DescribeInstances failed:\n%s", h.Backup.Logs())
	}
	if got := sim.Calls().Faults["DescribeInstances"]; got != 3 {
		t.Errorf("DescribeInstances attempted %d times, want AWS_MAX_ATTEMPTS=3", got)
	}
	got := sdkSettings(t, h.Backup.Logs())
	if got["retryMode"] != "standard" || got["retryModeFrom"] != "environment" || got["maxAttempts"] != 3.0 || got["maxAttemptsFrom"] != "environment" {
		t.Errorf("cold-start SDK settings %v, want standard and 3 from the environment", got)
	}
}
