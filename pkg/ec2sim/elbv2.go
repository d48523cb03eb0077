package ec2sim

import (
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"time"
)

var elbv2Actions = map[string]handler{
	"DescribeTargetGroups":          (*Sim).describeTargetGroups,
	"DescribeTargetGroupAttributes": (*Sim).describeTargetGroupAttributes,
	"DescribeTargetHealth":          (*Sim).describeTargetHealth,
	"RegisterTargets":               (*Sim).registerTargets,
	"DeregisterTargets":             (*Sim).deregisterTargets,
}

// Target health states and reasons (ELBv2 TargetHealth).
const (
	healthInitial   = "initial"
	healthHealthy   = "healthy"
	healthUnhealthy = "unhealthy"
	healthDraining  = "draining"
	healthUnused    = "unused"
)

// TargetGroupSpec seeds an ELBv2 target group of instances (target type
// instance) attached to a load balancer.
type TargetGroupSpec struct {
	Account, Region, Name string
	// Port of the targets (default 80).
	Port int
	// DeregistrationDelay is how long a deregistered target drains
	// (default 300 s, the AWS default), in simulated time.
	DeregistrationDelay time.Duration
	// HealthyAfter is how long a registered target must pass health checks
	// before it is healthy: interval times healthy threshold (default
	// 30 s x 5, the AWS defaults for an instance target group). A target
	// passes when its instance is running with both status checks ok.
	HealthyAfter time.Duration
	// Instances are registered and healthy from the start.
	Instances []string
}

type targetGroup struct {
	name, arn, account, region string
	port                       int
	delay, healthyAfter        time.Duration
	targets                    map[string]*target
	order                      []string
}

// target is one instance of a target group. Seeded targets were registered
// long ago (zero time). dereg is zero while registered.
type target struct {
	tg         *targetGroup
	port       int
	reg, dereg time.Time
}

// TargetGroupARN is the ARN AddTargetGroup gives a target group.
func TargetGroupARN(account, region, name string) string {
	h := fnv.New64a()
	h.Write([]byte(account + region + name))
	return fmt.Sprintf("arn:aws:elasticloadbalancing:%s:%s:targetgroup/%s/%016x", region, account, name, h.Sum64())
}

// AddTargetGroup seeds a target group and returns its ARN. Unknown
// instances or a taken name panic: they are bugs in the test's seeding.
func (s *Sim) AddTargetGroup(spec TargetGroupSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region := defaults(spec.Account, spec.Region)
	s.sweep()
	arn := TargetGroupARN(account, region, spec.Name)
	if _, dup := s.ext.tgs[arn]; dup || spec.Name == "" || len(spec.Name) > 32 {
		panic(fmt.Sprintf("ec2sim: AddTargetGroup: name %q empty, longer than 32 characters or taken", spec.Name))
	}
	tg := &targetGroup{name: spec.Name, arn: arn, account: account, region: region, port: spec.Port,
		delay: spec.DeregistrationDelay, healthyAfter: spec.HealthyAfter, targets: map[string]*target{}}
	if tg.port == 0 {
		tg.port = 80
	}
	if tg.delay == 0 {
		tg.delay = 300 * time.Second
	}
	if tg.healthyAfter == 0 {
		tg.healthyAfter = 5 * 30 * time.Second
	}
	r := s.region(region)
	for _, id := range spec.Instances {
		if in, ok := r.instances[id]; !ok || in.owner != account {
			panic(fmt.Sprintf("ec2sim: AddTargetGroup: instance %s not found in %s/%s", id, account, region))
		}
		tg.targets[id] = &target{tg: tg, port: tg.port}
		tg.order = append(tg.order, id)
	}
	s.ext.tgs[arn] = tg
	s.sweep()
	return arn
}

// healthAt is the target's health at t as DescribeTargetHealth reports it.
func (tg *target) healthAt(in *instance, t time.Time) (state, reason, desc string) {
	if !tg.dereg.IsZero() && !t.Before(tg.dereg) {
		if t.Before(tg.dereg.Add(tg.tg.delay)) {
			return healthDraining, "Target.DeregistrationInProgress", "Target deregistration is in progress"
		}
		return healthUnused, "Target.NotRegistered", "Target is not registered to the target group"
	}
	if st := in.stateAt(t); st != "running" {
		return healthUnused, "Target.InvalidState", "Target is in the " + st + " state"
	}
	since, up := in.upSince(t)
	if up && !t.Before(later(tg.reg, since).Add(tg.tg.healthyAfter)) {
		return healthHealthy, "", ""
	}
	// Down since it registered (a reboot), or failing for as long as it
	// takes to pass: unhealthy. Newly registered and not yet judged: initial.
	rebooted := in.cycle != nil && !in.cycle.start.Before(tg.reg) && !t.Before(in.cycle.start)
	if rebooted || !t.Before(tg.reg.Add(tg.tg.healthyAfter)) {
		return healthUnhealthy, "Target.FailedHealthChecks", "Health checks failed"
	}
	return healthInitial, "Elb.RegistrationInProgress", "Target registration is in progress"
}

