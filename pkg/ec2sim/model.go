// Package ec2sim is an in-memory EC2 emulator speaking the EC2 Query
// protocol over HTTP, faithful enough that the real aws-sdk-go-v2 client
// exercises its serialization, pagination, retries and error decoding
// against it. It models several accounts and Regions, EC2's throttling
// buckets, image state transitions on a simulated clock, and injected faults.
package ec2sim

import (
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"sort"
	"sync"
	"time"
)

// Defaults for requests that carry no usable account or Region.
const (
	DefaultAccount = "123456789012"
	DefaultRegion  = "us-east-1"
)

// Options configure a Sim.
type Options struct {
	// Throttle enables EC2's token buckets per account, Region and action.
	Throttle bool
	// TimeScale is simulated seconds per real second (0 means 1).
	TimeScale float64
	// ImageDelay is the simulated time an image stays pending (0: available at once).
	ImageDelay time.Duration
	// CopyDelay is the simulated time a copied image stays pending.
	CopyDelay time.Duration
	// Start is the simulated clock at creation (zero: now).
	Start time.Time
	// FaultRate is the share of requests answered with InternalError or Unavailable.
	FaultRate float64
	// Latency is real time added to every request.
	Latency time.Duration
	// Seed seeds the fault RNG.
	Seed int64
	// RebootModel makes CreateImage without NoReboot take a running
	// instance through stopping, stopped, pending and running (status
	// checks initializing, then ok) over simulated time (reboot.go). Off,
	// the instance stays running, as callers before issue 13 expect.
	RebootModel bool
	// Reboot sets the phase durations of the reboot model (zero fields:
	// DefaultRebootTiming's).
	Reboot RebootTiming
	// LifecycleDelay is the simulated time an Auto Scaling instance spends
	// in EnteringStandby and Pending (0: 5 s).
	LifecycleDelay time.Duration
	// HealthChecks makes Auto Scaling's EC2 health checks act: an InService
	// member found unhealthy is terminated and replaced (asghealth.go).
	// Off, unhealthy members are only reported, as callers before expect.
	HealthChecks bool
	// HealthCheckInterval: how often, in simulated time, Auto Scaling
	// checks its InService members (0: 60 s; AWS says "periodically").
	HealthCheckInterval time.Duration
	// ImpairedTolerance: how long a status check may stay impaired before
	// the member is unhealthy (0: 3 minutes; AWS "waits a few minutes").
	ImpairedTolerance time.Duration
	// ReplacementDelay: with HealthChecks, how long after Auto Scaling
	// starts terminating an unhealthy member it launches the replacement
	// (0: at the same instant). "By default, Amazon EC2 Auto Scaling
	// creates a new scaling activity for terminating the unhealthy instance
	// and then terminates it. While the instance is terminating, another
	// scaling activity launches a new instance" (user guide, "View the
	// reason for health check failures", replace-unhealthy-instance); its
	// cause reads "a difference between desired and actual capacity".
	// Until then the group lists one instance fewer than its desired
	// capacity (none of them necessarily out of service); once the
	// terminated one is gone, every listed member may be InService.
	ReplacementDelay time.Duration
	// GroupTags are tag keys that form availability groups: instances with
	// the same value of such a key are one group (availability.go).
	GroupTags []string
	// TrackGroup, when set, limits the availability log to the groups it
	// accepts (kind: GroupAutoScaling, GroupTarget or GroupTag; name as in
	// GroupKey). The log is swept on every request over every member of
	// every tracked group: a fleet of thousands of groups (the 10,000
	// instance workflow benchmark) tracks a sample to stay fast.
	TrackGroup func(kind, name string) bool
	// Launch sets the phases of RunInstances and TerminateInstances (zero
	// fields: DefaultLaunchTiming's; runinstances.go).
	Launch LaunchTiming
}

