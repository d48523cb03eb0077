package ec2sim

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// RunInstances, TerminateInstances and the launch/termination life cycle
// (issue 14: restore verification boots each backup in isolation).

func init() {
	actions["RunInstances"] = (*Sim).runInstances
	actions["TerminateInstances"] = (*Sim).terminateInstances
	actions["DescribeVolumes"] = (*Sim).describeVolumes
}

// LaunchTiming is how long, in simulated time, a launched instance spends in
// each phase, and how long a terminated one stays visible.
type LaunchTiming struct {
	// Pending: pending -> running.
	Pending time.Duration
	// StatusInit: running with both status checks initializing, before
	// they pass (ok) or, for an UnbootableImage, the instance check fails.
	StatusInit time.Duration
	// ShuttingDown: shutting-down -> terminated.
	ShuttingDown time.Duration
	// Visible: how long a terminated instance stays in DescribeInstances.
	// "Terminated instances remain visible after termination (for
	// approximately one hour)" (TerminateInstances API reference).
	Visible time.Duration
}

// DefaultLaunchTiming are the durations used for zero fields.
var DefaultLaunchTiming = LaunchTiming{Pending: 30 * time.Second, StatusInit: 2 * time.Minute,
	ShuttingDown: 30 * time.Second, Visible: time.Hour}

func (t LaunchTiming) withDefaults() LaunchTiming {
	d := DefaultLaunchTiming
	return LaunchTiming{Pending: positiveOr(t.Pending, d.Pending), StatusInit: positiveOr(t.StatusInit, d.StatusInit),
		ShuttingDown: positiveOr(t.ShuttingDown, d.ShuttingDown), Visible: positiveOr(t.Visible, d.Visible)}
}

// launchState holds what RunInstances and TerminateInstances need beyond
// the instances themselves.
type launchState struct {
	unbootable   map[string]bool         // image IDs whose instances never pass the instance check
	reservations map[string]*reservation // by account/region/client token
	terminating  map[string]string       // instance ID -> Region, until it is gone
}

func newLaunchState() *launchState {
	return &launchState{unbootable: map[string]bool{}, reservations: map[string]*reservation{}, terminating: map[string]string{}}
}

// reservation remembers a RunInstances call made with a client token.
type reservation struct {
	id, owner   string
	instances   []string
	fingerprint string
}

// termination is fixed when TerminateInstances is called: the state is a
// function of simulated time, like a reboot cycle.
type termination struct {
	start                 time.Time
	shuttingDown, visible time.Duration
	byOS                  bool // the guest shut down (ShutdownFromOS), not TerminateInstances
}

func (tm *termination) terminatedAt() time.Time { return tm.start.Add(tm.shuttingDown) }
func (tm *termination) goneAt() time.Time       { return tm.terminatedAt().Add(tm.visible) }

// UnbootableImage marks an image as an "unbootable backup": instances
// launched from it go pending -> running, but after the status checks'
// initializing phase their instance status check is impaired (the system
// check, the host, stays ok) and never becomes ok, also after a reboot.
// RunInstances itself succeeds, as it does in EC2 for an image whose
// operating system does not come up. ClearFaults removes the mark.
func (s *Sim) UnbootableImage(imageID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.launch.unbootable[imageID] = true
}

// instanceArchs maps an instance family to the architectures it runs, as
// DescribeInstanceTypes reports them (ProcessorInfo.SupportedArchitectures).
// Only families a restore verification is likely to use; an unknown type is
// InvalidParameterValue.
var instanceArchs = map[string][]string{}

func init() {
	for _, f := range []string{"t2", "m1", "c1"} {
		instanceArchs[f] = []string{"i386", "x86_64"}
	}
	for _, f := range []string{"t3", "t3a", "m5", "m5a", "m6i", "m6a", "m7i", "m7a", "c5", "c6i", "c6a", "c7i", "r5", "r6i", "r7i"} {
		instanceArchs[f] = []string{"x86_64"}
	}
	for _, f := range []string{"t4g", "a1", "m6g", "m7g", "m8g", "c6g", "c7g", "c8g", "r6g", "r7g", "r8g"} {
		instanceArchs[f] = []string{"arm64"}
	}
}

