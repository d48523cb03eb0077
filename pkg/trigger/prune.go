package trigger

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Prune is a validated request to apply retention.
type Prune struct {
	// Policy limits the run to one policy; "" means all.
	Policy string
	// Time is "now" for retention and the orphan grace period, so a run is
	// reproducible from its trigger.
	Time    time.Time
	Trigger string
	DryRun  bool
	// Force overrides the blast-radius guard (manual requests only).
	Force bool
}

// PruneDetail is the detail of a "Prune Requested" event.
type PruneDetail struct {
	Policy string `json:"policy,omitempty"`
	DryRun bool   `json:"dryRun,omitempty"`
	Force  bool   `json:"force,omitempty"`
}

// ParsePrune accepts the prune function's inputs: the Scheduler input
// {"policy"?: "...", "time": "<aws.scheduler.scheduled-time>"} and an event
// with source "amibackup" and detail-type "Prune Requested".
func ParsePrune(raw []byte, cfg *config.Config) (Prune, error) {
	kind, fields, err := Classify(raw)
	if err != nil {
		return Prune{}, err
	}
	// An absent policy means every policy; a present but empty one (an unset
	// template variable, {"policy": "$P"}) must not widen to all of them.
	policyOK := func(field, p string, given bool) error {
		if given && p == "" {
			return fmt.Errorf("%s: is empty: name a configured policy, or omit the field to prune every policy", field)
		}
		if p == "" || p == config.CopyPolicy && cfg.Recovery != nil {
			return nil
		}
		return CheckPolicy(field, p, cfg)
	}
	if kind == KindScheduler {
		if err := onlyKnown(fields, "policy", "time"); err != nil {
			return Prune{}, err
		}
		var in schedulerInput
		if err := strictDecode(raw, &in, "input"); err != nil {
			return Prune{}, err
		}
		if err := policyOK("input.policy", in.Policy, hasKey(raw, "policy")); err != nil {
			return Prune{}, err
		}
		at, err := ParseTime("input.time", in.Time)
		if err != nil {
			return Prune{}, err
		}
		return Prune{Policy: in.Policy, Time: at, Trigger: tags.TriggerSchedule}, nil
	}
	env, err := DecodeEnvelope(raw)
	if err != nil {
		return Prune{}, err
	}
	if env.Source != Source || env.DetailType != PruneRequested {
		return Prune{}, fmt.Errorf("event: source %q with detail-type %q is not a prune trigger: use source %q with detail-type %q (backup requests go to the backup function)",
			env.Source, env.DetailType, Source, PruneRequested)
	}
	var d PruneDetail
	if string(env.Detail) == "null" {
		// EventBridge never delivers a null detail (PutEvents requires an
		// object); read as {} it would prune every policy for real.
		return Prune{}, fmt.Errorf("event.detail: is null: use {} to prune every policy, or {\"policy\": \"...\", \"dryRun\"?: bool, \"force\"?: bool}")
	}
	if len(env.Detail) == 0 {
		// PutEvents requires a detail; without one the request says
		// nothing, and read as {} it would prune every policy.
		return Prune{}, fmt.Errorf("event.detail: is required: use {} to prune every policy, or {\"policy\": \"...\", \"dryRun\"?: bool, \"force\"?: bool}")
	}
	if err := strictDecode(env.Detail, &d, "event.detail"); err != nil {
		return Prune{}, err
	}
	if err := policyOK("event.detail.policy", d.Policy, hasKey(env.Detail, "policy")); err != nil {
		return Prune{}, err
	}
	return Prune{Policy: d.Policy, Time: Slot(env.Time), Trigger: tags.TriggerManual, DryRun: d.DryRun, Force: d.Force}, nil
}

// hasKey reports whether the JSON object raw has the key (as encoding/json
// matches it: case-insensitively); raw has passed strictDecode.
func hasKey(raw []byte, key string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	for k := range m {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}
