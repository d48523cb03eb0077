package trigger

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// VerifyRequested is the detail type of a manual restore verification.
const VerifyRequested = "Verify Requested"

// MaxVerifyImageIDs bounds a manual request's image list (one listing
// filter holds at most 200 values in EC2).
const MaxVerifyImageIDs = 200

// Verify is a validated request to verify one policy's backups (issue 14).
type Verify struct {
	Policy string
	// Slot is the trigger's time (UTC, minute): it names the run, so two
	// deliveries of one trigger launch the same instances (client tokens).
	Slot time.Time
	// Trigger is tags.TriggerSchedule or tags.TriggerManual.
	Trigger string
	// ImageIDs narrows a manual run to these images of the policy (they are
	// verified even when not the newest of their instance, or already
	// verified: the way to re-test an image on purpose). Never widens the
	// policy's images.
	ImageIDs []string
	DryRun   bool
}

// VerifyDetail is the detail of a "Verify Requested" event.
type VerifyDetail struct {
	Policy   string   `json:"policy"`
	DryRun   bool     `json:"dryRun,omitempty"`
	ImageIDs []string `json:"imageIds,omitempty"`
}

// ParseVerify accepts the verification workflow's execution inputs:
//  1. the Scheduler input {"policy": "...", "time": "<aws.scheduler.scheduled-time>"}
//     of the policy's verify.schedule;
//  2. an event with source "amibackup" and detail-type "Verify Requested",
//     detail {"policy": "...", "dryRun"?: bool, "imageIds"?: ["ami-..."]}.
//
// The policy must have a verify section. Times before EarliestTime are
// refused here, times in the future by the caller (CheckNotFuture with its
// clock), as for the rollout.
func ParseVerify(raw []byte, cfg *config.Config) (Verify, error) {
	kind, fields, err := Classify(raw)
	if err != nil {
		return Verify{}, err
	}
	if kind == KindScheduler {
		if err := onlyKnown(fields, "policy", "time"); err != nil {
			return Verify{}, err
		}
		var in schedulerInput
		if err := strictDecode(raw, &in, "input"); err != nil {
			return Verify{}, err
		}
		if err := checkVerifyPolicy("input.policy", in.Policy, cfg); err != nil {
			return Verify{}, err
		}
		slot, err := ParseTime("input.time", in.Time)
		if err != nil {
			return Verify{}, err
		}
		return Verify{Policy: in.Policy, Slot: slot, Trigger: tags.TriggerSchedule}, nil
	}
	env, err := DecodeEnvelope(raw)
	if err != nil {
		return Verify{}, err
	}
	if env.Source != Source || env.DetailType != VerifyRequested {
		return Verify{}, fmt.Errorf("event: source %q with detail-type %q is not a verify trigger: use source %q with detail-type %q, or a Scheduler input {\"policy\":...,\"time\":...}",
			env.Source, env.DetailType, Source, VerifyRequested)
	}
	if len(env.Detail) == 0 || string(env.Detail) == "null" {
		return Verify{}, fmt.Errorf("event.detail: is required: {\"policy\": \"...\", \"dryRun\"?: bool, \"imageIds\"?: [\"ami-...\"]}")
	}
	var d VerifyDetail
	if err := strictDecode(env.Detail, &d, "event.detail"); err != nil {
		return Verify{}, err
	}
	if err := checkVerifyPolicy("event.detail.policy", d.Policy, cfg); err != nil {
		return Verify{}, err
	}
	if err := CheckImageIDs("event.detail.imageIds", d.ImageIDs); err != nil {
		return Verify{}, err
	}
	return Verify{Policy: d.Policy, Slot: Slot(env.Time), Trigger: tags.TriggerManual, ImageIDs: d.ImageIDs, DryRun: d.DryRun}, nil
}

// checkVerifyPolicy: a configured policy with a verify section.
func checkVerifyPolicy(field, name string, cfg *config.Config) error {
	if err := CheckPolicy(field, name, cfg); err != nil {
		return err
	}
	if pol, _ := cfg.Policy(name); pol.Verify == nil {
		var with []string
		for _, p := range cfg.PolicyNames() {
			if q, _ := cfg.Policy(p); q.Verify != nil {
				with = append(with, p)
			}
		}
		hint := "no policy has one"
		if len(with) > 0 {
			hint = "policies with one: " + quoteList(with)
		}
		return fmt.Errorf("%s: policy %q has no verify section: add \"verify\": {\"schedule\": ...} to it in the configuration (%s)", field, name, hint)
	}
	return nil
}

// CheckImageIDs validates a manual run's image subset.
func CheckImageIDs(field string, ids []string) error {
	if ids != nil && len(ids) == 0 {
		return fmt.Errorf("%s: is an empty list: name at least one image, or omit imageIds to verify the policy's newest images", field)
	}
	if len(ids) > MaxVerifyImageIDs {
		return fmt.Errorf("%s: %d IDs; at most %d per request (send several requests)", field, len(ids), MaxVerifyImageIDs)
	}
	seen := map[string]bool{}
	for i, id := range ids {
		if !imageIDRE.MatchString(id) {
			return fmt.Errorf("%s[%d]: %q is not an image ID (ami- followed by 8 or 17 hex digits)", field, i, id)
		}
		if seen[id] {
			return fmt.Errorf("%s[%d]: %q is listed twice", field, i, id)
		}
		seen[id] = true
	}
	return nil
}

// MarshalVerifyEvent renders a manual request as "aws events put-events"
// would deliver it; used by the local run and tests.
func MarshalVerifyEvent(at time.Time, d VerifyDetail) []byte {
	detail, _ := json.Marshal(d)
	env := Envelope{Version: "0", ID: fmt.Sprintf("manual-%d", at.UnixNano()), DetailType: VerifyRequested, Source: Source,
		Account: "123456789012", Time: at.UTC(), Region: "us-east-1", Resources: []string{}, Detail: detail}
	b, _ := json.Marshal(env)
	return b
}