// Sim is the emulator. It is an http.Handler; all methods are safe for
// concurrent use.
type Sim struct {
	mu      sync.Mutex
	opts    Options
	realT0  time.Time
	simT0   time.Time
	offset  time.Duration
	rng     *rand.Rand
	nextID  uint64
	regions map[string]*regionState // by Region name
	buckets map[string]*bucket      // account/region/action
	calls   callLog
	faults  []*faultRule
	failIns map[string]bool
	reqSeq  uint64
	orgs    map[string]Membership // by account
	ext     *extState             // reboots, Auto Scaling, ELBv2, availability
	launch  *launchState          // RunInstances, TerminateInstances (runinstances.go)

	// Step Functions executions (sfn.go), by ARN and in start order.
	executions     map[string]*Execution
	executionOrder []string
}

// Membership places an account in an AWS Organization for launch
// permissions granted to an OrganizationArn or OrganizationalUnitArn.
type Membership struct {
	// OrgID is the organization ("o-" and 10-32 characters).
	OrgID string
	// OUPath lists the OU IDs ("ou-...") from the root down to the
	// account's OU; a permission for any of them covers the account.
	OUPath []string
}

type regionState struct {
	instances map[string]*instance
	images    map[string]*image
	snapshots map[string]*snapshot
	volumes   map[string]*volume
	// imageRefs are seeded references to images by resources the emulator
	// does not model (launch templates, SSM parameters; references.go).
	imageRefs []imageRef
}

type volume struct {
	id, owner string
	spec      VolumeSpec
	// Set for volumes RunInstances created from an image's snapshot.
	snapshotID string
	tags       map[string]string
	created    time.Time
}

type instance struct {
	id, owner, state string
	imageID          string // the AMI it was launched from
	tags             map[string]string
	volumes          []string
	reboots          int
	noRebootImages   int
	seq              uint64
	cycle            *rebootCycle // the last reboot (RebootModel), nil if none
	since            time.Time    // when state was last set (zero: long ago)
	// Set by RunInstances (runinstances.go); seeded instances leave them
	// empty and report a fixed image and type.
	instanceType, subnetID, reservationID string
	clientToken, shutdownBehavior         string
	launched                              time.Time
	launchIndex                           int
	publicIP                              bool
	groups                                []string
	term                                  *termination // TerminateInstances, nil if never
}

type image struct {
	id, owner, name, state, instanceID, description string
	noReboot                                        bool
	tags                                            map[string]string
	snapshots                                       []string // in device order
	devices                                         []string
	created, readyAt, deprecation                   time.Time
	launchPerms                                     []string
	sourceImageID, sourceRegion                     string
	isCopy                                          bool
	fail                                            bool
	clientToken                                     string
	seq                                             uint64
	architecture                                    string // empty: x86_64
}

// arch is the image's architecture (x86_64 unless seeded or created otherwise).
func (im *image) arch() string {
	if im.architecture == "" {
		return "x86_64"
	}
	return im.architecture
}

type snapshot struct {
	id, owner, volumeID, description string
	sizeGiB                          int
	tags                             map[string]string
	start                            time.Time
	encrypted                        bool
	kmsKeyID                         string
	cvPerms                          []string
	imageID                          string // image whose creation made it pending
	finalState                       string // state once that image is gone ("" is completed)
	seq                              uint64
}

// VolumeSpec describes a seeded EBS volume.
type VolumeSpec struct {
	SizeGiB   int
	Type      string // gp3 by default; sc1 and st1 allow one concurrent snapshot
	Encrypted bool
	// KmsKeyID: empty with Encrypted means the AWS-managed key
	// (arn:aws:kms:<region>:<account>:alias/aws/ebs).
	KmsKeyID string
}

// InstanceSpec describes a seeded instance.
type InstanceSpec struct {
	Account, Region string
	State           string // running by default
	Tags            map[string]string
	Volumes         []VolumeSpec

	// ImageID is the AMI the instance was launched from (DescribeInstances'
	// imageId; an ec2:Instance reference for DescribeImageReferences).
	ImageID string
}

