// Command amibackup-demo plays ten simulated nights of amibackup on this
// machine: the real bootstrap binaries under the Lambda Runtime Interface
// Emulator, configured from the synthesized CDK template, against ec2sim;
// then a restore verification in real time (verify.go). It needs no AWS
// account. Run it with `make demo`.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

var hold = flag.Bool("hold", false, "after the night, keep ec2sim and the functions running until interrupted (Ctrl-C)")

func main() {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx)
	switch {
	case errors.Is(err, context.Canceled) || (err != nil && ctx.Err() != nil):
		fmt.Fprintln(os.Stderr, "\ndemo: interrupted; functions and emulator stopped")
		os.Exit(130)
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo: %v\n", err)
		os.Exit(1)
	}
}

// start is fixed so retention outcomes are exact (a Friday; the nights end
// on Sunday Nov 15), and in the past, because the functions reject trigger
// times ahead of their clock.
var start = time.Date(2026, 11, 6, 2, 0, 0, 0, time.UTC)

func run(ctx context.Context) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "amibackup-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if *wavesDemo {
		return runWaves(ctx, root, work, nil)
	}
	if *verifyDemo {
		if err := runVerify(ctx, root, work); err != nil {
			return err
		}
		step("Done: functions and emulator stopped")
		return nil
	}

	step("Build the bootstraps (as the stacks do, for this machine) and synthesize the CDK app")
	p, err := localrun.Prepare(ctx, root, work)
	if err != nil {
		return err
	}
	for _, b := range []string{p.BackupBin, p.PruneBin} {
		if st, err := os.Stat(b); err == nil {
			fmt.Printf("  %-8s %5.1f MB  %s\n", filepath.Base(filepath.Dir(b)), float64(st.Size())/1e6, b)
		}
	}
	if len(p.AllAtOnce) > 0 {
		fmt.Printf("  cdk.json's policy %s has no availability section: deployed, it reboots in waves (one member of each\n"+
			"  Auto Scaling group or target group at a time, handed by the backup function to the workflow: played after these nights).\n"+
			"  These nights play it with \"availability\":{\"mode\":\"all-at-once\"}: the backup function's own one-call run.\n", strings.Join(p.AllAtOnce, ", "))
	}
	fmt.Printf("  AMIBACKUP_CONFIG from cdk.out/%s.template.json: %s\n", localrun.Stack, p.BackupConfig)

	sim := ec2sim.New(ec2sim.Options{Start: start, ImageDelay: 20 * time.Minute, Throttle: true})
	web := sim.SeedFleet("", "", 3, map[string]string{"Backup": "nightly", "Name": "web"})
	db := sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "nightly", "Name": "db", tags.NoReboot: "true"},
		Volumes: []ec2sim.VolumeSpec{{SizeGiB: 20}, {SizeGiB: 500, Type: "gp3"}}})
	ci := sim.AddInstance(ec2sim.InstanceSpec{Tags: map[string]string{"Backup": "weekly", "Name": "ci"}})
	sim.AddImage(ec2sim.ImageSpec{Name: "golden-base-2026", Created: start.AddDate(0, -3, 0)})
	sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", web[0], start.AddDate(0, 0, -30)), Created: start.AddDate(0, 0, -30),
		Tags: map[string]string{tags.ManagedBy: "someone-else", tags.Policy: "nightly"}})

	step("Start ec2sim and both functions under the RIE")
	h, err := p.Start(ctx, sim)
	if err != nil {
		return err
	}
	defer h.Close()
	go func() { <-ctx.Done(); h.Close() }()
	fmt.Printf("  ec2sim  %s   (account %s, %s)\n", h.Endpoint, ec2sim.DefaultAccount, ec2sim.DefaultRegion)
	fmt.Printf("  the functions reach it as %s only through HTTPS_PROXY=%s, trusting AWS_CA_BUNDLE=%s\n", h.FunctionEndpoint, h.Proxy.URL, h.CABundle)
	fmt.Printf("  backup  %s (RIE pid %d)\n  prune   %s (RIE pid %d)\n", h.Backup.URL, h.Backup.PID(), h.Prune.URL, h.Prune.PID())
	printFleet(sim, web, db, ci)

	night := start.Add(time.Hour)
	step("Night 1, 03:00 UTC: EventBridge Scheduler triggers the backup")
	if err := backup(ctx, h, sched("nightly", night)); err != nil {
		return err
	}
	printImages(sim, "")

	step("Scheduler delivers the same trigger again (at-least-once delivery)")
	if err := backup(ctx, h, sched("nightly", night)); err != nil {
		return err
	}

	step("An operator puts a manual \"Backup Requested\" event for " + web[1])
	if err := backup(ctx, h, trigger.MarshalBackupEvent(start.Add(8*time.Hour+15*time.Minute), trigger.BackupDetail{Policy: "nightly", InstanceIDs: []string{web[1]}})); err != nil {
		return err
	}

	step("30 simulated minutes later the snapshots complete")
	sim.Advance(30 * time.Minute)
	printImages(sim, "")

	step("Nine more nights of scheduled backups")
	for d := 1; d <= 9; d++ {
		sim.Advance(24 * time.Hour)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		out, rep, err := h.Backup.Invoke(ctx, sched("nightly", night.AddDate(0, 0, d)))
		if err != nil {
			return fmt.Errorf("backup night %d: %w", d+1, err)
		}
		var s summary
		json.Unmarshal(out, &s)
		fmt.Printf("  %s  created %d, already there %d, failed %d  (%.0f ms)\n", night.AddDate(0, 0, d).Format("Mon 2006-01-02 15:04"), len(s.Done), len(s.Existed), len(s.Failed), rep.DurationMS)
	}
	sim.Advance(time.Hour)

	pruneAt := night.AddDate(0, 0, 9).Add(2 * time.Hour)
	step("Prune, dry run first (manual \"Prune Requested\" with dryRun)")
	dry := fmt.Sprintf(`{"version":"0","id":"demo","detail-type":"Prune Requested","source":"amibackup","account":"%s","time":"%s","region":"%s","resources":[],"detail":{"dryRun":true}}`,
		ec2sim.DefaultAccount, pruneAt.Format(time.RFC3339), ec2sim.DefaultRegion)
	if err := prune(ctx, h, []byte(dry), true); err != nil {
		return err
	}
	step("Prune on its schedule (05:00): retention daily 7, weekly 4, monthly 3 from cdk.json")
	if err := prune(ctx, h, sched("", pruneAt), false); err != nil {
		return err
	}
	printImages(sim, "after prune")

	step("EC2 API calls made by the functions (ec2sim call log)")
	calls := sim.Calls()
	var actions []string
	for a := range calls.ByAction {
		actions = append(actions, a)
	}
	slices.Sort(actions)
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	for _, a := range actions {
		fmt.Fprintf(tw, "  %s\t%d\n", a, calls.ByAction[a])
	}
	fmt.Fprintf(tw, "  (throttled, retried by the SDK)\t%d\n", sum(calls.Throttled))
	tw.Flush()
	fmt.Printf("  reboots recorded by the emulator: ")
	for _, id := range append(web, db) {
		in, _ := sim.Instance("", "", id)
		fmt.Printf("%s=%d ", in.Tags["Name"], in.Reboots)
	}
	fmt.Println()
	if *hold {
		step("Holding: ec2sim and both functions keep running; press Ctrl-C to stop them")
		fmt.Printf("  pids: %d %d\n", h.Backup.PID(), h.Prune.PID())
		<-ctx.Done()
		return ctx.Err()
	}
	// The product's default for a rebooting policy: waves per availability
	// group through the workflow.
	if err := runWaves(ctx, root, work, p); err != nil {
		return err
	}
	if err := runVerify(ctx, root, work); err != nil {
		return err
	}
	step("Done: functions and emulator stopped")
	return nil
}

