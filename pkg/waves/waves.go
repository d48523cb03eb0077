// Package waves plans reboot-mode backups so that services stay up (issue
// 13). It is pure (no AWS): given the selected instances (ID, tags, ELBv2
// target groups) and a policy's availability section, it groups the
// instances into availability groups and orders them into waves in which no
// group has more than its maxUnavailable members rebooting; Progress then
// tracks a run (which instances may start now, which came back, which group
// is halted) in a state small enough for a Step Functions execution.
//
// Grouping. The configured sources (config.Availability.Sources) link
// instances: the same Auto Scaling group (aws:autoscaling:groupName tag), a
// shared ELBv2 target group, the same value of a tag. A group is a connected
// component of these links (union-find), so an instance in two target groups
// links them, as the issue asks. The issue's precedence "Auto Scaling group,
// else target group, else tag" only names the group here ("asg:web" before
// "tg:..." before "tag:Service=web"); it does not split it: a target group
// serving both members of an Auto Scaling group and stand-alone instances
// would otherwise be two groups rebooted in parallel, taking two of the
// target group's targets down at once, which is exactly the outage the
// waves exist to prevent. Components are never less safe than precedence;
// they can only be larger (slower), and the plan reports the largest.
// An instance with no link is ungrouped: only the CreateImage bucket limits
// how many of those reboot together.
//
// Waves. Groups are placed largest first, members in ID order, each into
// the earliest wave where its group has fewer than maxUnavailable members
// and the wave is below its size cap; ungrouped instances then fill the
// least loaded waves. Without a binding cap this reaches the lower bound:
// the number of waves is max over groups of ceil(size/maxUnavailable).
//
// Runs. A group's next member starts as soon as the group has room, not
// when the whole wave is done (see Progress); MinDuration is the bound no
// run can beat and CheckInterval the wait between a run's checks.
//
// Instances that opt out of the reboot (amibackup:no-reboot=true) do not
// belong in a plan: they take nothing out of service; back them up apart.
package waves

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
)

// ASGTag is the tag EC2 Auto Scaling puts on every instance it launches,
// with the group's name (Amazon EC2 Auto Scaling user guide, "Tag Auto
// Scaling groups and instances").
const ASGTag = "aws:autoscaling:groupName"

// EC2's CreateImage token bucket ("Request throttling for the Amazon EC2 API":
// CreateImage falls under the mutating actions not listed separately, 50
// tokens refilled at 5 per second, per account and Region;
// /work/shared/README.md marks the class uncertain, the emulator models it so).
const (
	CreateImageBucket          = 50
	CreateImageRefillPerSecond = 5
)

// DefaultReboot is the planning estimate of how long one instance is out of
// service: drain, reboot for the image, status checks ("a few minutes").
const DefaultReboot = 300 // seconds

// DefaultWaveCap is the most instances one wave holds: the CreateImage calls
// EC2's bucket serves while one wave reboots (burst plus refill over
// DefaultReboot), so issuing a wave never takes longer than rebooting it.
const DefaultWaveCap = CreateImageBucket + CreateImageRefillPerSecond*DefaultReboot

// Instance is one selected instance as the planner sees it.
type Instance struct {
	ID string
	// Tags of the instance (the Auto Scaling group is ASGTag's value).
	Tags map[string]string
	// TargetGroups are the ARNs of the ELBv2 target groups it is registered in.
	TargetGroups []string
}

// Group is one availability group of the plan.
type Group struct {
	// Key names the group by its highest-precedence link: "asg:<name>",
	// "tg:<arn>" or "tag:<Key>=<value>"; "" for an ungrouped instance.
	Key string `json:"k"`
	// Max is maxUnavailable resolved for the group's size.
	Max int `json:"m"`
	// Members in reboot order (instance IDs, sorted).
	Members []string `json:"i"`
	// ASGs are the Auto Scaling groups (ASGTag) of the members other than
	// the one the key names, sorted: a group keyed by a target group or a
	// tag whose members sit in Auto Scaling groups, or an "asg:" group
	// linked (by a shared target group) to members of another Auto Scaling
	// group. A run checks them with the key's before a member starts
	// (rollout's whole-group check: a member Pending, a replacement not
	// launched yet). Kept in the plan rather than looked up at each check:
	// a member's Auto Scaling group is known at planning (its tag), while
	// a lookup would cost a DescribeAutoScalingInstances per 50 members of
	// every group due, every check, for every group not keyed by its Auto
	// Scaling group, stand-alone instances included. The plan is in the
	// execution state (240 KB at 10,000 instances), so only names and only
	// once per group: none at all for an "asg:" group of one Auto Scaling
	// group (omitempty: its encoding and digest are what they were), and
	// nothing per instance. AutoScalingGroups lists them all.
	ASGs []string `json:"a,omitempty"`
}

