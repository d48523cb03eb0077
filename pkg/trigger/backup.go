package trigger

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Backup is a validated request to back up one policy.
type Backup struct {
	Policy string
	// Slot is the trigger's time (UTC, minute): part of every image name.
	Slot time.Time
	// Trigger is tags.TriggerSchedule or tags.TriggerManual.
	Trigger string
	// InstanceIDs narrows a manual run (never widens the policy's selection).
	InstanceIDs []string
	DryRun      bool
	// Reboot overrides the policy's reboot setting for a manual run.
	Reboot *bool
}

// BackupDetail is the detail of a "Backup Requested" event.
type BackupDetail struct {
	Policy      string   `json:"policy"`
	InstanceIDs []string `json:"instanceIds,omitempty"`
	DryRun      bool     `json:"dryRun,omitempty"`
	Reboot      *bool    `json:"reboot,omitempty"`
}

type schedulerInput struct {
	Policy string `json:"policy"`
	Time   string `json:"time"`
}

// ParseBackup accepts the backup function's three inputs:
//  1. the Scheduler input {"policy": "...", "time": "<aws.scheduler.scheduled-time>"};
//  2. an event with source "amibackup" and detail-type "Backup Requested";
//  3. a classic scheduled-rule event ("Scheduled Event") naming the policy in
//     its detail ({"policy": "..."}) or in its rule's name.
func ParseBackup(raw []byte, cfg *config.Config) (Backup, error) {
	kind, fields, err := Classify(raw)
	if err != nil {
		return Backup{}, err
	}
	if kind == KindScheduler {
		if err := onlyKnown(fields, "policy", "time"); err != nil {
			return Backup{}, err
		}
		var in schedulerInput
		if err := strictDecode(raw, &in, "input"); err != nil {
			return Backup{}, err
		}
		if err := CheckPolicy("input.policy", in.Policy, cfg); err != nil {
			return Backup{}, err
		}
		slot, err := ParseTime("input.time", in.Time)
		if err != nil {
			return Backup{}, err
		}
		return Backup{Policy: in.Policy, Slot: slot, Trigger: tags.TriggerSchedule}, nil
	}
	env, err := DecodeEnvelope(raw)
	if err != nil {
		return Backup{}, err
	}
	switch {
	case env.Source == Source && env.DetailType == BackupRequested:
		var d BackupDetail
		if len(env.Detail) == 0 || string(env.Detail) == "null" {
			return Backup{}, fmt.Errorf("event.detail: is required: {\"policy\": \"...\", \"instanceIds\"?: [...], \"dryRun\"?: bool, \"reboot\"?: bool}")
		}
		if err := strictDecode(env.Detail, &d, "event.detail"); err != nil {
			return Backup{}, err
		}
		if err := CheckPolicy("event.detail.policy", d.Policy, cfg); err != nil {
			return Backup{}, err
		}
		if err := CheckInstanceIDs("event.detail.instanceIds", d.InstanceIDs); err != nil {
			return Backup{}, err
		}
		return Backup{Policy: d.Policy, Slot: Slot(env.Time), Trigger: tags.TriggerManual,
			InstanceIDs: d.InstanceIDs, DryRun: d.DryRun, Reboot: d.Reboot}, nil
	case env.Source == "aws.events" && env.DetailType == ScheduledEvent:
		var d struct {
			Policy string `json:"policy"`
		}
		if len(env.Detail) > 0 && string(env.Detail) != "null" {
			if err := strictDecode(env.Detail, &d, "event.detail"); err != nil {
				return Backup{}, err
			}
		}
		if d.Policy == "" {
			d.Policy = policyFromRule(env.Resources, cfg)
		}
		if d.Policy == "" {
			return Backup{}, fmt.Errorf("event: a scheduled-rule event must name the policy in detail.policy or end its rule name with \"-<policy>\" (policies: %s)", quoteList(cfg.PolicyNames()))
		}
		if err := CheckPolicy("event.detail.policy", d.Policy, cfg); err != nil {
			return Backup{}, err
		}
		return Backup{Policy: d.Policy, Slot: Slot(env.Time), Trigger: tags.TriggerSchedule}, nil
	case env.Source == Source:
		return Backup{}, fmt.Errorf("event.detail-type: %q is not handled by the backup function: use %q (prune requests go to the prune function)", env.DetailType, BackupRequested)
	default:
		return Backup{}, fmt.Errorf("event.source: %q with detail-type %q is not a backup trigger: use source %q with detail-type %q, or a Scheduler input", env.Source, env.DetailType, Source, BackupRequested)
	}
}

// MarshalBackupEvent renders a manual request as "aws events put-events"
// would deliver it; used by the local run and tests.
func MarshalBackupEvent(at time.Time, d BackupDetail) []byte {
	detail, _ := json.Marshal(d)
	env := Envelope{Version: "0", ID: fmt.Sprintf("manual-%d", at.UnixNano()), DetailType: BackupRequested, Source: Source,
		Account: "123456789012", Time: at.UTC(), Region: "us-east-1", Resources: []string{}, Detail: detail}
	b, _ := json.Marshal(env)
	return b
}