type summary struct {
	Selected int
	Done     []entry
	Existed  []entry `json:"alreadyDone"`
	Skipped  []entry
	Failed   []entry
	Warnings []string
	Plan     []struct {
		ImageID, Name, InstanceID string
		Time                      time.Time
		State                     string
		Keep                      bool
		Reasons                   []string
	}
	OrphansDeleted []entry `json:"orphanSnapshotsDeleted"`
}

type entry struct {
	ID, ImageID, Name, Detail string
}

func step(title string) { fmt.Printf("\n== %s\n", title) }

func sched(policy string, at time.Time) []byte {
	m := map[string]string{"time": at.Format(time.RFC3339)}
	if policy != "" {
		m["policy"] = policy
	}
	b, _ := json.Marshal(m)
	return b
}

func backup(ctx context.Context, h *localrun.Harness, in []byte) error {
	fmt.Printf("  input: %s\n", trim(string(in), 160))
	out, rep, err := h.Backup.Invoke(ctx, in)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	var s summary
	if err := json.Unmarshal(out, &s); err != nil {
		return fmt.Errorf("backup summary: %w: %s", err, out)
	}
	fmt.Printf("  selected %d: created %d, already there %d, skipped %d, failed %d   [RIE: init %.1f ms, duration %.1f ms, peak RSS %.1f MB]\n",
		s.Selected, len(s.Done), len(s.Existed), len(s.Skipped), len(s.Failed), rep.InitMS, rep.DurationMS, rep.MaxRSSMB)
	for _, e := range s.Done {
		fmt.Printf("    + %s  %s  %s\n", e.ID, e.ImageID, e.Detail)
	}
	for _, e := range s.Existed {
		fmt.Printf("    = %s  %s  already exists (%s): nothing created\n", e.ID, e.ImageID, e.Name)
	}
	for _, w := range s.Warnings {
		fmt.Printf("    ! %s\n", w)
	}
	return nil
}

