// Package trigger parses the events that start amibackup's functions:
// EventBridge Scheduler inputs, events on the default bus (manual requests)
// and classic scheduled-rule events. Parsing is strict: anything it does
// not recognise is rejected with an error naming the field and the fix, so
// a malformed event never starts a run.
package trigger

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// Source of manual requests on the default event bus.
const Source = "amibackup"

// Detail types of manual requests.
const (
	BackupRequested = "Backup Requested"
	PruneRequested  = "Prune Requested"
	ScheduledEvent  = "Scheduled Event"
)

// maxEventSize guards against absurd payloads (EventBridge allows 256 KiB).
const maxEventSize = 256 * 1024

// Envelope is an EventBridge event as delivered to Lambda.
type Envelope struct {
	Version    string          `json:"version"`
	ID         string          `json:"id"`
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Time       time.Time       `json:"time"`
	Region     string          `json:"region"`
	Resources  []string        `json:"resources"`
	Detail     json.RawMessage `json:"detail"`
	ReplayName string          `json:"replay-name,omitempty"`
}

// Kind tells which of the supported shapes an input has.
type Kind int

// Input kinds.
const (
	KindScheduler Kind = iota + 1 // {"policy":..., "time":...} from EventBridge Scheduler
	KindEvent                     // an EventBridge event envelope
)

// Classify decodes the raw input far enough to tell its shape. It rejects
// everything that is neither a JSON object with "detail-type" nor one without.
func Classify(raw []byte) (Kind, map[string]json.RawMessage, error) {
	if len(raw) > maxEventSize {
		return 0, nil, fmt.Errorf("input: %d bytes is larger than an EventBridge event can be (256 KiB)", len(raw))
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return 0, nil, fmt.Errorf("input: must be a JSON object: a Scheduler input {\"policy\":...,\"time\":...} or an EventBridge event")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return 0, nil, fmt.Errorf("input: invalid JSON: %w", err)
	}
	if _, ok := fields["detail-type"]; ok {
		return KindEvent, fields, nil
	}
	return KindScheduler, fields, nil
}

// strictDecode decodes JSON rejecting unknown fields, naming the input part.
func strictDecode(raw []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", what, cleanJSONError(err))
	}
	if dec.More() {
		return fmt.Errorf("%s: trailing data after the JSON object", what)
	}
	return nil
}

func cleanJSONError(err error) error {
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field") {
		return fmt.Errorf("%s is not allowed here", strings.TrimPrefix(msg, "json: "))
	}
	return err
}

// DecodeEnvelope decodes and checks an EventBridge event.
func DecodeEnvelope(raw []byte) (Envelope, error) {
	var env Envelope
	if err := strictDecode(raw, &env, "event"); err != nil {
		return env, err
	}
	if env.Source == "" {
		return env, fmt.Errorf("event.source: is required")
	}
	if env.Time.IsZero() {
		return env, fmt.Errorf("event.time: is required (RFC 3339); EventBridge sets it on every event")
	}
	return env, nil
}

// ParseTime parses a trigger time (RFC 3339) and returns its slot: UTC,
// truncated to the minute, so two deliveries of one trigger (and two
// manual runs within one minute) name the same images.
func ParseTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, fmt.Errorf("%s: is required: an RFC 3339 time such as \"2026-11-24T03:00:00Z\" (Scheduler: \"<aws.scheduler.scheduled-time>\")", field)
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time such as \"2026-11-24T03:00:00Z\"", field, v)
	}
	return Slot(t), nil
}

// Slot normalises a trigger time.
func Slot(t time.Time) time.Time { return t.UTC().Truncate(time.Minute) }

// CheckPolicy verifies that a policy name is configured.
func CheckPolicy(field, name string, cfg *config.Config) error {
	if name == "" {
		return fmt.Errorf("%s: is required: one of %s", field, quoteList(cfg.PolicyNames()))
	}
	if _, ok := cfg.Policy(name); !ok {
		return fmt.Errorf("%s: unknown policy %q: configured policies are %s", field, name, quoteList(cfg.PolicyNames()))
	}
	return nil
}

func quoteList(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// MaxClockSkew is how far ahead of the function's clock a trigger time may
// be. Scheduler passes the scheduled time, which is never in the future; a
// later time can only come from a hand-made event, and prune would treat it
// as "now" and age every image by the difference.
const MaxClockSkew = 5 * time.Minute

// CheckNotFuture rejects a trigger time more than MaxClockSkew ahead of now.
func CheckNotFuture(field string, t, now time.Time) error {
	if t.After(now.Add(MaxClockSkew)) {
		return fmt.Errorf("%s: %s is %s ahead of the clock (%s): a trigger time must not be in the future; put-events without a Time entry uses the current time",
			field, tags.FormatTime(t), t.Sub(now).Round(time.Minute), tags.FormatTime(now))
	}
	return nil
}

// CheckInstanceIDs validates a manual run's instance subset.
func CheckInstanceIDs(field string, ids []string) error {
	// An explicit empty list would otherwise mean "no filter", widening a
	// request that meant "these instances" to the whole policy.
	if ids != nil && len(ids) == 0 {
		return fmt.Errorf("%s: is an empty list: name at least one instance, or omit instanceIds to back up every instance of the policy", field)
	}
	// The IDs become one instance-id filter, and EC2 takes at most 200
	// values per filter.
	if len(ids) > 200 {
		return fmt.Errorf("%s: %d IDs; at most 200 per request (send several requests)", field, len(ids))
	}
	seen := map[string]bool{}
	for i, id := range ids {
		if !tags.ValidInstanceID(id) {
			return fmt.Errorf("%s[%d]: %q is not an instance ID (i- followed by 8 or 17 hex digits)", field, i, id)
		}
		if seen[id] {
			return fmt.Errorf("%s[%d]: %q is listed twice", field, i, id)
		}
		seen[id] = true
	}
	return nil
}

// policyFromRule finds the policy a classic scheduled rule names: the rule
// name (last part of its ARN) must end with "-<policy>" or be the policy.
// The longest matching policy wins, so "nightly" and "eu-nightly" do not clash.
func policyFromRule(resources []string, cfg *config.Config) string {
	best := ""
	for _, arn := range resources {
		name := arn[strings.LastIndex(arn, "/")+1:]
		for _, p := range cfg.PolicyNames() {
			if (name == p || strings.HasSuffix(name, "-"+p)) && len(p) > len(best) {
				best = p
			}
		}
	}
	return best
}

func onlyKnown(fields map[string]json.RawMessage, allowed ...string) error {
	for k := range fields {
		if !slices.Contains(allowed, k) {
			return fmt.Errorf("input: field %q is not allowed: a Scheduler input has only %s", k, quoteList(allowed))
		}
	}
	return nil
}
