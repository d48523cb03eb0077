package ec2sim

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// extState holds what issue 13 added: reboot faults, Auto Scaling groups,
// ELBv2 target groups and the availability log.
type extState struct {
	bootFail map[string]string        // instance ID -> bootNever/bootImpaired
	asgs     map[string]*autoScaling  // by account/region/name
	tgs      map[string]*targetGroup  // by ARN
	last     time.Time                // the availability log covers up to here
	max      map[string]int           // by group key
	maxAt    map[string]time.Time     // when max was first reached
	members  map[string]int           // last seen member count by group key
	seen     map[string]groupIdentity // by group key
	// replaced: per Auto Scaling group key, members seen UNHEALTHY while
	// InService (see asgHealth), which AWS would have replaced.
	replaced map[string]map[string]bool
}

type groupIdentity struct{ kind, name, account, region string }

func newExtState() *extState {
	return &extState{bootFail: map[string]string{}, asgs: map[string]*autoScaling{}, tgs: map[string]*targetGroup{},
		max: map[string]int{}, maxAt: map[string]time.Time{}, members: map[string]int{}, seen: map[string]groupIdentity{}, replaced: map[string]map[string]bool{}}
}

// Kinds of availability group.
const (
	GroupAutoScaling = "autoscaling"
	GroupTarget      = "targetgroup"
	GroupTag         = "tag"
)

// GroupKey names an availability group in CallLog.MaxUnavailable:
// "<account>/<region>/<kind>:<name>", the name being the Auto Scaling group
// name, the target group name, or "<key>=<value>" for a tag group.
func GroupKey(account, region, kind, name string) string {
	return account + "/" + region + "/" + kind + ":" + name
}

// GroupAvailability is one availability group's record.
type GroupAvailability struct {
	Key, Kind, Name, Account, Region string
	// Members now; Unavailable now; MaxUnavailable at once since the start
	// or the last ResetCalls, first reached at MaxAt.
	Members, Unavailable, MaxUnavailable int
	MaxAt                                time.Time
	// Unhealthy lists the Auto Scaling members seen UNHEALTHY while
	// InService (stopped or impaired without Standby first): AWS would
	// have terminated and replaced them; the emulator only records them.
	Unhealthy []string `json:",omitempty"`
}

// member is one instance of a group with what makes it available there.
type member struct {
	in     *instance
	asg    *asgMember // lifecycle must be InService
	target *target    // target health must be healthy
}

func (m member) unavailable(t time.Time) bool {
	if m.asg != nil && strings.HasPrefix(m.asg.lifecycleAt(t), "Terminat") {
		// Leaving the group (Terminating, Terminating:Wait, Terminated):
		// the capacity it leaves is counted once, not twice: by it until
		// its replacement is launched (Options.ReplacementDelay), then by
		// the replacement while that is Pending.
		return !m.asg.replacedAt.IsZero() && t.Before(m.asg.replacedAt)
	}
	if _, up := m.in.upSince(t); !up {
		return true
	}
	if m.asg != nil && m.asg.lifecycleAt(t) != lifecycleInService {
		return true
	}
	if m.target != nil {
		if st, _, _ := m.target.healthAt(m.in, t); st != healthHealthy {
			return true
		}
	}
	return false
}

func (m member) instants() []time.Time {
	out := m.in.instants()
	if m.asg != nil {
		out = append(out, m.asg.at, m.asg.replacedAt)
	}
	if m.target != nil {
		out = append(out, m.target.instants(m.in)...)
	}
	return out
}

type groupView struct {
	key string
	id  groupIdentity
	ms  []member
}

// groupViews lists the current groups with their members. Caller holds mu.
func (s *Sim) groupViews() []groupView {
	var out []groupView
	track := func(kind, name string) bool { return s.opts.TrackGroup == nil || s.opts.TrackGroup(kind, name) }
	for _, g := range s.ext.asgs {
		if !track(GroupAutoScaling, g.name) {
			continue
		}
		r := s.region(g.region)
		v := groupView{key: GroupKey(g.account, g.region, GroupAutoScaling, g.name), id: groupIdentity{GroupAutoScaling, g.name, g.account, g.region}}
		for _, id := range g.order {
			if in, ok := r.instances[id]; ok {
				v.ms = append(v.ms, member{in: in, asg: g.members[id]})
			}
		}
		out = append(out, v)
	}
	for _, tg := range s.ext.tgs {
		if !track(GroupTarget, tg.name) {
			continue
		}
		r := s.region(tg.region)
		v := groupView{key: GroupKey(tg.account, tg.region, GroupTarget, tg.name), id: groupIdentity{GroupTarget, tg.name, tg.account, tg.region}}
		for _, id := range tg.order {
			if in, ok := r.instances[id]; ok {
				v.ms = append(v.ms, member{in: in, target: tg.targets[id]})
			}
		}
		out = append(out, v)
	}
	if len(s.opts.GroupTags) > 0 {
		byKey := map[string]*groupView{}
		for region, r := range s.regions {
			for _, in := range sortedInstances(r) {
				for _, k := range s.opts.GroupTags {
					val, ok := in.tags[k]
					if !ok {
						continue
					}
					name := k + "=" + val
					if !track(GroupTag, name) {
						continue
					}
					key := GroupKey(in.owner, region, GroupTag, name)
					v := byKey[key]
					if v == nil {
						v = &groupView{key: key, id: groupIdentity{GroupTag, name, in.owner, region}}
						byKey[key] = v
					}
					v.ms = append(v.ms, member{in: in})
				}
			}
		}
		for _, v := range byKey {
			out = append(out, *v)
		}
	}
	return out
}

