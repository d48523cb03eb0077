// Package config holds amibackup's configuration document: its schema, its
// defaults and its validation. The same package is used by the Lambda
// functions at cold start (environment variable AMIBACKUP_CONFIG) and by the
// CDK app at synth, so an invalid document fails in the same words in both
// places, before anything is deployed or changed.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvVar is the environment variable through which every function receives
// the configuration document.
const EnvVar = "AMIBACKUP_CONFIG"

// Config is the whole configuration document of one deployment.
type Config struct {
	// Deployment names this installation; it is the value of the
	// amibackup:managed-by tag and scopes every destructive IAM permission.
	// Default: the stack name (filled in by the CDK app).
	Deployment string `json:"deployment,omitempty"`
	// Policies are the backup policies; at least one is required.
	Policies []Policy `json:"policies"`
	// Prune configures the prune function shared by all policies.
	Prune Prune `json:"prune,omitempty"`
	// Concurrency bounds the EC2 mutating calls in flight per invocation.
	// Default 8, allowed 1-50 (the CreateImage bucket holds 50 tokens).
	Concurrency int `json:"concurrency,omitempty"`
	// Alarms configures notifications.
	Alarms Alarms `json:"alarms,omitempty"`
	// RecycleBin configures the Recycle Bin safety net for pruned backups.
	RecycleBin RecycleBin `json:"recycleBin,omitempty"`
	// TerminationProtection of the stacks; default true.
	TerminationProtection *bool `json:"terminationProtection,omitempty"`
	// Sharing, when set, shares every available backup with other accounts.
	Sharing *Sharing `json:"sharing,omitempty"`
	// Recovery, when set, makes this deployment a recovery deployment that
	// copies images shared by source accounts.
	Recovery *Recovery `json:"recovery,omitempty"`
	// LogRetentionDays of the functions' log groups; default 30.
	LogRetentionDays int `json:"logRetentionDays,omitempty"`
	// Guardrails, when set, adds the approved-AMI guards (guardrails.go).
	Guardrails *Guardrails `json:"guardrails,omitempty"`
}

// Policy selects instances and says how to back them up and keep their images.
type Policy struct {
	// Name: 1-32 characters, lower-case letters, digits and '-'; part of
	// every image name and of the amibackup:policy tag.
	Name string `json:"name"`
	// Selector chooses the opted-in instances.
	Selector Selector `json:"selector"`
	// Reboot: take file-system-consistent images (NoReboot=false). Default true.
	Reboot *bool `json:"reboot,omitempty"`
	// CopyTags lists instance tag keys copied onto images and snapshots.
	CopyTags []string `json:"copyTags,omitempty"`
	// ExtraTags are added to every image and snapshot.
	ExtraTags map[string]string `json:"extraTags,omitempty"`
	// DeprecateAfter, when set, deprecates each image that long after its
	// creation (EnableImageDeprecation). At most 10 years.
	DeprecateAfter Duration `json:"deprecateAfter,omitempty"`
	// Schedule of the backup runs (used by the stacks).
	Schedule Schedule `json:"schedule"`
	// Retention decides which images prune keeps.
	Retention Retention `json:"retention"`
	// Availability: reboot in waves per availability group (availability.go).
	Availability *Availability `json:"availability,omitempty"`
	// Verify: boot the policy's backups in isolation on a schedule (verify.go).
	Verify *Verify `json:"verify,omitempty"`
}

// Selector is the tag filter that opts instances in.
type Selector struct {
	TagKey string `json:"tagKey"`
	// TagValues accepted; empty means any value of TagKey.
	TagValues []string `json:"tagValues,omitempty"`
}

// Schedule is an EventBridge Scheduler expression and its time zone.
type Schedule struct {
	// Expression: "cron(min hour day-of-month month day-of-week year)" or
	// "rate(N unit)", as EventBridge Scheduler accepts.
	Expression string `json:"expression"`
	// TimeZone: an IANA name such as "Europe/Berlin"; default "UTC".
	TimeZone string `json:"timeZone,omitempty"`
}