// InAutoScaling reports whether any member sits in an Auto Scaling group
// (AutoScalingGroups is not empty), without building the list.
func (g Group) InAutoScaling() bool { return strings.HasPrefix(g.Key, "asg:") || len(g.ASGs) > 0 }

// Chain is the number of reboots the group needs one after another:
// ceil(members / Max).
func (g Group) Chain() int { return ceilDiv(len(g.Members), g.Max) }

// AutoScalingGroups returns the names of the Auto Scaling groups the
// group's members sit in: the key's (an "asg:" key) and ASGs.
func (g Group) AutoScalingGroups() []string {
	if name, ok := strings.CutPrefix(g.Key, "asg:"); ok {
		return slices.Concat([]string{name}, g.ASGs)
	}
	return slices.Clone(g.ASGs)
}

// Options of a plan.
type Options struct {
	// WaveCap bounds the instances of one wave; default DefaultWaveCap.
	WaveCap int
}

// Plan is the deterministic outcome for a set of instances: the same
// instances and configuration give the same plan, in any input order.
type Plan struct {
	// Groups with a key, largest first (then by key), then one group per
	// ungrouped instance (key "", by ID).
	Groups []Group
	// Slots lists every instance once, in start order: by wave, then in
	// the order of Groups, then member order. A slot's index is its
	// position, the unit of Progress.
	Slots []Slot
	// Waves is the number of waves; LowerBound is the fewest any plan can
	// have: max(max over groups of ceil(size/max), ceil(n/WaveCap)).
	Waves, LowerBound int
	// AllAtOnce: mode all-at-once, one wave, no groups (the old behaviour).
	AllAtOnce bool
	waveCap   int
	index     map[string]int // instance ID -> slot
	digest    string
}

// Slot is one instance's place in the plan.
type Slot struct {
	ID    string
	Group int // index into Plan.Groups
	Wave  int
}

// New groups the instances and plans their waves. a is the policy's
// availability section (nil: the defaults).
func New(instances []Instance, a *config.Availability, opt Options) (*Plan, error) {
	if err := checkIDs(instances); err != nil {
		return nil, err
	}
	if opt.WaveCap <= 0 {
		opt.WaveCap = DefaultWaveCap
	}
	var groups []Group
	if a.Waves() {
		groups = groupInstances(instances, a)
	} else {
		for _, in := range instances {
			groups = append(groups, Group{Members: []string{in.ID}, Max: 1})
		}
		sortGroups(groups)
		opt.WaveCap = max(1, len(instances))
	}
	p := build(groups, opt.WaveCap)
	p.AllAtOnce = !a.Waves()
	return p, nil
}

func checkIDs(instances []Instance) error {
	seen := make(map[string]bool, len(instances))
	var errs []error
	for i, in := range instances {
		switch {
		case in.ID == "":
			errs = append(errs, fmt.Errorf("waves: instance %d has no ID", i))
		case seen[in.ID]:
			errs = append(errs, fmt.Errorf("waves: instance %s is listed twice", in.ID))
		}
		seen[in.ID] = true
	}
	return errors.Join(errs...)
}

// link is one grouping key with its precedence (lower wins the name).
type link struct {
	rank int
	key  string
}

