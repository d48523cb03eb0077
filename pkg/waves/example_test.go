package waves_test

import (
	"fmt"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/waves"
)

// The loop a workflow's Lambda task runs on every check: observe the
// instances in flight, start what is ready, keep the Progress in the state.
func Example() {
	web := map[string]string{waves.ASGTag: "web"}
	instances := []waves.Instance{
		{ID: "i-0000000000000000a", Tags: web}, {ID: "i-0000000000000000b", Tags: web},
		{ID: "i-0000000000000000c"},
	}
	var avail *config.Availability // no section: the safe defaults
	plan, _ := waves.New(instances, avail, waves.Options{})
	fmt.Println(plan)

	t0 := time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)
	pr := waves.NewProgress(plan, t0)
	now := t0
	for !pr.Done() {
		var obs []waves.Observation
		for _, id := range pr.InFlight(plan) { // the task checks each one's health
			obs = append(obs, waves.Observation{ID: id, Healthy: id != "i-0000000000000000a"})
		}
		_ = pr.Observe(plan, obs, now, avail.Timeout())
		ready, _ := pr.Ready(plan, waves.CreateImageBucket, plan.Waves-1)
		for _, s := range ready { // drain, CreateImage(NoReboot=false)
			fmt.Println(now.Format("15:04"), "start", plan.Slots[s].ID)
		}
		_ = pr.Started(plan, ready, now)
		now = now.Add(5 * time.Minute) // the workflow waits plan.CheckInterval(...)
	}
	for _, h := range pr.Halts(plan) {
		fmt.Printf("halted %s: %s (%d skipped)\n", h.Group, h.Reason, h.Skipped)
	}
	// Output:
	// 3 instances in 1 groups (1 ungrouped, largest 2) in 2 waves (lower bound 2)
	// 03:00 start i-0000000000000000a
	// 03:00 start i-0000000000000000c
	// halted asg:web: not healthy 15m0s after it was started (drain and CreateImage; healthTimeout 15m0s): not healthy (1 skipped)
}