// Retention rules: an image is kept if any rule keeps it. Floors (newest
// available image, MinAvailable, pending images) hold whatever the rules say.
type Retention struct {
	Last    int      `json:"last,omitempty"`
	Within  Duration `json:"within,omitempty"`
	Daily   int      `json:"daily,omitempty"`
	Weekly  int      `json:"weekly,omitempty"`
	Monthly int      `json:"monthly,omitempty"`
	Yearly  int      `json:"yearly,omitempty"`
	// MinAvailable available images per instance are always kept; default 1.
	MinAvailable int `json:"minAvailable,omitempty"`
}

// Prune configures the prune function.
type Prune struct {
	// Schedule of prune runs; default 05:00 in the first policy's time zone.
	Schedule *Schedule `json:"schedule,omitempty"`
	// MaxDeleteShare is the blast-radius guard: a run that would delete more
	// than this share of the deployment's images deletes nothing. Default
	// 0.5, allowed (0, 1].
	MaxDeleteShare float64 `json:"maxDeleteShare,omitempty"`
	// OrphanGrace is the minimum age of an orphaned snapshot before it is
	// deleted; default 24h.
	OrphanGrace Duration `json:"orphanGrace,omitempty"`
}

// Alarms configures the SNS topic the alarms publish to.
type Alarms struct {
	Email string `json:"email,omitempty"`
}

// RecycleBin retention of deleted images and snapshots, in days (1-365).
type RecycleBin struct {
	// Disabled turns the Recycle Bin rules off.
	Disabled bool `json:"disabled,omitempty"`
	// ImageRetentionDays default 7.
	ImageRetentionDays int `json:"imageRetentionDays,omitempty"`
	// SnapshotRetentionDays default = ImageRetentionDays; never shorter.
	SnapshotRetentionDays int `json:"snapshotRetentionDays,omitempty"`
}

// Sharing of backups with other accounts (source account side).
type Sharing struct {
	// AccountIDs granted launch and create-volume permission.
	AccountIDs []string `json:"accountIds,omitempty"`
	// OrganizationARNs and OrganizationalUnitARNs granted launch permission.
	OrganizationARNs       []string `json:"organizationArns,omitempty"`
	OrganizationalUnitARNs []string `json:"organizationalUnitArns,omitempty"`
	// KMSKeyARN of an existing customer-managed key the volumes use; when
	// empty and CreateKey is set, the stack creates one.
	KMSKeyARN string `json:"kmsKeyArn,omitempty"`
	CreateKey bool   `json:"createKey,omitempty"`
	// Sweep is the fallback schedule; default every hour.
	Sweep *Schedule `json:"sweep,omitempty"`
}

// Recovery configures a recovery deployment that copies shared images.
type Recovery struct {
	// SourceAccountIDs whose shared images are copied.
	SourceAccountIDs []string `json:"sourceAccountIds"`
	// SourceDeployment is the source deployment's name (its managed-by
	// value); only its images are copied (recognised by their description).
	SourceDeployment string `json:"sourceDeployment"`
	// SourceRegion, when set, copies from that Region (default: this Region).
	SourceRegion string `json:"sourceRegion,omitempty"`
	// KMSKeyARN used to re-encrypt copies; when empty the stack creates a key.
	KMSKeyARN string `json:"kmsKeyArn,omitempty"`
	// MaxInFlight copies pending at once; default 20, allowed 1-100
	// (MaxInFlightLimit).
	MaxInFlight int `json:"maxInFlight,omitempty"`
	// Schedule of copy runs; default every hour.
	Schedule *Schedule `json:"schedule,omitempty"`
	// Retention of the copies (applied by prune with policy name "copy").
	Retention Retention `json:"retention"`
}