// ImageSpec describes a seeded image (e.g. one amibackup did not create).
type ImageSpec struct {
	Account, Region, Name, State string
	InstanceID                   string
	Tags, SnapshotTags           map[string]string
	Created                      time.Time
	Volumes                      []VolumeSpec
	// SnapshotIDs, when set, makes the image reuse these existing snapshots
	// (of the same Region) instead of creating one per volume, so tests can
	// build images that share a snapshot as RegisterImage allows. Volumes
	// and SnapshotTags are then ignored. An unknown ID panics: it is a bug
	// in the test's seeding, not a condition to handle.
	SnapshotIDs []string
	// Architecture is x86_64 by default (arm64 for a Graviton backup).
	Architecture string
}

// SnapshotSpec describes a seeded snapshot.
type SnapshotSpec struct {
	Account, Region, VolumeID, Description string
	Tags                                   map[string]string
	Created                                time.Time
	Encrypted                              bool
	KmsKeyID                               string
	// State is completed by default; pending or error seed a snapshot that
	// stays so and counts against its volume's concurrent-snapshot limit.
	State string
}

// Image is a copy of an image's state for tests.
type Image struct {
	ID, Account, Region, Name, State, InstanceID string
	NoReboot                                     bool
	Tags                                         map[string]string
	SnapshotIDs                                  []string
	CreationDate, DeprecationTime                time.Time
	LaunchPermissions                            []string
	SourceImageID, SourceRegion                  string
	Encrypted                                    bool
	KmsKeyID                                     string
}

// Snapshot is a copy of a snapshot's state for tests.
type Snapshot struct {
	ID, Account, Region, VolumeID, Description, State string
	Tags                                              map[string]string
	StartTime                                         time.Time
	Encrypted                                         bool
	KmsKeyID                                          string
	CreateVolumePermissions                           []string
}

// Instance is a copy of an instance's state for tests.
type Instance struct {
	ID, Account, Region, State string
	Tags                       map[string]string
	// Reboots counts CreateImage calls with NoReboot=false on the
	// running instance (a stopped one is not rebooted).
	Reboots int
	// NoRebootImages counts CreateImage calls with NoReboot=true.
	NoRebootImages int
	// Set for instances RunInstances launched.
	ImageID, InstanceType, SubnetID, ReservationID, ShutdownBehavior string
	SecurityGroupIDs, VolumeIDs                                      []string
	PublicIP                                                         bool
	// InstanceStatus and SystemStatus are DescribeInstanceStatus' checks
	// (not-applicable unless running).
	InstanceStatus, SystemStatus string
}

// New returns an emulator with no resources.
func New(opts Options) *Sim {
	if opts.TimeScale <= 0 {
		opts.TimeScale = 1
	}
	start := opts.Start
	if start.IsZero() {
		start = time.Now().UTC()
	}
	return &Sim{
		opts:    opts,
		realT0:  time.Now(),
		simT0:   start.UTC(),
		rng:     rand.New(rand.NewSource(opts.Seed)),
		regions: map[string]*regionState{},
		buckets: map[string]*bucket{},
		calls:   newCallLog(),
		failIns: map[string]bool{},
		orgs:    map[string]Membership{},
		ext:     newExtState(),
		launch:  newLaunchState(),
	}
}

// SetOrganization makes the account a member of an organization, in the
// OU path given (root first). An empty OrgID removes the membership.
func (s *Sim) SetOrganization(account string, m Membership) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m.OrgID == "" {
		delete(s.orgs, account)
		return
	}
	m.OUPath = slices.Clone(m.OUPath)
	s.orgs[account] = m
}

// Now is the simulated clock.
func (s *Sim) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

func (s *Sim) now() time.Time {
	el := time.Since(s.realT0)
	return s.simT0.Add(time.Duration(float64(el)*s.opts.TimeScale) + s.offset).UTC()
}

// Advance moves the simulated clock forward; pending images whose delay
// has elapsed become available.
func (s *Sim) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Buckets refill with the jump too: their last refill time is on the
	// simulated clock, so moving the clock is enough (shifting it back as
	// well would refill them for twice the jump).
	s.offset += d
}

// SetThrottle switches the token buckets on or off.
func (s *Sim) SetThrottle(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Throttle = on
}

