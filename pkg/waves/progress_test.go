package waves

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)

func mustReady(t *testing.T, pr *Progress, p *Plan, limit, through int) []string {
	t.Helper()
	slots, err := pr.Ready(p, limit, through)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(slots))
	for i, s := range slots {
		ids[i] = p.Slots[s].ID
	}
	return ids
}

func start(t *testing.T, pr *Progress, p *Plan, ids []string, at time.Time) {
	t.Helper()
	var slots []int
	for _, id := range ids {
		s, _ := p.Slot(id)
		slots = append(slots, s)
	}
	if err := pr.Started(p, slots, at); err != nil {
		t.Fatal(err)
	}
}

func TestProgressRollingAndHalt(t *testing.T) {
	// a: 3 members one at a time, b: 2 members, 1 ungrouped.
	p, err := New(fleet(map[string]int{"a": 3, "b": 2}, 1), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pr := NewProgress(p, t0)
	rolling := p.Waves - 1
	if got := mustReady(t, pr, p, 100, rolling); fmt.Sprint(got) != "[i-a000 i-b000 i-u000]" {
		t.Fatalf("first ready %v", got)
	}
	if got := mustReady(t, pr, p, 2, rolling); fmt.Sprint(got) != "[i-a000 i-b000]" {
		t.Fatalf("limit 2: %v", got)
	}
	start(t, pr, p, []string{"i-a000", "i-b000", "i-u000"}, t0)
	// Nothing more while a and b have a member rebooting.
	if got := mustReady(t, pr, p, 100, rolling); len(got) != 0 {
		t.Fatalf("ready while groups busy: %v", got)
	}
	timeout := 15 * time.Minute
	// Not healthy yet, within the timeout: still rebooting, nothing halts.
	if err := pr.Observe(p, []Observation{{ID: "i-a000", Reason: "status checks initializing"}, {ID: "i-b000", Healthy: true}}, t0.Add(5*time.Minute), timeout); err != nil {
		t.Fatal(err)
	}
	if got := mustReady(t, pr, p, 100, rolling); fmt.Sprint(got) != "[i-b001]" {
		t.Fatalf("after b000 healthy: %v", got)
	}
	start(t, pr, p, []string{"i-b001"}, t0.Add(5*time.Minute))
	// The timeout passes for a000: group a halts, its later members are
	// skipped; group b and the ungrouped instance go on.
	if err := pr.Observe(p, []Observation{{ID: "i-a000", Reason: "target unhealthy: Target.Timeout"}, {ID: "i-u000", Healthy: true}}, t0.Add(15*time.Minute), timeout); err != nil {
		t.Fatal(err)
	}
	if got := pr.InFlight(p); fmt.Sprint(got) != "[i-b001]" {
		t.Errorf("in flight %v", got)
	}
	if got := mustReady(t, pr, p, 100, rolling); len(got) != 0 {
		t.Errorf("halted group still ready: %v", got)
	}
	halts := pr.Halts(p)
	if len(halts) != 1 || halts[0].Group != "asg:a" || halts[0].Instance != "i-a000" || halts[0].Skipped != 2 ||
		!strings.Contains(halts[0].Reason, "Target.Timeout") || !strings.Contains(halts[0].Reason, "15m0s") {
		t.Errorf("halts %+v", halts)
	}
	if pr.Done() {
		t.Error("done with b001 rebooting")
	}
	if err := pr.Observe(p, []Observation{{ID: "i-b001", Healthy: true}}, t0.Add(10*time.Minute), timeout); err != nil {
		t.Fatal(err)
	}
	if !pr.Done() || pr.Count(Healthy) != 3 || pr.Count(Unhealthy) != 1 || pr.Count(Skipped) != 2 {
		t.Errorf("final %q", pr.S)
	}
	// The state round-trips through JSON (the execution's state).
	var back Progress
	b, _ := json.Marshal(pr)
	if err := json.Unmarshal(b, &back); err != nil || back.S != pr.S || len(back.Problems) != 1 {
		t.Errorf("round trip %s: %v", b, err)
	}
}

func TestProgressBarrierAndErrors(t *testing.T) {
	p, _ := New(fleet(map[string]int{"a": 2, "b": 1}, 0), nil, Options{})
	pr := NewProgress(p, t0)
	if got := mustReady(t, pr, p, 100, pr.FirstOpenWave(p)); fmt.Sprint(got) != "[i-a000 i-b000]" {
		t.Fatalf("wave 0: %v", got)
	}
	start(t, pr, p, []string{"i-a000", "i-b000"}, t0)
	pr.Observe(p, []Observation{{ID: "i-a000", Healthy: true}}, t0.Add(time.Minute), time.Hour)
	// Barrier: a001 waits until all of wave 0 (b000) is back.
	if got := mustReady(t, pr, p, 100, pr.FirstOpenWave(p)); len(got) != 0 {
		t.Fatalf("barrier let %v start", got)
	}
	if got := mustReady(t, pr, p, 100, p.Waves-1); fmt.Sprint(got) != "[i-a001]" {
		t.Fatalf("rolling: %v", got)
	}
	// A failed CreateImage is reported; the group goes on.
	if err := pr.Fail(p, "i-b000", "IncorrectState: instance is stopping"); err != nil {
		t.Fatal(err)
	}
	if got := mustReady(t, pr, p, 100, pr.FirstOpenWave(p)); fmt.Sprint(got) != "[i-a001]" {
		t.Fatalf("after fail: %v", got)
	}
	if len(pr.Halts(p)) != 0 || len(pr.Problems) != 1 || pr.Count(Errored) != 1 {
		t.Errorf("problems %+v halts %+v", pr.Problems, pr.Halts(p))
	}
	// Stale, foreign and repeated answers are errors and change nothing.
	before := pr.S
	for _, o := range []Observation{{ID: "i-a000", Healthy: true}, {ID: "i-zzz", Healthy: true}, {ID: "i-a001", Healthy: true}} {
		if err := pr.Observe(p, []Observation{o}, t0, time.Hour); err == nil {
			t.Errorf("observation of %s accepted", o.ID)
		}
	}
	if err := pr.Started(p, []int{0}, t0); err == nil {
		t.Error("started a slot twice")
	}
	if err := pr.Fail(p, "i-a000", "x"); err == nil {
		t.Error("failed a healthy instance")
	}
	if pr.S != before {
		t.Errorf("rejected calls changed the state: %q -> %q", before, pr.S)
	}
	// A progress never applies to another plan, even one of the same size
	// (an instance replaced between two derivations of the plan).
	replaced := fleet(map[string]int{"a": 2, "b": 1}, 0)
	replaced[0].ID = "i-a999"
	for _, ins := range [][]Instance{fleet(map[string]int{"a": 5}, 0), replaced} {
		other, _ := New(ins, nil, Options{})
		if _, err := pr.Ready(other, 1, 0); err == nil || !strings.Contains(err.Error(), "plan changed") {
			t.Errorf("progress of another plan: %v", err)
		}
		if err := pr.Observe(other, nil, t0, time.Hour); err == nil {
			t.Error("observe with another plan")
		}
	}
	long := strings.Repeat("é", MaxReason)
	pr2 := NewProgress(p, t0)
	pr2.Fail(p, "i-b000", long)
	if r := pr2.Problems[0].Reason; len(r) > MaxReason || !strings.HasPrefix(long, r) {
		t.Errorf("reason not clipped on a character boundary: %d bytes", len(r))
	}
}

// sim runs a plan against a modelled EC2: CreateImage through the token
// bucket, each instance out of service for reboot after its call (or never
// back when bad says so), the workflow's loop of one Lambda task (observe,
// start what is ready for at most issueWindow) and a Wait of tick.
type sim struct {
	reboot, tick, issueWindow, taskOverhead time.Duration
	barrier                                 bool
	bad                                     func(id string) bool
	timeout                                 time.Duration
	check                                   func(pr *Progress) // invariant after every step
}

type simResult struct {
	duration         time.Duration
	ticks            int // Lambda invocations of the loop task
	historyEvents    int
	transitions      int
	peakState        int // bytes of the Progress JSON
	maxInFlightGroup int
	pr               *Progress
}

// Step Functions history per loop iteration (HistoryEvent types, Step
// Functions API reference): Task: TaskStateEntered, TaskScheduled,
// TaskStarted, TaskSucceeded, TaskStateExited; Choice: Entered, Exited;
// Wait: Entered, Exited. Plus ExecutionStarted/Succeeded and a final state.
const (
	eventsPerTick      = 9
	transitionsPerTick = 3
	eventsFixed        = 4
)

func (m sim) run(p *Plan) (simResult, error) {
	const rate = CreateImageRefillPerSecond
	var res simResult
	pr := NewProgress(p, t0)
	now := 0.0 // seconds since t0
	tokens, last := float64(CreateImageBucket), 0.0
	refill := func() {
		tokens = min(CreateImageBucket, tokens+(now-last)*rate)
		last = now
	}
	started := map[string]float64{}
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	for !pr.Done() {
		res.ticks++
		if res.ticks > 1_000_000 {
			return res, fmt.Errorf("no progress")
		}
		now += m.taskOverhead.Seconds()
		var obs []Observation
		for _, id := range pr.InFlight(p) {
			ok := !m.bad(id) && now >= started[id]+m.reboot.Seconds()
			obs = append(obs, Observation{ID: id, Healthy: ok, Reason: "status checks initializing"})
		}
		if err := pr.Observe(p, obs, at(now), m.timeout); err != nil {
			return res, err
		}
		through := p.Waves - 1
		if m.barrier {
			through = pr.FirstOpenWave(p)
		}
		ready, err := pr.Ready(p, len(p.Slots), through)
		if err != nil {
			return res, err
		}
		end := now + m.issueWindow.Seconds()
		var batch []int
		batchAt := now
		flush := func() error {
			err := pr.Started(p, batch, at(batchAt))
			batch = batch[:0]
			return err
		}
		for _, s := range ready {
			refill()
			if tokens < 1 {
				wait := (1 - tokens) / rate
				if now+wait > end {
					break
				}
				now += wait
				refill()
			}
			tokens--
			if int64(now) != int64(batchAt) && len(batch) > 0 {
				if err := flush(); err != nil {
					return res, err
				}
			}
			if len(batch) == 0 {
				batchAt = now
			}
			batch = append(batch, s)
			started[p.Slots[s].ID] = now
		}
		if err := flush(); err != nil {
			return res, err
		}
		if m.check != nil {
			m.check(pr)
		}
		b, _ := json.Marshal(pr)
		res.peakState = max(res.peakState, len(b))
		if pr.Done() {
			break
		}
		now += m.tick.Seconds()
	}
	res.duration = time.Duration(now * float64(time.Second))
	res.historyEvents = eventsFixed + eventsPerTick*res.ticks
	res.transitions = 2 + transitionsPerTick*res.ticks
	res.pr = pr
	return res, nil
}

// TestRunProperties runs random fleets with random unhealthy instances
// through the simulated workflow, rolling and barrier: no group ever has
// more than Max rebooting, every instance ends exactly once, members are
// skipped only in a group with an unhealthy member and only after every
// member that started.
func TestRunProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for run := range 60 {
		ins := randomFleet(r, 1+r.IntN(200))
		a := randomAvailability(r)
		p, err := New(ins, a, Options{WaveCap: []int{0, 1 + r.IntN(30)}[r.IntN(2)]})
		if err != nil {
			t.Fatal(err)
		}
		badShare := r.Float64() * 0.2
		bad := map[string]bool{}
		for _, in := range ins {
			bad[in.ID] = r.Float64() < badShare
		}
		m := sim{reboot: 5 * time.Minute, tick: 15 * time.Second, issueWindow: time.Minute, taskOverhead: time.Second,
			barrier: run%2 == 1, bad: func(id string) bool { return bad[id] }, timeout: 15 * time.Minute}
		m.check = func(pr *Progress) {
			busy := make([]int, len(p.Groups))
			for i, s := range p.Slots {
				if pr.S[i] == Rebooting {
					busy[s.Group]++
				}
			}
			for g, n := range busy {
				if n > p.Groups[g].Max {
					t.Fatalf("run %d: group %q has %d rebooting, max %d", run, p.Groups[g].Key, n, p.Groups[g].Max)
				}
			}
		}
		res, err := m.run(p)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		pr := res.pr
		if len(pr.S) != len(ins) || strings.ContainsAny(pr.S, ".r") {
			t.Fatalf("run %d: final %q", run, pr.S)
		}
		for g := range p.Groups {
			lastStarted, firstSkipped, unhealthy := -1, len(p.Slots), false
			for i, s := range p.Slots {
				if s.Group != g {
					continue
				}
				switch pr.S[i] {
				case Skipped:
					firstSkipped = min(firstSkipped, i)
				case Unhealthy:
					unhealthy = true
					lastStarted = i
				case Healthy:
					lastStarted = i
					if bad[s.ID] {
						t.Fatalf("run %d: bad %s healthy", run, s.ID)
					}
				}
			}
			if firstSkipped < len(p.Slots) && (!unhealthy || firstSkipped < lastStarted) {
				t.Fatalf("run %d: group %q skipped slot %d (unhealthy member %v, last started %d)", run, p.Groups[g].Key, firstSkipped, unhealthy, lastStarted)
			}
		}
		if want := pr.Count(Unhealthy); len(pr.Halts(p)) != want {
			t.Fatalf("run %d: %d halts for %d unhealthy", run, len(pr.Halts(p)), want)
		}
	}
}