// Defaults for unset fields.
const (
	DefaultConcurrency      = 8
	DefaultMaxDeleteShare   = 0.5
	DefaultOrphanGrace      = 24 * time.Hour
	DefaultRecycleBinDays   = 7
	DefaultLogRetentionDays = 30
	// DefaultMaxInFlight stays well below the documented limit: older EC2
	// pages say 50 and snapshot-copy errors in the wild say 5 or 20; the
	// copy function treats ResourceLimitExceeded as "later", never failure.
	DefaultMaxInFlight = 20
	// MaxInFlightLimit is the EC2 user guide's limit on concurrent AMI copies
	// per destination Region ("Copy an AMI": 100 concurrent copies); a
	// larger maxInFlight could never be in flight at once.
	MaxInFlightLimit = 100
	DefaultTimeZone  = "UTC"
	// CopyPolicy is the policy name prune uses for a recovery deployment's copies.
	CopyPolicy = "copy"
)

// Parse decodes a configuration document strictly (unknown fields are
// errors), applies defaults and validates it. deploymentDefault fills an
// empty Deployment (the CDK app passes the stack name).
func Parse(data []byte, deploymentDefault string) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, decodeError(data, err)
	}
	// dec.More() misses a trailing '}' or ']': look at the rest instead.
	if rest := bytes.Trim(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, errors.New("config: trailing data after the JSON document: the configuration is one JSON object")
	}
	if c.Deployment == "" {
		c.Deployment = deploymentDefault
	}
	c.ApplyDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// FromEnv reads and parses AMIBACKUP_CONFIG.
func FromEnv() (*Config, error) {
	v := os.Getenv(EnvVar)
	if strings.TrimSpace(v) == "" {
		return nil, fmt.Errorf("config: environment variable %s is empty; set it to the JSON configuration document", EnvVar)
	}
	return Parse([]byte(v), "")
}

// ApplyDefaults fills unset optional fields.
func (c *Config) ApplyDefaults() {
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Prune.MaxDeleteShare == 0 {
		c.Prune.MaxDeleteShare = DefaultMaxDeleteShare
	}
	if c.Prune.OrphanGrace == 0 {
		c.Prune.OrphanGrace = Duration(DefaultOrphanGrace)
	}
	if c.LogRetentionDays == 0 {
		c.LogRetentionDays = DefaultLogRetentionDays
	}
	if c.RecycleBin.ImageRetentionDays == 0 {
		c.RecycleBin.ImageRetentionDays = DefaultRecycleBinDays
	}
	if c.RecycleBin.SnapshotRetentionDays == 0 {
		c.RecycleBin.SnapshotRetentionDays = c.RecycleBin.ImageRetentionDays
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		if p.Reboot == nil {
			t := true
			p.Reboot = &t
		}
		if p.Schedule.TimeZone == "" {
			p.Schedule.TimeZone = DefaultTimeZone
		}
		if p.Verify != nil && p.Verify.Schedule.TimeZone == "" {
			// The policy's own time zone: a verify run is planned against
			// the same local night as its backups.
			p.Verify.Schedule.TimeZone = p.Schedule.TimeZone
		}
		if p.Retention.MinAvailable == 0 {
			p.Retention.MinAvailable = 1
		}
	}
	if c.Prune.Schedule == nil {
		tz := DefaultTimeZone
		if len(c.Policies) > 0 {
			tz = c.Policies[0].Schedule.TimeZone
		}
		c.Prune.Schedule = &Schedule{Expression: "cron(0 5 * * ? *)", TimeZone: tz}
	} else if c.Prune.Schedule.TimeZone == "" {
		c.Prune.Schedule.TimeZone = DefaultTimeZone
	}
	if c.Sharing != nil && c.Sharing.Sweep == nil {
		c.Sharing.Sweep = &Schedule{Expression: "rate(1 hour)", TimeZone: DefaultTimeZone}
	}
	if r := c.Recovery; r != nil {
		if r.MaxInFlight == 0 {
			r.MaxInFlight = DefaultMaxInFlight
		}
		if r.Schedule == nil {
			r.Schedule = &Schedule{Expression: "rate(1 hour)", TimeZone: DefaultTimeZone}
		}
		if r.Retention.MinAvailable == 0 {
			r.Retention.MinAvailable = 1
		}
	}
}

