package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	amibackup "github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/localrun"
	"github.com/amibackup/amibackup/pkg/sfnlocal"
	"github.com/amibackup/amibackup/pkg/tags"
)

var wavesDemo = flag.Bool("waves", false, "play only the reboot-wave workflow (the default demo plays it after the nights): a web tier of 3 in an Auto Scaling group behind a target group, a database pair tagged Service=db, two stand-alone instances; then a night in which a web member never boots")

// wavesConfig: one policy that reboots in waves, one member of each group at a time.
const wavesConfig = `{"deployment":"AmiBackup","policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},"availability":{"groupBy":["asg","targetGroup","tag:Service"],"maxUnavailable":1,"healthTimeout":"1m"}}]}`

// runWaves synthesizes the stack with a waves policy and executes its state
// machine offline (pkg/sfnlocal) with the rollout bootstrap under the RIE
// against ec2sim in real time (reboot phases of a second; the Wait states
// take 200 ms instead of 15 s), printing who was down when.
//
// p: the bootstraps the nights prepared, or nil to build them here.
func runWaves(ctx context.Context, root, work string, p *localrun.Prepared) error {
	step("Build the bootstraps and synthesize the CDK app with a policy that reboots in waves")
	var err error
	if p == nil {
		if p, err = localrun.Prepare(ctx, root, work); err != nil {
			return err
		}
	}
	r, err := localrun.PrepareRollout(ctx, root, work, wavesConfig)
	if err != nil {
		return err
	}
	def, err := sfnlocal.Resolve(r.Template, "", nil)
	if err != nil {
		return err
	}
	ids, err := sfnlocal.Functions(r.Template, "")
	if err != nil || len(ids) != 1 {
		return fmt.Errorf("functions of the workflow: %v %v", ids, err)
	}
	eng, err := sfnlocal.FindEngine(root)
	if err != nil {
		return err
	}
	if err := eng.Check(ctx, def); err != nil {
		return err
	}
	fmt.Printf("  availability: %s\n", wavesConfig[strings.Index(wavesConfig, `"availability"`):len(wavesConfig)-3])

	sim := ec2sim.New(ec2sim.Options{RebootModel: true, GroupTags: []string{"Service"}, LifecycleDelay: time.Second,
		Reboot: ec2sim.RebootTiming{Stopping: time.Second, Stopped: time.Second, Pending: time.Second, StatusInit: time.Second}})
	sel := map[string]string{"Backup": "nightly"}
	web := sim.SeedFleet("", "", 3, map[string]string{"Backup": "nightly", "Name": "web"})
	db := sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly", "Name": "db", "Service": "db"})
	solo := sim.SeedFleet("", "", 2, sel)
	sim.AddAutoScalingGroup(ec2sim.AutoScalingGroupSpec{Name: "web", Instances: web, MinSize: 1})
	sim.AddTargetGroup(ec2sim.TargetGroupSpec{Name: "web", Instances: web, DeregistrationDelay: 2 * time.Second, HealthyAfter: 2 * time.Second})
	h, err := p.Start(ctx, sim)
	if err != nil {
		return err
	}
	defer h.Close()
	go func() { <-ctx.Done(); h.Close() }()
	fn, err := h.StartRollout(ctx, p.RIE, r)
	if err != nil {
		return err
	}
	// The backup function of the same template: the one entry point of the
	// schedule, handing a waves policy's trigger to the workflow.
	backupFn, err := h.StartBackup(ctx, p.RIE, p.BackupBin, r.BackupEnv)
	if err != nil {
		return err
	}
	fmt.Printf("  state machine %s; the backup function starts its executions (%s)\n", localrun.StateMachineARN(r.StateMachineName), amibackup.WorkflowEnvVar)
	rows := []row{}
	for _, id := range web {
		rows = append(rows, row{id, "web (asg:web, tg:web)"})
	}
	for _, id := range db {
		rows = append(rows, row{id, "db (tag:Service=db)"})
	}
	for _, id := range solo {
		rows = append(rows, row{id, "stand-alone"})
	}
	night := func(title string, slot time.Time) error {
		step(title)
		sim.ResetCalls()
		tl := watch(sim, rows)
		in, _ := json.Marshal(map[string]string{"policy": "nightly", "time": slot.Format(time.RFC3339)})
		// Scheduler delivers at least once: twice here. The backup function
		// starts the execution named for the slot; the second delivery gets
		// the same execution, not a second run.
		var name string
		for _, what := range []string{"Scheduler delivers the trigger", "and delivers it again"} {
			out, _, err := backupFn.Invoke(ctx, in)
			if err != nil {
				return fmt.Errorf("backup function: %w", err)
			}
			var s summary
			json.Unmarshal(out, &s)
			if len(s.Done) != 1 {
				return fmt.Errorf("backup function did not start the execution: %s", out)
			}
			name = s.Done[0].ID
			var same []ec2sim.Execution
			for _, e := range sim.Executions() {
				if e.Name == name {
					same = append(same, e)
				}
			}
			fmt.Printf("  %-32s -> backup function -> StartExecution %s (executions of the slot: %d)\n", what, name, len(same))
			if len(same) != 1 {
				return fmt.Errorf("%d executions of the slot, want 1", len(same))
			}
		}
		var exec ec2sim.Execution
		for _, e := range sim.Executions() {
			if e.Name == name {
				exec = e
			}
		}
		short := 200 * time.Millisecond
		began := time.Now()
		res, err := eng.Run(ctx, def, []byte(exec.Input), sfnlocal.Options{
			Name: name, StateMachineName: r.StateMachineName,
			Functions:              map[string][]string{sfnlocal.LocalFunctionARN(ids[0]): {fn.URL}},
			WaitOverrides:          map[string]time.Duration{"Wait": short, "Wait to restore": short, "Wait to restore after error": short},
			RetryIntervalOverrides: map[string]time.Duration{"Step": short, "Restore": short, "Restore after error": short},
		})
		tl.stop()
		if err != nil {
			return err
		}
		status := ec2sim.ExecutionSucceeded
		if res.Status != sfnlocal.Succeeded {
			status = ec2sim.ExecutionFailed
		}
		sim.FinishExecution(exec.ARN, status)
		tl.print(rows)
		fmt.Printf("  execution %s in %s, %d Lambda invocations\n", res.Status, time.Since(began).Round(100*time.Millisecond), len(res.Invocations()))
		if msg := res.TaskError("Finish"); msg != "" {
			fmt.Printf("  finish: %s\n", msg)
		}
		fmt.Println("  most members unavailable at once per group:")
		worst := 0
		for _, g := range sim.Availability() {
			fmt.Printf("    %-24s %d of %d\n", g.Kind+":"+g.Name, g.MaxUnavailable, g.Members)
			worst = max(worst, g.MaxUnavailable)
		}
		if worst > 1 {
			return fmt.Errorf("a group had %d members down at once (maxUnavailable 1)", worst)
		}
		n := 0
		for _, im := range sim.Images("", "") {
			if im.Tags[tags.Time] == tags.FormatTime(slot) {
				n++
			}
		}
		fmt.Printf("  images of this slot: %d\n", n)
		return nil
	}
	slot := time.Now().UTC().Truncate(time.Minute)
	if err := night("Night 1: the schedule starts the workflow", slot.Add(-2*time.Minute)); err != nil {
		return err
	}
	sim.NeverBoots(web[0])
	return night("Night 2: "+web[0]+" will not boot after its reboot (healthTimeout 1m: this takes a minute)", slot.Add(-time.Minute))
}

