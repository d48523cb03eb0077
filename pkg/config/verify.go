package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Verify is a policy's restore verification (issue 14): on its own schedule
// the verification workflow boots the policy's newest backups in isolation
// (one instance per image, no key pair, no public IP, a network that
// reaches nothing), tags each image amibackup:verified=<time> when both
// status checks are ok within Timeout, or amibackup:verify=failed with the
// reason, and always terminates what it launched. Prune never deletes the
// newest verified image of an instance.
type Verify struct {
	// Schedule of the verification runs (EventBridge Scheduler, like a
	// policy's backup schedule). Required.
	Schedule Schedule `json:"schedule"`
	// Sample: which images a run boots: "newest-per-instance" (default:
	// each instance's newest available image), a count N (N of those
	// images, the instances verified longest ago first) or a percentage
	// "P%" of them (rounded up, at least 1).
	Sample *Sample `json:"sample,omitempty"`
	// InstanceType per image architecture ("x86_64", "arm64"); defaults
	// DefaultVerifyInstanceTypes. An image of an architecture without a
	// type fails its verification with that reason.
	InstanceType map[string]string `json:"instanceType,omitempty"`
	// Timeout: how long a launched instance has to be running with both
	// status checks ok. Default 20m, allowed 5m-2h.
	Timeout string `json:"timeout,omitempty"`
	// MaxConcurrent verification instances at once. Default 5, allowed 1-100.
	MaxConcurrent int `json:"maxConcurrent,omitempty"`
	// SubnetID and SecurityGroupID: where to boot. Both or neither; without
	// them the stack creates an isolated VPC (private subnets, no internet
	// or NAT gateway, a security group without ingress or egress rules).
	SubnetID        string `json:"subnetId,omitempty"`
	SecurityGroupID string `json:"securityGroupId,omitempty"`
	// MaxVerifiedAge: the alarm fires when an instance's newest verified
	// image is older than this (or it has none). Default 8d (a weekly run
	// plus a day), allowed 1h-365d.
	MaxVerifiedAge string `json:"maxVerifiedAge,omitempty"`
}

// Verification defaults and bounds.
const (
	SampleNewestPerInstance = "newest-per-instance"

	DefaultVerifyTimeout       = 20 * time.Minute
	MinVerifyTimeout           = 5 * time.Minute
	MaxVerifyTimeout           = 2 * time.Hour
	DefaultVerifyMaxConcurrent = 5
	// MaxVerifyConcurrent bounds the instances one run keeps alive: the
	// RunInstances bucket refills 2 instances a second and every instance
	// costs money while it boots.
	MaxVerifyConcurrent   = 100
	DefaultMaxVerifiedAge = 8 * 24 * time.Hour
	MinMaxVerifiedAge     = time.Hour
	MaxMaxVerifiedAge     = 365 * 24 * time.Hour
	// MaxSampleCount bounds a count sample (the workflow is sized for it).
	MaxSampleCount = 10000

	ArchX86_64 = "x86_64"
	ArchARM64  = "arm64"
)

// DefaultVerifyInstanceTypes: small burstable types of both architectures.
var DefaultVerifyInstanceTypes = map[string]string{ArchX86_64: "t3.small", ArchARM64: "t4g.small"}

// Sample is "newest-per-instance", a count or a percentage. Like
// MaxUnavailable, any JSON value is accepted by the decoder and checked by
// Validate, so a bad value is reported with its field path.
type Sample struct {
	count   int
	percent int
	raw     string
}

// SampleCount and SamplePercent build values (tests, callers in code).
func SampleCount(n int) *Sample   { return &Sample{count: n} }
func SamplePercent(p int) *Sample { return &Sample{percent: p} }

