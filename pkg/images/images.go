// Package images holds "our images": the names amibackup gives the images
// it creates and copies (one naming contract, built and parsed here), and
// how every job finds them in EC2 (this deployment's images by tag, one
// image by name, an image's snapshots and deprecation time).
package images

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/amibackup/amibackup/pkg/tags"
)

// TimeLayout is the compact UTC form of the slot in image names.
const TimeLayout = "20060102T150405Z"

// Name is the deterministic name of the image of an instance for a
// trigger slot: a retried trigger produces the same name, and EC2's
// per-account uniqueness (InvalidAMIName.Duplicate) makes the retry harmless.
func Name(policy, instanceID string, slot time.Time) string {
	return fmt.Sprintf("amibackup-%s-%s-%s", policy, instanceID, slot.UTC().Format(TimeLayout))
}

// nameRE is Name's form: policy (config: a-z 0-9 -), instance ID, slot in
// TimeLayout.
var nameRE = regexp.MustCompile(`^amibackup-([a-z0-9][a-z0-9-]*)-(i-[0-9a-f]{8,17})-([0-9]{8}T[0-9]{6}Z)$`)

// Parsed is what an image name made by Name says.
type Parsed struct {
	Policy, InstanceID string
	// Slot is zero when the name's digits are not a valid time.
	Slot time.Time
}

// ParseName reads a name made by Name; ok is false for any other name. A
// recovery account relies on it: a shared image's tags are invisible to
// the accounts it is shared with, its name is not.
func ParseName(name string) (p Parsed, ok bool) {
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		return Parsed{}, false
	}
	p = Parsed{Policy: m[1], InstanceID: m[2]}
	if slot, err := time.Parse(TimeLayout, m[3]); err == nil {
		p.Slot = slot
	}
	return p, true
}

// Description is the description of a backup image. It names the
// deployment because an image's description, unlike its tags, is visible
// to the accounts it is shared with: recovery accounts use it to copy only
// the source deployment they are configured for.
func Description(deployment, policy, instanceID string, slot time.Time, reboot bool) string {
	return fmt.Sprintf("%s%s: %s of %s at %s (reboot=%t)", descPrefix, deployment, policy, instanceID, tags.FormatTime(slot), reboot)
}

const descPrefix = "amibackup deployment "

// DescribesDeployment reports whether an image description written by
// Description names deployment.
func DescribesDeployment(description, deployment string) bool {
	return strings.HasPrefix(description, descPrefix+deployment+":")
}

// CopyName is the deterministic name of a recovery deployment's copy of a
// source image. It names the recovery deployment: AMI names are unique per
// account and Region, and two recovery deployments there (e.g. with other
// retention) may copy the same source. At most 15+64+1+12+1+21 = 114 of
// EC2's 128 characters (deployment names are 1-64 of A-Z a-z 0-9 -, all
// allowed in AMI names); it ends in the image ID, so ParseName never
// takes it for a backup.
func CopyName(deployment, sourceAccount, sourceImageID string) string {
	return fmt.Sprintf("amibackup-copy-%s-%s-%s", deployment, sourceAccount, sourceImageID)
}

var validNameRE = regexp.MustCompile(`^[A-Za-z0-9()\[\]./\-'@_ ]{3,128}$`)

// ValidName reports whether EC2 accepts name as an AMI name.
func ValidName(name string) bool { return validNameRE.MatchString(name) }
