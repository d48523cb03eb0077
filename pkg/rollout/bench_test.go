package rollout_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/drain"
	"github.com/amibackup/amibackup/pkg/rollout"
	"github.com/amibackup/amibackup/pkg/waves"
)

// BenchmarkState10k measures the largest state the workflow carries for
// 10,000 instances (8,000 in 400 Auto Scaling groups of 1-40 behind a
// target group each, 2,000 ungrouped): the compressed plan, the progress
// and MaxInFlight instances out of service, each with its group and a
// target. Step Functions allows 256 KB per state.
func BenchmarkState10k(b *testing.B) {
	var ins []waves.Instance
	n := 0
	for g := 0; n < 8000; g++ {
		size := min(1+g%40, 8000-n)
		for range size {
			ins = append(ins, waves.Instance{ID: fmt.Sprintf("i-%017x", n), Tags: map[string]string{waves.ASGTag: fmt.Sprintf("asg-%03d", g)},
				TargetGroups: []string{fmt.Sprintf("arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/tg-%03d/%016x", g, g)}})
			n++
		}
	}
	for ; n < 10000; n++ {
		ins = append(ins, waves.Instance{ID: fmt.Sprintf("i-%017x", n)})
	}
	var size int
	for b.Loop() {
		plan, err := waves.New(ins, &config.Availability{}, waves.Options{})
		if err != nil {
			b.Fatal(err)
		}
		enc, err := plan.Encode()
		if err != nil {
			b.Fatal(err)
		}
		st := &rollout.State{V: 1, Policy: "nightly", Slot: "2026-11-24T03:00:00Z", Trigger: "schedule",
			Run: "prod/nightly/2026-11-24T03:00:00Z", Plan: base64.StdEncoding.EncodeToString(enc), PlanText: plan.String(),
			Progress: waves.NewProgress(plan, time.Unix(0, 0))}
		var slots []int
		for i := range rollout.MaxInFlight {
			slots = append(slots, i)
			s := plan.Slots[i]
			st.Taken = append(st.Taken, drain.Taken{InstanceID: s.ID, AutoScalingGroup: ins[0].Tags[waves.ASGTag],
				Targets: []drain.Target{{Group: ins[0].TargetGroups[0], Port: 443}}})
		}
		if err := st.Progress.Started(plan, slots, time.Unix(3600, 0)); err != nil {
			b.Fatal(err)
		}
		for i := range plan.Slots {
			st.TargetGroups = append(st.TargetGroups, fmt.Sprintf("arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/tg-%03d/%016x", i%400, i%400))
			if len(st.TargetGroups) == 400 {
				break
			}
		}
		raw, err := json.Marshal(rollout.Result{State: st})
		if err != nil {
			b.Fatal(err)
		}
		size = len(raw)
	}
	b.ReportMetric(float64(size)/1024, "KB/state")
	if size > 256*1024 {
		b.Fatalf("state %d bytes: over Step Functions' 256 KB", size)
	}
}
