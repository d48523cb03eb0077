// Package tags defines amibackup's tag contract and image naming. Every
// image and snapshot amibackup creates carries these tags; prune, share, copy
// and the IAM conditions in the stacks trust them, so they live in one place.
package tags

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Tag keys written by amibackup.
const (
	Prefix     = "amibackup:"
	ManagedBy  = "amibackup:managed-by"  // deployment name
	Policy     = "amibackup:policy"      // policy name
	InstanceID = "amibackup:instance-id" // source instance
	Time       = "amibackup:time"        // trigger slot, RFC 3339 UTC
	Reboot     = "amibackup:reboot"      // "true" or "false"
	Trigger    = "amibackup:trigger"     // "schedule" or "manual"
	// NoReboot on an instance opts it out of the reboot ("true").
	NoReboot = "amibackup:no-reboot"
	// Share records the sharing state on an image: "done" or "error".
	Share = "amibackup:share"
	// Copy tags on a recovery copy.
	SourceAccount = "amibackup:source-account"
	SourceImage   = "amibackup:source-image"
	SourceRegion  = "amibackup:source-region"
)

// Trigger values.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)

// MaxTags is EC2's limit per resource.
const MaxTags = 50

// TimeLayout is the compact UTC form used in image names.
const TimeLayout = "20060102T150405Z"

// ImageName is the deterministic name of the image of an instance for a
// trigger slot: a retried trigger produces the same name, and EC2's
// per-account uniqueness (InvalidAMIName.Duplicate) makes the retry harmless.
func ImageName(policy, instanceID string, slot time.Time) string {
	return fmt.Sprintf("amibackup-%s-%s-%s", policy, instanceID, slot.UTC().Format(TimeLayout))
}

// ImageDescription is the description of a backup image. It names the
// deployment because an image's description, unlike its tags, is visible
// to the accounts it is shared with: recovery accounts use it to copy only
// the source deployment they are configured for.
func ImageDescription(deployment, policy, instanceID string, slot time.Time, reboot bool) string {
	return fmt.Sprintf("%s%s: %s of %s at %s (reboot=%t)", descPrefix, deployment, policy, instanceID, FormatTime(slot), reboot)
}

const descPrefix = "amibackup deployment "

// DescribesDeployment reports whether an image description written by
// ImageDescription names deployment.
func DescribesDeployment(description, deployment string) bool {
	return strings.HasPrefix(description, descPrefix+deployment+":")
}

// CopyName is the deterministic name of a recovery deployment's copy of a
// source image. It names the recovery deployment: AMI names are unique per
// account and Region, and two recovery deployments there (e.g. with other
// retention) may copy the same source. At most 15+64+1+12+1+21 = 114 of
// EC2's 128 characters (deployment names are 1-64 of A-Z a-z 0-9 -, all
// allowed in AMI names); it ends in the image ID, so it never matches the
// source-name pattern amibackup-<policy>-<instance>-<slot>.
func CopyName(deployment, sourceAccount, sourceImageID string) string {
	return fmt.Sprintf("amibackup-copy-%s-%s-%s", deployment, sourceAccount, sourceImageID)
}

var instanceIDRE = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)

// ValidInstanceID reports whether id has the form of an EC2 instance ID.
func ValidInstanceID(id string) bool { return instanceIDRE.MatchString(id) }

var nameRE = regexp.MustCompile(`^[A-Za-z0-9()\[\]./\-'@_ ]{3,128}$`)

// ValidImageName reports whether EC2 accepts name as an AMI name.
func ValidImageName(name string) bool { return nameRE.MatchString(name) }

// FormatTime renders a slot for the amibackup:time tag.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// IsReserved reports whether a tag key may not be copied from an instance.
func IsReserved(key string) bool {
	return strings.HasPrefix(key, "aws:") || strings.HasPrefix(key, Prefix)
}
