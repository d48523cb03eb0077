package waves

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Status of one slot, one byte each in Progress.S.
const (
	Pending   byte = '.' // not started
	Rebooting byte = 'r' // CreateImage called, not healthy yet
	Healthy   byte = 'o' // back in service
	Unhealthy byte = 'x' // not healthy within the timeout, or left its group short (Halt): its group is halted
	Skipped   byte = 'h' // not rebooted this night: its group was halted
	Errored   byte = 'e' // CreateImage failed: not rebooted, group unaffected
)

// MaxReason bounds a stored reason, so that even a night in which every
// group halts keeps the state far below Step Functions' 256 KB.
const MaxReason = 160

// Progress is the state of one run of a plan, small enough to travel in a
// Step Functions execution: one status byte per slot (10,000 instances:
// 10 KB), start offsets of the instances in flight, and the problems.
// Methods take the plan the progress belongs to; they never call AWS.
//
// A run is a loop of: InFlight -> check their health -> Observe -> Ready ->
// drain and CreateImage each -> Started (or Fail) -> wait. Ready with
// through = p.Waves-1 lets a group's next member start as soon as its
// group has room (rolling); through = FirstOpenWave() waits for each wave
// to finish first (barrier). Either way no group ever has more than its
// Max members rebooting.
type Progress struct {
	// Plan is the digest of the plan the progress belongs to.
	Plan string `json:"plan"`
	// Start of the run, Unix seconds.
	Start int64 `json:"start"`
	// S holds one status byte per slot (Pending, Rebooting, ...).
	S string `json:"s"`
	// T maps a slot in flight to its CreateImage time, seconds after Start.
	T map[int]int64 `json:"t,omitempty"`
	// Problems: unhealthy instances (their groups halted) and failed
	// CreateImage calls, in the order they happened.
	Problems []Problem `json:"p,omitempty"`
}

// Problem is one instance that failed.
type Problem struct {
	Slot   int    `json:"s"`
	Reason string `json:"r"`
}

// Observation is the health of an instance in flight, as the caller saw it
// (status checks, target health, Auto Scaling lifecycle state).
type Observation struct {
	ID      string
	Healthy bool
	// Reason it is not healthy (yet), e.g. "target unhealthy: Target.Timeout";
	// reported when the timeout halts its group.
	Reason string
}

// Halt is a group that stopped: the instance that did not come back, why,
// and how many of its members were not rebooted.
type Halt struct {
	Group    string `json:"group"`
	Instance string `json:"instance"`
	Reason   string `json:"reason"`
	Skipped  int    `json:"skipped"`
}

// NewProgress starts a run of p at start.
func NewProgress(p *Plan, start time.Time) *Progress {
	return &Progress{Plan: p.Digest(), Start: start.Unix(), S: strings.Repeat(string(Pending), len(p.Slots))}
}

// check rejects a progress that does not belong to the plan (decoded from
// a state the plan did not produce).
func (pr *Progress) check(p *Plan) error {
	if pr.Plan != p.Digest() || len(pr.S) != len(p.Slots) {
		return fmt.Errorf("waves: progress belongs to plan %s (%d slots), not %s (%d slots): the plan changed during the run", pr.Plan, len(pr.S), p.Digest(), len(p.Slots))
	}
	return nil
}

// Ready returns the slots that may start now, at most limit, in plan order:
// pending, in a wave up to through, group not halted, group below its Max
// with the members in flight and those already chosen, and no earlier
// member of the group still pending (members start in order).
func (pr *Progress) Ready(p *Plan, limit, through int) ([]int, error) {
	return pr.ReadyExcept(p, limit, through, nil)
}

// ReadyExcept is Ready without the groups held back (held[g], indexed like
// p.Groups; nil holds none): their members neither start nor count
// against limit, so groups the caller keeps back for a while do not take
// the places of those that may start.
func (pr *Progress) ReadyExcept(p *Plan, limit, through int, held []bool) ([]int, error) {
	if err := pr.check(p); err != nil {
		return nil, err
	}
	if held != nil && len(held) != len(p.Groups) {
		return nil, fmt.Errorf("waves: %d groups held back or not, the plan has %d", len(held), len(p.Groups))
	}
	busy := make([]int, len(p.Groups))
	stopped := make([]bool, len(p.Groups)) // halted, held back, or an earlier member waits
	if held != nil {
		copy(stopped, held)
	}
	for i, s := range p.Slots {
		switch pr.S[i] {
		case Rebooting:
			busy[s.Group]++
		case Unhealthy:
			stopped[s.Group] = true
		}
	}
	var ready []int
	for i, s := range p.Slots {
		if len(ready) >= limit {
			break
		}
		if pr.S[i] != Pending || stopped[s.Group] {
			continue
		}
		if s.Wave > through || busy[s.Group] >= p.Groups[s.Group].Max {
			stopped[s.Group] = true
			continue
		}
		ready = append(ready, i)
		busy[s.Group]++
	}
	return ready, nil
}

// Started records that CreateImage was called for the slots at now (also
// when the answer was lost: the instance may be rebooting, so it is
// watched like any other).
func (pr *Progress) Started(p *Plan, slots []int, now time.Time) error {
	if err := pr.check(p); err != nil {
		return err
	}
	b := []byte(pr.S)
	for _, i := range slots {
		if i < 0 || i >= len(b) || b[i] != Pending {
			return fmt.Errorf("waves: slot %d is not pending", i)
		}
		b[i] = Rebooting
		if pr.T == nil {
			pr.T = map[int]int64{}
		}
		pr.T[i] = now.Unix() - pr.Start
	}
	pr.S = string(b)
	return nil
}

