package ec2sim

import (
	"time"
)

// RebootTiming is how long, in simulated time, each phase of a reboot-mode
// CreateImage lasts with Options.RebootModel. EC2 stops the instance, takes
// the snapshots' point in time while it is stopped, and starts it again
// ("An instance is out of service for a few minutes", /work/shared/README.md);
// after it is running its status checks report initializing until they
// first pass.
type RebootTiming struct {
	// Stopping: running -> stopping -> stopped.
	Stopping time.Duration
	// Stopped: how long it stays stopped (the snapshot is taken).
	Stopped time.Duration
	// Pending: stopped -> pending -> running.
	Pending time.Duration
	// StatusInit: running with instance and system status initializing,
	// before both become ok.
	StatusInit time.Duration
}

// DefaultRebootTiming are the phase durations used for zero fields.
var DefaultRebootTiming = RebootTiming{Stopping: 20 * time.Second, Stopped: 10 * time.Second,
	Pending: 30 * time.Second, StatusInit: 60 * time.Second}

func (t RebootTiming) withDefaults() RebootTiming {
	d := DefaultRebootTiming
	return RebootTiming{Stopping: positiveOr(t.Stopping, d.Stopping), Stopped: positiveOr(t.Stopped, d.Stopped),
		Pending: positiveOr(t.Pending, d.Pending), StatusInit: positiveOr(t.StatusInit, d.StatusInit)}
}

// positiveOr is v when it is set (> 0), else the default.
func positiveOr(v, def time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return def
}

// How a reboot ends when it does not come back (NeverBoots, ImpairedAfterReboot).
const (
	bootOK         = ""
	bootNever      = "never-boots"
	bootImpaired   = "impaired"
	statusOK       = "ok"
	statusInit     = "initializing"
	statusImpaired = "impaired"
	statusNA       = "not-applicable"
)

// rebootCycle is one reboot, fixed when it starts: every state it goes
// through is a function of the simulated time, so the emulator can answer
// for any instant without a timer (availability.go sweeps these instants).
type rebootCycle struct {
	start time.Time
	t     RebootTiming
	fail  string
}

func (c *rebootCycle) stoppedAt() time.Time { return c.start.Add(c.t.Stopping) }
func (c *rebootCycle) bootAt() time.Time    { return c.stoppedAt().Add(c.t.Stopped) }
func (c *rebootCycle) runningAt() time.Time { return c.bootAt().Add(c.t.Pending) }
func (c *rebootCycle) okAt() time.Time      { return c.runningAt().Add(c.t.StatusInit) }

// instants are the times at which something about the cycle changes.
func (c *rebootCycle) instants() []time.Time {
	return []time.Time{c.start, c.stoppedAt(), c.bootAt(), c.runningAt(), c.okAt()}
}

// NeverBoots makes the next reboot of the instance (a CreateImage without
// NoReboot under Options.RebootModel) stop it and never start it again: it
// stays stopped, as after a failed boot. ClearFaults removes the mark.
func (s *Sim) NeverBoots(instanceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ext.bootFail[instanceID] = bootNever
}

// ImpairedAfterReboot makes the next reboot of the instance come back
// running but with its instance status check impaired (e.g. a kernel that
// does not reach the network): it is never ok.
func (s *Sim) ImpairedAfterReboot(instanceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ext.bootFail[instanceID] = bootImpaired
}

// startReboot begins a reboot cycle at now when the reboot model is on.
// Caller holds mu and has checked that the instance is running.
func (s *Sim) startReboot(in *instance, now time.Time) {
	if !s.opts.RebootModel {
		return
	}
	in.cycle = &rebootCycle{start: now, t: s.opts.Reboot.withDefaults(), fail: s.ext.bootFail[in.id]}
}

// stateOf is the instance's state now. Caller holds mu.
func (s *Sim) stateOf(in *instance) string { return in.stateAt(s.now()) }

// stateAt is the instance state at t (t not before the last change).
func (in *instance) stateAt(t time.Time) string {
	if tm := in.term; tm != nil && !t.Before(tm.start) {
		if t.Before(tm.terminatedAt()) {
			return "shutting-down"
		}
		return "terminated"
	}
	c := in.cycle
	switch {
	case c == nil || t.Before(c.start):
		return in.state
	case t.Before(c.stoppedAt()):
		return "stopping"
	case c.fail == bootNever || t.Before(c.bootAt()):
		return "stopped"
	case t.Before(c.runningAt()):
		return "pending"
	}
	return "running"
}

// statusAt returns the instance and system status checks at t as
// DescribeInstanceStatus reports them: not-applicable unless running.
func (in *instance) statusAt(t time.Time) (instanceStatus, systemStatus string) {
	if in.stateAt(t) != "running" {
		return statusNA, statusNA
	}
	c := in.cycle
	switch {
	case c == nil || t.Before(c.start):
		return statusOK, statusOK
	case t.Before(c.okAt()):
		return statusInit, statusInit
	case c.fail == bootImpaired:
		// The instance check fails, the host (system check) is fine.
		return statusImpaired, statusOK
	}
	return statusOK, statusOK
}

// upSince reports whether the instance is running with both checks ok at
// t and since when without interruption.
func (in *instance) upSince(t time.Time) (time.Time, bool) {
	if st, sys := in.statusAt(t); st != statusOK || sys != statusOK {
		return time.Time{}, false
	}
	if c := in.cycle; c != nil && !t.Before(c.start) {
		return c.okAt(), true
	}
	return in.since, true
}

// instants are the times at which the instance's own state or checks change.
func (in *instance) instants() []time.Time {
	out := []time.Time{in.since}
	if in.cycle != nil {
		out = append(out, in.cycle.instants()...)
	}
	if in.term != nil {
		out = append(out, in.term.start, in.term.terminatedAt())
	}
	return out
}