func (s *Sim) region(name string) *regionState {
	r, ok := s.regions[name]
	if !ok {
		r = &regionState{
			instances: map[string]*instance{},
			images:    map[string]*image{},
			snapshots: map[string]*snapshot{},
			volumes:   map[string]*volume{},
		}
		s.regions[name] = r
	}
	return r
}

func (s *Sim) newID(prefix string) (string, uint64) {
	s.nextID++
	// 17 hex digits like current EC2 IDs; a multiplier spreads the digits
	// so IDs do not share long prefixes.
	return fmt.Sprintf("%s-%017x", prefix, (s.nextID*0x9E3779B97F4A7C15)&0xFFFFFFFFFFFFF|uint64(s.nextID)<<52&0xF0000000000000), s.nextID
}

func defaults(account, region string) (string, string) {
	if account == "" {
		account = DefaultAccount
	}
	if region == "" {
		region = DefaultRegion
	}
	return account, region
}

// AWSManagedKey is the ARN of the account's AWS-managed EBS key
// (alias/aws/ebs). Like EC2, snapshots report the key ARN, not the alias:
// only KMS DescribeKey (KeyManager=AWS) tells it apart from a customer key.
func AWSManagedKey(account, region string) string {
	return fmt.Sprintf("arn:aws:kms:%s:%s:key/%s%s", region, account, awsManagedKeyPrefix, account)
}

const awsManagedKeyPrefix = "aaaaaaaa-0000-4ebs-8aws-"

func (s *Sim) addVolume(r *regionState, account, region string, v VolumeSpec) string {
	if v.SizeGiB == 0 {
		v.SizeGiB = 8
	}
	if v.Type == "" {
		v.Type = "gp3"
	}
	if v.Encrypted && v.KmsKeyID == "" {
		v.KmsKeyID = AWSManagedKey(account, region)
	}
	id, _ := s.newID("vol")
	r.volumes[id] = &volume{id: id, owner: account, spec: v}
	return id
}

// AddInstance seeds an instance and returns its ID.
func (s *Sim) AddInstance(spec InstanceSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region := defaults(spec.Account, spec.Region)
	r := s.region(region)
	id, seq := s.newID("i")
	state := spec.State
	if state == "" {
		state = "running"
	}
	vols := spec.Volumes
	if len(vols) == 0 {
		vols = []VolumeSpec{{}}
	}
	in := &instance{id: id, owner: account, state: state, imageID: spec.ImageID, tags: maps.Clone(spec.Tags), seq: seq}
	if in.tags == nil {
		in.tags = map[string]string{}
	}
	for _, v := range vols {
		in.volumes = append(in.volumes, s.addVolume(r, account, region, v))
	}
	r.instances[id] = in
	return id
}

// SeedFleet seeds n running instances with 1-3 volumes each and the tags.
func (s *Sim) SeedFleet(account, region string, n int, tags map[string]string) []string {
	ids := make([]string, 0, n)
	for i := range n {
		vols := make([]VolumeSpec, 1+i%3)
		ids = append(ids, s.AddInstance(InstanceSpec{Account: account, Region: region, Tags: tags, Volumes: vols}))
	}
	return ids
}

// SetInstanceState changes an instance's state.
func (s *Sim) SetInstanceState(account, region, id, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	in, ok := s.region(region).instances[id]
	if !ok || in.owner != account {
		return fmt.Errorf("ec2sim: instance %s not found", id)
	}
	if _, ok := stateCodes[state]; !ok {
		return fmt.Errorf("ec2sim: unknown instance state %q", state)
	}
	s.sweep() // availability up to now under the old state
	in.state, in.cycle, in.since, in.term = state, nil, s.now(), nil
	delete(s.launch.terminating, id)
	s.sweep()
	return nil
}