// UnmarshalJSON accepts "newest-per-instance", a whole number or "P%".
func (s *Sample) UnmarshalJSON(b []byte) error {
	*s = Sample{raw: string(bytes.TrimSpace(b))}
	var str string
	if json.Unmarshal(b, &str) == nil {
		if str == SampleNewestPerInstance {
			*s = Sample{}
		} else if p := percentRE.FindStringSubmatch(str); p != nil {
			if n, _ := strconv.Atoi(p[1]); n <= 100 {
				*s = Sample{percent: n}
			}
		}
		return nil
	}
	if n, err := strconv.Atoi(s.raw); err == nil && n >= 1 && n <= MaxSampleCount {
		*s = Sample{count: n}
	}
	return nil
}

// MarshalJSON writes the value as configured.
func (s Sample) MarshalJSON() ([]byte, error) {
	switch {
	case s.count > 0:
		return []byte(strconv.Itoa(s.count)), nil
	case s.percent > 0:
		return json.Marshal(fmt.Sprintf("%d%%", s.percent))
	case s.raw != "":
		return []byte(s.raw), nil // only reachable for a document that failed validation
	}
	return json.Marshal(SampleNewestPerInstance)
}

func (s *Sample) valid() bool { return s == nil || s.raw == "" }

// String renders the value as configured.
func (s *Sample) String() string {
	if s == nil {
		return SampleNewestPerInstance
	}
	b, _ := s.MarshalJSON()
	return strings.Trim(string(b), `"`)
}

// Of resolves how many of n candidate images a run verifies: all of them
// for newest-per-instance, min(count, n) for a count, ceil(percent x n)
// (at least 1 when n > 0) for a percentage.
func (s *Sample) Of(n int) int {
	switch {
	case n <= 0:
		return 0
	case s == nil:
		return n
	case s.count > 0:
		return min(s.count, n)
	case s.percent > 0:
		return max(1, (s.percent*n+99)/100)
	}
	return n
}

// The accessors below apply the defaults.

// TimeoutOrDefault returns the boot timeout (default DefaultVerifyTimeout).
func (v *Verify) TimeoutOrDefault() time.Duration {
	return durationOr(v.Timeout, DefaultVerifyTimeout)
}

// MaxAge returns the verified-age alarm threshold (default DefaultMaxVerifiedAge).
func (v *Verify) MaxAge() time.Duration { return durationOr(v.MaxVerifiedAge, DefaultMaxVerifiedAge) }

// Concurrency returns MaxConcurrent (default DefaultVerifyMaxConcurrent).
func (v *Verify) Concurrency() int {
	if v.MaxConcurrent == 0 {
		return DefaultVerifyMaxConcurrent
	}
	return v.MaxConcurrent
}

// InstanceTypeFor returns the instance type for an image architecture.
func (v *Verify) InstanceTypeFor(arch string) (string, bool) {
	if t, ok := v.InstanceType[arch]; ok {
		return t, true
	}
	t, ok := DefaultVerifyInstanceTypes[arch]
	return t, ok
}

// Isolated reports whether the stack provides the isolated network (no
// subnet configured).
func (v *Verify) Isolated() bool { return v.SubnetID == "" }

func durationOr(s string, def time.Duration) time.Duration {
	if s == "" {
		return def
	}
	d, err := ParseDuration(s)
	if err != nil {
		return def // unreachable after Validate
	}
	return d
}

