package ec2sim

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// Auto Scaling's EC2 health checks, with Options.HealthChecks. As the
// Amazon EC2 Auto Scaling user guide documents them:
//
//   - "If the instance is in any Amazon EC2 state other than running, or if
//     its status for the status checks becomes impaired, Amazon EC2 Auto
//     Scaling considers the instance to be unhealthy and replaces it";
//     not running "is treated as an immediate failure", impaired is
//     tolerated for "a few minutes" (Options.ImpairedTolerance), and only
//     after the group's health check grace period (ec2-auto-scaling-health-
//     checks, "Amazon EC2 health checks", "Health check considerations").
//   - Only InService members are checked: "Amazon EC2 Auto Scaling does not
//     perform health checks on instances that are in a standby state ...
//     If you return the terminated instance to service, Amazon EC2 Auto
//     Scaling performs a health check on the instance, determines that it
//     is terminating and unhealthy, and launches a replacement instance"
//     (as-enter-exit-standby).
//   - Replacement: "it terminates the instance while it launches a new
//     replacement instance" (Unhealthy instance replacement); the desired
//     capacity is unchanged. The replacement is Pending until it runs with
//     its status checks ok, then InService, and is registered with the
//     group's target groups; the terminated one is deregistered.
//
// Not modelled: ELB health checks as an Auto Scaling health check type
// (off by default in AWS), the 10 % pacing of replacements in large groups,
// scheduled events, lifecycle hooks on the launch and termination (a test
// sets the states with SetAutoScalingLifecycle instead).
//
// Health is checked at multiples of Options.HealthCheckInterval of the
// simulated clock, in order, up to now, before any request is answered
// (sweep): the answer for any instant is what periodic checks would have
// done by then.

func (s *Sim) healthInterval() time.Duration {
	return positiveOr(s.opts.HealthCheckInterval, time.Minute)
}

// healthChecks runs the health checks due up to now. Caller holds mu.
func (s *Sim) healthChecks(now time.Time) {
	if !s.opts.HealthChecks {
		return
	}
	iv := s.healthInterval()
	for _, key := range slices.Sorted(maps.Keys(s.ext.asgs)) {
		g := s.ext.asgs[key]
		for t := g.checked.Truncate(iv).Add(iv); !t.After(now); t = t.Add(iv) {
			s.launchDue(g, t)
			s.checkGroup(g, t)
			g.checked = t
		}
		s.launchDue(g, now)
	}
}

// launchDue launches the replacements due up to t, each at its own time
// (the instance's phases are functions of simulated time from then on, as
// if it had been launched then). Caller holds mu.
func (s *Sim) launchDue(g *autoScaling, t time.Time) {
	for len(g.launches) > 0 && !g.launches[0].After(t) {
		at := g.launches[0]
		g.launches = g.launches[1:]
		s.launchReplacement(g, at)
	}
}

// checkGroup is one periodic health check of g's InService members at t.
func (s *Sim) checkGroup(g *autoScaling, t time.Time) {
	r := s.region(g.region)
	for _, id := range slices.Clone(g.order) {
		m := g.members[id]
		if m.unhealthy || m.lifecycleAt(t) != lifecycleInService {
			continue
		}
		in := r.instances[id]
		if in == nil || s.unhealthyAt(g, m, in, t) {
			s.replace(g, id, t)
		}
	}
}

// unhealthyAt: not running (at once), or impaired for ImpairedTolerance
// after the grace period since it entered InService.
func (s *Sim) unhealthyAt(g *autoScaling, m *asgMember, in *instance, t time.Time) bool {
	if in.stateAt(t) != "running" {
		return true
	}
	ist, sys := in.statusAt(t)
	if ist != statusImpaired && sys != statusImpaired {
		return false
	}
	since := t
	if c := in.cycle; c != nil && c.fail == bootImpaired {
		since = c.okAt() // impaired from the end of the boot on
	}
	tolerance := positiveOr(s.opts.ImpairedTolerance, 3*time.Minute)
	return !t.Before(since.Add(tolerance)) && !t.Before(m.inServiceSince(t).Add(g.grace))
}