// AddImage seeds an image with one snapshot per volume, or on the given
// existing snapshots.
func (s *Sim) AddImage(spec ImageSpec) (string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region := defaults(spec.Account, spec.Region)
	r := s.region(region)
	id, seq := s.newID("ami")
	created := spec.Created
	if created.IsZero() {
		created = s.now()
	}
	state := spec.State
	if state == "" {
		state = "available"
	}
	name := spec.Name
	if name == "" {
		name = id
	}
	im := &image{id: id, owner: account, name: name, state: state, instanceID: spec.InstanceID,
		tags: maps.Clone(spec.Tags), created: created.UTC(), seq: seq, architecture: spec.Architecture}
	if im.tags == nil {
		im.tags = map[string]string{}
	}
	for i, sid := range spec.SnapshotIDs {
		if _, ok := r.snapshots[sid]; !ok {
			panic(fmt.Sprintf("ec2sim: AddImage: snapshot %s does not exist in %s", sid, region))
		}
		im.snapshots = append(im.snapshots, sid)
		im.devices = append(im.devices, deviceName(i))
	}
	vols := spec.Volumes
	if len(vols) == 0 {
		vols = []VolumeSpec{{}}
	}
	if len(spec.SnapshotIDs) > 0 {
		vols = nil
	}
	for i, v := range vols {
		volID := s.addVolume(r, account, region, v)
		vs := r.volumes[volID].spec
		sid, sseq := s.newID("snap")
		r.snapshots[sid] = &snapshot{id: sid, owner: account, volumeID: volID, sizeGiB: vs.SizeGiB,
			description: fmt.Sprintf("Created by CreateImage(%s) for %s from %s", spec.InstanceID, id, volID),
			tags:        cloneOrEmpty(spec.SnapshotTags), start: created.UTC(), encrypted: vs.Encrypted, kmsKeyID: vs.KmsKeyID, seq: sseq}
		im.snapshots = append(im.snapshots, sid)
		im.devices = append(im.devices, deviceName(i))
	}
	if state == "pending" {
		// A seeded pending image stays pending until CompletePending or
		// SetImageState: tests decide when it completes.
		im.readyAt = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	r.images[id] = im
	return id, slices.Clone(im.snapshots)
}

// AddSnapshot seeds a snapshot not used by any image.
func (s *Sim) AddSnapshot(spec SnapshotSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region := defaults(spec.Account, spec.Region)
	r := s.region(region)
	id, seq := s.newID("snap")
	created := spec.Created
	if created.IsZero() {
		created = s.now()
	}
	key := spec.KmsKeyID
	if spec.Encrypted && key == "" {
		key = AWSManagedKey(account, region)
	}
	vol := spec.VolumeID
	if vol == "" {
		vol = "vol-ffffffff"
	}
	r.snapshots[id] = &snapshot{id: id, owner: account, volumeID: vol, description: spec.Description, sizeGiB: 8,
		tags: cloneOrEmpty(spec.Tags), start: created.UTC(), encrypted: spec.Encrypted, kmsKeyID: key, finalState: spec.State, seq: seq}
	return id
}

func cloneOrEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return maps.Clone(m)
}

func deviceName(i int) string {
	if i == 0 {
		return "/dev/xvda"
	}
	return fmt.Sprintf("/dev/sd%c", 'f'+rune(i-1))
}

// refresh promotes pending images whose time has come. Caller holds mu.
func (s *Sim) refresh(im *image) {
	if im.state == "pending" && !s.now().Before(im.readyAt) {
		if im.fail {
			im.state = "failed"
		} else {
			im.state = "available"
		}
	}
}

// CompletePending makes every pending image reach its final state now.
func (s *Sim) CompletePending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.regions {
		for _, im := range r.images {
			if im.state == "pending" {
				im.readyAt = time.Time{}
				s.refresh(im)
			}
		}
	}
}

// SetImageState forces an image's state.
func (s *Sim) SetImageState(account, region, imageID, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	im, ok := s.region(region).images[imageID]
	if !ok || im.owner != account {
		return fmt.Errorf("ec2sim: image %s not found", imageID)
	}
	im.state = state
	return nil
}

// FailImagesOf makes images created from the instance end failed.
func (s *Sim) FailImagesOf(instanceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failIns[instanceID] = true
}

