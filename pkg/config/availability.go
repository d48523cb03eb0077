package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Availability says how a rebooting policy keeps services up while their
// instances reboot for a consistent image (issue 13): instances are grouped
// by what they serve together (Auto Scaling group, ELBv2 target groups, a
// tag) and rebooted in waves, at most MaxUnavailable of a group at a time,
// drained first, and a group whose member does not come back is halted.
//
// A policy without the section gets the safe defaults (waves, groups by
// Auto Scaling group and target group, one instance of a group at a time,
// drain, 15m health timeout). The defaults are applied by the accessors
// below, never written into the document, so AMIBACKUP_CONFIG stays as the
// operator wrote it.
type Availability struct {
	// Mode: "waves" (default) or "all-at-once" (every instance of the
	// policy rebooted at once, as before issue 13; no other field allowed).
	Mode string `json:"mode,omitempty"`
	// GroupBy lists the sources that put instances into one availability
	// group: "asg" (the aws:autoscaling:groupName tag), "targetGroup"
	// (ELBv2 target groups; an instance in two target groups links them) and
	// "tag:<Key>" (instances with the same value of the tag). Default
	// ["asg", "targetGroup"].
	GroupBy []string `json:"groupBy,omitempty"`
	// MaxUnavailable instances of one group rebooting at once: a count
	// (>= 1) or a percentage of the group's size ("25%", at least 1).
	// Default 1.
	MaxUnavailable *MaxUnavailable `json:"maxUnavailable,omitempty"`
	// HealthTimeout: how long a rebooted instance has to be healthy again
	// before its group is halted. Default 15m, allowed 1m-2h. A string
	// (validated with its field path in Validate; a Duration here would fail
	// the whole decode without naming the field).
	HealthTimeout string `json:"healthTimeout,omitempty"`
	// Drain takes an instance out of service first (Auto Scaling
	// EnterStandby, ELBv2 DeregisterTargets) and returns it afterwards.
	// Default true.
	Drain *bool `json:"drain,omitempty"`
}

// Availability modes and group sources.
const (
	ModeWaves     = "waves"
	ModeAllAtOnce = "all-at-once"

	GroupByASG         = "asg"
	GroupByTargetGroup = "targetGroup"
	// GroupByTagPrefix precedes a tag key: "tag:Service".
	GroupByTagPrefix = "tag:"

	// DefaultHealthTimeout leaves room for an ELBv2 deregistration delay
	// (default 300 s), the reboot ("out of service for a few minutes") and
	// the status checks going from initializing to ok; it is the issue's
	// example value.
	DefaultHealthTimeout = 15 * time.Minute
	// MinHealthTimeout: no reboot plus status checks completes faster.
	MinHealthTimeout = time.Minute
	// MaxHealthTimeout bounds how long one stuck instance can hold its group
	// (and the night's run) before the group is halted.
	MaxHealthTimeout = 2 * time.Hour
	// MaxUnavailableCountLimit bounds a count; far above any group size a
	// policy can plan (the planner is sized for 10,000 instances).
	MaxUnavailableCountLimit = 10000
)

// DefaultGroupBy are the sources used when groupBy is not set. Both are
// AWS-defined statements that instances carry the same traffic (an Auto
// Scaling group replaces a member that fails its health checks while it
// reboots; a target group loses capacity with every deregistered target),
// so grouping by them can only make a reboot safer. No tag is a default:
// there is no standard key, and guessing one could merge unrelated
// instances into a slow group.
var DefaultGroupBy = []string{GroupByASG, GroupByTargetGroup}

// MaxUnavailable is an instance count or a percentage of the group's size.
// Any JSON value is accepted by the decoder and checked by Validate, so a
// bad value is reported with its field path like every other field.
type MaxUnavailable struct {
	count   int    // >= 1 for a count
	percent int    // 1-100 for a percentage
	raw     string // the JSON as written, when it is neither
}

// MaxUnavailableCount and MaxUnavailablePercent build values (tests, callers
// that configure in code).
func MaxUnavailableCount(n int) *MaxUnavailable   { return &MaxUnavailable{count: n} }
func MaxUnavailablePercent(p int) *MaxUnavailable { return &MaxUnavailable{percent: p} }

var percentRE = regexp.MustCompile(`^([1-9][0-9]{0,2})%$`)

// UnmarshalJSON accepts a whole number or a string "N%"; anything else is
// kept as written and reported by Validate.
func (m *MaxUnavailable) UnmarshalJSON(b []byte) error {
	*m = MaxUnavailable{raw: string(bytes.TrimSpace(b))}
	var s string
	if json.Unmarshal(b, &s) == nil {
		if p := percentRE.FindStringSubmatch(s); p != nil {
			if n, _ := strconv.Atoi(p[1]); n <= 100 {
				*m = MaxUnavailable{percent: n}
			}
		}
		return nil
	}
	if n, err := strconv.Atoi(m.raw); err == nil && n >= 1 && n <= MaxUnavailableCountLimit {
		*m = MaxUnavailable{count: n}
	}
	return nil
}

// MarshalJSON writes a count as a number and a percentage as "N%".
func (m MaxUnavailable) MarshalJSON() ([]byte, error) {
	switch {
	case m.count > 0:
		return []byte(strconv.Itoa(m.count)), nil
	case m.percent > 0:
		return json.Marshal(fmt.Sprintf("%d%%", m.percent))
	case m.raw != "":
		// Only reachable for a document that failed validation.
		return []byte(m.raw), nil
	}
	return []byte("1"), nil
}

