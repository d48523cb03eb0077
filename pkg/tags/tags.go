// Package tags defines amibackup's tag contract. Every image and snapshot
// amibackup creates carries these tags; prune, share, copy and the IAM
// conditions in the stacks trust them, so they live in one place. Image
// names are pkg/images'.
package tags

import (
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
	// Restore verification results on an image (written by the verification
	// workflow, read by prune's retention floors): Verified holds when the
	// image last passed a restore test (RFC 3339, FormatTime's form);
	// Verify is VerifyFailed when it last failed, with the reason in
	// VerifyError. A failed verification is reported, never a reason to
	// delete by itself.
	Verified    = "amibackup:verified"
	Verify      = "amibackup:verify"
	VerifyError = "amibackup:verify-error"
	// VerifyOf is on a verification instance (and its volumes): the image
	// it boots. With ManagedBy it is what the verify role may terminate and
	// what the sweep finds; nothing else is ever terminated.
	VerifyOf = "amibackup:verify-of"
)

// VerifyFailed is the Verify value of an image that failed its restore test.
const VerifyFailed = "failed"

// Trigger values.
const (
	TriggerSchedule = "schedule"
	TriggerManual   = "manual"
)

// MaxTags is EC2's limit per resource.
const MaxTags = 50

var instanceIDRE = regexp.MustCompile(`^i-[0-9a-f]{8}([0-9a-f]{9})?$`)

// ValidInstanceID reports whether id has the form of an EC2 instance ID.
func ValidInstanceID(id string) bool { return instanceIDRE.MatchString(id) }

// FormatTime renders a slot for the amibackup:time tag.
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// ParseTime reads an amibackup:time tag value (FormatTime's form), in UTC.
func ParseTime(v string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, v)
	return t.UTC(), err
}

// IsReserved reports whether a tag key may not be copied from an instance.
func IsReserved(key string) bool {
	return strings.HasPrefix(key, "aws:") || strings.HasPrefix(key, Prefix)
}
