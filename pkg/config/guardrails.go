package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Guardrails makes the backup stack add "approved AMI" guards (README,
// section Approved-AMI guardrails): an IAM policy that denies launching
// unapproved images, the AWS Config rule that reports instances running
// from them, and optionally the account's EC2 Allowed AMIs setting.
type Guardrails struct {
	// ApprovedTag marks an approved image. Default: key amibackup:verified
	// (written by restore verification, value = RFC 3339 time) with any value.
	ApprovedTag *ApprovedTag `json:"approvedTag,omitempty"`
	// AllowedOwners are image owners whose images need no tag: 12-digit
	// account IDs or the owner aliases amazon, aws-marketplace,
	// aws-backup-vault (the ec2:Owner values of their images).
	AllowedOwners []string `json:"allowedOwners,omitempty"`
	// AttachTo names the IAM roles, users and groups (names, not ARNs) the
	// policy is attached to. Other stacks can attach the exported policy.
	AttachTo Attachments `json:"attachTo,omitempty"`
	// ConfigRule configures the AWS Config rules; on by default.
	ConfigRule ConfigRuleGuard `json:"configRule,omitempty"`
	// AllowedImages, when set, manages the account's (per Region) EC2
	// Allowed AMIs setting.
	AllowedImages *AllowedImages `json:"allowedImages,omitempty"`
}

// ApprovedTag is the image tag that approves an image.
type ApprovedTag struct {
	Key string `json:"key"`
	// Value, when set, must match exactly; empty means the key is enough.
	Value string `json:"value,omitempty"`
}

// Attachments are IAM principals, by name, that get the guardrail policy.
type Attachments struct {
	Roles  []string `json:"roles,omitempty"`
	Users  []string `json:"users,omitempty"`
	Groups []string `json:"groups,omitempty"`
}

// ConfigRuleGuard configures the AWS Config managed rules.
type ConfigRuleGuard struct {
	// Disabled leaves the Config rules out (e.g. no Config recorder).
	Disabled bool `json:"disabled,omitempty"`
	// TagKey and TagValue of APPROVED_AMIS_BY_TAG; default: approvedTag. Its
	// parameter separates key and value with ':' and entries with ',', so
	// neither may contain them (amibackup:verified does: set a tag key here).
	TagKey   string `json:"tagKey,omitempty"`
	TagValue string `json:"tagValue,omitempty"`
	// ApprovedAMIIDs, when set, also adds APPROVED_AMIS_BY_ID (off by default).
	ApprovedAMIIDs []string `json:"approvedAmiIds,omitempty"`
}

// AllowedImages manages EC2's account-level Allowed AMIs setting.
type AllowedImages struct {
	// Mode: "audit-mode" (default: nothing is restricted, images are only
	// marked ImageAllowed=false) or "enabled".
	Mode string `json:"mode,omitempty"`
	// ImageProviders allowed besides the account's own images (never
	// restricted): amazon, aws-marketplace, aws-backup-vault, account IDs,
	// or "none" alone. Default ["amazon"].
	ImageProviders []string `json:"imageProviders,omitempty"`
}

// Guardrail defaults and names.
const (
	// VerifiedTag is the tag restore verification writes on an image that
	// booted (value: RFC 3339 time); the default approved tag.
	VerifiedTag = "amibackup:verified"
	// AllowedImagesAudit and AllowedImagesEnabled are the states
	// EnableAllowedImagesSettings accepts.
	AllowedImagesAudit   = "audit-mode"
	AllowedImagesEnabled = "enabled"
)

// ownerAliases are the image owner aliases EC2 reports (ImageOwnerAlias:
// amazon | aws-backup-vault | aws-marketplace, aws-sdk-go-v2 ec2 types.Image).
var ownerAliases = []string{"amazon", "aws-marketplace", "aws-backup-vault"}

// GuardrailPolicyName is the customer-managed policy's name (IAM allows 128
// characters; the longest deployment name of 64 gives 87).
func GuardrailPolicyName(deployment string) string {
	return "amibackup-" + deployment + "-approved-amis"
}

// Defaults are applied by these accessors rather than written into the
// document, so AMIBACKUP_CONFIG stays as the operator wrote it.

// Tag returns the approved tag (default amibackup:verified, any value).
func (g *Guardrails) Tag() ApprovedTag {
	if g.ApprovedTag == nil {
		return ApprovedTag{Key: VerifiedTag}
	}
	return *g.ApprovedTag
}

// ConfigRuleTag returns the tag key and value the Config rule checks.
func (g *Guardrails) ConfigRuleTag() (key, value string) {
	if g.ConfigRule.TagKey != "" {
		return g.ConfigRule.TagKey, g.ConfigRule.TagValue
	}
	t := g.Tag()
	return t.Key, t.Value
}

// State returns the Allowed AMIs state to set (default audit-mode).
func (a *AllowedImages) State() string {
	if a.Mode == "" {
		return AllowedImagesAudit
	}
	return a.Mode
}

// Providers returns the image providers to allow (default amazon).
func (a *AllowedImages) Providers() []string {
	if len(a.ImageProviders) == 0 {
		return []string{"amazon"}
	}
	return a.ImageProviders
}

var (
	// IAM names: role and user names 1-64, group names 1-128 of [\w+=,.@-]
	// (IAM API reference, CreateRole/CreateUser/CreateGroup).
	iamNameRE  = regexp.MustCompile(`^[A-Za-z0-9_+=,.@-]+$`)
	amiIDRE    = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)
	tagValueRE = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)
	tagKeyRE   = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]+$`)
)

// validateGuardrails checks the guardrails section, if any.
func (c *Config) validateGuardrails(add addFunc) {
	g := c.Guardrails
	if g == nil {
		return
	}
	if c.Recovery != nil && len(c.Policies) == 0 {
		add("guardrails", "is only available in a backup deployment (one with policies); deploy it with the backup stack")
	}
	if t := g.ApprovedTag; t != nil {
		validateGuardTag(add, "guardrails.approvedTag.key", "guardrails.approvedTag.value", t.Key, t.Value)
	}
	for i, o := range g.AllowedOwners {
		if !accountRE.MatchString(o) && !slices.Contains(ownerAliases, o) {
			add(fmt.Sprintf("guardrails.allowedOwners[%d]", i), "%q is not allowed: use a 12-digit account ID or one of the owner aliases %s (\"self\" is not an ec2:Owner value: list the account ID)",
				o, strings.Join(ownerAliases, ", "))
		}
	}
	if dup := firstDuplicate(g.AllowedOwners); dup != "" {
		add("guardrails.allowedOwners", "%q is listed twice", dup)
	}
	for _, p := range []struct {
		field string
		names []string
		max   int
	}{{"roles", g.AttachTo.Roles, 64}, {"users", g.AttachTo.Users, 64}, {"groups", g.AttachTo.Groups, 128}} {
		for i, n := range p.names {
			if len(n) > p.max || !iamNameRE.MatchString(n) {
				add(fmt.Sprintf("guardrails.attachTo.%s[%d]", p.field, i), "%q is not an IAM %s name: use the name (not the ARN or path), 1-%d of letters, digits and _+=,.@-",
					n, strings.TrimSuffix(p.field, "s"), p.max)
			}
		}
		if dup := firstDuplicate(p.names); dup != "" {
			add("guardrails.attachTo."+p.field, "%q is listed twice", dup)
		}
	}
	if r := g.ConfigRule; !r.Disabled {
		key, value := g.ConfigRuleTag()
		switch {
		case r.TagKey == "" && r.TagValue != "":
			add("guardrails.configRule.tagValue", "is set without configRule.tagKey: set both, or neither to check approvedTag")
		case strings.ContainsAny(key, ":,"):
			field := "guardrails.configRule.tagKey"
			if r.TagKey == "" {
				field = "guardrails.configRule"
			}
			add(field, "tag key %q cannot be checked by APPROVED_AMIS_BY_TAG: its parameter amisByTagKeyAndValue separates key and value with ':' and entries with ','; "+
				"set configRule.tagKey to a tag without ':' or ',' that marks the same images (and tag them with it), or set configRule.disabled to true", key)
		case strings.ContainsAny(value, ":,"):
			field := "guardrails.configRule.tagValue"
			if r.TagKey == "" {
				field = "guardrails.configRule"
			}
			add(field, "tag value %q cannot be checked by APPROVED_AMIS_BY_TAG: its parameter amisByTagKeyAndValue separates key and value with ':' and entries with ','; "+
				"set configRule.tagKey and configRule.tagValue without them, or set configRule.disabled to true", value)
		}
		if r.TagKey != "" {
			validateGuardTag(add, "guardrails.configRule.tagKey", "guardrails.configRule.tagValue", r.TagKey, r.TagValue)
		}
		for i, id := range r.ApprovedAMIIDs {
			if !amiIDRE.MatchString(id) {
				add(fmt.Sprintf("guardrails.configRule.approvedAmiIds[%d]", i), "%q is not an AMI ID such as ami-0abc1234def567890", id)
			}
		}
		// APPROVED_AMIS_BY_ID: amiIds is a CSV of up to 21 IDs, 1024 characters.
		if n := len(r.ApprovedAMIIDs); n > 21 || len(strings.Join(r.ApprovedAMIIDs, ",")) > 1024 {
			add("guardrails.configRule.approvedAmiIds", "%d IDs are too many: APPROVED_AMIS_BY_ID accepts at most 21 (1024 characters)", n)
		}
	} else if r.TagKey != "" || r.TagValue != "" || len(r.ApprovedAMIIDs) > 0 {
		add("guardrails.configRule", "is disabled but sets tagKey, tagValue or approvedAmiIds: remove them or enable the rule")
	}
	if a := g.AllowedImages; a != nil {
		if m := a.State(); m != AllowedImagesAudit && m != AllowedImagesEnabled {
			add("guardrails.allowedImages.mode", "%q is not allowed: use %q (report only, the default) or %q", a.Mode, AllowedImagesAudit, AllowedImagesEnabled)
		}
		if len(a.ImageProviders) > 200 {
			add("guardrails.allowedImages.imageProviders", "%d providers are too many: EC2 accepts at most 200", len(a.ImageProviders))
		}
		for i, p := range a.ImageProviders {
			if p == "none" && len(a.ImageProviders) > 1 {
				add(fmt.Sprintf("guardrails.allowedImages.imageProviders[%d]", i), "\"none\" (only the account's own images) cannot be combined with other providers")
			} else if p != "none" && !accountRE.MatchString(p) && !slices.Contains(ownerAliases, p) {
				add(fmt.Sprintf("guardrails.allowedImages.imageProviders[%d]", i), "%q is not allowed: use a 12-digit account ID, %s, or \"none\"", p, strings.Join(ownerAliases, ", "))
			}
		}
		if dup := firstDuplicate(a.ImageProviders); dup != "" {
			add("guardrails.allowedImages.imageProviders", "%q is listed twice", dup)
		}
	}
}

// validateGuardTag: EC2 tag rules (key 1-128, not aws:, value at most 256)
// plus the characters IAM condition keys and EC2 tags share.
func validateGuardTag(add addFunc, keyField, valueField, key, value string) {
	switch {
	case key == "":
		add(keyField, "is required, e.g. %q", VerifiedTag)
	case len(key) > 128 || strings.HasPrefix(strings.ToLower(key), "aws:") || !tagKeyRE.MatchString(key):
		add(keyField, "%q is not allowed: 1-128 letters, digits, spaces and _.:/=+-@, not starting with \"aws:\"", key)
	}
	if len(value) > 256 || !tagValueRE.MatchString(value) {
		add(valueField, "%q is not allowed: at most 256 letters, digits, spaces and _.:/=+-@ (omit it to approve any value)", value)
	}
}

func firstDuplicate(list []string) string {
	seen := map[string]bool{}
	for _, v := range list {
		if seen[v] {
			return v
		}
		seen[v] = true
	}
	return ""
}