func (s *Sim) imageCopy(region string, r *regionState, im *image) Image {
	s.refresh(im)
	out := Image{ID: im.id, Account: im.owner, Region: region, Name: im.name, State: im.state,
		InstanceID: im.instanceID, NoReboot: im.noReboot, Tags: maps.Clone(im.tags),
		SnapshotIDs: slices.Clone(im.snapshots), CreationDate: im.created, DeprecationTime: im.deprecation,
		LaunchPermissions: slices.Clone(im.launchPerms), SourceImageID: im.sourceImageID, SourceRegion: im.sourceRegion}
	for _, sid := range im.snapshots {
		if sn, ok := r.snapshots[sid]; ok && sn.encrypted {
			out.Encrypted = true
			out.KmsKeyID = sn.kmsKeyID
		}
	}
	return out
}

// Images returns the registered images the account owns in the Region.
func (s *Sim) Images(account, region string) []Image {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	r := s.region(region)
	var out []Image
	for _, im := range sortedImages(r) {
		if im.owner == account {
			out = append(out, s.imageCopy(region, r, im))
		}
	}
	return out
}

// Snapshots returns the account's snapshots in the Region.
func (s *Sim) Snapshots(account, region string) []Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	r := s.region(region)
	var out []Snapshot
	for _, sn := range sortedSnapshots(r) {
		if sn.owner == account {
			out = append(out, s.snapshotCopy(region, r, sn))
		}
	}
	return out
}

func (s *Sim) snapshotCopy(region string, r *regionState, sn *snapshot) Snapshot {
	return Snapshot{ID: sn.id, Account: sn.owner, Region: region, VolumeID: sn.volumeID, Description: sn.description,
		State: s.snapshotState(r, sn), Tags: maps.Clone(sn.tags), StartTime: sn.start, Encrypted: sn.encrypted,
		KmsKeyID: sn.kmsKeyID, CreateVolumePermissions: slices.Clone(sn.cvPerms)}
}

// snapshotState follows the image that created the snapshot: pending while
// it is pending, error when it failed.
func (s *Sim) snapshotState(r *regionState, sn *snapshot) string {
	if sn.imageID == "" {
		if sn.finalState != "" {
			return sn.finalState
		}
		return "completed"
	}
	im, ok := r.images[sn.imageID]
	if !ok {
		return "completed"
	}
	s.refresh(im)
	switch im.state {
	case "pending":
		return "pending"
	case "failed":
		return "error"
	}
	return "completed"
}

// Instances returns the account's instances in the Region.
func (s *Sim) Instances(account, region string) []Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reap()
	account, region = defaults(account, region)
	var out []Instance
	for _, in := range sortedInstances(s.region(region)) {
		if in.owner == account {
			out = append(out, s.instanceCopy(account, region, in))
		}
	}
	return out
}

// Instance returns one instance.
func (s *Sim) Instance(account, region, id string) (Instance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reap()
	account, region = defaults(account, region)
	in, ok := s.region(region).instances[id]
	if !ok || in.owner != account {
		return Instance{}, false
	}
	return s.instanceCopy(account, region, in), true
}

func (s *Sim) instanceCopy(account, region string, in *instance) Instance {
	is, ss := in.statusAt(s.now())
	return Instance{ID: in.id, Account: account, Region: region, State: s.stateOf(in), Tags: maps.Clone(in.tags),
		Reboots: in.reboots, NoRebootImages: in.noRebootImages, ImageID: in.imageID, InstanceType: in.instanceType,
		SubnetID: in.subnetID, ReservationID: in.reservationID, ShutdownBehavior: in.shutdownBehavior,
		SecurityGroupIDs: slices.Clone(in.groups), VolumeIDs: slices.Clone(in.volumes), PublicIP: in.publicIP,
		InstanceStatus: is, SystemStatus: ss}
}

func sortedInstances(r *regionState) []*instance {
	out := slices.Collect(maps.Values(r.instances))
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func sortedImages(r *regionState) []*image {
	out := slices.Collect(maps.Values(r.images))
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

func sortedSnapshots(r *regionState) []*snapshot {
	out := slices.Collect(maps.Values(r.snapshots))
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// MaxInFlightCopies is the highest number of pending copies the account had
// at once in the Region.
func (s *Sim) MaxInFlightCopies(account, region string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	account, region = defaults(account, region)
	return s.calls.maxCopies[account+"/"+region]
}

var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}