var instanceSizes = []string{"nano", "micro", "small", "medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "metal"}

// archsOf returns the architectures of an instance type, ok=false if the
// emulator does not know it.
func archsOf(instanceType string) ([]string, bool) {
	family, size, found := strings.Cut(instanceType, ".")
	if !found || !slices.Contains(instanceSizes, size) {
		return nil, false
	}
	a, ok := instanceArchs[family]
	return a, ok
}

// archOf is the architecture an image made from an instance of the type
// gets (the type's native one).
func archOf(instanceType string) string {
	a, ok := archsOf(instanceType)
	if !ok {
		return "x86_64"
	}
	return a[len(a)-1]
}

// resourceBuckets are EC2's resource-rate buckets: besides the request
// bucket, these actions draw one token per instance launched or terminated.
// Source: "Request throttling for the Amazon EC2 API", section "Resource
// token bucket sizes and refill rates" (EC2 developer guide): RunInstances
// 1000 / 2 per second, TerminateInstances 1000 / 20 per second.
var resourceBuckets = map[string]struct{ size, refill float64 }{
	"RunInstances":       {1000, 2},
	"TerminateInstances": {1000, 20},
}

// resourceNeed is the number of resource tokens a request needs at least:
// MinCount for RunInstances (EC2 launches no fewer; it may launch up to
// MaxCount), one per instance ID for TerminateInstances. DryRun requests
// launch nothing and need none.
func resourceNeed(action string, p params) float64 {
	if _, ok := resourceBuckets[action]; !ok || p.bool("DryRun") {
		return 0
	}
	switch action {
	case "RunInstances":
		n, err := strconv.Atoi(p.get("MinCount"))
		if err != nil || n < 1 || n > maxLaunch {
			return 0 // invalid or above the instance limit: the handler rejects it
		}
		return float64(n)
	case "TerminateInstances":
		return float64(len(p.list("InstanceId")))
	}
	return 0
}

// resourceBucket returns the action's resource bucket refilled to now.
// Caller holds mu.
func (s *Sim) resourceBucket(account, region, action string) *bucket {
	rb := resourceBuckets[action]
	key := account + "/" + region + "/" + action + " (resources)"
	now := s.now()
	b, ok := s.buckets[key]
	if !ok {
		b = &bucket{tokens: rb.size, size: rb.size, refill: rb.refill, last: now}
		s.buckets[key] = b
	}
	b.tokens = min(b.size, b.tokens+now.Sub(b.last).Seconds()*b.refill)
	b.last = now
	return b
}

// networkInterface is one NetworkInterface.N of a RunInstances request.
type networkInterface struct {
	deviceIndex, subnetID string
	publicIP, publicSet   bool
	groups                []string
}

func (p params) networkInterfaces() []networkInterface {
	var out []networkInterface
	for i := 1; ; i++ {
		base := fmt.Sprintf("NetworkInterface.%d.", i)
		if !p.hasPrefix(base) {
			return out
		}
		_, set := p[base+"AssociatePublicIpAddress"]
		out = append(out, networkInterface{deviceIndex: p.get(base + "DeviceIndex"), subnetID: p.get(base + "SubnetId"),
			publicIP: p.bool(base + "AssociatePublicIpAddress"), publicSet: set, groups: p.list(base + "SecurityGroupId")})
	}
}

// fingerprint identifies a request's parameters for ClientToken
// idempotency: everything except the token itself and DryRun.
func (p params) fingerprint() string {
	keys := slices.Sorted(maps.Keys(p))
	var b strings.Builder
	for _, k := range keys {
		if k == "ClientToken" || k == "DryRun" {
			continue
		}
		fmt.Fprintf(&b, "%s=%q;", k, p[k])
	}
	return b.String()
}

// defaultSubnet is the account's default-VPC subnet in the Region, used
// when a request names none.
func defaultSubnet(account, region string) string {
	h := fnv.New64a()
	h.Write([]byte(account + "/" + region))
	return fmt.Sprintf("subnet-%017x", h.Sum64()&0xFFFFFFFFFFFFFFF)
}

func vpcOf(subnet string) string {
	h := fnv.New64a()
	h.Write([]byte(subnet))
	return fmt.Sprintf("vpc-%017x", h.Sum64()&0xFFFFFFFFFFFFFFF)
}

// maxLaunch bounds one RunInstances call (the RunInstances resource
// bucket's size).
const maxLaunch = 1000

var launchTagTypes = []string{"instance", "volume", "network-interface"}

// runInstances launches instances from an image. Checks, in order: counts,
// instance type, image (format, visibility, state), architecture, key
// pair, shutdown behaviour, tags, network; then ClientToken idempotency,
// DryRun, and the resource bucket.
func (s *Sim) runInstances(c *call) *apiError {
	p := c.p
	imageID := p.get("ImageId")
	if imageID == "" {
		return errf("MissingParameter", "The request must contain the parameter ImageId")
	}
	if p.get("MinCount") == "" || p.get("MaxCount") == "" {
		return errf("MissingParameter", "The request must contain the parameters MinCount and MaxCount")
	}
	minN, err1 := strconv.Atoi(p.get("MinCount"))
	maxN, err2 := strconv.Atoi(p.get("MaxCount"))
	if err1 != nil || minN < 1 {
		return errf("InvalidParameterValue", "Value (%s) for parameter minCount is invalid. Expected a positive integer.", p.get("MinCount"))
	}
	if err2 != nil || maxN < minN {
		return errf("InvalidParameterValue", "Value (%s) for parameter maxCount is invalid. Expected an integer no less than minCount (%d).", p.get("MaxCount"), minN)
	}
	itype := p.get("InstanceType")
	if itype == "" {
		itype = "m1.small" // the API's documented default
	}
	archs, ok := archsOf(itype)
	if !ok {
		return errf("InvalidParameterValue", "Invalid value '%s' for InstanceType.", itype)
	}
	if !imageIDRE.MatchString(imageID) {
		return errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", imageID)
	}
	im, ok := c.r.images[imageID]
	if !ok || !s.visible(im, c.account) {
		return errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", imageID)
	}
	s.refresh(im)
	if im.state != "available" {
		// EC2 error codes: "InvalidAMIID.Unavailable: The specified AMI has
		// been deregistered and is no longer available, or is not in a
		// state from which you can launch an instance".
		return errf("InvalidAMIID.Unavailable", "The image id '[%s]' is not in a state from which you can launch an instance (%s).", imageID, im.state)
	}
	if !slices.Contains(archs, im.arch()) {
		// EC2's wording, as clients report it.
		return errf("InvalidParameterValue", "The architecture '%s' of the specified instance type does not match the architecture '%s' of the specified AMI. Specify an instance type and an AMI that have matching architectures, and try again. You can use 'describe-instance-types' or 'describe-images' to discover the architecture of the instance type or AMI.",
			strings.Join(archs, ","), im.arch())
	}
	if k := p.get("KeyName"); k != "" {
		// The emulator has no key pairs (no CreateKeyPair/ImportKeyPair).
		return errf("InvalidKeyPair.NotFound", "The key pair '%s' does not exist", k)
	}
	behavior := p.get("InstanceInitiatedShutdownBehavior")
	if behavior != "" && behavior != "stop" && behavior != "terminate" {
		return errf("InvalidParameterValue", "Value (%s) for parameter instanceInitiatedShutdownBehavior is invalid. Expected 'stop' or 'terminate'.", behavior)
	}
	if behavior == "" {
		behavior = "stop"
	}
	specs := p.tagSpecs()
	for rt, tags := range specs {
		if !slices.Contains(launchTagTypes, rt) {
			return errf("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		if e := validateTags(tags); e != nil {
			return e
		}
	}
	subnet, groups := p.get("SubnetId"), p.list("SecurityGroupId")
	nis := p.networkInterfaces()
	publicIP := subnet == "" // a default subnet maps public IPs on launch
	if len(nis) > 0 {
		if subnet != "" {
			return errf("InvalidParameterCombination", "Network interfaces and an instance-level subnet ID may not be specified on the same request")
		}
		if len(groups) > 0 {
			return errf("InvalidParameterCombination", "Network interfaces and an instance-level security groups may not be specified on the same request")
		}
		if len(nis) > 1 || nis[0].deviceIndex != "0" {
			return errf("InvalidParameterValue", "The emulator supports one network interface, with DeviceIndex 0")
		}
		subnet, groups = nis[0].subnetID, nis[0].groups
		publicIP = subnet == ""
		if nis[0].publicSet {
			publicIP = nis[0].publicIP
		}
	}
	if subnet != "" && !strings.HasPrefix(subnet, "subnet-") {
		return errf("InvalidSubnetID.NotFound", "The subnet ID '%s' does not exist", subnet)
	}
	for _, g := range groups {
		if !strings.HasPrefix(g, "sg-") {
			return errf("InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", g)
		}
	}
	if subnet == "" {
		subnet = defaultSubnet(c.account, c.region)
	}
	tok := p.get("ClientToken")
	if len(tok) > 64 {
		return errf("InvalidParameterValue", "Value for parameter clientToken is invalid: at most 64 ASCII characters.")
	}
	// One Availability Zone per Region in the emulator, so regional and
	// zonal idempotency (EC2 developer guide, "RunInstances idempotency")
	// coincide: a token is unique per account and Region.
	tokKey := c.account + "/" + c.region + "/" + tok
	if res, ok := s.launch.reservations[tokKey]; tok != "" && ok {
		if res.fingerprint != p.fingerprint() {
			return errf("IdempotentParameterMismatch", "Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
		}
		if c.dry() {
			return nil
		}
		// The retry succeeds without launching again and reports the
		// instances as they are now.
		var ins []*instance
		for _, id := range res.instances {
			if in, ok := c.r.instances[id]; ok {
				ins = append(ins, in)
			}
		}
		s.writeReservation(c, res.id, ins)
		return nil
	}
	if c.dry() {
		return nil
	}
	if minN > maxLaunch {
		// The emulator's stand-in for the account's instance quota, so a
		// runaway MaxCount cannot exhaust the test's memory.
		return errf("InstanceLimitExceeded", "You have requested more instances (%d) than your current instance limit of %d allows for the specified instance type.", minN, maxLaunch)
	}
	n := min(maxN, maxLaunch)
	if s.opts.Throttle {
		b := s.resourceBucket(c.account, c.region, "RunInstances")
		if b.tokens < float64(minN) {
			return errf("RequestLimitExceeded", "Request limit exceeded.")
		}
		n = min(n, int(b.tokens))
		b.tokens -= float64(n)
	}
	now := s.now()
	lt := s.opts.Launch.withDefaults()
	resID, _ := s.newID("r")
	fail := bootOK
	if s.launch.unbootable[imageID] {
		fail = bootImpaired
	}
	var ins []*instance
	for i := range n {
		id, seq := s.newID("i")
		in := &instance{id: id, owner: c.account, state: "running", tags: cloneOrEmpty(specs["instance"]), seq: seq,
			since: now, imageID: imageID, instanceType: itype, subnetID: subnet, reservationID: resID,
			clientToken: tok, launched: now, launchIndex: i, publicIP: publicIP, shutdownBehavior: behavior,
			groups: slices.Clone(groups)}
		// The launch is a boot: pending, then running with the checks
		// initializing, as at the end of a reboot (reboot.go).
		in.cycle = &rebootCycle{start: now, t: RebootTiming{Pending: lt.Pending, StatusInit: lt.StatusInit}, fail: fail}
		if fail != bootOK {
			s.ext.bootFail[id] = fail // later reboots do not cure it
		}
		for _, sid := range im.snapshots {
			sn, ok := c.r.snapshots[sid]
			if !ok {
				continue
			}
			vid := s.addVolume(c.r, c.account, c.region, VolumeSpec{SizeGiB: sn.sizeGiB, Encrypted: sn.encrypted, KmsKeyID: sn.kmsKeyID})
			v := c.r.volumes[vid]
			v.snapshotID, v.tags, v.created = sid, cloneOrEmpty(specs["volume"]), now
			in.volumes = append(in.volumes, vid)
		}
		c.r.instances[id] = in
		ins = append(ins, in)
	}
	if tok != "" {
		res := &reservation{id: resID, owner: c.account, fingerprint: p.fingerprint()}
		for _, in := range ins {
			res.instances = append(res.instances, in.id)
		}
		s.launch.reservations[tokKey] = res
	}
	s.writeReservation(c, resID, ins)
	return nil
}

func (s *Sim) writeReservation(c *call, resID string, ins []*instance) {
	x := c.out
	x.el("reservationId", resID)
	x.el("ownerId", c.account)
	x.open("groupSet")
	x.close("groupSet")
	x.open("instancesSet")
	now := s.now()
	for _, in := range ins {
		s.writeInstance(x, c.region, in, now)
	}
	x.close("instancesSet")
}

// writeInstance writes one instance item as DescribeInstances and
// RunInstances answer it. Seeded instances keep the fixed image ID and type
// they always reported.
func (s *Sim) writeInstance(x *xmlw, region string, in *instance, now time.Time) {
	state := in.stateAt(now)
	x.open("item")
	x.el("instanceId", in.id)
	x.el("imageId", cmp.Or(in.imageID, "ami-00000000000000000"))
	x.open("instanceState")
	x.el("code", fmt.Sprint(stateCodes[state]))
	x.el("name", state)
	x.close("instanceState")
	launched := !in.launched.IsZero() // RunInstances; seeded instances stay terse
	if launched {
		x.el("privateDnsName", "")
		x.el("dnsName", "")
		if tm := in.term; tm != nil && !now.Before(tm.start) {
			x.el("reason", fmt.Sprintf("User initiated (%s)", tm.start.UTC().Format("2006-01-02 15:04:05 MST")))
		} else {
			x.el("reason", "")
		}
		x.el("amiLaunchIndex", fmt.Sprint(in.launchIndex))
	}
	x.el("instanceType", cmp.Or(in.instanceType, "t3.micro"))
	if launched {
		x.el("launchTime", ts(in.launched))
		x.open("placement")
		x.el("availabilityZone", region+"a")
		x.el("tenancy", "default")
		x.close("placement")
		x.open("monitoring")
		x.el("state", "disabled")
		x.close("monitoring")
		if state != "terminated" {
			x.el("subnetId", in.subnetID)
			x.el("vpcId", vpcOf(in.subnetID))
			x.el("privateIpAddress", fmt.Sprintf("10.0.%d.%d", (in.seq>>8)&0xff, in.seq&0xff))
			if in.publicIP {
				x.el("ipAddress", fmt.Sprintf("198.51.100.%d", in.seq&0xff))
			}
		}
		x.open("groupSet")
		for _, g := range in.groups {
			x.open("item")
			x.el("groupId", g)
			x.close("item")
		}
		x.close("groupSet")
		if in.term != nil && !now.Before(in.term.start) {
			code, msg := "Client.UserInitiatedShutdown", "User initiated shutdown"
			if in.term.byOS {
				code, msg = "Client.InstanceInitiatedShutdown", "Instance initiated shutdown"
			}
			x.open("stateReason")
			x.el("code", code)
			x.el("message", code+": "+msg)
			x.close("stateReason")
		}
		x.el("architecture", archOf(in.instanceType))
	}
	x.el("rootDeviceType", "ebs")
	x.el("rootDeviceName", "/dev/xvda")
	x.open("blockDeviceMapping")
	for i, v := range in.volumes {
		x.open("item")
		x.el("deviceName", deviceName(i))
		x.open("ebs")
		x.el("volumeId", v)
		x.el("status", "attached")
		x.el("deleteOnTermination", "true")
		x.close("ebs")
		x.close("item")
	}
	x.close("blockDeviceMapping")
	x.opt("clientToken", in.clientToken)
	x.tags(in.tags)
	x.close("item")
}

// terminateInstances shuts instances down: shutting-down, then terminated
// after LaunchTiming.ShuttingDown; their volumes are deleted when they are
// terminated (DeleteOnTermination, EC2's default for the image's devices),
// and they disappear LaunchTiming.Visible later. As documented: idempotent
// ("if you terminate an instance more than once, each call succeeds"), and
// "if you specify multiple instances and the request fails (for example,
// because of a single incorrect instance ID), none of the instances are
// terminated" (TerminateInstances API reference).
func (s *Sim) terminateInstances(c *call) *apiError {
	ids := c.p.list("InstanceId")
	if len(ids) == 0 {
		return errf("MissingParameter", "The request must contain the parameter InstanceId")
	}
	var missing []string
	for _, id := range ids {
		if !instanceIDRE.MatchString(id) {
			return errf("InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
		if in, ok := c.r.instances[id]; !ok || in.owner != c.account {
			missing = append(missing, id)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", missing[0])
	default:
		return errf("InvalidInstanceID.NotFound", "The instance IDs '%s' do not exist", strings.Join(missing, ", "))
	}
	if c.dry() {
		return nil
	}
	if s.opts.Throttle {
		b := s.resourceBucket(c.account, c.region, "TerminateInstances")
		if b.tokens < float64(len(ids)) {
			return errf("RequestLimitExceeded", "Request limit exceeded.")
		}
		b.tokens -= float64(len(ids))
	}
	now := s.now()
	lt := s.opts.Launch.withDefaults()
	s.sweep() // availability up to now under the old states
	x := c.out
	x.open("instancesSet")
	for _, id := range ids {
		in := c.r.instances[id]
		prev := in.stateAt(now)
		if prev != "shutting-down" && prev != "terminated" {
			in.term = &termination{start: now, shuttingDown: lt.ShuttingDown, visible: lt.Visible}
			s.launch.terminating[id] = c.region
		}
		cur := in.stateAt(now)
		x.open("item")
		x.el("instanceId", id)
		x.open("currentState")
		x.el("code", fmt.Sprint(stateCodes[cur]))
		x.el("name", cur)
		x.close("currentState")
		x.open("previousState")
		x.el("code", fmt.Sprint(stateCodes[prev]))
		x.el("name", prev)
		x.close("previousState")
		x.close("item")
	}
	x.close("instancesSet")
	return nil
}

// ShutdownFromOS makes the guest of a running instance shut itself down
// (e.g. "shutdown -h now" at the end of a boot check). EC2 then applies the
// instance's InstanceInitiatedShutdownBehavior: terminate (shutting-down,
// terminated, as after TerminateInstances) or stop, the default (the
// emulator goes straight to stopped).
func (s *Sim) ShutdownFromOS(account, region, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	in, ok := s.region(region).instances[id]
	if !ok || in.owner != account {
		return fmt.Errorf("ec2sim: instance %s not found", id)
	}
	now := s.now()
	if st := in.stateAt(now); st != "running" {
		return fmt.Errorf("ec2sim: instance %s is %s, not running", id, st)
	}
	s.sweep() // availability up to now under the old state
	if in.shutdownBehavior == "terminate" {
		lt := s.opts.Launch.withDefaults()
		in.term = &termination{start: now, shuttingDown: lt.ShuttingDown, visible: lt.Visible, byOS: true}
		s.launch.terminating[id] = region
	} else {
		in.state, in.cycle, in.since = "stopped", nil, now
	}
	s.sweep()
	return nil
}

// reap deletes the volumes of instances that have reached terminated and
// removes instances whose visibility after termination has ended (with the
// client tokens of reservations none of whose instances remain). Caller
// holds mu.
func (s *Sim) reap() {
	if len(s.launch.terminating) == 0 {
		return
	}
	now := s.now()
	gone := false
	for id, region := range s.launch.terminating {
		r := s.region(region)
		in, ok := r.instances[id]
		if !ok || in.term == nil {
			delete(s.launch.terminating, id)
			continue
		}
		if !now.Before(in.term.terminatedAt()) && len(in.volumes) > 0 {
			for _, v := range in.volumes {
				delete(r.volumes, v)
			}
			in.volumes = nil
		}
		if !now.Before(in.term.goneAt()) {
			delete(r.instances, id)
			delete(s.launch.terminating, id)
			delete(s.ext.bootFail, id)
			gone = true
		}
	}
	if !gone {
		return
	}
	for key, res := range s.launch.reservations {
		region := strings.Split(key, "/")[1]
		r := s.region(region)
		if !slices.ContainsFunc(res.instances, func(id string) bool { _, ok := r.instances[id]; return ok }) {
			delete(s.launch.reservations, key)
		}
	}
}

// Volume is a copy of a volume's state for tests.
type Volume struct {
	ID, Account, Region, SnapshotID, InstanceID, KmsKeyID string
	SizeGiB                                               int
	Encrypted                                             bool
	Tags                                                  map[string]string
}

// Volumes returns the account's volumes in the Region, with the instance
// each is attached to.
func (s *Sim) Volumes(account, region string) []Volume {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reap()
	account, region = defaults(account, region)
	r := s.region(region)
	attached := map[string]string{}
	for _, in := range r.instances {
		for _, v := range in.volumes {
			attached[v] = in.id
		}
	}
	var out []Volume
	for _, v := range r.volumes {
		if v.owner != account {
			continue
		}
		out = append(out, Volume{ID: v.id, Account: account, Region: region, SnapshotID: v.snapshotID,
			InstanceID: attached[v.id], KmsKeyID: v.spec.KmsKeyID, SizeGiB: v.spec.SizeGiB,
			Encrypted: v.spec.Encrypted, Tags: maps.Clone(v.tags)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

var volumeIDRE = regexp.MustCompile(`^vol-[0-9a-f]{8}([0-9a-f]{9})?$`)

// describeVolumes lists the caller's volumes, so a restore verification
// can check that nothing it launched is left behind. Volumes of an
// instance are in-use until it is terminated (they are then deleted);
// the source volumes seeded with AddImage are available.
func (s *Sim) describeVolumes(c *call) *apiError {
	ids := c.p.list("VolumeId")
	if len(ids) > 0 && c.p.get("MaxResults") != "" {
		return errf("InvalidParameterCombination", "The parameter volumeSet cannot be used with the parameter maxResults")
	}
	for _, id := range ids {
		if !volumeIDRE.MatchString(id) {
			return errf("InvalidVolumeID.Malformed", "Invalid id: \"%s\" (expecting \"vol-...\")", id)
		}
		if v, ok := c.r.volumes[id]; !ok || v.owner != c.account {
			return errf("InvalidVolume.NotFound", "The volume '%s' does not exist.", id)
		}
	}
	type attachment struct {
		in  *instance
		dev int
	}
	attached := map[string]attachment{}
	for _, in := range c.r.instances {
		for i, v := range in.volumes {
			attached[v] = attachment{in, i}
		}
	}
	var match []*volume
	vols := slices.Collect(maps.Values(c.r.volumes))
	sort.Slice(vols, func(i, j int) bool { return vols[i].id < vols[j].id })
	for _, v := range vols {
		if v.owner != c.account || (len(ids) > 0 && !slices.Contains(ids, v.id)) {
			continue
		}
		a, inUse := attached[v.id]
		ok := true
		for _, f := range c.p.filters() {
			if m, isTag := matchTagFilter(f, v.tags); isTag {
				ok = ok && m
				continue
			}
			var val string
			switch f.name {
			case "volume-id":
				val = v.id
			case "snapshot-id":
				val = v.snapshotID
			case "attachment.instance-id":
				if inUse {
					val = a.in.id
				}
			case "status":
				val = map[bool]string{true: "in-use", false: "available"}[inUse]
			case "encrypted":
				val = fmt.Sprint(v.spec.Encrypted)
			case "volume-type":
				val = v.spec.Type
			default:
				return errf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
			}
			ok = ok && anyGlob(f.values, val)
		}
		if ok {
			match = append(match, v)
		}
	}
	from, to, next, e := page(c.p, len(match), 5, 500)
	if e != nil {
		return e
	}
	x := c.out
	x.open("volumeSet")
	for _, v := range match[from:to] {
		a, inUse := attached[v.id]
		created := v.created
		if created.IsZero() {
			created = s.simT0
		}
		x.open("item")
		x.el("volumeId", v.id)
		x.el("size", fmt.Sprint(v.spec.SizeGiB))
		x.el("snapshotId", v.snapshotID)
		x.el("availabilityZone", c.region+"a")
		x.el("status", map[bool]string{true: "in-use", false: "available"}[inUse])
		x.el("createTime", ts(created))
		x.open("attachmentSet")
		if inUse {
			x.open("item")
			x.el("volumeId", v.id)
			x.el("instanceId", a.in.id)
			x.el("device", deviceName(a.dev))
			x.el("status", "attached")
			x.el("attachTime", ts(created))
			x.el("deleteOnTermination", "true")
			x.close("item")
		}
		x.close("attachmentSet")
		x.el("volumeType", v.spec.Type)
		x.el("encrypted", fmt.Sprint(v.spec.Encrypted))
		x.opt("kmsKeyId", v.spec.KmsKeyID)
		x.el("multiAttachEnabled", "false")
		x.tags(v.tags)
		x.close("item")
	}
	x.close("volumeSet")
	x.opt("nextToken", next)
	return nil
}

// BackdateLaunch moves the launchTime DescribeInstances reports for an
// instance RunInstances launched d into the past, its state unchanged: a
// leftover of a run that is gone, for callers whose clock is the real one
// (a function under the RIE), where Advance would age every instance, the
// new launches included.
func (s *Sim) BackdateLaunch(account, region, id string, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	in, ok := s.region(region).instances[id]
	if !ok || in.owner != account || in.launched.IsZero() {
		return fmt.Errorf("ec2sim: no instance %s launched by RunInstances", id)
	}
	in.launched = in.launched.Add(-d)
	return nil
}