func (m MaxUnavailable) valid() bool { return m.count > 0 || m.percent > 0 }

// String renders the value as configured ("2", "25%").
func (m MaxUnavailable) String() string {
	if m.percent > 0 {
		return fmt.Sprintf("%d%%", m.percent)
	}
	b, _ := m.MarshalJSON()
	return string(b)
}

// For resolves the value for a group of size instances: a count as is, a
// percentage as max(1, floor(percent x size)). Never below 1, so every
// group makes progress; never above the group's size.
func (m *MaxUnavailable) For(size int) int {
	n := 1
	switch {
	case m == nil:
	case m.count > 0:
		n = m.count
	case m.percent > 0:
		n = m.percent * size / 100
	}
	return max(1, min(n, size))
}

// The accessors below apply the defaults; a nil *Availability (no section)
// is the default section.

// Waves reports whether instances are rebooted in waves (default) rather
// than all at once.
func (a *Availability) Waves() bool { return a == nil || a.Mode != ModeAllAtOnce }

// Sources returns the group sources (default DefaultGroupBy).
func (a *Availability) Sources() []string {
	if a == nil || len(a.GroupBy) == 0 {
		return DefaultGroupBy
	}
	return a.GroupBy
}

// MaxUnavailableFor resolves maxUnavailable for a group of size instances
// (default 1).
func (a *Availability) MaxUnavailableFor(size int) int {
	if a == nil {
		return (*MaxUnavailable)(nil).For(size)
	}
	return a.MaxUnavailable.For(size)
}

// Timeout returns the health timeout (default DefaultHealthTimeout).
func (a *Availability) Timeout() time.Duration {
	if a == nil || a.HealthTimeout == "" {
		return DefaultHealthTimeout
	}
	d, err := ParseDuration(a.HealthTimeout)
	if err != nil {
		return DefaultHealthTimeout // unreachable after Validate
	}
	return d
}

// DrainEnabled reports whether instances are drained first (default true).
func (a *Availability) DrainEnabled() bool { return a == nil || a.Drain == nil || *a.Drain }

// TagKey returns the tag key of a "tag:<Key>" source.
func TagKey(source string) (string, bool) {
	return strings.CutPrefix(source, GroupByTagPrefix)
}

// validateAvailability checks a policy's availability section, if any.
func validateAvailability(add addFunc, f string, p *Policy) {
	a := p.Availability
	if a == nil {
		return
	}
	if !p.RebootEnabled() {
		add(f, "is set but the policy does not reboot (reboot: false): remove availability, or remove reboot to take file-system-consistent images in waves")
	}
	switch a.Mode {
	case "", ModeWaves:
	case ModeAllAtOnce:
		if a.GroupBy != nil || a.MaxUnavailable != nil || a.HealthTimeout != "" || a.Drain != nil {
			add(f, "mode %q reboots every instance at once: remove groupBy, maxUnavailable, healthTimeout and drain, or use mode %q", ModeAllAtOnce, ModeWaves)
		}
		return
	default:
		add(f+".mode", "%q is not allowed: use %q (default: reboot in waves per availability group) or %q (reboot every instance at once)", a.Mode, ModeWaves, ModeAllAtOnce)
	}
	if a.GroupBy != nil && len(a.GroupBy) == 0 {
		add(f+".groupBy", "is empty: omit it for the default %q, or use mode %q to reboot without groups", DefaultGroupBy, ModeAllAtOnce)
	}
	seen := map[string]bool{}
	for i, s := range a.GroupBy {
		fi := fmt.Sprintf("%s.groupBy[%d]", f, i)
		if key, ok := TagKey(s); ok {
			// EC2 tag keys: 1-128 characters. aws: keys are reserved for
			// writing only; reading one (aws:cloudformation:stack-name) is fine.
			if key == "" || len(key) > 128 {
				add(fi, "%q is not allowed: the tag key after \"tag:\" has 1-128 characters, e.g. \"tag:Service\"", s)
			}
		} else if s != GroupByASG && s != GroupByTargetGroup {
			add(fi, "%q is not allowed: use %q, %q or \"tag:<Key>\" (e.g. \"tag:Service\")", s, GroupByASG, GroupByTargetGroup)
		}
		if seen[s] {
			add(fi, "%q is listed twice", s)
		}
		seen[s] = true
	}
	if m := a.MaxUnavailable; m != nil && !m.valid() {
		add(f+".maxUnavailable", "%.64s is not allowed: use a whole number of instances 1-%d, or a percentage of the group \"1%%\"-\"100%%\" such as \"25%%\" (at least 1 instance); default 1",
			m.raw, MaxUnavailableCountLimit)
	}
	if a.HealthTimeout != "" {
		d, err := ParseDuration(a.HealthTimeout)
		switch {
		case err != nil:
			add(f+".healthTimeout", "%q is not a duration: use e.g. \"15m\" (allowed %s-%s, default %s)", a.HealthTimeout, MinHealthTimeout, MaxHealthTimeout, DefaultHealthTimeout)
		case d < MinHealthTimeout || d > MaxHealthTimeout:
			add(f+".healthTimeout", "%s is out of range: allowed %s-%s (default %s): a reboot and its status checks take minutes; longer holds the group and the night's run",
				a.HealthTimeout, MinHealthTimeout, MaxHealthTimeout, DefaultHealthTimeout)
		}
	}
}