// instants are the times at which the target's health can change.
func (tg *target) instants(in *instance) []time.Time {
	ha := tg.tg.healthyAfter
	out := []time.Time{tg.reg, tg.reg.Add(ha), in.since.Add(ha)}
	if in.cycle != nil {
		out = append(out, in.cycle.okAt().Add(ha))
	}
	if !tg.dereg.IsZero() {
		out = append(out, tg.dereg, tg.dereg.Add(tg.tg.delay))
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// targetGroupOf validates TargetGroupArn.
func (s *Sim) targetGroupOf(c *call) (*targetGroup, *apiError) {
	arn := c.p.get("TargetGroupArn")
	if arn == "" {
		return nil, validationError("A target group ARN must be specified")
	}
	tg := s.ext.tgs[arn]
	if tg == nil || tg.account != c.account || tg.region != c.region {
		return nil, &apiError{status: http.StatusBadRequest, code: "TargetGroupNotFound", msg: "One or more target groups not found"}
	}
	return tg, nil
}

// invalidTarget is ELBv2's error for instances that do not exist, with
// the InvalidTarget description of the API reference ("The specified
// target does not exist, is not in the same VPC as the target group, or has
// an unsupported instance type") and the IDs.
func invalidTarget(ids []string) *apiError {
	return &apiError{status: http.StatusBadRequest, code: "InvalidTarget",
		msg: "The specified target does not exist, is not in the same VPC as the target group, or has an unsupported instance type: " + quoteIDs(ids)}
}

// targetsParam reads Targets.member.N.Id/Port.
func targetsParam(p params) (ids []string, ports []int) {
	for i, id := range p.targetIDs() {
		port, _ := strconv.Atoi(p.get(fmt.Sprintf("Targets.member.%d.Port", i+1)))
		ids = append(ids, id)
		ports = append(ports, port)
	}
	return ids, ports
}

func (s *Sim) describeTargetHealth(c *call) *apiError {
	tg, e := s.targetGroupOf(c)
	if e != nil {
		return e
	}
	ids, _ := targetsParam(c.p)
	var bad []string
	for _, id := range ids {
		if in, ok := c.r.instances[id]; !ok || in.owner != c.account {
			bad = append(bad, id)
		}
	}
	if len(bad) > 0 {
		return invalidTarget(bad)
	}
	now := s.now()
	if len(ids) == 0 {
		// Registered and still draining targets; gone ones are not listed.
		for _, id := range tg.order {
			if st, _, _ := tg.targets[id].healthAt(c.r.instances[id], now); st != healthUnused || tg.targets[id].dereg.IsZero() {
				ids = append(ids, id)
			}
		}
	}
	x := c.out
	x.open("TargetHealthDescriptions")
	for _, id := range ids {
		t := tg.targets[id]
		port := tg.port
		st, reason, desc := healthUnused, "Target.NotRegistered", "Target is not registered to the target group"
		if t != nil {
			port = t.port
			st, reason, desc = t.healthAt(c.r.instances[id], now)
		}
		x.open("member")
		x.open("Target")
		x.el("Id", id)
		x.el("Port", strconv.Itoa(port))
		x.close("Target")
		x.el("HealthCheckPort", strconv.Itoa(port))
		x.open("TargetHealth")
		x.el("State", st)
		x.opt("Reason", reason)
		x.opt("Description", desc)
		x.close("TargetHealth")
		x.close("member")
	}
	x.close("TargetHealthDescriptions")
	return nil
}

func (s *Sim) registerTargets(c *call) *apiError {
	tg, e := s.targetGroupOf(c)
	if e != nil {
		return e
	}
	ids, ports := targetsParam(c.p)
	if len(ids) == 0 {
		return validationError("At least one target must be specified")
	}
	now := s.now()
	var invalid, notRunning []string
	for _, id := range ids {
		in, ok := c.r.instances[id]
		switch {
		case !ok || in.owner != c.account:
			invalid = append(invalid, id)
		case in.stateAt(now) != "running":
			notRunning = append(notRunning, id)
		}
	}
	if len(invalid) > 0 {
		return invalidTarget(invalid)
	}
	if len(notRunning) > 0 {
		return &apiError{status: http.StatusBadRequest, code: "InvalidTarget", msg: "The following targets are not in a running state and cannot be registered: " + quoteIDs(notRunning)}
	}
	for i, id := range ids {
		tg.registerPort(id, ports[i], now)
	}
	return nil
}

// register registers an instance on the group's port at t (Auto Scaling
// registering a member of a group the target group is attached to).
func (tg *targetGroup) register(id string, t time.Time) { tg.registerPort(id, 0, t) }

// registerPort registers a target (port 0: the group's) at t. A registered
// one is left alone; a new, draining or gone one is registered afresh and
// its health checks restart.
func (tg *targetGroup) registerPort(id string, port int, t time.Time) {
	if port == 0 {
		port = tg.port
	}
	tt := tg.targets[id]
	if tt == nil {
		tt = &target{tg: tg}
		tg.targets[id] = tt
		tg.order = append(tg.order, id)
	} else if tt.dereg.IsZero() {
		return
	}
	tt.port, tt.reg, tt.dereg = port, t, time.Time{}
}

// deregister starts draining a registered target at t (no-op otherwise).
func (tg *targetGroup) deregister(id string, t time.Time) {
	if tt := tg.targets[id]; tt != nil && tt.dereg.IsZero() {
		tt.dereg = t
	}
}

// deregisterTargets starts draining registered targets. "If the specified
// target does not exist, the action returns successfully" (DeregisterTargets
// API reference), so unknown and unregistered targets are no-ops.
func (s *Sim) deregisterTargets(c *call) *apiError {
	tg, e := s.targetGroupOf(c)
	if e != nil {
		return e
	}
	ids, _ := targetsParam(c.p)
	if len(ids) == 0 {
		return validationError("At least one target must be specified")
	}
	now := s.now()
	for _, id := range ids {
		tg.deregister(id, now)
	}
	return nil
}

// describeTargetGroups lists the account's target groups in the Region by
// ARN (or those named by TargetGroupArns / Names), PageSize per page (1-400,
// default 400) with Marker, as the ELBv2 API reference describes. Needed to
// find an instance's target groups: ELBv2 has no reverse lookup, so a
// caller lists the groups and asks each for its targets.
func (s *Sim) describeTargetGroups(c *call) *apiError {
	arns, names := c.p.members("TargetGroupArns"), c.p.members("Names")
	if len(arns) > 0 && len(names) > 0 {
		return validationError("Target group names and target group ARNs cannot be specified at the same time")
	}
	size := 400
	if v := c.p.get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 400 {
			return validationError("1 validation error detected: Value '%s' at 'pageSize' failed to satisfy constraint: Member must have value between 1 and 400", v)
		}
		size = n
	}
	var all []*targetGroup
	for _, tg := range s.ext.tgs {
		if tg.account == c.account && tg.region == c.region &&
			(len(arns) == 0 || slices.Contains(arns, tg.arn)) && (len(names) == 0 || slices.Contains(names, tg.name)) {
			all = append(all, tg)
		}
	}
	if n := max(len(arns), len(names)); n > 0 && len(all) != n {
		return &apiError{status: http.StatusBadRequest, code: "TargetGroupNotFound", msg: "One or more target groups not found"}
	}
	slices.SortFunc(all, func(a, b *targetGroup) int { return cmpStr(a.arn, b.arn) })
	from := 0
	if m := c.p.get("Marker"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 0 || n > len(all) {
			return validationError("Invalid marker %q", m)
		}
		from = n
	}
	to := min(len(all), from+size)
	x := c.out
	x.open("TargetGroups")
	for _, tg := range all[from:to] {
		x.open("member")
		x.el("TargetGroupArn", tg.arn)
		x.el("TargetGroupName", tg.name)
		x.el("Protocol", "HTTP")
		x.el("Port", strconv.Itoa(tg.port))
		x.el("TargetType", "instance")
		// The health check that makes a target healthy after
		// HealthyAfter: the AWS default threshold (5) and the interval
		// that gives HealthyAfter, in whole seconds.
		x.el("HealthCheckIntervalSeconds", strconv.Itoa(tg.healthInterval()))
		x.el("HealthyThresholdCount", strconv.Itoa(healthyThreshold))
		x.close("member")
	}
	x.close("TargetGroups")
	if to < len(all) {
		x.el("NextMarker", strconv.Itoa(to))
	}
	return nil
}

func cmpStr(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// healthyThreshold is the HealthyThresholdCount the emulator reports (the
// AWS default for an instance target group).
const healthyThreshold = 5

// healthInterval is the HealthCheckIntervalSeconds that, with
// healthyThreshold, gives the group's HealthyAfter (rounded up).
func (tg *targetGroup) healthInterval() int {
	return int((tg.healthyAfter + healthyThreshold*time.Second - 1) / (healthyThreshold * time.Second))
}

// describeTargetGroupAttributes answers the attribute the emulator models:
// deregistration_delay.timeout_seconds (ELBv2 API reference,
// TargetGroupAttribute: "The amount of time, in seconds, for Elastic Load
// Balancing to wait before changing the state of a deregistering target
// from draining to unused. The range is 0-3600 seconds. The default value
// is 300 seconds."), plus the stickiness default, as AWS lists several.
func (s *Sim) describeTargetGroupAttributes(c *call) *apiError {
	tg, e := s.targetGroupOf(c)
	if e != nil {
		return e
	}
	x := c.out
	x.open("Attributes")
	for _, kv := range [][2]string{
		{"deregistration_delay.timeout_seconds", strconv.Itoa(int(tg.delay / time.Second))},
		{"stickiness.enabled", "false"},
	} {
		x.open("member")
		x.el("Key", kv[0])
		x.el("Value", kv[1])
		x.close("member")
	}
	x.close("Attributes")
	return nil
}
