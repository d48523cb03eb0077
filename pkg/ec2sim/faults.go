package ec2sim

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
)

// CallLog counts API calls. ByAction counts every request EC2 accepted
// (including those that then failed, e.g. by an injected fault); requests
// answered RequestLimitExceeded are counted only in Throttled. DryRun
// requests are counted only in DryRun.
type CallLog struct {
	Total     int
	ByAction  map[string]int
	ByAccount map[string]map[string]int
	Throttled map[string]int
	Faults    map[string]int
	DryRun    map[string]int
	// MaxUnavailable is, per availability group (GroupKey: Auto Scaling
	// group, target group, tag in Options.GroupTags), the largest number of
	// members unavailable at once since the emulator started or the log was
	// reset (availability.go).
	MaxUnavailable map[string]int
}

// Count returns the attempts of one action (DryRun calls excluded).
func (c CallLog) Count(action string) int { return c.ByAction[action] }

// Mutating returns the attempts of all actions that can change state
// (everything except Describe*), DryRun calls excluded.
func (c CallLog) Mutating() int {
	n := 0
	for a, v := range c.ByAction {
		if !isReadOnly(a) {
			n += v
		}
	}
	return n
}

func isReadOnly(action string) bool { return strings.HasPrefix(action, "Describe") }

type callLog struct {
	CallLog
	maxCopies map[string]int
}

func newCallLog() callLog {
	return callLog{CallLog: CallLog{ByAction: map[string]int{}, ByAccount: map[string]map[string]int{},
		Throttled: map[string]int{}, Faults: map[string]int{}, DryRun: map[string]int{}}, maxCopies: map[string]int{}}
}

// Calls returns a copy of the call log.
func (s *Sim) Calls() CallLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls.CallLog
	out := CallLog{Total: c.Total, ByAction: maps.Clone(c.ByAction), ByAccount: map[string]map[string]int{},
		Throttled: maps.Clone(c.Throttled), Faults: maps.Clone(c.Faults), DryRun: maps.Clone(c.DryRun)}
	for k, v := range c.ByAccount {
		out.ByAccount[k] = maps.Clone(v)
	}
	out.MaxUnavailable = s.maxUnavailable()
	return out
}

// ResetCalls clears the call log (not the in-flight copy maximum).
func (s *Sim) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	mc := s.calls.maxCopies
	s.calls = newCallLog()
	s.calls.maxCopies = mc
	s.resetAvailability()
}

func (s *Sim) record(account, action string, dry bool) {
	s.calls.Total++
	if dry {
		s.calls.DryRun[action]++
		return
	}
	s.calls.ByAction[action]++
	if s.calls.ByAccount[account] == nil {
		s.calls.ByAccount[account] = map[string]int{}
	}
	s.calls.ByAccount[account][action]++
}

// Fault is an injected failure.
type Fault struct {
	// Action the fault applies to (required).
	Action string
	// Nth fails the Nth matching call (1-based); 0 fails every matching call.
	Nth int
	// Times limits how many calls fail when Nth is 0 (0: unlimited).
	Times int
	// InstanceID and ImageID restrict the fault to calls naming them, as a
	// single parameter (InstanceId, ImageId, SourceImageId) or in a list
	// (InstanceId.N, ImageId.N, ResourceId.N), so batched calls such as
	// DescribeInstances by IDs or CreateTags can fail for one resource.
	InstanceID, ImageID string
	// Code and Message of the EC2 error (default InternalError).
	Code, Message string
	// HTTPStatus (default derived from Code).
	HTTPStatus int
	// Delay holds a matching call this long in real time before it is
	// answered (a hung or very slow EC2 call). With Code empty the call is
	// then served normally; with Code set it then fails with that error.
	// The wait ends early when the client gives up on the request.
	Delay time.Duration
	// After makes the call take effect first and then answer with the
	// error: EC2 did the work but its answer was lost (a 5xx or a dropped
	// connection after the change), so the client's retry of the same call
	// meets its own result (e.g. InvalidAMIName.Duplicate).
	After bool
}

type faultRule struct {
	Fault
	seen, fired int
}

// Inject adds a fault rule.
func (s *Sim) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Code == "" && f.Delay == 0 {
		f.Code = "InternalError"
	}
	if f.Message == "" {
		f.Message = "An internal error has occurred (injected)."
	}
	if f.HTTPStatus == 0 {
		f.HTTPStatus = statusFor(f.Code)
	}
	s.faults = append(s.faults, &faultRule{Fault: f})
}

// ClearFaults removes all fault rules, random faults and FailImagesOf marks.
func (s *Sim) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.failIns = map[string]bool{}
	s.opts.FaultRate = 0
	clear(s.ext.bootFail)
	clear(s.launch.unbootable)
}

