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
)

// asgNameTag is the tag AWS puts on every instance of an Auto Scaling group.
const asgNameTag = "aws:autoscaling:groupName"

var autoScalingActions = map[string]handler{
	"DescribeAutoScalingInstances": (*Sim).describeAutoScalingInstances,
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
}

type autoScaling struct {
	name, account, region string
	min, max, desired     int
	members               map[string]*asgMember
	order                 []string
	activities            int
}

// asgMember's lifecycle is cur before at and next from at on (a transition
// such as EnteringStandby -> Standby completes on its own).
type asgMember struct {
	cur, next string
	at        time.Time
}

func (m *asgMember) lifecycleAt(t time.Time) string {
	if m.next != "" && !t.Before(m.at) {
		return m.next
	}
	return m.cur
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
		max: len(spec.Instances), desired: len(spec.Instances), members: map[string]*asgMember{}}
	for _, id := range spec.Instances {
		in, ok := r.instances[id]
		if !ok || in.owner != account {
			panic(fmt.Sprintf("ec2sim: AddAutoScalingGroup: instance %s not found in %s/%s", id, account, region))
		}
		if s.asgOf(account, region, id) != nil {
			panic(fmt.Sprintf("ec2sim: AddAutoScalingGroup: instance %s is already in a group", id))
		}
		in.tags[asgNameTag] = spec.Name
		g.members[id] = &asgMember{cur: lifecycleInService}
		g.order = append(g.order, id)
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
	for _, key := range slices.Sorted(maps.Keys(s.ext.asgs)) {
		g := s.ext.asgs[key]
		if g.account != c.account || g.region != c.region {
			continue
		}
		for _, id := range g.order {
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
	now := s.now()
	x := c.out
	x.open("AutoScalingInstances")
	for _, rw := range rows[from:to] {
		in := c.r.instances[rw.id]
		lc := rw.g.members[rw.id].lifecycleAt(now)
		x.open("member")
		x.el("InstanceId", rw.id)
		x.el("InstanceType", "t3.micro")
		x.el("AutoScalingGroupName", rw.g.name)
		x.el("AvailabilityZone", c.region+"a")
		x.el("LifecycleState", lc)
		x.el("HealthStatus", asgHealth(in, lc, now))
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
// (no replacement is modeled): that is the case a reboot of an InService
// member risks, and why the workflow puts members in Standby first.
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