// sweep brings the availability log up to now: for every group it counts
// the unavailable members at each instant in (last sweep, now] at which a
// member's state, status, lifecycle or target health changes, and at now.
// States are functions of simulated time fixed by the last change, and
// every change is made under mu between two sweeps, so the instants
// evaluated here are exactly those at which the count can change, not only
// the times requests arrive. Caller holds mu.
func (s *Sim) sweep() {
	now := s.now()
	// Health checks first: a replacement is fixed at the instant of its
	// check, so the counts below see it from then on.
	s.healthChecks(now)
	last := s.ext.last
	s.ext.last = now
	if len(s.ext.asgs) == 0 && len(s.ext.tgs) == 0 && len(s.opts.GroupTags) == 0 {
		return
	}
	for _, g := range s.groupViews() {
		s.ext.seen[g.key] = g.id
		s.ext.members[g.key] = len(g.ms)
		instants := []time.Time{now}
		for _, m := range g.ms {
			for _, t := range m.instants() {
				if t.After(last) && t.Before(now) {
					instants = append(instants, t)
				}
			}
		}
		sort.Slice(instants, func(i, j int) bool { return instants[i].Before(instants[j]) })
		for _, t := range instants {
			n := 0
			for _, m := range g.ms {
				if m.unavailable(t) {
					n++
				}
				if m.asg != nil && asgHealth(m.in, m.asg.lifecycleAt(t), t) == "UNHEALTHY" {
					if s.ext.replaced[g.key] == nil {
						s.ext.replaced[g.key] = map[string]bool{}
					}
					s.ext.replaced[g.key][m.in.id] = true
				}
			}
			if old, ok := s.ext.max[g.key]; !ok || n > old {
				s.ext.max[g.key] = n
				s.ext.maxAt[g.key] = t
			}
		}
	}
}

// maxUnavailable is a copy of the log after a sweep. Caller holds mu.
func (s *Sim) maxUnavailable() map[string]int {
	s.sweep()
	return maps.Clone(s.ext.max)
}

// resetAvailability starts a new log: each group's maximum becomes the
// number of its members unavailable now. Caller holds mu.
func (s *Sim) resetAvailability() {
	s.sweep()
	clear(s.ext.max)
	clear(s.ext.maxAt)
	clear(s.ext.replaced)
	s.ext.last = s.now().Add(-time.Nanosecond)
	s.sweep()
}

// Availability returns every availability group's record, sorted by key.
func (s *Sim) Availability() []GroupAvailability {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	now := s.now()
	views := map[string]groupView{}
	for _, g := range s.groupViews() {
		views[g.key] = g
	}
	keys := slices.Sorted(maps.Keys(s.ext.seen))
	out := make([]GroupAvailability, 0, len(keys))
	for _, k := range keys {
		id := s.ext.seen[k]
		ga := GroupAvailability{Key: k, Kind: id.kind, Name: id.name, Account: id.account, Region: id.region,
			MaxUnavailable: s.ext.max[k], MaxAt: s.ext.maxAt[k], Unhealthy: slices.Sorted(maps.Keys(s.ext.replaced[k]))}
		if g, ok := views[k]; ok {
			ga.Members = len(g.ms)
			for _, m := range g.ms {
				if m.unavailable(now) {
					ga.Unavailable++
				}
			}
		}
		out = append(out, ga)
	}
	return out
}

// GroupAvailabilityOf returns one group's record (ok false if unknown).
func (s *Sim) GroupAvailabilityOf(account, region, kind, name string) (GroupAvailability, bool) {
	account, region = defaults(account, region)
	key := GroupKey(account, region, kind, name)
	for _, g := range s.Availability() {
		if g.Key == key {
			return g, true
		}
	}
	return GroupAvailability{}, false
}