// links returns the keys the configured sources give an instance.
func links(in Instance, sources []string) []link {
	var ls []link
	for rank, s := range sources {
		switch s {
		case config.GroupByASG:
			if v := in.Tags[ASGTag]; v != "" {
				ls = append(ls, link{0, "asg:" + v})
			}
		case config.GroupByTargetGroup:
			for _, tg := range in.TargetGroups {
				if tg != "" {
					ls = append(ls, link{1, "tg:" + tg})
				}
			}
		default:
			// An empty value is a placeholder, not a service.
			if k, ok := config.TagKey(s); ok && in.Tags[k] != "" {
				ls = append(ls, link{2 + rank, "tag:" + k + "=" + in.Tags[k]})
			}
		}
	}
	return ls
}

func (l link) less(o link) bool { return l.rank < o.rank || l.rank == o.rank && l.key < o.key }

// groupInstances is union-find over the links.
func groupInstances(instances []Instance, a *config.Availability) []Group {
	parent := make([]int, len(instances))
	for i := range parent {
		parent[i] = i
	}
	var find func(int) int
	find = func(i int) int {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	owner := map[string]int{} // link key -> first instance with it
	name := make([]link, len(instances))
	sources := a.Sources()
	for i, in := range instances {
		for _, l := range links(in, sources) {
			if name[i].key == "" || l.less(name[i]) {
				name[i] = l
			}
			if j, ok := owner[l.key]; ok {
				parent[find(i)] = find(j)
			} else {
				owner[l.key] = i
			}
		}
	}
	byRoot := map[int]*Group{}
	best := map[int]link{}
	asgs := map[int][]string{} // by root: the members' Auto Scaling groups
	var roots []int
	for i, in := range instances {
		r := find(i)
		g, ok := byRoot[r]
		if !ok {
			g = &Group{}
			byRoot[r] = g
			roots = append(roots, r)
		}
		g.Members = append(g.Members, in.ID)
		if v := in.Tags[ASGTag]; v != "" {
			asgs[r] = append(asgs[r], v)
		}
		if n := name[i]; n.key != "" && (best[r].key == "" || n.less(best[r])) {
			best[r] = n
		}
	}
	groups := make([]Group, 0, len(roots))
	for _, r := range roots {
		g := byRoot[r]
		if best[r].key == "" { // no link: ungrouped, one group per instance
			for _, id := range g.Members {
				groups = append(groups, Group{Members: []string{id}, Max: 1})
			}
			continue
		}
		g.Key = best[r].key
		slices.Sort(g.Members)
		own, asgKeyed := strings.CutPrefix(g.Key, "asg:")
		for _, name := range slices.Compact(slices.Sorted(slices.Values(asgs[r]))) {
			if !asgKeyed || name != own {
				g.ASGs = append(g.ASGs, name)
			}
		}
		g.Max = a.MaxUnavailableFor(len(g.Members))
		groups = append(groups, *g)
	}
	sortGroups(groups)
	return groups
}

// sortGroups: keyed groups largest first (the longest chains start first),
// then by key; ungrouped instances last, by ID.
func sortGroups(groups []Group) { slices.SortFunc(groups, compareGroups) }

func compareGroups(a, b Group) int {
	if (a.Key == "") != (b.Key == "") {
		if a.Key == "" {
			return 1
		}
		return -1
	}
	return cmp.Or(cmp.Compare(len(b.Members), len(a.Members)), cmp.Compare(a.Key, b.Key),
		cmp.Compare(a.Members[0], b.Members[0]))
}

// build assigns waves to sorted groups.
func build(groups []Group, waveCap int) *Plan {
	p := &Plan{Groups: groups, waveCap: waveCap}
	var load []int // instances per wave
	at := func(w int) int {
		for len(load) <= w {
			load = append(load, 0)
		}
		return load[w]
	}
	wave := make([][]int, len(groups)) // per group, per member
	n := 0
	for gi, g := range groups {
		n += len(g.Members)
		p.LowerBound = max(p.LowerBound, g.Chain())
		if g.Key == "" {
			continue
		}
		w, inWave := 0, 0
		for range g.Members {
			for inWave >= g.Max || at(w) >= waveCap {
				w, inWave = w+1, 0
			}
			wave[gi] = append(wave[gi], w)
			load[w]++
			inWave++
		}
	}
	p.LowerBound = max(p.LowerBound, ceilDiv(n, waveCap))
	// Ungrouped instances go to the least loaded wave (the earliest among
	// equals): in a wave that issues fewer calls than the bucket holds they
	// cost no time at all.
	for gi, g := range groups {
		if g.Key != "" {
			continue
		}
		best := -1
		for w := range load {
			if load[w] < waveCap && (best < 0 || load[w] < load[best]) {
				best = w
			}
		}
		if best < 0 {
			best = len(load)
			at(best)
		}
		wave[gi] = []int{best}
		load[best]++
	}
	p.Waves = len(load)
	p.Slots = make([]Slot, 0, n)
	for gi, g := range groups {
		for m, id := range g.Members {
			p.Slots = append(p.Slots, Slot{ID: id, Group: gi, Wave: wave[gi][m]})
		}
	}
	// Stable: within a wave, the order of Groups and of members.
	slices.SortStableFunc(p.Slots, func(a, b Slot) int { return cmp.Compare(a.Wave, b.Wave) })
	p.index = make(map[string]int, n)
	for i, s := range p.Slots {
		p.index[s.ID] = i
	}
	return p
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// MinDuration is the least time any run of the plan takes when every
// instance is out of service for reboot: the longest chain of one group's
// reboots (ceil(size/max) x reboot) or the CreateImage bucket's pace for
// all instances, whichever is longer. Dry runs can report it; the
// benchmark measures runs against it.
func (p *Plan) MinDuration(reboot time.Duration) time.Duration {
	bucket := time.Duration(max(0, len(p.Slots)-CreateImageBucket)) * time.Second / CreateImageRefillPerSecond
	chain := 0
	for _, g := range p.Groups {
		chain = max(chain, g.Chain())
	}
	return max(bucket, time.Duration(chain)*reboot)
}

// Step Functions keeps 25,000 history events per execution; one check of a
// run (Lambda task, Choice, Wait) writes 9. MaxChecks leaves room for
// retries and the states around the loop: 2,400 checks are 21,600 events;
// the 10,000-instance workflow (BenchmarkWorkflow10k) used 19,832 in all,
// leaving over 5,000 for Lambda retries (3 or 4 events each), the restore
// rounds (maxRestoreRounds: 60 at most, 540 events) and a run slower than
// its estimate (its checks then space out to 300 s). 2,000 gave 1.068-1.072
// x the bound there, 2,400 1.045: every member's drain, reboot and return
// are each found half a step late on average, on the longest chain 40
// times over.
const (
	MaxChecks        = 2400
	MinCheckInterval = 15 * time.Second
)

// CheckInterval is the wait between two checks of a run: MinCheckInterval
// (a started member waits at most that long after its predecessor is
// healthy: about 2.5% of a 5-minute reboot on average), longer when the
// run would otherwise need more than MaxChecks checks.
func (p *Plan) CheckInterval(reboot time.Duration) time.Duration {
	d := p.MinDuration(reboot) / MaxChecks
	return max(MinCheckInterval, (d + time.Second - 1).Truncate(time.Second)) // whole seconds, rounded up
}

// Slot returns the slot of an instance.
func (p *Plan) Slot(id string) (int, bool) {
	i, ok := p.index[id]
	return i, ok
}

// Wave returns the instance IDs of wave w, in start order.
func (p *Plan) Wave(w int) []string {
	var ids []string
	for _, s := range p.Slots {
		if s.Wave == w {
			ids = append(ids, s.ID)
		}
	}
	return ids
}

// Largest returns the size of the largest group.
func (p *Plan) Largest() int {
	n := 0
	for _, g := range p.Groups {
		n = max(n, len(g.Members))
	}
	return n
}

// Ungrouped returns the number of instances in no group.
func (p *Plan) Ungrouped() int {
	n := 0
	for _, g := range p.Groups {
		if g.Key == "" {
			n++
		}
	}
	return n
}

// String summarises the plan for logs and dry runs.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d instances in %d groups (%d ungrouped, largest %d) in %d waves (lower bound %d)",
		len(p.Slots), len(p.Groups)-p.Ungrouped(), p.Ungrouped(), p.Largest(), p.Waves, p.LowerBound)
	if p.AllAtOnce {
		b.WriteString(", all at once")
	}
	return b.String()
}