// matchFault returns the injected error for this call, if any, how long
// to hold the call first, and whether the call is to take effect before the
// error is answered (Fault.After). Caller holds mu.
func (s *Sim) matchFault(action string, p params) (time.Duration, *apiError, bool) {
	for _, f := range s.faults {
		if f.Action != action {
			continue
		}
		if f.InstanceID != "" && !p.names(f.InstanceID, "InstanceId", "InstanceId.", "ResourceId.", "InstanceIds.member.") && !slices.Contains(p.targetIDs(), f.InstanceID) {
			continue
		}
		if f.ImageID != "" && !p.names(f.ImageID, "ImageId", "SourceImageId", "ImageId.", "ResourceId.") {
			continue
		}
		f.seen++
		fire := false
		if f.Nth > 0 {
			fire = f.seen == f.Nth
		} else {
			fire = f.Times == 0 || f.fired < f.Times
		}
		if fire {
			f.fired++
			if f.Code == "" {
				return f.Delay, nil, false
			}
			return f.Delay, &apiError{status: f.HTTPStatus, code: f.Code, msg: f.Message}, f.After
		}
	}
	if s.opts.FaultRate > 0 && s.rng.Float64() < s.opts.FaultRate {
		if s.rng.Intn(2) == 0 {
			return 0, &apiError{status: http.StatusInternalServerError, code: "InternalError", msg: "An internal error has occurred (random fault)."}, false
		}
		return 0, &apiError{status: http.StatusServiceUnavailable, code: "Unavailable", msg: "The service is unavailable (random fault)."}, false
	}
	return 0, nil, false
}

func statusFor(code string) int {
	switch code {
	case "InternalError", "InternalFailure":
		return http.StatusInternalServerError
	case "Unavailable", "ServiceUnavailable", "RequestLimitExceeded":
		return http.StatusServiceUnavailable
	case "UnauthorizedOperation", "AuthFailure":
		return http.StatusForbidden
	case "DryRunOperation":
		return http.StatusPreconditionFailed
	}
	return http.StatusBadRequest
}

// bucket is one EC2 throttling token bucket (per account, Region and action).
type bucket struct {
	tokens, size, refill float64 // refill per simulated second
	last                 time.Time
}

// bucketFor returns the bucket a request draws from and that bucket's size
// and refill rate per second. EC2's "Request throttling" documentation
// evaluates each API action individually: every action has its own bucket
// per account and Region, so exhausting DescribeImages does not throttle
// DescribeSnapshots. The documentation's categories (mutating,
// non-mutating, ...) only set a bucket's size and refill.
//
// DescribeInstances and DescribeSnapshots are listed twice there: requests
// with neither a filter nor pagination form the smaller "unfiltered and
// unpaginated" category. We give that shape a bucket of its own so the
// category's size applies to exactly those requests. A request naming only
// InstanceId.N / SnapshotId.N has no Filter and no MaxResults/NextToken, so
// by the documentation's wording it is unfiltered and unpaginated; we keep
// that reading (the smaller bucket, the conservative side for a client).
func bucketFor(action string, p params) (key string, size, refill float64) {
	if b, ok := queryBuckets[action]; ok {
		return action, b.size, b.refill
	}
	switch action {
	case "DeregisterImage", "DeleteSnapshot":
		return action, 100, 5
	case "CreateTags":
		return action, 100, 10
	case "CopyImage":
		return action, 100, 1
	case "ModifyImageAttribute", "ModifySnapshotAttribute":
		return action, 100, 5
	case "RunInstances":
		// Request bucket; each launched instance also draws from the
		// resource bucket (resourceBuckets, runinstances.go). Source: EC2
		// developer guide, "Request throttling for the Amazon EC2 API",
		// uncategorized actions: RunInstances 5 / 2 per second,
		// TerminateInstances 100 / 5 per second.
		return action, 5, 2
	case "TerminateInstances":
		return action, 100, 5
	case "DescribeInstances", "DescribeSnapshots", "DescribeInstanceStatus", "DescribeVolumes":
		// DescribeInstanceStatus and DescribeVolumes are in the same
		// documented category.
		if !p.hasPrefix("Filter.") && p.get("MaxResults") == "" && p.get("NextToken") == "" {
			return action + " (unfiltered, unpaginated)", 50, 10
		}
		return action, 100, 20
	}
	if isReadOnly(action) {
		return action, 100, 20
	}
	// Everything else mutates, DeleteTags included: it is not in
	// CreateTags' larger bucket class.
	return action, 50, 5
}

// take consumes a token; false means throttled. Caller holds mu.
func (s *Sim) take(account, region, action string, p params) bool {
	if !s.opts.Throttle {
		return true
	}
	name, size, refill := bucketFor(action, p)
	key := account + "/" + region + "/" + name
	now := s.now()
	b, ok := s.buckets[key]
	if !ok {
		b = &bucket{tokens: size, size: size, refill: refill, last: now}
		s.buckets[key] = b
	}
	b.tokens = min(b.size, b.tokens+now.Sub(b.last).Seconds()*b.refill)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	// RunInstances and TerminateInstances also need a resource token per
	// instance; a request short of them takes no request token either.
	if need := resourceNeed(action, p); need > 0 && s.resourceBucket(account, region, action).tokens < need {
		return false
	}
	b.tokens--
	return true
}

// names reports whether the request names id in one of the keys: a key
// ending in "." is a list (InstanceId.1, InstanceId.2, ...), any other a
// single parameter.
func (p params) names(id string, keys ...string) bool {
	for _, k := range keys {
		if strings.HasSuffix(k, ".") {
			if slices.Contains(p.list(strings.TrimSuffix(k, ".")), id) {
				return true
			}
		} else if p.get(k) == id {
			return true
		}
	}
	return false
}
