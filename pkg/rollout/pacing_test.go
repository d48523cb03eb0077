package rollout

import (
	"fmt"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/waves"
)

func pacingPlan(t *testing.T, sizes []int, ungrouped int) *waves.Plan {
	t.Helper()
	var ins []waves.Instance
	for g, n := range sizes {
		for m := range n {
			ins = append(ins, waves.Instance{ID: fmt.Sprintf("i-%08x%09x", g, m), Tags: map[string]string{waves.ASGTag: fmt.Sprintf("asg-%d", g)}})
		}
	}
	for i := range ungrouped {
		ins = append(ins, waves.Instance{ID: fmt.Sprintf("i-ffffffff%09x", i)})
	}
	p, err := waves.New(ins, nil, waves.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStepWait(t *testing.T) {
	t0 := time.Unix(0, 0)
	tests := []struct {
		name      string
		sizes     []int
		ungrouped int
		checks    int
		halt      bool // the largest group's first member did not come back
		want      int
	}{
		{"chain of 40 at the start: 12,000 s over 2,400 checks", []int{40, 3}, 10, 0, false, 5},
		{"chain of 40, half the budget spent", []int{40, 3}, 10, 1200, false, 10},
		{"short chain: the floor", []int{3}, 2, 0, false, MinStepWait},
		{"budget spent: the longest wait", []int{40}, 0, waves.MaxChecks, false, MaxStepWait},
		{"bucket bound: 10,050 ungrouped take 2,000 s", nil, 10050, 2000, false, 5},
		{"halted group's members are not waited for", []int{40, 2}, 0, 0, true, MinStepWait},
	}
	for _, tt := range tests {
		p := pacingPlan(t, tt.sizes, tt.ungrouped)
		pr := waves.NewProgress(p, t0)
		if tt.halt {
			first := p.Groups[0].Members[0]
			i, _ := p.Slot(first)
			if err := pr.Started(p, []int{i}, t0); err != nil {
				t.Fatal(err)
			}
			if err := pr.Observe(p, []waves.Observation{{ID: first, Reason: "stopped"}}, t0.Add(time.Hour), time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if got := stepWait(p, pr, tt.checks); got != tt.want {
			t.Errorf("%s: %d s, want %d s", tt.name, got, tt.want)
		}
	}
}

// TestStepWaitStaysInHistory: a run five times slower than the estimate
// (25 minutes per member instead of 5; a fixed 15 s wait would need 4,000
// checks, 36,000 history events) stays inside Step Functions' 25,000
// events (9 per check): the waits grow as the budget runs low.
func TestStepWaitStaysInHistory(t *testing.T) {
	p := pacingPlan(t, []int{40}, 0)
	pr := waves.NewProgress(p, time.Unix(0, 0))
	const per = 1500 * time.Second
	var now time.Duration
	checks := 0
	for next := 0; next < 40; {
		checks++
		for now >= time.Duration(next+1)*per && next < 40 { // member next is back
			pr.S = pr.S[:next] + string(waves.Healthy) + pr.S[next+1:]
			next++
		}
		if checks > 10*waves.MaxChecks {
			t.Fatal("no end")
		}
		now += time.Duration(stepWait(p, pr, checks)) * time.Second
	}
	if events := 9*checks + 20; events >= 25000 {
		t.Errorf("%d checks for a run of %v: %d history events", checks, now, events)
	}
	t.Logf("%d checks over %v", checks, now)
}

// TestPaceStarts: members imaged at once (ungrouped) start only while the
// estimated CreateImage bucket has tokens, members that drain (Auto Scaling
// groups) while the drain calls' bucket has; both refill by the second up
// to their size.
func TestPaceStarts(t *testing.T) {
	p := pacingPlan(t, []int{2, 2, 2}, 100)
	st := &State{Progress: waves.NewProgress(p, time.Unix(0, 0))}
	ready, err := st.Progress.Ready(p, 400, p.Waves-1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name                  string
		ciLeft, drLeft        int
		prev, now             int64
		drains                bool
		ci, dr                int
		grouped, atOnce, took int
	}{
		{"full buckets", 50, 20, 0, 0, true, 50, 20, 3, 50, 3},
		{"empty, 2 s later", 0, 0, 10, 12, true, 10, 8, 3, 10, 3},
		{"refill capped at the bucket", 3, 1, 0, 100, true, 50, 20, 3, 50, 3},
		{"drain bucket nearly empty", 50, 2, 10, 10, true, 50, 2, 2, 50, 2},
		{"both empty now", 0, 0, 10, 10, true, 0, 0, 0, 0, 0},
		{"no drain: every member imaged at once", 5, 0, 10, 10, false, 5, 0, 0, 5, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st.CITokens, st.DrainTokens, st.Prev = tc.ciLeft, tc.drLeft, tc.prev
			ci, dr := ciTokens(st, tc.now), drainTokens(st, tc.now)
			if ci != tc.ci || dr != tc.dr {
				t.Fatalf("tokens %d and %d, want %d and %d", ci, dr, tc.ci, tc.dr)
			}
			out, took := paceStarts(p, st, tc.drains, ready, ci, dr)
			grouped, atOnce := 0, 0
			for _, i := range out {
				if p.Groups[p.Slots[i].Group].Key == "" || !tc.drains {
					atOnce++
				} else {
					grouped++
				}
			}
			if grouped != tc.grouped || atOnce != tc.atOnce || took != tc.took {
				t.Errorf("started %d that drain (took %d tokens) and %d imaged at once, want %d (%d) and %d", grouped, took, atOnce, tc.grouped, tc.took, tc.atOnce)
			}
		})
	}
}

// TestHeldBack: the groups that drain start spread over one reboot in plan
// order (largest first, so the longest chain starts at once), none by more
// than half its slack against the longest chain; groups imaged at once
// (ungrouped) are never held; after one reboot nothing is.
func TestHeldBack(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
		want  []int64 // per plan group, the first second it is not held
	}{
		// 8 groups that drain: 300 s / 8 apart; 3 ungrouped: never held.
		{"spread over the reboot", []int{40, 39, 39, 20, 10, 5, 1, 1}, []int64{0, 37, 75, 112, 150, 187, 225, 262, 0, 0, 0}},
		// 39s have one reboot of slack: none waits more than 150 s.
		{"slack caps the offset", []int{40, 39, 39, 39, 39, 39, 20}, []int64{0, 42, 85, 128, 150, 150, 257, 0, 0, 0}},
		{"equal chains: nobody waits", []int{3, 3, 3}, []int64{0, 0, 0, 0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pacingPlan(t, tt.sizes, 3)
			st := &State{Progress: waves.NewProgress(p, time.Unix(0, 0))}
			free := map[int]int64{}
			for now := int64(0); now <= waves.DefaultReboot; now++ {
				held := heldBack(p, st, true, now)
				if now == waves.DefaultReboot && held != nil {
					t.Fatalf("groups still held after one reboot: %v", held)
				}
				for g := range p.Groups {
					if _, ok := free[g]; !ok && (held == nil || !held[g]) {
						free[g] = now
					}
				}
			}
			for g, grp := range p.Groups {
				if free[g] != tt.want[g] {
					t.Errorf("group %d (%q, %d members): free at %d s, want %d s", g, grp.Key, len(grp.Members), free[g], tt.want[g])
				}
			}
			// Without drains every group is imaged at once: nothing is held.
			if held := heldBack(p, st, false, 0); held != nil {
				t.Errorf("held without drains: %v", held)
			}
		})
	}
}

// TestFullDrainBits: the hex bitset of target groups that drain fully, and
// a group drains fully only when all its target groups do.
func TestFullDrainBits(t *testing.T) {
	var hex string
	for _, k := range []int{0, 5, 6, 13} {
		hex = setBit(hex, k)
	}
	if hex != "1602" {
		t.Errorf("bits 0, 5, 6, 13: %q, want %q", hex, "1602")
	}
	for k := range 20 {
		want := k == 0 || k == 5 || k == 6 || k == 13
		if bit(hex, k) != want {
			t.Errorf("bit %d: %v, want %v", k, !want, want)
		}
	}
	st := &State{TargetGroups: []string{"a", "b", "c"}, GroupTargets: map[int][]int{0: {0, 2}, 1: {1}}}
	learnFullDrain(st, 0)
	if !drainsFully(st, 0) || drainsFully(st, 1) || drainsFully(st, 2) {
		t.Errorf("after group 0 drained fully (%q): group 0 %v, 1 %v, 2 (no target groups) %v", st.TGFull, drainsFully(st, 0), drainsFully(st, 1), drainsFully(st, 2))
	}
	st.GroupTargets[1] = []int{1, 2}
	if drainsFully(st, 1) {
		t.Error("a group with one target group not known to drain fully drains fully")
	}
}
