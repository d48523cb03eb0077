package ec2sim

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Auto Scaling lifecycle states the emulator uses.
const (
	lifecycleInService       = "InService"
	lifecycleEnteringStandby = "EnteringStandby"
	lifecycleStandby         = "Standby"
	lifecyclePending         = "Pending"
	lifecycleTerminating     = "Terminating"
	lifecycleTerminated      = "Terminated"
)

// lifecycleStates are the LifecycleState values of
// AutoScalingInstanceDetails (Auto Scaling API reference): the states a
// test may put a member in with SetAutoScalingLifecycle (lifecycle hooks
// hold an instance in Pending:Wait or Terminating:Wait; the emulator does
// not run hooks, a test stands in for them).
var lifecycleStates = []string{"Pending", "Pending:Wait", "Pending:Proceed", "Quarantined", "InService",
	"Terminating", "Terminating:Wait", "Terminating:Proceed", "Terminated", "Detaching", "Detached",
	"EnteringStandby", "Standby", "Warmed:Pending", "Warmed:Pending:Wait", "Warmed:Pending:Proceed",
	"Warmed:Terminating", "Warmed:Terminating:Wait", "Warmed:Terminating:Proceed", "Warmed:Terminated",
	"Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated"}

// asgNameTag is the tag AWS puts on every instance of an Auto Scaling group.
const asgNameTag = "aws:autoscaling:groupName"

var autoScalingActions = map[string]handler{
	"DescribeAutoScalingInstances": (*Sim).describeAutoScalingInstances,
	"DescribeAutoScalingGroups":    (*Sim).describeAutoScalingGroups,
	"EnterStandby":                 (*Sim).enterStandby,
	"ExitStandby":                  (*Sim).exitStandby,
}

// AutoScalingGroupSpec seeds an Auto Scaling group of existing instances.
type AutoScalingGroupSpec struct {
	Account, Region, Name string
	// Instances join InService; the desired capacity is their number and
	// so is the maximum size.
	Instances []string
	// MinSize (default 0): EnterStandby with ShouldDecrementDesiredCapacity
	// cannot take the desired capacity below it.
	MinSize int
	// TargetGroupARNs are attached to the group (AttachLoadBalancerTargetGroups;
	// the group's TargetGroupARNs): the group registers its members with
	// them (the seeded ones at once), deregisters a member that enters
	// Standby or is terminated and registers it again when it leaves
	// Standby ("How the standby state works", Amazon EC2 Auto Scaling user
	// guide, as-enter-exit-standby). Each must be seeded (AddTargetGroup) first.
	TargetGroupARNs []string
	// HealthCheckGracePeriod: how long after a member enters InService an
	// impaired status check is ignored (CreateAutoScalingGroup's
	// HealthCheckGracePeriod; "Its default value is 0 seconds when you create
	// an Auto Scaling group using the AWS CLI or an SDK", health check grace
	// period page). A member that is not running is unhealthy also during
	// the grace period (health check considerations). Used with
	// Options.HealthChecks.
	HealthCheckGracePeriod time.Duration
	// Tags are the group's tags with PropagateAtLaunch: the instances it
	// launches (replacements) get them, and aws:autoscaling:groupName.
	Tags map[string]string
}

type autoScaling struct {
	name, account, region string
	min, max, desired     int
	members               map[string]*asgMember
	order                 []string
	activities            int
	targetGroups          []string // attached target group ARNs
	grace                 time.Duration
	tags                  map[string]string
	checked               time.Time   // health checks are done up to here (asghealth.go)
	launches              []time.Time // replacement launches due (Options.ReplacementDelay), in order
}

// asgMember's lifecycle is cur before at and next from at on (a transition
// such as EnteringStandby -> Standby completes on its own). A member being
// terminated (next Terminating) is Terminated once its instance is, and is
// then no longer listed.
type asgMember struct {
	cur, next string
	at        time.Time
	in        *instance
	// unhealthy: marked Unhealthy by a health check (asghealth.go).
	unhealthy bool
	// replacedAt: when the group launched (or will launch) the replacement
	// of this member, terminated as unhealthy (zero: not replaced).
	replacedAt time.Time
}