// Policy returns the policy with the given name.
func (c *Config) Policy(name string) (*Policy, bool) {
	for i := range c.Policies {
		if c.Policies[i].Name == name {
			return &c.Policies[i], true
		}
	}
	return nil, false
}

// PolicyNames lists the configured policy names, in order.
func (c *Config) PolicyNames() []string {
	names := make([]string, len(c.Policies))
	for i, p := range c.Policies {
		names[i] = p.Name
	}
	return names
}

// RebootEnabled reports the policy's reboot setting (default true).
func (p *Policy) RebootEnabled() bool { return p.Reboot == nil || *p.Reboot }

// TerminationProtectionEnabled reports the setting (default true).
func (c *Config) TerminationProtectionEnabled() bool {
	return c.TerminationProtection == nil || *c.TerminationProtection
}

// JSON renders the document (with defaults applied) for AMIBACKUP_CONFIG.
func (c *Config) JSON() string {
	b, err := json.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("config: marshal: %v", err)) // all fields are marshalable
	}
	return string(b)
}

var (
	policyNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	deploymentRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,63}$`)
	accountRE    = regexp.MustCompile(`^[0-9]{12}$`)
	orgARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:organizations::[0-9]{12}:organization/o-[a-z0-9]{10,32}$`)
	ouARNRE      = regexp.MustCompile(`^arn:aws[a-z-]*:organizations::[0-9]{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$`)
	kmsARNRE     = regexp.MustCompile(`^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_-]+)$`)
	emailRE      = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)
	regionRE     = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]$`)
)

// LogRetentionValues are the retention periods CloudWatch Logs accepts, in days.
var LogRetentionValues = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

// maxDeprecation is EnableImageDeprecation's upper bound.
const maxDeprecation = 10 * 365 * 24 * time.Hour

// Validate checks the whole document and returns one error per problem,
// each naming the field and what is allowed.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !deploymentRE.MatchString(c.Deployment) {
		add("deployment", "%q is not allowed: use 1-64 letters, digits and '-', starting with a letter or digit", c.Deployment)
	}
	if len(c.Policies) == 0 && c.Recovery == nil {
		add("policies", "at least one policy is required (a recovery-only deployment sets recovery instead)")
	}
	if len(c.Policies) > 0 && c.Recovery != nil {
		// Both would prune the same managed-by tag on their own schedules and
		// share one schedule group; a recovery deployment is its own stack.
		add("recovery", "cannot be combined with policies: deploy the recovery deployment as its own stack with its own deployment name (e.g. -c amibackup:stack=AmiBackupRecovery -c amibackup:config=recovery.json)")
	}
	if c.Concurrency < 1 || c.Concurrency > 50 {
		add("concurrency", "%d is out of range: allowed 1-50 (EC2's CreateImage bucket holds 50 tokens)", c.Concurrency)
	}
	if !slices.Contains(LogRetentionValues, c.LogRetentionDays) {
		add("logRetentionDays", "%d is not a CloudWatch Logs retention: allowed %v", c.LogRetentionDays, LogRetentionValues)
	}
	seen := map[string]bool{}
	for i := range c.Policies {
		p := &c.Policies[i]
		f := fmt.Sprintf("policies[%d]", i)
		if !policyNameRE.MatchString(p.Name) {
			add(f+".name", "%q is not allowed: use 1-32 lower-case letters, digits and '-', starting with a letter or digit", p.Name)
		}
		if seen[p.Name] {
			add(f+".name", "%q is used by more than one policy; names must be unique", p.Name)
		}
		seen[p.Name] = true
		validateSelector(add, f+".selector", p.Selector)
		for j, k := range p.CopyTags {
			if k == "" || strings.HasPrefix(k, "aws:") || strings.HasPrefix(k, "amibackup:") {
				add(fmt.Sprintf("%s.copyTags[%d]", f, j), "%q cannot be copied: keys must be non-empty and must not start with \"aws:\" or \"amibackup:\"", k)
			}
		}
		for k, v := range p.ExtraTags {
			if k == "" || len(k) > 128 || strings.HasPrefix(k, "aws:") || strings.HasPrefix(k, "amibackup:") {
				add(f+".extraTags", "key %q is not allowed: 1-128 characters, not starting with \"aws:\" or \"amibackup:\"", k)
			}
			if len(v) > 256 {
				add(f+".extraTags", "value of %q is longer than 256 characters", k)
			}
		}
		if len(p.ExtraTags)+len(p.CopyTags) > 50-ownTags {
			add(f, "copyTags plus extraTags allow at most %d tags (EC2 allows 50 per resource, %d are amibackup's own)", 50-ownTags, ownTags)
		}
		if d := p.DeprecateAfter.D(); d < 0 || d > maxDeprecation {
			add(f+".deprecateAfter", "%s is out of range: allowed 1m to 10 years (3650d), or unset", p.DeprecateAfter)
		} else if d > 0 && d < time.Minute {
			add(f+".deprecateAfter", "%s is too short: EC2 rounds deprecation times to the minute; use at least 1m", p.DeprecateAfter)
		}
		validateSchedule(add, f+".schedule", p.Schedule)
		validateRetention(add, f+".retention", p.Retention)
		validateAvailability(add, f+".availability", p)
		validateVerify(add, f+".verify", p.Verify)
	}
	if c.Prune.Schedule != nil {
		validateSchedule(add, "prune.schedule", *c.Prune.Schedule)
	}
	if c.Prune.MaxDeleteShare <= 0 || c.Prune.MaxDeleteShare > 1 {
		add("prune.maxDeleteShare", "%v is out of range: allowed greater than 0 and at most 1 (default 0.5)", c.Prune.MaxDeleteShare)
	}
	if c.Prune.OrphanGrace.D() < time.Hour {
		add("prune.orphanGrace", "%s is too short: at least 1h, so a backup still being registered never loses its snapshots", c.Prune.OrphanGrace)
	}
	if c.Alarms.Email != "" && !emailRE.MatchString(c.Alarms.Email) {
		add("alarms.email", "%q is not an e-mail address", c.Alarms.Email)
	}
	rb := c.RecycleBin
	if !rb.Disabled {
		if rb.ImageRetentionDays < 1 || rb.ImageRetentionDays > 365 {
			add("recycleBin.imageRetentionDays", "%d is out of range: allowed 1-365", rb.ImageRetentionDays)
		}
		if rb.SnapshotRetentionDays < 1 || rb.SnapshotRetentionDays > 365 {
			add("recycleBin.snapshotRetentionDays", "%d is out of range: allowed 1-365", rb.SnapshotRetentionDays)
		}
		if rb.SnapshotRetentionDays < rb.ImageRetentionDays {
			add("recycleBin.snapshotRetentionDays", "%d is shorter than imageRetentionDays (%d): a restored image needs its snapshots; use at least %d", rb.SnapshotRetentionDays, rb.ImageRetentionDays, rb.ImageRetentionDays)
		}
	}
	if s := c.Sharing; s != nil {
		if len(s.AccountIDs)+len(s.OrganizationARNs)+len(s.OrganizationalUnitARNs) == 0 {
			add("sharing", "names no target: set accountIds, organizationArns or organizationalUnitArns, or remove sharing")
		}
		for i, a := range s.AccountIDs {
			if !accountRE.MatchString(a) {
				add(fmt.Sprintf("sharing.accountIds[%d]", i), "%q is not a 12-digit AWS account ID", a)
			}
		}
		for i, a := range s.OrganizationARNs {
			if !orgARNRE.MatchString(a) {
				add(fmt.Sprintf("sharing.organizationArns[%d]", i), "%q is not an organization ARN (arn:aws:organizations::<account>:organization/o-...)", a)
			}
		}
		for i, a := range s.OrganizationalUnitARNs {
			if !ouARNRE.MatchString(a) {
				add(fmt.Sprintf("sharing.organizationalUnitArns[%d]", i), "%q is not an OU ARN (arn:aws:organizations::<account>:ou/o-.../ou-...)", a)
			}
		}
		if s.KMSKeyARN != "" && !kmsARNRE.MatchString(s.KMSKeyARN) {
			add("sharing.kmsKeyArn", "%q is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>); the AWS-managed key alias/aws/ebs cannot be shared", s.KMSKeyARN)
		}
		if s.KMSKeyARN != "" && s.CreateKey {
			add("sharing.createKey", "cannot be combined with kmsKeyArn: use an existing key or create one, not both")
		}
		if n := s.SharedKeyPolicyBound(); n > MaxKeyPolicyBytes {
			add("sharing", "the created key's policy would need up to %d bytes for %d accounts, %d organizations and %d OUs, over KMS's %d-byte key policy limit: "+
				"share with fewer accounts (each takes up to %d bytes; organizationArns or organizationalUnitArns cover many accounts in one entry), or use an existing key (kmsKeyArn) whose policy you manage",
				n, len(s.AccountIDs), len(s.OrganizationARNs), len(s.OrganizationalUnitARNs), MaxKeyPolicyBytes, keyPolicyPerAccountBytes)
		}
		if s.Sweep != nil {
			validateSchedule(add, "sharing.sweep", *s.Sweep)
		}
	}
	if r := c.Recovery; r != nil {
		if len(r.SourceAccountIDs) == 0 {
			add("recovery.sourceAccountIds", "at least one source account ID is required")
		}
		for i, a := range r.SourceAccountIDs {
			if !accountRE.MatchString(a) {
				add(fmt.Sprintf("recovery.sourceAccountIds[%d]", i), "%q is not a 12-digit AWS account ID", a)
			}
		}
		if !deploymentRE.MatchString(r.SourceDeployment) {
			add("recovery.sourceDeployment", "%q is not allowed: the source deployment's name (its amibackup:managed-by tag value) is required", r.SourceDeployment)
		}
		if r.SourceRegion != "" && !regionRE.MatchString(r.SourceRegion) {
			add("recovery.sourceRegion", "%q is not a Region name such as eu-west-1", r.SourceRegion)
		}
		if r.KMSKeyARN != "" && !kmsARNRE.MatchString(r.KMSKeyARN) {
			add("recovery.kmsKeyArn", "%q is not a KMS key ARN (arn:aws:kms:<region>:<account>:key/<id>)", r.KMSKeyARN)
		}
		if r.MaxInFlight < 1 || r.MaxInFlight > MaxInFlightLimit {
			add("recovery.maxInFlight", "%d is out of range: allowed 1-%d (the EC2 user guide allows %d concurrent AMI copies per destination Region; default %d)", r.MaxInFlight, MaxInFlightLimit, MaxInFlightLimit, DefaultMaxInFlight)
		}
		if r.Schedule != nil {
			validateSchedule(add, "recovery.schedule", *r.Schedule)
		}
		validateRetention(add, "recovery.retention", r.Retention)
	}
	c.validateGuardrails(add)
	return errors.Join(errs...)
}

// ownTags is the number of amibackup's own tags on every image (managed-by,
// policy, instance-id, time, reboot, trigger), checked against EC2's 50.
const ownTags = 6

type addFunc func(field, format string, args ...any)

func validateSelector(add addFunc, f string, s Selector) {
	if s.TagKey == "" {
		add(f+".tagKey", "is required: the instance tag that opts an instance in, e.g. \"Backup\"")
	} else if strings.HasPrefix(s.TagKey, "aws:") || len(s.TagKey) > 128 {
		add(f+".tagKey", "%q is not allowed: 1-128 characters, not starting with \"aws:\"", s.TagKey)
	} else if strings.HasPrefix(s.TagKey, "amibackup:") {
		// amibackup's own keys are on what amibackup creates: selecting by
		// one would back up (and reboot) the verification instances.
		add(f+".tagKey", "%q is not allowed: keys starting with \"amibackup:\" are amibackup's own (its verification instances carry them); use your opt-in tag, e.g. \"Backup\"", s.TagKey)
	}
	for i, v := range s.TagValues {
		if v == "" || len(v) > 256 {
			add(fmt.Sprintf("%s.tagValues[%d]", f, i), "%q is not allowed: 1-256 characters (omit tagValues to accept any value)", v)
		}
	}
}

func validateRetention(add addFunc, f string, r Retention) {
	for name, n := range map[string]int{"last": r.Last, "daily": r.Daily, "weekly": r.Weekly, "monthly": r.Monthly, "yearly": r.Yearly} {
		if n < 0 || n > 10000 {
			add(f+"."+name, "%d is out of range: allowed 0-10000", n)
		}
	}
	if r.Within.D() < 0 {
		add(f+".within", "%s is negative", r.Within)
	}
	if r.MinAvailable < 1 || r.MinAvailable > 1000 {
		add(f+".minAvailable", "%d is out of range: allowed 1-1000 (the newest available image is always kept)", r.MinAvailable)
	}
	if r.Last == 0 && r.Within == 0 && r.Daily == 0 && r.Weekly == 0 && r.Monthly == 0 && r.Yearly == 0 {
		add(f, "keeps nothing beyond the floor: set at least one of last, within, daily, weekly, monthly, yearly (e.g. {\"daily\": 7})")
	}
}

// Duration is a time.Duration written as a string in JSON: Go syntax
// ("36h", "90m") plus days and weeks ("14d", "2w", "1d12h").
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string {
	td := time.Duration(d)
	if td != 0 && td%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", td/(24*time.Hour))
	}
	return td.String()
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"14d\" or \"36h\": %w", err)
	}
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

var dayWeekRE = regexp.MustCompile(`^([0-9]+)([dw])`)

// maxDuration bounds every configured duration; far below time.Duration's
// ~292 years, far above any sensible retention.
const maxDuration = 36500 * 24 * time.Hour

// ParseDuration parses Go durations extended with leading days and weeks.
func ParseDuration(s string) (time.Duration, error) {
	orig := s
	if s == "" {
		return 0, nil
	}
	var total time.Duration
	for {
		m := dayWeekRE.FindStringSubmatch(s)
		if m == nil {
			break
		}
		unit := 24 * time.Hour
		if m[2] == "w" {
			unit *= 7
		}
		// Bound each part before multiplying so no input can overflow
		// into a short or negative duration.
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > int64(maxDuration/unit) || total+time.Duration(n)*unit > maxDuration {
			return 0, fmt.Errorf("duration %q is too long: at most 100 years (36500d)", orig)
		}
		total += time.Duration(n) * unit
		s = s[len(m[0]):]
	}
	if s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("duration %q is not valid: use e.g. \"14d\", \"2w\", \"36h\" or \"1d12h\"", orig)
		}
		if v > maxDuration-total {
			return 0, fmt.Errorf("duration %q is too long: at most 100 years (36500d)", orig)
		}
		total += v
	}
	return total, nil
}

// durationFields are the JSON keys holding a Duration. A decode error in one
// of them carries no field path, so decodeError walks the document to name it.
var durationFields = map[string]bool{"deprecateAfter": true, "within": true, "orphanGrace": true}

// decodeError turns a failed strict decode into field-level messages where
// the JSON itself is well formed: every bad duration is named by its path.
func decodeError(data []byte, err error) error {
	var doc any
	if json.Unmarshal(data, &doc) != nil {
		return fmt.Errorf("config: invalid JSON: %w (see README, section Configuration)", err)
	}
	var errs []error
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(t)) {
				p := k
				if path != "" {
					p = path + "." + k
				}
				if durationFields[k] {
					s, ok := t[k].(string)
					if !ok {
						errs = append(errs, fmt.Errorf("config: %s: must be a string such as \"14d\" or \"36h\"", p))
					} else if _, derr := ParseDuration(s); derr != nil {
						errs = append(errs, fmt.Errorf("config: %s: %w", p, derr))
					}
					continue
				}
				walk(p, t[k])
			}
		case []any:
			for i, e := range t {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("", doc)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
		return fmt.Errorf("config: %s: JSON %s where %s is expected (see README, section Configuration)", te.Field, te.Value, te.Type)
	}
	return fmt.Errorf("config: %w (see README, section Configuration)", err)
}
