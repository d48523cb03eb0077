// Package tags defines amibackup's tag contract. Every image and snapshot
// amibackup creates carries these tags; prune, share, copy and the IAM
// conditions in the stacks trust them, so they live in one place. Image
// names are pkg/images'.
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

// Verification is what an image's tags say of its restore verification.
type Verification struct {
	// At: when it last passed (Verified); zero: never, or unreadable.
	At time.Time
	// Failed: Verify is VerifyFailed, for the reason Error (VerifyError).
	Failed bool
	Error  string
}

// Holds reports whether the image counts as verified now. A failure
// un-verifies it whatever Verified says: the two tags come from different
// runs and carry no order, and the safe reading makes another image the
// newest verified (retention's floor).
func (v Verification) Holds() bool { return !v.At.IsZero() && !v.Failed }

// ParseVerified reads an image's verification tags (t: its tags by key).
// The error says Verified is present but not FormatTime's form; At is then
// zero (not verified) and the rest is read.
func ParseVerified(t map[string]string) (Verification, error) {
	v := Verification{Failed: t[Verify] == VerifyFailed, Error: t[VerifyError]}
	raw, ok := t[Verified]
	if !ok {
		return v, nil
	}
	at, err := ParseTime(raw)
	if err != nil {
		return v, fmt.Errorf("tag %s is %q, not an RFC 3339 time", Verified, raw)
	}
	v.At = at
	return v, nil
}

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