type row struct{ id, what string }

// timeline samples each instance twice a second: '#' rebooting (not running
// with both checks ok), 'd' drained (carries the amibackup:drain tag: in
// Standby or deregistered), '.' in service.
type timeline struct {
	mu    sync.Mutex
	marks map[string][]byte
	done  chan struct{}
	wg    sync.WaitGroup
}

func watch(sim *ec2sim.Sim, rows []row) *timeline {
	tl := &timeline{marks: map[string][]byte{}, done: make(chan struct{})}
	tl.wg.Add(1)
	go func() {
		defer tl.wg.Done()
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			tl.mu.Lock()
			for _, r := range rows {
				in, _ := sim.Instance("", "", r.id)
				c := byte('.')
				switch {
				case in.State != "running" || in.InstanceStatus != "ok" || in.SystemStatus != "ok":
					c = '#'
				case in.Tags[drain.TagKey] != "":
					c = 'd'
				}
				tl.marks[r.id] = append(tl.marks[r.id], c)
			}
			tl.mu.Unlock()
			select {
			case <-tl.done:
				return
			case <-tick.C:
			}
		}
	}()
	return tl
}

func (tl *timeline) stop() { close(tl.done); tl.wg.Wait() }

func (tl *timeline) print(rows []row) {
	fmt.Println("  timeline, one mark per 0.5 s ('#' rebooting, 'd' drained, '.' in service):")
	for _, r := range rows {
		m := tl.marks[r.id]
		// Trim the quiet tail all rows share.
		fmt.Printf("    %-19s %-22s %s\n", r.id, r.what, strings.TrimRight(string(m), "."))
	}
}