func prune(ctx context.Context, h *localrun.Harness, in []byte, dry bool) error {
	_, err := pruneSummary(ctx, h, in, dry)
	return err
}

// pruneSummary runs prune, prints its plan and returns its summary.
func pruneSummary(ctx context.Context, h *localrun.Harness, in []byte, dry bool) (*summary, error) {
	before := h.Sim.Calls()
	out, _, err := h.Prune.Invoke(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("prune: %w", err)
	}
	var s summary
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, fmt.Errorf("prune summary: %w: %s", err, out)
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "  \tinstance\tbackup time\timage\tdecision\n")
	for _, e := range s.Plan {
		verdict := "keep"
		if !e.Keep {
			verdict = "DELETE"
			if !dry {
				verdict = "deleted"
			}
		}
		fmt.Fprintf(tw, "  \t%s\t%s\t%s\t%s: %s\n", e.InstanceID, e.Time.Format("Mon 01-02 15:04"), e.ImageID, verdict, strings.Join(e.Reasons, ", "))
	}
	tw.Flush()
	after := h.Sim.Calls()
	fmt.Printf("  images deleted %d (one DeregisterImage each, snapshots deleted in the same call), orphan snapshots %d, mutating calls in this run %d\n",
		len(s.Done), len(s.OrphansDeleted), after.Mutating()-before.Mutating())
	return &s, nil
}

func printFleet(sim *ec2sim.Sim, web []string, db, ci string) {
	fmt.Println("  fleet:")
	for _, in := range sim.Instances("", "") {
		note := "selected (Backup=nightly)"
		switch in.ID {
		case db:
			note = "selected, but tagged amibackup:no-reboot=true (crash-consistent image, warned)"
		case ci:
			note = "not selected (Backup=weekly)"
		}
		fmt.Printf("    %s  %-4s %s\n", in.ID, in.Tags["Name"], note)
	}
	fmt.Println("  foreign images (must never be touched): golden-base-2026, and an image named like ours but managed by \"someone-else\"")
}

func printImages(sim *ec2sim.Sim, title string) {
	if title != "" {
		fmt.Printf("  images %s:\n", title)
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "    image\tstate\tinstance\treboot\ttrigger\tslot\tname\n")
	for _, im := range sim.Images("", "") {
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\t%s\t%s\t%s\n", im.ID, im.State, dash(im.InstanceID), dash(im.Tags[tags.Reboot]), dash(im.Tags[tags.Trigger]), dash(im.Tags[tags.Time]), im.Name)
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}