// replace marks member id unhealthy at t, terminates its instance (unless
// it is already shutting down), deregisters it from the attached target
// groups and launches a replacement, Options.ReplacementDelay later.
func (s *Sim) replace(g *autoScaling, id string, t time.Time) {
	m := g.members[id]
	m.unhealthy = true
	m.cur, m.next, m.at = m.lifecycleAt(t), lifecycleTerminating, t
	lt := s.opts.Launch.withDefaults()
	if in := m.in; in != nil && (in.term == nil || in.term.start.After(t)) {
		in.term = &termination{start: t, shuttingDown: lt.ShuttingDown, visible: lt.Visible}
		s.launch.terminating[id] = g.region
	}
	for _, arn := range g.targetGroups {
		s.ext.tgs[arn].deregister(id, t)
	}
	m.replacedAt = t.Add(max(0, s.opts.ReplacementDelay))
	g.launches = append(g.launches, m.replacedAt) // checks run in time order: stays sorted
	s.launchDue(g, t)
}

// launchReplacement launches one instance into g at t, Pending, registered
// with the attached target groups. Caller holds mu.
func (s *Sim) launchReplacement(g *autoScaling, t time.Time) {
	lt := s.opts.Launch.withDefaults()
	g.activities++
	r := s.region(g.region)
	nid, seq := s.newID("i")
	tags := maps.Clone(g.tags)
	if tags == nil {
		tags = map[string]string{}
	}
	tags[asgNameTag] = g.name
	in := &instance{id: nid, owner: g.account, state: "running", tags: tags, seq: seq, since: t, launched: t,
		instanceType: "t3.micro", shutdownBehavior: "terminate"}
	in.cycle = &rebootCycle{start: t, t: RebootTiming{Pending: lt.Pending, StatusInit: lt.StatusInit}}
	in.volumes = []string{s.addVolume(r, g.account, g.region, VolumeSpec{})}
	r.instances[nid] = in
	// Pending until it runs with its checks ok ("After the instance is fully
	// configured and passes the Amazon EC2 health checks, it is attached to
	// the Auto Scaling group and it enters the InService state").
	g.members[nid] = &asgMember{cur: lifecyclePending, next: lifecycleInService, at: in.cycle.okAt(), in: in}
	g.order = append(g.order, nid)
	for _, arn := range g.targetGroups {
		s.ext.tgs[arn].register(nid, t)
	}
}

// SetAutoScalingLifecycle puts a member in a lifecycle state at once, as a
// lifecycle hook (Pending:Wait, Terminating:Wait) or another actor would:
// state must be one of the LifecycleState values of the Auto Scaling API
// reference (AutoScalingInstanceDetails).
func (s *Sim) SetAutoScalingLifecycle(account, region, id, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	if !slices.Contains(lifecycleStates, state) {
		return fmt.Errorf("ec2sim: %q is not an Auto Scaling lifecycle state", state)
	}
	g := s.asgOf(account, region, id)
	if g == nil {
		return fmt.Errorf("ec2sim: instance %s is in no Auto Scaling group", id)
	}
	s.sweep()
	m := g.members[id]
	m.cur, m.next, m.at = state, "", time.Time{}
	s.sweep()
	return nil
}

// AutoScalingMembers returns a group's members and their lifecycle states
// now, Terminated ones left out (ok false if the group is unknown).
func (s *Sim) AutoScalingMembers(account, region, name string) (map[string]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	s.sweep()
	g := s.ext.asgs[account+"/"+region+"/"+name]
	if g == nil {
		return nil, false
	}
	now := s.now()
	out := map[string]string{}
	for _, id := range g.order {
		if lc := g.members[id].lifecycleAt(now); lc != lifecycleTerminated {
			out[id] = lc
		}
	}
	return out, true
}