var (
	// instanceTypeRE: family, generation and options, a size ("t3.small",
	// "c7gn.2xlarge", "u-6tb1.metal", "c7i.metal-48xl").
	instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9][a-z0-9-]*$`)
	// gravitonRE: AWS Graviton families carry a "g" right after the
	// generation (t4g, m6g, c7gn, r8gd); x86 families do not ("g4dn" is a
	// GPU family without a generation digit before the g).
	gravitonRE = regexp.MustCompile(`^[a-z]+[0-9]+g[a-z]*\.`)
	// SubnetIDRE and SecurityGroupIDRE: EC2's subnet and security group
	// IDs (8 or 17 hex digits), also checked on the verify function's
	// network environment.
	SubnetIDRE        = regexp.MustCompile(`^subnet-[0-9a-f]{8}([0-9a-f]{9})?$`)
	SecurityGroupIDRE = regexp.MustCompile(`^sg-[0-9a-f]{8}([0-9a-f]{9})?$`)
)

// validateVerify checks a policy's verify section, if any.
func validateVerify(add addFunc, f string, v *Verify) {
	if v == nil {
		return
	}
	validateSchedule(add, f+".schedule", v.Schedule)
	if !v.Sample.valid() {
		add(f+".sample", "%.64s is not allowed: use %q (the default), a count 1-%d, or a percentage \"1%%\"-\"100%%\" such as \"10%%\"",
			v.Sample.raw, SampleNewestPerInstance, MaxSampleCount)
	}
	for _, arch := range slices.Sorted(maps.Keys(v.InstanceType)) {
		t, fi := v.InstanceType[arch], f+".instanceType."+arch
		switch {
		case arch != ArchX86_64 && arch != ArchARM64:
			add(f+".instanceType", "architecture %q is not allowed: use %q or %q (the architectures of EBS-backed AMIs amibackup verifies)", arch, ArchX86_64, ArchARM64)
		case !instanceTypeRE.MatchString(t):
			add(fi, "%q is not an instance type: use e.g. %q", t, DefaultVerifyInstanceTypes[arch])
		case arch == ArchARM64 && !gravitonRE.MatchString(t):
			add(fi, "%q is not an arm64 (Graviton) type: arm64 images boot only on types such as %q", t, DefaultVerifyInstanceTypes[ArchARM64])
		case arch == ArchX86_64 && gravitonRE.MatchString(t):
			add(fi, "%q is an arm64 (Graviton) type: x86_64 images boot only on types such as %q", t, DefaultVerifyInstanceTypes[ArchX86_64])
		}
	}
	validateDurationIn(add, f+".timeout", v.Timeout, MinVerifyTimeout, MaxVerifyTimeout, DefaultVerifyTimeout,
		"a boot with both status checks takes minutes; longer keeps instances running")
	validateDurationIn(add, f+".maxVerifiedAge", v.MaxVerifiedAge, MinMaxVerifiedAge, MaxMaxVerifiedAge, DefaultMaxVerifiedAge,
		"set it above the verify schedule's period")
	if v.MaxConcurrent < 0 || v.MaxConcurrent > MaxVerifyConcurrent {
		add(f+".maxConcurrent", "%d is out of range: allowed 1-%d (default %d)", v.MaxConcurrent, MaxVerifyConcurrent, DefaultVerifyMaxConcurrent)
	}
	if v.SubnetID != "" && !SubnetIDRE.MatchString(v.SubnetID) {
		add(f+".subnetId", "%q is not a subnet ID: use \"subnet-\" and 8 or 17 hex digits, or remove it for the isolated VPC the stack creates", v.SubnetID)
	}
	if v.SecurityGroupID != "" && !SecurityGroupIDRE.MatchString(v.SecurityGroupID) {
		add(f+".securityGroupId", "%q is not a security group ID: use \"sg-\" and 8 or 17 hex digits", v.SecurityGroupID)
	}
	if (v.SubnetID == "") != (v.SecurityGroupID == "") {
		add(f, "subnetId and securityGroupId go together: set both (a security group without ingress and egress is the safe choice), or neither for the isolated VPC the stack creates")
	}
}

// validateDurationIn checks an optional duration string against bounds.
func validateDurationIn(add addFunc, f, s string, lo, hi, def time.Duration, why string) {
	if s == "" {
		return
	}
	d, err := ParseDuration(s)
	switch {
	case err != nil:
		add(f, "%q is not a duration: use e.g. %q (allowed %s-%s, default %s)", s, fmtDuration(def), fmtDuration(lo), fmtDuration(hi), fmtDuration(def))
	case d < lo || d > hi:
		add(f, "%s is out of range: allowed %s-%s (default %s): %s", s, fmtDuration(lo), fmtDuration(hi), fmtDuration(def), why)
	}
}

// fmtDuration writes whole days as "Nd" (ParseDuration's form).
func fmtDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := strings.TrimSuffix(d.String(), "0s") // "20m0s" -> "20m"
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m") // "2h0m" -> "2h"
	}
	return s
}