func (m *asgMember) lifecycleAt(t time.Time) string {
	lc := m.cur
	if m.next != "" && !t.Before(m.at) {
		lc = m.next
	}
	if lc == lifecycleTerminating && m.in != nil && m.in.term != nil && !t.Before(m.in.term.terminatedAt()) {
		return lifecycleTerminated
	}
	return lc
}

// inServiceSince is when the member last entered InService (zero: seeded).
func (m *asgMember) inServiceSince(t time.Time) time.Time {
	if m.next == lifecycleInService && !t.Before(m.at) {
		return m.at
	}
	return time.Time{}
}

// move starts a transition at now: via (at once), then to after delay.
func (m *asgMember) move(now time.Time, via, to string, delay time.Duration) {
	m.cur, m.next, m.at = via, to, now.Add(delay)
}

// AddAutoScalingGroup seeds an Auto Scaling group of existing instances,
// InService, and tags them aws:autoscaling:groupName as AWS does. The
// instances must exist in the account and Region and belong to no other
// group: anything else is a bug in the test's seeding and panics.
func (s *Sim) AddAutoScalingGroup(spec AutoScalingGroupSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region := defaults(spec.Account, spec.Region)
	s.sweep()
	r := s.region(region)
	key := account + "/" + region + "/" + spec.Name
	if _, dup := s.ext.asgs[key]; dup || spec.Name == "" {
		panic(fmt.Sprintf("ec2sim: AddAutoScalingGroup: name %q empty or taken", spec.Name))
	}
	g := &autoScaling{name: spec.Name, account: account, region: region, min: spec.MinSize,
		max: len(spec.Instances), desired: len(spec.Instances), members: map[string]*asgMember{},
		targetGroups: slices.Clone(spec.TargetGroupARNs), grace: spec.HealthCheckGracePeriod, tags: maps.Clone(spec.Tags), checked: s.now()}
	for _, arn := range g.targetGroups {
		if tg := s.ext.tgs[arn]; tg == nil || tg.account != account || tg.region != region {
			panic(fmt.Sprintf("ec2sim: AddAutoScalingGroup: target group %s not seeded in %s/%s", arn, account, region))
		}
	}
	for _, id := range spec.Instances {
		in, ok := r.instances[id]
		if !ok || in.owner != account {
			panic(fmt.Sprintf("ec2sim: AddAutoScalingGroup: instance %s not found in %s/%s", id, account, region))
		}
		if s.asgOf(account, region, id) != nil {
			panic(fmt.Sprintf("ec2sim: AddAutoScalingGroup: instance %s is already in a group", id))
		}
		in.tags[asgNameTag] = spec.Name
		g.members[id] = &asgMember{cur: lifecycleInService, in: in}
		g.order = append(g.order, id)
		for _, arn := range g.targetGroups {
			s.ext.tgs[arn].register(id, time.Time{}) // registered long ago, as seeded targets are
		}
	}
	s.ext.asgs[key] = g
	s.sweep()
}

// asgOf finds the group of an instance. Caller holds mu.
func (s *Sim) asgOf(account, region, id string) *autoScaling {
	for _, g := range s.ext.asgs {
		if g.account == account && g.region == region && g.members[id] != nil {
			return g
		}
	}
	return nil
}

