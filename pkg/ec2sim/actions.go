package ec2sim

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"
)

type handler func(s *Sim, c *call) *apiError

var actions = map[string]handler{
	"DescribeInstances":         (*Sim).describeInstances,
	"CreateImage":               (*Sim).createImage,
	"DescribeImages":            (*Sim).describeImages,
	"DeregisterImage":           (*Sim).deregisterImage,
	"CreateTags":                (*Sim).createTags,
	"DeleteTags":                (*Sim).deleteTags,
	"DescribeSnapshots":         (*Sim).describeSnapshots,
	"DeleteSnapshot":            (*Sim).deleteSnapshot,
	"EnableImageDeprecation":    (*Sim).enableImageDeprecation,
	"DisableImageDeprecation":   (*Sim).disableImageDeprecation,
	"ModifyImageAttribute":      (*Sim).modifyImageAttribute,
	"DescribeImageAttribute":    (*Sim).describeImageAttribute,
	"ModifySnapshotAttribute":   (*Sim).modifySnapshotAttribute,
	"DescribeSnapshotAttribute": (*Sim).describeSnapshotAttribute,
	"CopyImage":                 (*Sim).copyImage,
	"RegisterImage":             (*Sim).registerImage,
	"DescribeImageReferences":   (*Sim).describeImageReferences,
}

var (
	instanceIDRE = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)
	imageIDRE    = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)
	snapshotIDRE = regexp.MustCompile(`^snap-[0-9a-f]{8}([0-9a-f]{9})?$`)
	amiNameRE    = regexp.MustCompile(`^[A-Za-z0-9()\[\]./\-'@_ ]{3,128}$`)
)

// amiNameMsg is EC2's message for InvalidAMIName.Malformed.
const amiNameMsg = "AMI names must be between 3 and 128 characters long, and may contain letters, numbers, '(', ')', '.', '-', '/', '_', '[', ']', ' ', '@' and '''"

func (c *call) dry() bool { return c.p.bool("DryRun") }

// nameTaken: AMI names are unique per account and Region.
func nameTaken(c *call, name string) *apiError {
	for _, im := range c.r.images {
		if im.owner == c.account && im.name == name {
			return errf("InvalidAMIName.Duplicate", "AMI name %s is already in use by AMI %s", name, im.id)
		}
	}
	return nil
}

