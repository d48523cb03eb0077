package rollout

import (
	"fmt"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/waves"
)

// TestReadBudget: looks are admitted while the estimated bucket has tokens,
// a target group read already this step is free, a look bigger than the
// whole bucket is admitted only from a full one (so it cannot wait forever),
// and the estimate refills at 10 per second up to 40.
func TestReadBudget(t *testing.T) {
	tg := func(n int) []string {
		var out []string
		for k := range n {
			out = append(out, fmt.Sprintf("tg-%d", k))
		}
		return out
	}
	p := pacingPlan(t, []int{3, 2, 1}, 0)
	tests := []struct {
		name       string
		left, prev int64
		now        int64
		looks      [][]string
		want       []bool
		remain     int
	}{
		{"refill since the previous step, capped", 0, 0, 100, [][]string{tg(40)}, []bool{true}, 0},
		{"a read already made is free", 5, 10, 10, [][]string{{"a", "b"}, {"a"}, {"b", "c"}, {"d", "e", "f"}}, []bool{true, true, true, false}, 2},
		{"2 s of refill", 0, 10, 12, [][]string{tg(15), tg(20)[15:], {"x"}}, []bool{true, true, false}, 0},
		{"bigger than the bucket: only from a full one", 40, 0, 0, [][]string{tg(41), {"y"}}, []bool{true, false}, 0},
		{"bigger than the bucket, not full: waits", 39, 0, 0, [][]string{tg(41), {"y"}}, []bool{false, true}, 38},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := &State{Progress: waves.NewProgress(p, time.Unix(0, 0)), ReadTokens: int(tt.left), Prev: tt.prev}
			b := newReadBudget(st, p, tt.now)
			for k, arns := range tt.looks {
				if got := b.admit(arns); got != tt.want[k] {
					t.Errorf("look %d (%d target groups): admitted %v, want %v", k, len(arns), got, tt.want[k])
				}
			}
			if got := b.remaining(); got != tt.remain {
				t.Errorf("%d tokens left, want %d", got, tt.remain)
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
	rb := newReadBudget(st, p, 0)
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