func (s *Sim) describeAutoScalingInstances(c *call) *apiError {
	ids := c.p.members("InstanceIds")
	maxRecords := 50
	if v := c.p.get("MaxRecords"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 50 {
			return validationError("1 validation error detected: Value '%s' at 'maxRecords' failed to satisfy constraint: Member must have value between 1 and 50", v)
		}
		maxRecords = n
	}
	if len(ids) > 50 {
		return validationError("The number of instance IDs must not exceed 50.")
	}
	type row struct {
		g  *autoScaling
		id string
	}
	var rows []row
	now := s.now()
	for _, key := range slices.Sorted(maps.Keys(s.ext.asgs)) {
		g := s.ext.asgs[key]
		if g.account != c.account || g.region != c.region {
			continue
		}
		for _, id := range g.order {
			if g.members[id].lifecycleAt(now) == lifecycleTerminated {
				continue // no longer in the group
			}
			// Unknown IDs are left out, not an error, as in AWS.
			if len(ids) == 0 || slices.Contains(ids, id) {
				rows = append(rows, row{g, id})
			}
		}
	}
	from := 0
	if tok := c.p.get("NextToken"); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(rows) {
			return &apiError{status: 400, code: "InvalidNextToken", msg: "The token '" + tok + "' is invalid."}
		}
		from = n
	}
	to := min(len(rows), from+maxRecords)
	x := c.out
	x.open("AutoScalingInstances")
	for _, rw := range rows[from:to] {
		in := c.r.instances[rw.id]
		m := rw.g.members[rw.id]
		lc := m.lifecycleAt(now)
		health := asgHealth(in, lc, now)
		if s.opts.HealthChecks {
			// Marked by a health check, and kept while in Standby ("its
			// health status reflects the status that it had before you put
			// it on standby", as-enter-exit-standby).
			health = map[bool]string{false: "HEALTHY", true: "UNHEALTHY"}[m.unhealthy]
		}
		x.open("member")
		x.el("InstanceId", rw.id)
		x.el("InstanceType", "t3.micro")
		x.el("AutoScalingGroupName", rw.g.name)
		x.el("AvailabilityZone", c.region+"a")
		x.el("LifecycleState", lc)
		x.el("HealthStatus", health)
		x.el("ProtectedFromScaleIn", "false")
		x.close("member")
	}
	x.close("AutoScalingInstances")
	if to < len(rows) {
		x.el("NextToken", strconv.Itoa(to))
	}
	return nil
}

// asgHealth is the EC2 health check of Auto Scaling, spelled as
// DescribeAutoScalingInstances spells it (HEALTHY, UNHEALTHY; the
// Instances of DescribeAutoScalingGroups say Healthy): an InService member
// that is not running, or whose status check is impaired, is UNHEALTHY.
// AWS would then terminate and replace it; the emulator only reports it
// (with Options.HealthChecks it replaces the member: asghealth.go): that
// is the case a reboot of an InService member risks, and why the workflow
// puts members in Standby first.
func asgHealth(in *instance, lifecycle string, t time.Time) string {
	if in == nil {
		return "UNHEALTHY"
	}
	st, _ := in.statusAt(t)
	if lifecycle == lifecycleInService && (in.stateAt(t) != "running" || st == statusImpaired) {
		return "UNHEALTHY"
	}
	return "HEALTHY"
}

