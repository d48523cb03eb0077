package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
	"github.com/amibackup/amibackup/pkg/images"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/sfnlocal"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/verify"
)

var verifyDemo = flag.Bool("verify", false, "play only the restore verification (the default demo ends with it): tonight's backup of a web pair and a database, the verification workflow boots each newest image in isolation (the database's will not boot), then a prune dry run keeps the database's last verified image")

// verifyDemoConfig: keep the last 2 images (plus the floors); verify each
// instance's newest image, two at a time, with the shortest timeout allowed.
// The backup reboots all at once: tonight's images come from the backup
// function's own run (the waves are the demo's previous part).
const verifyDemoConfig = `{"deployment":"AmiBackup","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"last":2},"availability":{"mode":"all-at-once"},"verify":{"schedule":{"expression":"cron(0 5 ? * SUN *)"},"timeout":"5m","maxConcurrent":2}}]}`

// demoNet stands in for the stack's isolated VPC (tokens in the template;
// ec2sim accepts any subnet-/sg- ID).
var demoNet = verify.Network{Subnets: []string{"subnet-0a1b2c3d4e5f60718"}, SecurityGroup: "sg-0a1b2c3d4e5f6071a"}

// runVerify synthesizes the stack with a verifying policy and plays one
// night against ec2sim in real time (launches run after 1 s, status checks
// pass 1 s later): the backup function creates tonight's images, the
// verification state machine runs offline (pkg/sfnlocal, the verify
// bootstrap under the RIE, Wait states of 200 ms instead of 15 s), and the
// prune function plans with the verified floor.
func runVerify(ctx context.Context, root, work string) error {
	step("Restore verification (a new account, in real time: the verify function uses the real clock): synthesize the CDK app with a policy that verifies its backups")
	rie, err := localrun.FindRIE(root)
	if err != nil {
		return err
	}
	w, err := localrun.PrepareVerify(ctx, root, work, verifyDemoConfig)
	if err != nil {
		return err
	}
	// Backup and prune configured from the same template.
	p := &localrun.Prepared{RIE: rie}
	if p.BackupBin, err = localrun.Build(ctx, root, work, runtime.GOARCH, "backup"); err != nil {
		return err
	}
	if p.PruneBin, err = localrun.Build(ctx, root, work, runtime.GOARCH, "prune"); err != nil {
		return err
	}
	if p.BackupEnv, err = localrun.TemplateEnv(w.TemplatePath, "Backup"); err != nil {
		return err
	}
	if p.PruneEnv, err = localrun.TemplateEnv(w.TemplatePath, "Prune"); err != nil {
		return err
	}
	def, err := sfnlocal.Resolve(w.Template, w.StateMachine, nil)
	if err != nil {
		return err
	}
	ids, err := sfnlocal.Functions(w.Template, w.StateMachine)
	if err != nil || len(ids) != 1 {
		return fmt.Errorf("functions of the verification workflow: %v %v", ids, err)
	}
	eng, err := sfnlocal.FindEngine(root)
	if err != nil {
		return err
	}
	if err := eng.Check(ctx, def); err != nil {
		return err
	}
	fmt.Printf("  retention and verify: %s\n", verifyDemoConfig[strings.Index(verifyDemoConfig, `"retention"`):len(verifyDemoConfig)-3])

	sim := ec2sim.New(ec2sim.Options{Launch: ec2sim.LaunchTiming{Pending: time.Second, StatusInit: time.Second, ShuttingDown: time.Second}})
	web := sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly", "Name": "web"})
	db := sim.SeedFleet("", "", 1, map[string]string{"Backup": "nightly", "Name": "db"})[0]
	fleet := append(slices.Clone(web), db)
	names := map[string]string{web[0]: "web-1", web[1]: "web-2", db: "db"}
	// Five earlier nights; last week's verification run verified the
	// images of four nights ago.
	tonight := time.Now().UTC().Truncate(time.Minute)
	for d := 5; d >= 1; d-- {
		at := tonight.AddDate(0, 0, -d)
		for _, inst := range fleet {
			t := map[string]string{tags.ManagedBy: localrun.Stack, tags.Policy: "nightly", tags.InstanceID: inst, tags.Time: tags.FormatTime(at)}
			if d == 4 {
				t[tags.Verified] = tags.FormatTime(at.Add(2 * time.Hour))
			}
			sim.AddImage(ec2sim.ImageSpec{Name: images.Name("nightly", inst, at), InstanceID: inst, Created: at, Tags: t})
		}
	}
	fmt.Printf("  fleet: web-1 %s, web-2 %s, db %s; five nights of images each, those of %s verified last week\n",
		web[0], web[1], db, tonight.AddDate(0, 0, -4).Format("Mon 01-02"))

	step("Start ec2sim, the backup, prune and verify functions under the RIE")
	h, err := p.Start(ctx, sim)
	if err != nil {
		return err
	}
	defer h.Close()
	go func() { <-ctx.Done(); h.Close() }()
	fn, err := h.StartVerify(ctx, rie, w, demoNet)
	if err != nil {
		return err
	}
	fmt.Printf("  verify  %s (RIE pid %d), %s=%s, %s=%s (in AWS: the stack's isolated VPC)\n", fn.URL, fn.PID(),
		verify.EnvSubnets, strings.Join(demoNet.Subnets, ","), verify.EnvSecurityGroup, demoNet.SecurityGroup)

	step("Tonight: the schedule triggers the backup")
	if err := backup(ctx, h, sched("nightly", tonight)); err != nil {
		return err
	}
	newest := map[string]string{}
	for _, im := range sim.Images("", "") {
		if im.Tags[tags.Time] == tags.FormatTime(tonight) {
			newest[im.InstanceID] = im.ID
		}
	}
	if len(newest) != len(fleet) {
		return fmt.Errorf("tonight's backup made %d images, want %d", len(newest), len(fleet))
	}

	bad := newest[db]
	step("db's new image " + bad + " will not boot: its instance status check goes impaired (ec2sim UnbootableImage)")
	fmt.Println("  the Verifier fails an impaired instance after the policy's timeout (5m); to keep the demo short, the guest halts a second after the check is impaired")
	sim.UnbootableImage(bad)
	defer simtest.HaltWhenImpaired(sim, time.Second, bad)()

	step("The verification schedule starts the workflow: boot each instance's newest image in isolation")
	sim.ResetCalls()
	in, _ := json.Marshal(map[string]string{"policy": "nightly", "time": time.Now().UTC().Truncate(time.Minute).Format(time.RFC3339)})
	short := 200 * time.Millisecond
	began := time.Now()
	res, err := eng.Run(ctx, def, in, sfnlocal.Options{
		Functions:              map[string][]string{sfnlocal.LocalFunctionARN(ids[0]): {fn.URL}},
		WaitOverrides:          map[string]time.Duration{"Wait": short, "Wait to clean up": short, "Wait to clean up after error": short},
		RetryIntervalOverrides: map[string]time.Duration{"Step": short, "Clean up": short, "Clean up after error": short},
	})
	if err != nil {
		return err
	}
	fmt.Printf("  execution %s (%s) in %s, %d Lambda invocations, EC2 calls %v\n", res.Status, res.Error, time.Since(began).Round(100*time.Millisecond),
		len(res.Invocations()), sim.Calls().ByAction)
	if c := res.TaskError("Finish"); c != "" {
		fmt.Printf("  finish: %s\n", trim(c, 200))
	}
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "    instance\timage\tresult\n")
	for _, inst := range fleet {
		t := imageTags(sim, newest[inst])
		result := "verified " + t[tags.Verified]
		if t[tags.Verify] == tags.VerifyFailed {
			result = "FAILED: " + t[tags.VerifyError]
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\n", names[inst], newest[inst], result)
	}
	tw.Flush()
	launched, left := 0, 0
	for _, i := range sim.Instances("", "") {
		if i.Tags[tags.VerifyOf] == "" {
			continue
		}
		launched++
		if slices.Contains([]string{"pending", "running", "stopping", "stopped"}, i.State) {
			left++
		}
	}
	fmt.Printf("  verification instances launched %d, still running %d (no key pair, no public IP, only in %s)\n", launched, left, demoNet.Subnets[0])
	if left > 0 {
		return fmt.Errorf("%d verification instances left running", left)
	}

	step("Prune, dry run: the last 2 images, and each instance's newest verified one (floor)")
	dry := fmt.Sprintf(`{"version":"0","id":"demo","detail-type":"Prune Requested","source":"amibackup","account":"%s","time":"%s","region":"%s","resources":[],"detail":{"dryRun":true}}`,
		ec2sim.DefaultAccount, time.Now().UTC().Format(time.RFC3339), ec2sim.DefaultRegion)
	s, err := pruneSummary(ctx, h, []byte(dry), true)
	if err != nil {
		return err
	}
	// What the floors kept beyond the last 2, checked rather than told.
	floored := false
	for _, e := range s.Plan {
		floor := slices.ContainsFunc(e.Reasons, func(r string) bool { return strings.HasPrefix(r, "floor: newest verified") })
		if !e.Keep || !floor || slices.ContainsFunc(e.Reasons, func(r string) bool { return strings.HasPrefix(r, "last ") }) {
			continue
		}
		fmt.Printf("  %s keeps %s of %s beyond the last 2: its newest verified image (its newest failed to boot)\n", names[e.InstanceID], e.ImageID, e.Time.Format("Mon 01-02"))
		if e.InstanceID != db {
			return fmt.Errorf("%s kept by the verified floor, want db's only", e.ImageID)
		}
		floored = true
	}
	if !floored {
		return fmt.Errorf("prune would not keep db's last verified image")
	}
	return nil
}

func imageTags(sim *ec2sim.Sim, id string) map[string]string {
	for _, im := range sim.Images("", "") {
		if im.ID == id {
			return im.Tags
		}
	}
	return nil
}
