package rollout_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/backup"
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

// TestStatePeak10k: start's estimate of the peak state (checkPeak) accepts
// the 10,000-instance fleet of BenchmarkState10k (the scale the workflow is
// measured at), and is at least the state that fleet reaches with
// MaxInFlight instances out of service.
func TestStatePeak10k(t *testing.T) {
	var ins []waves.Instance
	var planned []backup.Instance
	regs := map[string][]drain.Registration{}
	n := 0
	for g := 0; n < 8000; g++ {
		for range min(1+g%40, 8000-n) {
			id := fmt.Sprintf("i-%017x", n)
			tg := fmt.Sprintf("arn:aws:elasticloadbalancing:eu-central-1:123456789012:targetgroup/tg-%03d/%016x", g, g)
			tags := map[string]string{waves.ASGTag: fmt.Sprintf("asg-%03d", g)}
			ins = append(ins, waves.Instance{ID: id, Tags: tags, TargetGroups: []string{tg}})
			planned = append(planned, backup.Instance{ID: id, Tags: tags})
			regs[id] = []drain.Registration{{Target: drain.Target{Group: tg, Port: 443}}}
			n++
		}
	}
	for ; n < 10000; n++ {
		id := fmt.Sprintf("i-%017x", n)
		ins = append(ins, waves.Instance{ID: id})
		planned = append(planned, backup.Instance{ID: id})
	}
	plan, err := waves.New(ins, &config.Availability{}, waves.Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := plan.Encode()
	st := &rollout.State{V: 1, Policy: "nightly", Slot: "2026-11-24T03:00:00Z", Trigger: "schedule",
		Run: "prod/nightly/2026-11-24T03:00:00Z", Plan: base64.StdEncoding.EncodeToString(enc), PlanText: plan.String(),
		Progress: waves.NewProgress(plan, time.Unix(0, 0))}
	if err := rollout.CheckPeak(st, plan, planned, regs); err != nil {
		t.Fatalf("the measured scale is rejected: %v", err)
	}
	// The estimate, read from the error at a limit of 1 byte.
	defer rollout.SetMaxResultBytes(1)()
	err = rollout.CheckPeak(st, plan, planned, regs)
	var peak, start int
	if err == nil {
		t.Fatal("no error at a 1-byte limit")
	}
	fmt.Sscanf(err.Error()[strings.Index(err.Error(), "up to "):], "up to %d bytes (%d at start", &peak, &start)
	// What the state holds with MaxInFlight out of service, as the
	// benchmark builds it.
	var slots []int
	for i := range rollout.MaxInFlight {
		slots = append(slots, i)
		s := plan.Slots[i]
		tk := drain.Taken{InstanceID: s.ID}
		if in := planned[slices.IndexFunc(planned, func(in backup.Instance) bool { return in.ID == s.ID })]; in.Tags != nil {
			tk.AutoScalingGroup = in.Tags[waves.ASGTag]
		}
		for _, rg := range regs[s.ID] {
			tk.Targets = append(tk.Targets, rg.Target)
		}
		st.Taken = append(st.Taken, tk)
		st.Draining = append(st.Draining, i)
	}
	if err := st.Progress.Started(plan, slots, time.Unix(3600, 0)); err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(rollout.Result{State: st})
	t.Logf("10,000 instances: start state %d bytes, estimated peak %d bytes, with %d in flight %d bytes; limit %d", start, peak, rollout.MaxInFlight, len(raw), rollout.MaxResultBytes)
	if peak < len(raw) || peak > rollout.MaxResultBytes {
		t.Errorf("estimated peak %d bytes: below the state with %d in flight (%d) or over the limit %d", peak, rollout.MaxInFlight, len(raw), rollout.MaxResultBytes)
	}
}