// instanceIDs returns the request's InstanceId.N list after EC2's checks:
// not with MaxResults, well-formed, existing instances of the caller.
func (s *Sim) instanceIDs(c *call) ([]string, *apiError) {
	ids := c.p.list("InstanceId")
	if len(ids) > 0 && c.p.get("MaxResults") != "" {
		return nil, errf("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	for _, id := range ids {
		if !instanceIDRE.MatchString(id) {
			return nil, errf("InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
		if in, ok := c.r.instances[id]; !ok || in.owner != c.account {
			return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	return ids, nil
}

func (s *Sim) describeInstances(c *call) *apiError {
	ids, e := s.instanceIDs(c)
	if e != nil {
		return e
	}
	filters := c.p.filters()
	var match []*instance
	for _, in := range sortedInstances(c.r) {
		if in.owner != c.account || (len(ids) > 0 && !slices.Contains(ids, in.id)) {
			continue
		}
		ok, e := instanceMatches(in, s.stateOf(in), filters)
		if e != nil {
			return e
		}
		if ok {
			match = append(match, in)
		}
	}
	from, to, next, e := page(c.p, len(match), 5, 1000)
	if e != nil {
		return e
	}
	x := c.out
	x.open("reservationSet")
	now := s.now()
	for _, in := range match[from:to] {
		// One reservation item per instance, even for instances launched
		// together (EC2 groups them; clients flatten either way).
		x.open("item")
		x.el("reservationId", in.reservation())
		x.el("ownerId", in.owner)
		x.open("instancesSet")
		s.writeInstance(x, c.region, in, now)
		x.close("instancesSet")
		x.close("item")
	}
	x.close("reservationSet")
	x.opt("nextToken", next)
	return nil
}

func instanceMatches(in *instance, state string, filters []filter) (bool, *apiError) {
	for _, f := range filters {
		if m, ok := matchTagFilter(f, in.tags); ok {
			if !m {
				return false, nil
			}
			continue
		}
		var v string
		switch f.name {
		case "instance-state-name":
			v = state
		case "instance-id":
			v = in.id
		case "instance-state-code":
			v = fmt.Sprint(stateCodes[state])
		case "image-id":
			v = cmp.Or(in.imageID, "ami-00000000000000000")
		case "instance-type":
			v = cmp.Or(in.instanceType, "t3.micro")
		case "subnet-id":
			v = in.subnetID
		case "reservation-id":
			v = in.reservation()
		case "client-token":
			v = in.clientToken
		default:
			return false, errf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
		if !anyGlob(f.values, v) {
			return false, nil
		}
	}
	return true, nil
}

// validateTags checks tags as EC2 does for user-supplied tags.
func validateTags(m map[string]string) *apiError {
	if len(m) > 50 {
		return errf("TagLimitExceeded", "The maximum number of tags per resource is 50 (got %d)", len(m))
	}
	for k, v := range m {
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return errf("InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use")
		}
		if k == "" || len(k) > 128 || len(v) > 256 {
			return errf("InvalidParameterValue", "Tag key must be 1-128 and value at most 256 characters")
		}
	}
	return nil
}

func snapshotLimit(v VolumeSpec) int {
	if v.Type == "sc1" || v.Type == "st1" {
		return 1
	}
	return 5
}

func (s *Sim) createImage(c *call) *apiError {
	id, name := c.p.get("InstanceId"), c.p.get("Name")
	if id == "" {
		return errf("MissingParameter", "The request must contain the parameter instanceId")
	}
	if name == "" {
		return errf("MissingParameter", "The request must contain the parameter name")
	}
	if !instanceIDRE.MatchString(id) {
		return errf("InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
	}
	if !amiNameRE.MatchString(name) {
		return errf("InvalidAMIName.Malformed", amiNameMsg)
	}
	specs := c.p.tagSpecs()
	for rt, tags := range specs {
		if rt != "image" && rt != "snapshot" {
			return errf("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		if e := validateTags(tags); e != nil {
			return e
		}
	}
	in, ok := c.r.instances[id]
	if !ok || in.owner != c.account {
		return errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	state := s.stateOf(in)
	if state != "running" && state != "stopped" {
		return errf("IncorrectState", "Instance '%s' is not in a state from which it can be imaged (%s).", id, state)
	}
	if c.dry() {
		return nil
	}
	if e := nameTaken(c, name); e != nil {
		return e
	}
	for _, vid := range in.volumes {
		// EBS counts snapshots still pending and those left incomplete in
		// the error state against the per-volume concurrency limit (AWS
		// knowledge center, "ConcurrentSnapshotLimitExceeded"). That code
		// is documented for CreateSnapshot; for CreateImage AWS documents
		// only the message ("Image creation throttled due to maximum number
		// of concurrent snapshots on an EBS volume"), so we keep the code
		// amibackup has always been tested against.
		inFlight := 0
		for _, sn := range c.r.snapshots {
			if sn.volumeID != vid {
				continue // cheap test first: the state needs the image lookup
			}
			if st := s.snapshotState(c.r, sn); st == "pending" || st == "error" {
				inFlight++
			}
		}
		if inFlight >= snapshotLimit(c.r.volumes[vid].spec) {
			return errf("SnapshotCreationPerVolumeRateExceeded", "Image creation throttled due to maximum number of concurrent snapshots on an EBS volume (%s)", vid)
		}
	}
	now := s.now()
	imageID, seq := s.newID("ami")
	im := &image{id: imageID, owner: c.account, name: name, state: "pending", instanceID: id,
		description: c.p.get("Description"), noReboot: c.p.bool("NoReboot"), tags: cloneOrEmpty(specs["image"]),
		created: now, readyAt: now.Add(s.opts.ImageDelay), fail: s.failIns[id], seq: seq,
		architecture: archOf(cmp.Or(in.instanceType, "t3.micro"))}
	for i, vid := range in.volumes {
		v := c.r.volumes[vid]
		sid, sseq := s.newID("snap")
		c.r.snapshots[sid] = &snapshot{id: sid, owner: c.account, volumeID: vid, sizeGiB: v.spec.SizeGiB,
			description: fmt.Sprintf("Created by CreateImage(%s) for %s from %s", id, imageID, vid),
			tags:        cloneOrEmpty(specs["snapshot"]), start: now, encrypted: v.spec.Encrypted,
			kmsKeyID: v.spec.KmsKeyID, imageID: imageID, seq: sseq}
		im.snapshots = append(im.snapshots, sid)
		im.devices = append(im.devices, deviceName(i))
	}
	c.r.images[imageID] = im
	s.refresh(im)
	// Without NoReboot EC2 shuts a running instance down for the snapshot
	// and starts it again; a stopped instance is imaged as it is.
	if im.noReboot {
		in.noRebootImages++
	} else if state == "running" {
		in.reboots++
		s.startReboot(in, now)
	}
	c.out.el("imageId", imageID)
	return nil
}

// selfIs replaces "self" in an owner list with the caller's account.
func selfIs(owners []string, account string) []string {
	for i, o := range owners {
		if o == "self" {
			owners[i] = account
		}
	}
	return owners
}

// visible reports whether the caller can see the image at all: it owns it,
// or holds a launch permission.
func (s *Sim) visible(im *image, account string) bool {
	return im.owner == account || slices.Contains(im.launchPerms, "all") || s.granted(im, account)
}

// granted reports whether a launch permission names the account itself,
// its organization, or an OU on its path (a permission for an OU covers
// the OUs nested below it, as in AWS Organizations).
func (s *Sim) granted(im *image, account string) bool {
	m, inOrg := s.orgs[account]
	for _, p := range im.launchPerms {
		switch {
		case p == account:
			return true
		case !inOrg:
		case orgARNRE.MatchString(p):
			if orgOf(p) == m.OrgID {
				return true
			}
		case ouARNRE.MatchString(p):
			org, ou := ouOf(p)
			if org == m.OrgID && slices.Contains(m.OUPath, ou) {
				return true
			}
		}
	}
	return false
}

// orgOf returns the organization ID of an organization ARN.
func orgOf(arn string) string { return arn[strings.LastIndex(arn, "/")+1:] }

// ouOf returns the organization and OU IDs of an OU ARN
// (arn:aws:organizations::<management account>:ou/o-.../ou-...). The
// management account in the ARN is not checked: the seeded membership
// names only the organization.
func ouOf(arn string) (org, ou string) {
	parts := strings.Split(arn, "/")
	return parts[len(parts)-2], parts[len(parts)-1]
}

func (s *Sim) describeImages(c *call) *apiError {
	ids := c.p.list("ImageId")
	if len(ids) > 0 && c.p.get("MaxResults") != "" {
		return errf("InvalidParameterCombination", "The parameter ImageIds cannot be used with the parameter maxResults")
	}
	for _, id := range ids {
		if !imageIDRE.MatchString(id) {
			return errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", id)
		}
		if im, ok := c.r.images[id]; !ok || !s.visible(im, c.account) {
			return errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
		}
	}
	owners := selfIs(c.p.list("Owner"), c.account)
	execBy := c.p.list("ExecutableBy")
	filters := c.p.filters()
	var match []*image
	for _, im := range sortedImages(c.r) {
		if !s.visible(im, c.account) || (len(ids) > 0 && !slices.Contains(ids, im.id)) {
			continue
		}
		if len(owners) > 0 && !slices.Contains(owners, im.owner) {
			continue
		}
		if len(execBy) > 0 && !s.executableBy(im, execBy, c.account) {
			continue
		}
		// Deprecated images are hidden from the accounts they are shared
		// with unless asked for by ID or with IncludeDeprecated; owners
		// always see their own.
		if im.owner != c.account && len(ids) == 0 && !c.p.bool("IncludeDeprecated") && s.deprecated(im) {
			continue
		}
		s.refresh(im)
		ok, e := imageMatches(im, filters, c.account)
		if e != nil {
			return e
		}
		if ok {
			match = append(match, im)
		}
	}
	from, to, next, e := page(c.p, len(match), 1, 1000)
	if e != nil {
		return e
	}
	x := c.out
	x.open("imagesSet")
	for _, im := range match[from:to] {
		s.writeImage(x, c.r, im, c.account)
	}
	x.close("imagesSet")
	x.opt("nextToken", next)
	return nil
}

// executableBy implements ExecutableBy.N as documented: for self (or the
// caller's own account ID) images shared with the caller directly or with
// its organization or OU; for another account ID only images shared with
// that account itself, not with its organization or OU; all means public.
func (s *Sim) executableBy(im *image, execBy []string, account string) bool {
	for _, e := range execBy {
		switch {
		case e == "self" || e == account:
			if s.granted(im, account) {
				return true
			}
		case e == "all":
			if slices.Contains(im.launchPerms, "all") {
				return true
			}
		case slices.Contains(im.launchPerms, e):
			return true
		}
	}
	return false
}

// deprecated reports whether the image's deprecation time has passed.
func (s *Sim) deprecated(im *image) bool {
	return !im.deprecation.IsZero() && !s.now().Before(im.deprecation)
}

// imageTags are the tags the caller sees: EC2 does not show an image's tags
// to accounts it is shared with.
func imageTags(im *image, account string) map[string]string {
	if im.owner != account {
		return map[string]string{}
	}
	return im.tags
}

func imageMatches(im *image, filters []filter, account string) (bool, *apiError) {
	for _, f := range filters {
		if m, ok := matchTagFilter(f, imageTags(im, account)); ok {
			if !m {
				return false, nil
			}
			continue
		}
		var v string
		switch f.name {
		case "name":
			v = im.name
		case "state":
			v = im.state
		case "image-id":
			v = im.id
		case "owner-id":
			v = im.owner
		case "source-instance-id":
			v = im.instanceID
		default:
			return false, errf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
		if !anyGlob(f.values, v) {
			return false, nil
		}
	}
	return true, nil
}

func (s *Sim) writeImage(x *xmlw, r *regionState, im *image, account string) {
	x.open("item")
	x.el("imageId", im.id)
	x.el("imageLocation", im.owner+"/"+im.name)
	x.el("imageState", im.state)
	x.el("imageOwnerId", im.owner)
	x.el("creationDate", ts(im.created))
	x.el("isPublic", "false")
	x.el("architecture", im.arch())
	x.el("imageType", "machine")
	x.el("name", im.name)
	x.opt("description", im.description)
	x.el("rootDeviceType", "ebs")
	x.el("rootDeviceName", "/dev/xvda")
	x.el("virtualizationType", "hvm")
	x.el("hypervisor", "xen")
	x.opt("sourceInstanceId", im.instanceID)
	x.opt("sourceImageId", im.sourceImageID)
	x.opt("sourceImageRegion", im.sourceRegion)
	if !im.deprecation.IsZero() {
		x.el("deprecationTime", ts(im.deprecation))
	}
	x.open("blockDeviceMapping")
	for i, sid := range im.snapshots {
		x.open("item")
		x.el("deviceName", im.devices[i])
		x.open("ebs")
		x.el("snapshotId", sid)
		if sn, ok := r.snapshots[sid]; ok {
			x.el("volumeSize", fmt.Sprint(sn.sizeGiB))
			x.el("encrypted", fmt.Sprint(sn.encrypted))
			x.opt("kmsKeyId", sn.kmsKeyID)
		}
		x.el("deleteOnTermination", "true")
		x.el("volumeType", "gp3")
		x.close("ebs")
		x.close("item")
	}
	x.close("blockDeviceMapping")
	x.tags(imageTags(im, account))
	x.close("item")
}

// ownedImage finds an image the caller owns, with EC2's error codes.
func (s *Sim) ownedImage(c *call, id string) (*image, *apiError) {
	if id == "" {
		return nil, errf("MissingParameter", "The request must contain the parameter imageId")
	}
	if !imageIDRE.MatchString(id) {
		return nil, errf("InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", id)
	}
	im, ok := c.r.images[id]
	if !ok || !s.visible(im, c.account) {
		return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	}
	if im.owner != c.account {
		return nil, errf("AuthFailure", "Not authorized for image:%s", id)
	}
	return im, nil
}

func (s *Sim) deregisterImage(c *call) *apiError {
	im, e := s.ownedImage(c, c.p.get("ImageId"))
	if e != nil {
		return e
	}
	if c.dry() {
		return nil
	}
	// The snapshots outlive the image in the state it left them: a failed
	// image's snapshots stay in error (and keep counting against the
	// volume's concurrency limit); a pending image's are treated as
	// completing now.
	for _, sid := range im.snapshots {
		if sn, ok := c.r.snapshots[sid]; ok && sn.imageID == im.id {
			sn.finalState = s.snapshotState(c.r, sn)
			if sn.finalState == "pending" {
				sn.finalState = "completed"
			}
			sn.imageID = ""
		}
	}
	delete(c.r.images, im.id)
	c.out.el("return", "true")
	if !c.p.bool("DeleteAssociatedSnapshots") {
		return nil
	}
	c.out.open("deleteSnapshotResultSet")
	for _, sid := range im.snapshots {
		code := "success"
		if _, ok := c.r.snapshots[sid]; !ok {
			code = "client-error"
		} else if usedBy(c.r, sid) != "" {
			code = "skipped" // another registered AMI still needs it
		} else {
			delete(c.r.snapshots, sid)
		}
		c.out.open("item")
		c.out.el("snapshotId", sid)
		c.out.el("returnCode", code)
		c.out.close("item")
	}
	c.out.close("deleteSnapshotResultSet")
	return nil
}

// registerImage registers an EBS-backed image from existing snapshots
// (BlockDeviceMapping.N.Ebs.SnapshotId). It is how two AMIs come to share a
// snapshot, which DeregisterImage and DeleteSnapshot must then respect.
// Registering from snapshots copies nothing, so the image is available at
// once.
func (s *Sim) registerImage(c *call) *apiError {
	name := c.p.get("Name")
	if name == "" {
		return errf("MissingParameter", "The request must contain the parameter name")
	}
	if !amiNameRE.MatchString(name) {
		return errf("InvalidAMIName.Malformed", amiNameMsg)
	}
	specs := c.p.tagSpecs()
	for rt, tags := range specs {
		if rt != "image" {
			return errf("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		if e := validateTags(tags); e != nil {
			return e
		}
	}
	var snaps, devices []string
	for i := 1; ; i++ {
		base := fmt.Sprintf("BlockDeviceMapping.%d.", i)
		if !c.p.hasPrefix(base) {
			break
		}
		sid := c.p.get(base + "Ebs.SnapshotId")
		if sid == "" {
			continue // ephemeral or empty-volume mappings carry no snapshot
		}
		if !snapshotIDRE.MatchString(sid) {
			return errf("InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", sid)
		}
		sn, ok := c.r.snapshots[sid]
		if !ok || !snapshotVisible(sn, c.account) {
			return errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", sid)
		}
		dev := c.p.get(base + "DeviceName")
		if dev == "" {
			dev = deviceName(len(devices))
		}
		snaps = append(snaps, sid)
		devices = append(devices, dev)
	}
	if len(snaps) == 0 {
		return errf("InvalidParameterCombination", "The emulator registers only EBS-backed images: give BlockDeviceMapping.N.Ebs.SnapshotId")
	}
	if a := c.p.get("Architecture"); a != "" && !slices.Contains([]string{"i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"}, a) {
		return errf("InvalidParameterValue", "Value (%s) for parameter architecture is invalid.", a)
	}
	if e := nameTaken(c, name); e != nil {
		return e
	}
	if c.dry() {
		return nil
	}
	id, seq := s.newID("ami")
	c.r.images[id] = &image{id: id, owner: c.account, name: name, state: "available", description: c.p.get("Description"),
		tags: cloneOrEmpty(specs["image"]), snapshots: snaps, devices: devices, created: s.now(), seq: seq,
		architecture: c.p.get("Architecture")}
	c.out.el("imageId", id)
	return nil
}

// usedBy returns a registered image using the snapshot, or "".
func usedBy(r *regionState, sid string) string {
	for _, im := range r.images {
		if slices.Contains(im.snapshots, sid) {
			return im.id
		}
	}
	return ""
}

// resource finds a taggable resource the caller owns.
func (c *call) resourceTags(id string) (map[string]string, *apiError) {
	switch {
	case strings.HasPrefix(id, "ami-"):
		if im, ok := c.r.images[id]; ok && im.owner == c.account {
			return im.tags, nil
		}
		return nil, errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	case strings.HasPrefix(id, "snap-"):
		if sn, ok := c.r.snapshots[id]; ok && sn.owner == c.account {
			return sn.tags, nil
		}
		return nil, errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
	case strings.HasPrefix(id, "i-"):
		if in, ok := c.r.instances[id]; ok && in.owner == c.account {
			return in.tags, nil
		}
		return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	return nil, errf("InvalidID", "The ID '%s' is not valid", id)
}

func (p params) tagList(prefix string) ([]string, []string, []bool) {
	var keys, vals []string
	var hasVal []bool
	for i := 1; ; i++ {
		k, ok := p[fmt.Sprintf("%s.%d.Key", prefix, i)]
		if !ok {
			return keys, vals, hasVal
		}
		v, hv := p[fmt.Sprintf("%s.%d.Value", prefix, i)]
		keys = append(keys, k[0])
		if hv {
			vals = append(vals, v[0])
		} else {
			vals = append(vals, "")
		}
		hasVal = append(hasVal, hv)
	}
}

func (s *Sim) createTags(c *call) *apiError {
	ids := c.p.list("ResourceId")
	keys, vals, _ := c.p.tagList("Tag")
	if len(ids) == 0 || len(keys) == 0 {
		return errf("MissingParameter", "The request must contain the parameters resourceIdSet and tagSet")
	}
	add := map[string]string{}
	for i, k := range keys {
		add[k] = vals[i]
	}
	if e := validateTags(add); e != nil {
		return e
	}
	var targets []map[string]string
	for _, id := range ids {
		t, e := c.resourceTags(id)
		if e != nil {
			return e
		}
		merged := maps.Clone(t)
		maps.Copy(merged, add)
		if len(merged) > 50 {
			return errf("TagLimitExceeded", "The maximum number of tags per resource (50) would be exceeded for %s", id)
		}
		targets = append(targets, t)
	}
	if c.dry() {
		return nil
	}
	for _, t := range targets {
		maps.Copy(t, add)
	}
	c.out.el("return", "true")
	return nil
}

func (s *Sim) deleteTags(c *call) *apiError {
	ids := c.p.list("ResourceId")
	keys, vals, hasVal := c.p.tagList("Tag")
	if len(ids) == 0 {
		return errf("MissingParameter", "The request must contain the parameter resourceIdSet")
	}
	var targets []map[string]string
	for _, id := range ids {
		t, e := c.resourceTags(id)
		if e != nil {
			return e
		}
		targets = append(targets, t)
	}
	if c.dry() {
		return nil
	}
	for _, t := range targets {
		if len(keys) == 0 {
			clear(t)
		}
		for i, k := range keys {
			if !hasVal[i] || t[k] == vals[i] {
				delete(t, k)
			}
		}
	}
	c.out.el("return", "true")
	return nil
}

func (s *Sim) describeSnapshots(c *call) *apiError {
	ids := c.p.list("SnapshotId")
	if len(ids) > 0 && c.p.get("MaxResults") != "" {
		return errf("InvalidParameterCombination", "The parameter SnapshotIds cannot be used with the parameter maxResults")
	}
	for _, id := range ids {
		if !snapshotIDRE.MatchString(id) {
			return errf("InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id)
		}
		if sn, ok := c.r.snapshots[id]; !ok || !snapshotVisible(sn, c.account) {
			return errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
		}
	}
	owners := selfIs(c.p.list("Owner"), c.account)
	restorable := c.p.list("RestorableBy")
	filters := c.p.filters()
	var match []*snapshot
	for _, sn := range sortedSnapshots(c.r) {
		if !snapshotVisible(sn, c.account) || (len(ids) > 0 && !slices.Contains(ids, sn.id)) {
			continue
		}
		if len(owners) > 0 && !slices.Contains(owners, sn.owner) {
			continue
		}
		if len(restorable) > 0 && !slices.ContainsFunc(restorable, func(a string) bool {
			return (a == "self" && (sn.owner == c.account || slices.Contains(sn.cvPerms, c.account) || slices.Contains(sn.cvPerms, "all"))) || slices.Contains(sn.cvPerms, a)
		}) {
			continue
		}
		ok, e := s.snapshotMatches(c, sn, filters)
		if e != nil {
			return e
		}
		if ok {
			match = append(match, sn)
		}
	}
	from, to, next, e := page(c.p, len(match), 5, 1000)
	if e != nil {
		return e
	}
	x := c.out
	x.open("snapshotSet")
	for _, sn := range match[from:to] {
		x.open("item")
		x.el("snapshotId", sn.id)
		x.el("volumeId", sn.volumeID)
		x.el("status", s.snapshotState(c.r, sn))
		x.el("startTime", ts(sn.start))
		x.el("progress", s.snapshotProgress(c.r, sn))
		x.el("ownerId", sn.owner)
		x.el("volumeSize", fmt.Sprint(sn.sizeGiB))
		x.el("description", sn.description)
		x.el("encrypted", fmt.Sprint(sn.encrypted))
		x.opt("kmsKeyId", sn.kmsKeyID)
		x.el("storageTier", "standard")
		if sn.owner == c.account {
			x.tags(sn.tags)
		}
		x.close("item")
	}
	x.close("snapshotSet")
	x.opt("nextToken", next)
	return nil
}

// snapshotVisible: owned, shared with the account, or public (group all).
func snapshotVisible(sn *snapshot, account string) bool {
	return sn.owner == account || slices.Contains(sn.cvPerms, account) || slices.Contains(sn.cvPerms, "all")
}

// snapshotProgress is DescribeSnapshots' progress: a pending snapshot
// reports how far its image's creation has come (never 100% before it
// completes), a finished one 100%.
func (s *Sim) snapshotProgress(r *regionState, sn *snapshot) string {
	if s.snapshotState(r, sn) != "pending" {
		return "100%"
	}
	im, ok := r.images[sn.imageID]
	if !ok || !im.readyAt.After(sn.start) {
		return "0%" // seeded pending snapshots have no end in sight
	}
	done := float64(s.now().Sub(sn.start)) / float64(im.readyAt.Sub(sn.start))
	return fmt.Sprintf("%d%%", min(99, max(0, int(done*100))))
}

func (s *Sim) snapshotMatches(c *call, sn *snapshot, filters []filter) (bool, *apiError) {
	tags := sn.tags
	if sn.owner != c.account {
		tags = map[string]string{}
	}
	for _, f := range filters {
		if m, ok := matchTagFilter(f, tags); ok {
			if !m {
				return false, nil
			}
			continue
		}
		var v string
		switch f.name {
		case "status":
			v = s.snapshotState(c.r, sn)
		case "description":
			v = sn.description
		case "volume-id":
			v = sn.volumeID
		case "snapshot-id":
			v = sn.id
		case "owner-id":
			v = sn.owner
		case "encrypted":
			v = fmt.Sprint(sn.encrypted)
		default:
			return false, errf("InvalidParameterValue", "The filter '%s' is invalid", f.name)
		}
		if !anyGlob(f.values, v) {
			return false, nil
		}
	}
	return true, nil
}

func (s *Sim) ownedSnapshot(c *call, id string) (*snapshot, *apiError) {
	if id == "" {
		return nil, errf("MissingParameter", "The request must contain the parameter snapshotId")
	}
	if !snapshotIDRE.MatchString(id) {
		return nil, errf("InvalidSnapshotID.Malformed", "Invalid id: \"%s\" (expecting \"snap-...\")", id)
	}
	sn, ok := c.r.snapshots[id]
	if !ok || !snapshotVisible(sn, c.account) {
		return nil, errf("InvalidSnapshot.NotFound", "The snapshot '%s' does not exist.", id)
	}
	if sn.owner != c.account {
		return nil, errf("UnauthorizedOperation", "You are not authorized to perform this operation on snapshot %s.", id)
	}
	return sn, nil
}

func (s *Sim) deleteSnapshot(c *call) *apiError {
	sn, e := s.ownedSnapshot(c, c.p.get("SnapshotId"))
	if e != nil {
		return e
	}
	if im := usedBy(c.r, sn.id); im != "" {
		return errf("InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", sn.id, im)
	}
	if c.dry() {
		return nil
	}
	delete(c.r.snapshots, sn.id)
	c.out.el("return", "true")
	return nil
}

func (s *Sim) enableImageDeprecation(c *call) *apiError {
	im, e := s.ownedImage(c, c.p.get("ImageId"))
	if e != nil {
		return e
	}
	at, err := time.Parse(time.RFC3339, c.p.get("DeprecateAt"))
	if err != nil {
		return errf("InvalidParameterValue", "Invalid value '%s' for DeprecateAt", c.p.get("DeprecateAt"))
	}
	// "If you specify a value for seconds, Amazon EC2 rounds the seconds to
	// the nearest minute" (EnableImageDeprecation API reference).
	at = at.UTC().Round(time.Minute)
	now := s.now()
	if at.Before(now.Truncate(time.Minute)) {
		return errf("InvalidParameterValue", "The deprecation time must be in the future.")
	}
	if at.After(now.AddDate(10, 0, 0)) {
		return errf("InvalidParameterValue", "The deprecation time can't be more than 10 years in the future.")
	}
	if c.dry() {
		return nil
	}
	im.deprecation = at
	c.out.el("return", "true")
	return nil
}

func (s *Sim) disableImageDeprecation(c *call) *apiError {
	im, e := s.ownedImage(c, c.p.get("ImageId"))
	if e != nil || c.dry() {
		return e
	}
	im.deprecation = time.Time{}
	c.out.el("return", "true")
	return nil
}

var (
	orgARNRE = regexp.MustCompile(`^arn:aws[a-z-]*:organizations::[0-9]{12}:organization/o-[a-z0-9]+$`)
	ouARNRE  = regexp.MustCompile(`^arn:aws[a-z-]*:organizations::[0-9]{12}:ou/o-[a-z0-9]+/ou-[a-z0-9-]+$`)
)

// permissionChanges reads LaunchPermission.Add/Remove (or the flat
// UserId.N + OperationType form) for principals of the given kinds.
func permissionChanges(p params, prefix string) (add, remove []string, e *apiError) {
	read := func(list string) ([]string, *apiError) {
		var out []string
		for i := 1; ; i++ {
			base := fmt.Sprintf("%s.%s.%d", prefix, list, i)
			if !p.hasPrefix(base + ".") {
				return out, nil
			}
			switch {
			case p.get(base+".UserId") != "":
				v := p.get(base + ".UserId")
				if !accountRE.MatchString(v) {
					return nil, errf("InvalidUserID.Malformed", "User ID '%s' is not valid", v)
				}
				out = append(out, v)
			case p.get(base+".Group") == "all":
				out = append(out, "all")
			case p.get(base+".OrganizationArn") != "":
				v := p.get(base + ".OrganizationArn")
				if !orgARNRE.MatchString(v) {
					return nil, errf("InvalidParameterValue", "Organization ARN '%s' is not valid", v)
				}
				out = append(out, v)
			case p.get(base+".OrganizationalUnitArn") != "":
				v := p.get(base + ".OrganizationalUnitArn")
				if !ouARNRE.MatchString(v) {
					return nil, errf("InvalidParameterValue", "Organizational unit ARN '%s' is not valid", v)
				}
				out = append(out, v)
			}
		}
	}
	if add, e = read("Add"); e != nil {
		return
	}
	if remove, e = read("Remove"); e != nil {
		return
	}
	flat := p.list("UserId")
	for _, v := range flat {
		if !accountRE.MatchString(v) {
			return nil, nil, errf("InvalidUserID.Malformed", "User ID '%s' is not valid", v)
		}
	}
	for _, v := range p.list("OrganizationArn") {
		if !orgARNRE.MatchString(v) {
			return nil, nil, errf("InvalidParameterValue", "Organization ARN '%s' is not valid", v)
		}
		flat = append(flat, v)
	}
	for _, v := range p.list("OrganizationalUnitArn") {
		if !ouARNRE.MatchString(v) {
			return nil, nil, errf("InvalidParameterValue", "Organizational unit ARN '%s' is not valid", v)
		}
		flat = append(flat, v)
	}
	if slices.Contains(p.list("UserGroup"), "all") {
		flat = append(flat, "all")
	}
	switch p.get("OperationType") {
	case "add":
		add = append(add, flat...)
	case "remove":
		remove = append(remove, flat...)
	}
	return add, remove, nil
}

func applyPerms(cur, add, remove []string) []string {
	for _, a := range add {
		if !slices.Contains(cur, a) {
			cur = append(cur, a)
		}
	}
	return slices.DeleteFunc(cur, func(v string) bool { return slices.Contains(remove, v) })
}

func isAWSManagedKey(key string) bool {
	return strings.Contains(key, ":key/"+awsManagedKeyPrefix) || strings.HasSuffix(key, ":alias/aws/ebs")
}

func (s *Sim) modifyImageAttribute(c *call) *apiError {
	im, e := s.ownedImage(c, c.p.get("ImageId"))
	if e != nil {
		return e
	}
	if a := c.p.get("Attribute"); a != "" && a != "launchPermission" {
		return errf("InvalidParameterValue", "Attribute %s is not supported by the emulator", a)
	}
	add, remove, e := permissionChanges(c.p, "LaunchPermission")
	if e != nil {
		return e
	}
	if len(add)+len(remove) == 0 {
		return errf("MissingParameter", "No launch permission changes were given")
	}
	if len(add) > 0 {
		for _, sid := range im.snapshots {
			if sn, ok := c.r.snapshots[sid]; ok && isAWSManagedKey(sn.kmsKeyID) {
				// EC2 refuses to share AMIs whose snapshots use the default key.
				return errf("InvalidParameter", "Snapshots encrypted with the AWS managed KMS key can't be shared (snapshot %s). Copy the image with a customer managed key and share that instead.", sid)
			}
		}
	}
	if c.dry() {
		return nil
	}
	im.launchPerms = applyPerms(im.launchPerms, add, remove)
	c.out.el("return", "true")
	return nil
}

func (s *Sim) describeImageAttribute(c *call) *apiError {
	id := c.p.get("ImageId")
	if !imageIDRE.MatchString(id) {
		return errf("InvalidAMIID.Malformed", "Invalid id: \"%s\"", id)
	}
	im, ok := c.r.images[id]
	if !ok || im.owner != c.account {
		return errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", id)
	}
	if c.p.get("Attribute") != "launchPermission" {
		return errf("InvalidParameterValue", "Attribute %s is not supported by the emulator", c.p.get("Attribute"))
	}
	c.out.el("imageId", id)
	c.out.open("launchPermission")
	for _, v := range im.launchPerms {
		c.out.open("item")
		switch {
		case v == "all":
			c.out.el("group", "all")
		case orgARNRE.MatchString(v):
			c.out.el("organizationArn", v)
		case ouARNRE.MatchString(v):
			c.out.el("organizationalUnitArn", v)
		default:
			c.out.el("userId", v)
		}
		c.out.close("item")
	}
	c.out.close("launchPermission")
	return nil
}

func (s *Sim) modifySnapshotAttribute(c *call) *apiError {
	sn, e := s.ownedSnapshot(c, c.p.get("SnapshotId"))
	if e != nil {
		return e
	}
	add, remove, e := permissionChanges(c.p, "CreateVolumePermission")
	if e != nil {
		return e
	}
	if len(add)+len(remove) == 0 {
		return errf("MissingParameter", "No create volume permission changes were given")
	}
	if len(add) > 0 && isAWSManagedKey(sn.kmsKeyID) {
		return errf("InvalidParameter", "Snapshots encrypted with the AWS managed KMS key can't be shared (snapshot %s).", sn.id)
	}
	if c.dry() {
		return nil
	}
	sn.cvPerms = applyPerms(sn.cvPerms, add, remove)
	c.out.el("return", "true")
	return nil
}

func (s *Sim) describeSnapshotAttribute(c *call) *apiError {
	sn, e := s.ownedSnapshot(c, c.p.get("SnapshotId"))
	if e != nil {
		return e
	}
	c.out.el("snapshotId", sn.id)
	c.out.open("createVolumePermission")
	for _, v := range sn.cvPerms {
		c.out.open("item")
		if v == "all" {
			c.out.el("group", "all")
		} else {
			c.out.el("userId", v)
		}
		c.out.close("item")
	}
	c.out.close("createVolumePermission")
	return nil
}

// copyImage copies an image into the caller's account and Region. The
// source is looked up in SourceRegion.
func (s *Sim) copyImage(c *call) *apiError {
	srcID, srcRegion, name := c.p.get("SourceImageId"), c.p.get("SourceRegion"), c.p.get("Name")
	if srcID == "" || srcRegion == "" || name == "" {
		return errf("MissingParameter", "The request must contain the parameters SourceImageId, SourceRegion and Name")
	}
	if !imageIDRE.MatchString(srcID) {
		return errf("InvalidAMIID.Malformed", "Invalid id: \"%s\"", srcID)
	}
	if !amiNameRE.MatchString(name) {
		return errf("InvalidAMIName.Malformed", "AMI name '%s' is not valid", name)
	}
	specs := c.p.tagSpecs()
	for rt, tags := range specs {
		if rt != "image" && rt != "snapshot" {
			return errf("InvalidParameterValue", "'%s' is not a valid taggable resource type for this operation.", rt)
		}
		if e := validateTags(tags); e != nil {
			return e
		}
	}
	sr := s.region(srcRegion)
	src, ok := sr.images[srcID]
	if !ok || !s.visible(src, c.account) {
		return errf("InvalidAMIID.NotFound", "The image id '[%s]' does not exist", srcID)
	}
	s.refresh(src)
	if src.state != "available" {
		return errf("IncorrectState", "Image %s is not in the 'available' state (%s).", srcID, src.state)
	}
	encrypted := c.p.bool("Encrypted")
	key := c.p.get("KmsKeyId")
	if key != "" && !encrypted {
		return errf("InvalidParameterCombination", "KmsKeyId requires Encrypted=true")
	}
	for _, sid := range src.snapshots {
		sn := sr.snapshots[sid]
		if sn == nil {
			return errf("InvalidSnapshot.NotFound", "The snapshot '%s' of %s does not exist.", sid, srcID)
		}
		if src.owner != c.account {
			if !snapshotVisible(sn, c.account) {
				return errf("AuthFailure", "You do not have permission to access the storage of snapshot %s of image %s.", sid, srcID)
			}
			if isAWSManagedKey(sn.kmsKeyID) {
				return errf("InvalidParameter", "Snapshot %s is encrypted with the AWS managed key of account %s and cannot be copied by another account.", sid, src.owner)
			}
		}
		if sn.encrypted {
			encrypted = true
		}
	}
	if tok := c.p.get("ClientToken"); tok != "" {
		for _, im := range c.r.images {
			if im.owner == c.account && im.clientToken == tok {
				if c.dry() {
					return nil
				}
				c.out.el("imageId", im.id)
				return nil
			}
		}
	}
	inFlight := 0
	for _, im := range c.r.images {
		s.refresh(im)
		if im.owner == c.account && im.isCopy && im.state == "pending" {
			inFlight++
		}
	}
	if inFlight >= 20 {
		return errf("ResourceLimitExceeded", "You have reached the limit of 20 concurrent snapshot copies to %s.", c.region)
	}
	if e := nameTaken(c, name); e != nil {
		return e
	}
	if c.dry() {
		return nil
	}
	if encrypted && key == "" {
		key = AWSManagedKey(c.account, c.region)
	}
	now := s.now()
	id, seq := s.newID("ami")
	cp := &image{id: id, owner: c.account, name: name, state: "pending", description: c.p.get("Description"),
		tags: cloneOrEmpty(specs["image"]), created: now, readyAt: now.Add(s.opts.CopyDelay),
		sourceImageID: srcID, sourceRegion: srcRegion, isCopy: true, clientToken: c.p.get("ClientToken"), seq: seq,
		architecture: src.architecture}
	if c.p.bool("CopyImageTags") && src.owner == c.account {
		for k, v := range src.tags {
			if _, set := cp.tags[k]; !set {
				cp.tags[k] = v
			}
		}
	}
	for i, sid := range src.snapshots {
		sn := sr.snapshots[sid]
		nid, nseq := s.newID("snap")
		c.r.snapshots[nid] = &snapshot{id: nid, owner: c.account, volumeID: "vol-ffffffff", sizeGiB: sn.sizeGiB,
			description: fmt.Sprintf("Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s. Task created on %s.", id, srcID, sid, now.Format("2006-01-02T15:04:05.000Z")),
			tags:        cloneOrEmpty(specs["snapshot"]), start: now, encrypted: encrypted, kmsKeyID: keyIf(encrypted, key),
			imageID: id, seq: nseq}
		cp.snapshots = append(cp.snapshots, nid)
		cp.devices = append(cp.devices, src.devices[i])
	}
	c.r.images[id] = cp
	s.refresh(cp)
	if cp.state == "pending" {
		k := c.account + "/" + c.region
		s.calls.maxCopies[k] = max(s.calls.maxCopies[k], inFlight+1)
	}
	c.out.el("imageId", id)
	return nil
}

func keyIf(enc bool, key string) string {
	if enc {
		return key
	}
	return ""
}

// reservation is the instance's reservation ID: RunInstances' for a
// launched instance, one derived from the ID for a seeded one.
func (in *instance) reservation() string {
	if in.reservationID != "" {
		return in.reservationID
	}
	return "r-" + strings.TrimPrefix(in.id, "i-")
}
