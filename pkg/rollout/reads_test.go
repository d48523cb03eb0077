package rollout

import (
	"fmt"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/waves"
)

// TestStepBudget: looks at groups off the longest chain are admitted while
// the estimated buckets have tokens, a target group read already this step
// is free, a look bigger than the whole bucket is admitted only from a full
// one (so it cannot wait forever), the groups within one reboot of the most
// work left are always admitted, and the estimates refill by the second up
// to their size.
func TestStepBudget(t *testing.T) {
	tg := func(n int) []string {
		var out []string
		for k := range n {
			out = append(out, fmt.Sprintf("tg-%d", k))
		}
		return out
	}
	// Groups 0 (3 members), 1 (2), 2 (1): 0 and 1 are within one reboot of
	// the most work left (3), 2 is not.
	p := pacingPlan(t, []int{3, 2, 1}, 0)
	type look struct {
		group   int
		arns    []string
		returns int
		want    bool
	}
	tests := []struct {
		name              string
		reads, rets, prev int
		now               int64
		looks             []look
		wantReads         int
		wantRets          int
	}{
		{"refill since the previous step, capped", 0, 0, 0, 100, []look{{2, tg(40), 40, true}}, 0, 0},
		{"a read already made is free", 5, 0, 10, 10, []look{{2, []string{"a", "b"}, 0, true}, {2, []string{"a"}, 0, true},
			{2, []string{"b", "c"}, 0, true}, {2, []string{"d", "e", "f"}, 0, false}}, 2, 0},
		{"2 s of refill", 0, 0, 10, 12, []look{{2, tg(15), 16, true}, {2, tg(20)[15:], 0, true}, {2, []string{"x"}, 0, false}, {2, nil, 1, false}}, 0, 0},
		{"the longest chains always", 0, 0, 10, 10, []look{{2, []string{"x"}, 0, false}, {0, []string{"x"}, 1, true}, {1, []string{"y"}, 1, true}}, 0, 0},
		{"bigger than the bucket: only from a full one", 40, 40, 0, 0, []look{{2, tg(41), 0, true}, {2, []string{"y"}, 0, false}}, 0, 40},
		{"bigger than the bucket, not full: waits", 39, 0, 0, 0, []look{{2, tg(41), 0, false}, {2, []string{"y"}, 0, true}}, 38, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &State{Progress: waves.NewProgress(p, time.Unix(0, 0)), ReadTokens: tt.reads, ReturnTokens: tt.rets, Prev: int64(tt.prev)}
			b := newStepBudget(st, p, tt.now)
			for k, lk := range tt.looks {
				if got := b.admit(lk.group, lk.arns, lk.returns); got != lk.want {
					t.Errorf("look %d (group %d, %d target groups, %d put-backs): admitted %v, want %v", k, lk.group, len(lk.arns), lk.returns, got, lk.want)
				}
			}
			b.save(st)
			if st.ReadTokens != tt.wantReads || st.ReturnTokens != tt.wantRets {
				t.Errorf("left %d reads and %d put-backs, want %d and %d", st.ReadTokens, st.ReturnTokens, tt.wantReads, tt.wantRets)
			}
		})
	}
}

// TestByWorkLeft: the members of the groups with the most reboots still to
// come are looked at first; a group's members in flight count, finished
// and halted ones do not.
func TestByWorkLeft(t *testing.T) {
	p := pacingPlan(t, []int{4, 3, 2}, 1) // groups 0 (4), 1 (3), 2 (2), 3 (ungrouped)
	pr := waves.NewProgress(p, time.Unix(0, 0))
	b := []byte(pr.S)
	for i, s := range p.Slots {
		switch {
		case s.Group == 0 && p.Groups[0].Members[0] != s.ID && p.Groups[0].Members[3] != s.ID:
			b[i] = waves.Healthy // group 0: 2 done, 1 in flight below, 1 pending: 2 left
		case s.Group == 0 && p.Groups[0].Members[0] == s.ID:
			b[i] = waves.Rebooting
		}
	}
	pr.S = string(b)
	st := &State{Progress: pr}
	rb := newStepBudget(st, p, 0)
	first := func(g int) int { i, _ := p.Slot(p.Groups[g].Members[0]); return i }
	slots := []int{first(3), first(2), first(0), first(1)}
	rb.byWorkLeft(p, slots)
	var groups []int
	for _, i := range slots {
		groups = append(groups, p.Slots[i].Group)
	}
	// Left: group 1 3, group 0 2, group 2 2 (plan order breaks the tie), ungrouped 1.
	if fmt.Sprint(groups) != "[1 0 2 3]" {
		t.Errorf("order by work left: groups %v, want [1 0 2 3]", groups)
	}
}