// standbyTarget validates AutoScalingGroupName and InstanceIds.
func (s *Sim) standbyTarget(c *call) (*autoScaling, []string, *apiError) {
	name := c.p.get("AutoScalingGroupName")
	if name == "" {
		return nil, nil, validationError("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	g := s.ext.asgs[c.account+"/"+c.region+"/"+name]
	if g == nil {
		return nil, nil, validationError("AutoScalingGroup name not found - AutoScalingGroup %s not found", name)
	}
	ids := c.p.members("InstanceIds")
	if len(ids) == 0 {
		return nil, nil, validationError("At least one instance ID is required.")
	}
	for _, id := range ids {
		if g.members[id] == nil {
			return nil, nil, validationError("The instance %s is not part of Auto Scaling group %s.", id, name)
		}
	}
	return g, ids, nil
}

func (s *Sim) enterStandby(c *call) *apiError {
	g, ids, e := s.standbyTarget(c)
	if e != nil {
		return e
	}
	dec := c.p.get("ShouldDecrementDesiredCapacity")
	if dec == "" {
		return validationError("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	now := s.now()
	for _, id := range ids {
		if lc := g.members[id].lifecycleAt(now); lc != lifecycleInService {
			return validationError("The instance %s is not in InService.", id)
		}
	}
	before := g.desired
	if dec == "true" {
		if g.desired-len(ids) < g.min {
			return validationError("AutoScalingGroup %s has min-size=%d, max-size=%d, and desired-size=%d. To place into standby %d instances, please update the AutoScalingGroup sizes appropriately.",
				g.name, g.min, g.max, g.desired, len(ids))
		}
		g.desired -= len(ids)
	}
	// Without the decrement AWS launches replacements to keep the desired
	// capacity; the emulator does not model launches.
	c.out.open("Activities")
	for _, id := range ids {
		g.members[id].move(now, lifecycleEnteringStandby, lifecycleStandby, s.lifecycleDelay())
		// "If there is a load balancer or target group attached to your Auto
		// Scaling group, the instance is deregistered" (as-enter-exit-standby).
		for _, arn := range g.targetGroups {
			s.ext.tgs[arn].deregister(id, now)
		}
		cause := fmt.Sprintf("At %s an instance was moved to standby in response to a user request", now.Format(time.RFC3339))
		if dec == "true" {
			cause += fmt.Sprintf(", shrinking the capacity from %d to %d", before, g.desired)
		}
		s.activity(c, g, "Moving EC2 instance to Standby: "+id, cause+".", "InProgress", 50, now)
	}
	c.out.close("Activities")
	return nil
}

func (s *Sim) exitStandby(c *call) *apiError {
	g, ids, e := s.standbyTarget(c)
	if e != nil {
		return e
	}
	now := s.now()
	for _, id := range ids {
		if lc := g.members[id].lifecycleAt(now); lc != lifecycleStandby {
			return validationError("The instance %s is not in Standby.", id)
		}
	}
	if g.desired+len(ids) > g.max {
		return validationError("AutoScalingGroup %s has min-size=%d, max-size=%d, and desired-size=%d. To move %d instances out of standby, please update the AutoScalingGroup sizes appropriately.",
			g.name, g.min, g.max, g.desired, len(ids))
	}
	before := g.desired
	g.desired += len(ids)
	c.out.open("Activities")
	for _, id := range ids {
		g.members[id].move(now, lifecyclePending, lifecycleInService, s.lifecycleDelay())
		// "... the instance is registered with the load balancer or target
		// group" (as-enter-exit-standby). ELBv2 accepts running instances
		// only: one that is not running stays out, and the health check
		// replaces it (its replacement is registered).
		if in := c.r.instances[id]; in != nil && in.stateAt(now) == "running" {
			for _, arn := range g.targetGroups {
				s.ext.tgs[arn].register(id, now)
			}
		}
		s.activity(c, g, "Moving EC2 instance out of Standby: "+id,
			fmt.Sprintf("At %s an instance was moved out of standby in response to a user request, increasing the capacity from %d to %d.", now.Format(time.RFC3339), before, g.desired),
			"PreInService", 30, now)
	}
	c.out.close("Activities")
	return nil
}

func (s *Sim) activity(c *call, g *autoScaling, desc, cause, status string, progress int, now time.Time) {
	g.activities++
	x := c.out
	x.open("member")
	x.el("ActivityId", fmt.Sprintf("%08x-0000-4000-8000-%012x", s.reqSeq, g.activities))
	x.el("AutoScalingGroupName", g.name)
	x.el("Description", desc)
	x.el("Cause", cause)
	x.el("StartTime", ts(now))
	x.el("StatusCode", status)
	x.el("Progress", strconv.Itoa(progress))
	x.el("Details", `{"Availability Zone":"`+c.region+`a"}`)
	x.close("member")
}

func (s *Sim) lifecycleDelay() time.Duration {
	if s.opts.LifecycleDelay > 0 {
		return s.opts.LifecycleDelay
	}
	return 5 * time.Second
}

// AutoScalingGroupCapacity returns a group's desired capacity (ok false if unknown).
func (s *Sim) AutoScalingGroupCapacity(account, region, name string) (desired int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	g := s.ext.asgs[account+"/"+region+"/"+name]
	if g == nil {
		return 0, false
	}
	return g.desired, true
}

// describeAutoScalingGroups: the groups of the account and Region by name
// (AutoScalingGroupNames; unknown names are left out, as in AWS; none:
// every group), MaxRecords 1-100 (default 50) and NextToken, each with its
// sizes, target groups and members. Members spell HealthStatus as
// DescribeAutoScalingGroups does (Healthy, Unhealthy; Auto Scaling API
// reference, Instance), unlike DescribeAutoScalingInstances (HEALTHY).
func (s *Sim) describeAutoScalingGroups(c *call) *apiError {
	names := c.p.members("AutoScalingGroupNames")
	maxRecords := 50
	if v := c.p.get("MaxRecords"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return validationError("1 validation error detected: Value '%s' at 'maxRecords' failed to satisfy constraint: Member must have value between 1 and 100", v)
		}
		maxRecords = n
	}
	var gs []*autoScaling
	for _, key := range slices.Sorted(maps.Keys(s.ext.asgs)) {
		g := s.ext.asgs[key]
		if g.account == c.account && g.region == c.region && (len(names) == 0 || slices.Contains(names, g.name)) {
			gs = append(gs, g)
		}
	}
	from := 0
	if tok := c.p.get("NextToken"); tok != "" {
		n, err := strconv.Atoi(tok)
		if err != nil || n < 0 || n > len(gs) {
			return &apiError{status: 400, code: "InvalidNextToken", msg: "The token '" + tok + "' is invalid."}
		}
		from = n
	}
	to := min(len(gs), from+maxRecords)
	now := s.now()
	x := c.out
	x.open("AutoScalingGroups")
	for _, g := range gs[from:to] {
		x.open("member")
		x.el("AutoScalingGroupName", g.name)
		x.el("AutoScalingGroupARN", fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:00000000-0000-4000-8000-000000000000:autoScalingGroupName/%s", g.region, g.account, g.name))
		x.el("MinSize", strconv.Itoa(g.min))
		x.el("MaxSize", strconv.Itoa(g.max))
		x.el("DesiredCapacity", strconv.Itoa(g.desired))
		x.el("DefaultCooldown", "300")
		x.open("AvailabilityZones")
		x.el("member", g.region+"a")
		x.close("AvailabilityZones")
		x.el("HealthCheckType", "EC2")
		x.el("HealthCheckGracePeriod", strconv.Itoa(int(g.grace/time.Second)))
		x.el("CreatedTime", ts(time.Unix(0, 0).UTC()))
		x.open("Instances")
		for _, id := range g.order {
			m := g.members[id]
			lc := m.lifecycleAt(now)
			if lc == lifecycleTerminated {
				continue // no longer in the group
			}
			health := asgHealth(c.r.instances[id], lc, now)
			if s.opts.HealthChecks {
				health = map[bool]string{false: "HEALTHY", true: "UNHEALTHY"}[m.unhealthy]
			}
			x.open("member")
			x.el("InstanceId", id)
			x.el("InstanceType", "t3.micro")
			x.el("AvailabilityZone", c.region+"a")
			x.el("LifecycleState", lc)
			x.el("HealthStatus", map[string]string{"HEALTHY": "Healthy", "UNHEALTHY": "Unhealthy"}[health])
			x.el("ProtectedFromScaleIn", "false")
			x.close("member")
		}
		x.close("Instances")
		x.open("TargetGroupARNs")
		for _, arn := range g.targetGroups {
			x.el("member", arn)
		}
		x.close("TargetGroupARNs")
		x.close("member")
	}
	x.close("AutoScalingGroups")
	if to < len(gs) {
		x.el("NextToken", strconv.Itoa(to))
	}
	return nil
}