// TestProgressHalt: a member that leaves its group short (terminated, not
// in service) halts its group at once, whether in flight or pending: no
// later member of the group is ready, the halt is reported with the
// reason; other groups go on; a member already done cannot halt.
func TestProgressHalt(t *testing.T) {
	p, err := New(fleet(map[string]int{"a": 3, "b": 2}, 0), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pr := NewProgress(p, t0)
	rolling := p.Waves - 1
	start(t, pr, p, []string{"i-a000", "i-b000"}, t0)
	if err := pr.Halt(p, "i-a000", "terminated during the run"); err != nil {
		t.Fatal(err)
	}
	if got := mustReady(t, pr, p, 100, rolling); len(got) != 0 {
		t.Fatalf("ready %v: a is halted, b busy", got)
	}
	if err := pr.Observe(p, []Observation{{ID: "i-b000", Healthy: true}}, t0.Add(time.Minute), time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := mustReady(t, pr, p, 100, rolling); fmt.Sprint(got) != "[i-b001]" {
		t.Fatalf("ready %v, want only b's next member", got)
	}
	h := pr.Halts(p)
	if len(h) != 1 || h[0].Instance != "i-a000" || h[0].Skipped != 2 || h[0].Reason != "terminated during the run" {
		t.Errorf("halts %+v", h)
	}
	if err := pr.Halt(p, "i-b000", "x"); err == nil {
		t.Error("a healthy member halted its group")
	}
	if err := pr.Halt(p, "i-zzz", "x"); err == nil {
		t.Error("unknown instance accepted")
	}
}

// TestReadyExcept: a held-back group's members neither start nor take the
// places (limit) of the groups after it; a wrong-sized hold is an error.
func TestReadyExcept(t *testing.T) {
	p, err := New(fleet(map[string]int{"a": 3, "b": 2, "c": 1}, 1), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pr := NewProgress(p, t0)
	held := make([]bool, len(p.Groups))
	held[0] = true // a: the largest, first in plan order
	tests := []struct {
		name  string
		limit int
		held  []bool
		want  string
	}{
		{"none held, limit 2", 2, nil, "[i-a000 i-b000]"},
		{"a held, limit 2: b and c take the places", 2, held, "[i-b000 i-c000]"},
		{"a held, no limit", 100, held, "[i-b000 i-c000 i-u000]"},
	}
	for _, tt := range tests {
		slots, err := pr.ReadyExcept(p, tt.limit, p.Waves-1, tt.held)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range slots {
			ids = append(ids, p.Slots[s].ID)
		}
		if fmt.Sprint(ids) != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, ids, tt.want)
		}
	}
	if _, err := pr.ReadyExcept(p, 1, p.Waves-1, []bool{true}); err == nil {
		t.Error("a hold for 1 of 4 groups was accepted")
	}
}