// Fail records a CreateImage that failed before the instance rebooted: the
// instance is reported, its group goes on.
func (pr *Progress) Fail(p *Plan, id, reason string) error {
	i, err := pr.unsettled(p, id, "fail")
	if err != nil {
		return err
	}
	b := []byte(pr.S)
	b[i] = Errored
	pr.S = string(b)
	delete(pr.T, i)
	pr.Problems = append(pr.Problems, Problem{Slot: i, Reason: clip(reason)})
	return nil
}

// Observe applies the health seen at now. A healthy instance is done; one
// not healthy timeout after its CreateImage halts its group: its pending
// members are skipped (members already rebooting finish and are watched).
// Observations of instances not in flight are errors (a stale or foreign
// answer must not move the run).
func (pr *Progress) Observe(p *Plan, obs []Observation, now time.Time, timeout time.Duration) error {
	if err := pr.check(p); err != nil {
		return err
	}
	b := []byte(pr.S)
	for _, o := range obs {
		i, ok := p.Slot(o.ID)
		if !ok || b[i] != Rebooting {
			return fmt.Errorf("waves: instance %s is not rebooting in this run", o.ID)
		}
		switch since := time.Duration(now.Unix()-pr.Start-pr.T[i]) * time.Second; {
		case o.Healthy:
			b[i] = Healthy
			delete(pr.T, i)
		case since >= timeout:
			reason := o.Reason
			if reason == "" {
				reason = "not healthy"
			}
			pr.halt(p, b, i, fmt.Sprintf("not healthy %s after it was started (drain and CreateImage; healthTimeout %s): %s", since, timeout, reason))
		}
	}
	pr.S = string(b)
	return nil
}

// Halt halts the group of a member in flight or pending that left its
// group short in a way this run did not cause and cannot wait out: it was
// terminated during the run (its Auto Scaling group boots a replacement)
// or it was not InService when its turn came (a lifecycle wait state,
// Pending, an operator's Standby). Such a member must not free its slot:
// the group is already a member down, so starting the next one would take
// it below maxUnavailable. Like an unhealthy member: reported with reason,
// its group's pending members are skipped (members already in flight
// finish and are watched).
func (pr *Progress) Halt(p *Plan, id, reason string) error {
	i, err := pr.unsettled(p, id, "halt its group")
	if err != nil {
		return err
	}
	b := []byte(pr.S)
	pr.halt(p, b, i, reason)
	pr.S = string(b)
	return nil
}

// halt marks slot i Unhealthy in b with reason and skips its group's
// pending members.
func (pr *Progress) halt(p *Plan, b []byte, i int, reason string) {
	b[i] = Unhealthy
	delete(pr.T, i)
	pr.Problems = append(pr.Problems, Problem{Slot: i, Reason: clip(reason)})
	g := p.Slots[i].Group
	for j, s := range p.Slots {
		if s.Group == g && b[j] == Pending {
			b[j] = Skipped
		}
	}
}

func clip(s string) string {
	if len(s) <= MaxReason {
		return s
	}
	s = s[:MaxReason]
	for !utf8.ValidString(s) { // never cut a character in two
		s = s[:len(s)-1]
	}
	return s
}

// InFlight returns the instances rebooting, in plan order: the ones to check.
func (pr *Progress) InFlight(p *Plan) []string {
	if pr.check(p) != nil { // Observe and Ready report it
		return nil
	}
	var ids []string
	for i := range pr.S {
		if pr.S[i] == Rebooting {
			ids = append(ids, p.Slots[i].ID)
		}
	}
	return ids
}

// FirstOpenWave is the lowest wave with an instance pending or rebooting
// (p.Waves when none): Ready's through for barrier waves.
func (pr *Progress) FirstOpenWave(p *Plan) int {
	if pr.check(p) != nil { // Ready reports it
		return p.Waves
	}
	for i := range pr.S {
		if pr.S[i] == Pending || pr.S[i] == Rebooting {
			return p.Slots[i].Wave
		}
	}
	return p.Waves
}

// Done reports whether nothing is pending or rebooting.
func (pr *Progress) Done() bool {
	return !strings.ContainsAny(pr.S, string([]byte{Pending, Rebooting}))
}

// Count returns the number of slots with status st.
func (pr *Progress) Count(st byte) int { return strings.Count(pr.S, string(st)) }

// Halts reports the halted groups: the instance that did not come back,
// why, and how many members were skipped.
func (pr *Progress) Halts(p *Plan) []Halt {
	if pr.check(p) != nil {
		return nil
	}
	var hs []Halt
	counted := map[int]bool{}
	for _, pb := range pr.Problems {
		if pr.S[pb.Slot] != Unhealthy {
			continue
		}
		g := p.Slots[pb.Slot].Group
		h := Halt{Group: p.Groups[g].Key, Instance: p.Slots[pb.Slot].ID, Reason: pb.Reason}
		if h.Group == "" {
			h.Group = "(ungrouped)"
		}
		// A group with several members in flight can lose more than one;
		// its skipped members are counted on the first.
		if !counted[g] {
			counted[g] = true
			for j, s := range p.Slots {
				if s.Group == g && pr.S[j] == Skipped {
					h.Skipped++
				}
			}
		}
		hs = append(hs, h)
	}
	return hs
}

// unsettled returns the slot of id, which must be Pending or Rebooting
// for Fail and Halt (what names the operation in the error).
func (pr *Progress) unsettled(p *Plan, id, what string) (int, error) {
	if err := pr.check(p); err != nil {
		return 0, err
	}
	i, ok := p.Slot(id)
	if !ok {
		return 0, fmt.Errorf("waves: instance %s is not in the plan", id)
	}
	if pr.S[i] != Pending && pr.S[i] != Rebooting {
		return 0, fmt.Errorf("waves: instance %s has status %q, cannot %s", id, pr.S[i], what)
	}
	return i, nil
}
