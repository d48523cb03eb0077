package trigger

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// AMIStateChange is EC2's event for image state transitions.
const AMIStateChange = "EC2 AMI State Change"

var imageIDRE = regexp.MustCompile(`^ami-[0-9a-f]{8}([0-9a-f]{9})?$`)

// Share is a validated share or copy request: the image of an "EC2 AMI
// State Change" event (only when it became available), or a sweep.
type Share struct {
	ImageIDs []string
	Sweep    bool
	Time     time.Time
	// Ignored explains why an event needs no work (e.g. state "pending").
	Ignored string
}

type sweepInput struct {
	Sweep bool   `json:"sweep"`
	Time  string `json:"time"`
}

// ParseShare accepts the Scheduler input {"sweep": true, "time": "..."} and
// an "EC2 AMI State Change" event from source "aws.ec2".
func ParseShare(raw []byte) (Share, error) {
	kind, fields, err := Classify(raw)
	if err != nil {
		return Share{}, err
	}
	if kind == KindScheduler {
		if err := onlyKnown(fields, "sweep", "time"); err != nil {
			return Share{}, err
		}
		var in sweepInput
		if err := strictDecode(raw, &in, "input"); err != nil {
			return Share{}, err
		}
		if !in.Sweep {
			return Share{}, fmt.Errorf("input.sweep: must be true for a scheduled sweep: {\"sweep\": true, \"time\": \"<aws.scheduler.scheduled-time>\"}")
		}
		at, err := ParseTime("input.time", in.Time)
		if err != nil {
			return Share{}, err
		}
		return Share{Sweep: true, Time: at}, nil
	}
	env, err := DecodeEnvelope(raw)
	if err != nil {
		return Share{}, err
	}
	if env.Source != "aws.ec2" || env.DetailType != AMIStateChange {
		return Share{}, fmt.Errorf("event: source %q with detail-type %q is not handled: the share function takes source \"aws.ec2\" with detail-type %q, or a Scheduler sweep input",
			env.Source, env.DetailType, AMIStateChange)
	}
	// EC2 owns this schema and may add fields: read only what we need.
	var d struct {
		ImageID string `json:"ImageId"`
		State   string `json:"State"`
	}
	if err := json.Unmarshal(env.Detail, &d); err != nil {
		return Share{}, fmt.Errorf("event.detail: %w", err)
	}
	if !imageIDRE.MatchString(d.ImageID) {
		return Share{}, fmt.Errorf("event.detail.ImageId: %q is not an image ID", d.ImageID)
	}
	if d.State == "" {
		return Share{}, fmt.Errorf("event.detail.State: is required")
	}
	out := Share{Time: Slot(env.Time)}
	if d.State != "available" {
		out.Ignored = fmt.Sprintf("image %s is %s: only available images are shared", d.ImageID, d.State)
		return out, nil
	}
	out.ImageIDs = []string{d.ImageID}
	return out, nil
}

// errNotSweep: the copy function has no event trigger.
var errNotSweep = errors.New("input: the copy function takes only its Scheduler input {\"sweep\": true, \"time\": \"<aws.scheduler.scheduled-time>\"}")

// ParseCopy accepts the copy function's only input, the Scheduler input
// {"sweep": true, "time": "..."}, and returns its time.
func ParseCopy(raw []byte) (time.Time, error) {
	req, err := ParseShare(raw)
	if err == nil && !req.Sweep {
		err = errNotSweep
	}
	if err != nil {
		return time.Time{}, err
	}
	return req.Time, nil
}
