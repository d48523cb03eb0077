// Package trigger parses the events that start amibackup's functions:
// EventBridge Scheduler inputs, events on the default bus (manual requests)
// and classic scheduled-rule events. Parsing is strict: anything it does
// not recognise is rejected with an error naming the field and the fix, so
// a malformed event never starts a run.
package trigger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
// everything that is not exactly one JSON object: an empty payload, any
// other JSON value, and anything after the object (trailing data or a second
// object would otherwise be ignored by a decoder that stops after the first
// value, and a request the sender did not mean would run).
func Classify(raw []byte) (Kind, map[string]json.RawMessage, error) {
	if len(raw) > maxEventSize {
		return 0, nil, fmt.Errorf("input: %d bytes is larger than an EventBridge event can be (256 KiB)", len(raw))
	}
	raw = trimJSONSpace(raw)
	if len(raw) == 0 {
		return 0, nil, fmt.Errorf("input: is empty: a JSON object is required, a Scheduler input {\"policy\":...,\"time\":...} or an EventBridge event (README, section Triggers and manual runs)")
	}
	if raw[0] != '{' {
		return 0, nil, fmt.Errorf("input: must be a JSON object: a Scheduler input {\"policy\":...,\"time\":...} or an EventBridge event")
	}
	var fields map[string]json.RawMessage
	if err := decodeOne(raw, &fields, "input", false); err != nil {
		return 0, nil, err
	}
	if _, ok := fields["detail-type"]; ok {
		return KindEvent, fields, nil
	}
	return KindScheduler, fields, nil
}

// trimJSONSpace removes the whitespace JSON allows around a value, and only
// that (bytes.TrimSpace would also drop characters JSON rejects).
func trimJSONSpace(b []byte) []byte { return bytes.Trim(b, " \t\r\n") }

// decodeOne decodes exactly one JSON value from raw into v; strict rejects
// unknown fields. Anything but whitespace after the value is an error.
func decodeOne(raw []byte, v any, what string, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%s: is empty: a JSON object is required", what)
		}
		if strict {
			return fmt.Errorf("%s: %w", what, cleanJSONError(err))
		}
		return fmt.Errorf("%s: invalid JSON: %w", what, err)
	}
	// dec.More() misses a trailing '}' or ']': look at the rest instead.
	if rest := trimJSONSpace(raw[dec.InputOffset():]); len(rest) > 0 {
		return fmt.Errorf("%s: invalid JSON: trailing data after the JSON object (%s): send exactly one JSON object", what, excerpt(rest))
	}
	return nil
}

// excerpt quotes the start of b for an error message.
func excerpt(b []byte) string {
	const n = 32
	if len(b) > n {
		return fmt.Sprintf("%q...", b[:n])
	}
	return fmt.Sprintf("%q", b)
}

// nullHints are the messages for fields whose null would widen a request;
// every other field gets the generic message.
var nullHints = map[string]string{
	"instanceIds": "name at least one instance, or omit instanceIds to back up every instance of the policy (a request that names instances never widens to the whole policy)",
	"policy":      "name a configured policy (prune: omit policy to prune every policy)",
}

// strictDecode decodes an object we own (a Scheduler input, the detail of
// our events): unknown fields, trailing data, null values and duplicate keys
// are errors. encoding/json reads null as "absent" ("instanceIds": null
// would back up the whole policy, "dryRun": null would run for real,
// "policy": null would prune every policy) and keeps the last of duplicate
// keys, matched case-insensitively (a second "DryRun": false would win
// silently): neither may decide what a run does.
func strictDecode(raw []byte, v any, what string) error {
	if err := decodeOne(raw, v, what, true); err != nil {
		return err
	}
	return checkKeys(raw, what, true)
}

// misplaced are the fields of our own events' detail: at the top level of
// an envelope they are a mistake that must not be ignored (a top-level
// "dryRun": true would otherwise run for real).
var misplaced = map[string]bool{"policy": true, "dryrun": true, "instanceids": true, "reboot": true, "force": true, "sweep": true, "imageids": true}

// checkKeys rejects duplicate keys (and, with noNull, null values) in a JSON
// object; raw is one valid JSON value (anything but an object passes: the
// typed decode has already judged it).
func checkKeys(raw []byte, what string, noNull bool) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	seen := map[string]string{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%s: invalid JSON: %w", what, err)
		}
		key, _ := t.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return fmt.Errorf("%s: invalid JSON: %w", what, err)
		}
		// encoding/json matches keys case-insensitively, with Unicode
		// folding ("ſ" matches "s", the Kelvin sign "k"): fold the same way.
		fold := strings.ToLower(strings.ToUpper(key))
		if prev, dup := seen[fold]; dup {
			return fmt.Errorf("%s.%s: is given more than once (also as %q): give each field once", what, key, prev)
		}
		seen[fold] = key
		if noNull && string(val) == "null" {
			hint, ok := nullHints[key]
			if !ok {
				hint = "give a value or omit the field; null is never read as a default"
			}
			return fmt.Errorf("%s.%s: is null: %s", what, key, hint)
		}
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

// DecodeEnvelope decodes and checks an EventBridge event. The envelope is
// AWS's: EventBridge adds top-level fields (e.g. "replay-name" on replayed
// events), so unknown envelope fields are accepted; the detail of our own
// events stays strict (strictDecode). Trailing data is rejected.
func DecodeEnvelope(raw []byte) (Envelope, error) {
	var env Envelope
	if err := decodeOne(raw, &env, "event", false); err != nil {
		return env, err
	}
	// Unknown fields are AWS's to add, but a second "detail" (or "Detail":
	// encoding/json keeps the last, case-insensitively) would replace the
	// detail our strict checks judge, and a detail field at the top level
	// would be ignored: both are refused.
	if err := checkKeys(raw, "event", false); err != nil {
		return env, err
	}
	if err := checkMisplaced(raw); err != nil {
		return env, err
	}
	if env.Source == "" {
		return env, fmt.Errorf("event.source: is required")
	}
	if env.Time.IsZero() {
		return env, fmt.Errorf("event.time: is required (RFC 3339); EventBridge sets it on every event")
	}
	if err := CheckNotBefore("event.time", env.Time); err != nil {
		return env, err
	}
	return env, nil
}

// checkMisplaced rejects our detail fields at the top level of an envelope.
func checkMisplaced(raw []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return fmt.Errorf("event: invalid JSON: %w", err)
	}
	for k := range top {
		if misplaced[strings.ToLower(k)] {
			return fmt.Errorf("event.%s: belongs in the event's detail, not at the top level (put-events: inside the Detail JSON string)", k)
		}
	}
	return nil
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
	if err := CheckNotBefore(field, t); err != nil {
		return time.Time{}, err
	}
	return Slot(t), nil
}

// EarliestTime bounds trigger times in the past: Amazon EC2 opened on
// 2006-08-25, so no image, and no backup slot, can be older. An earlier time
// (year 0000 is valid RFC 3339) comes from a broken or hand-made input: as a
// backup slot it would name and date images decades before they existed,
// and prune, which takes its trigger time as "now", would compute every age
// from it. The bound is fixed rather than relative to the clock so that a
// late delivery of a real trigger (Scheduler's retries for up to 24 hours,
// a dead-letter redrive days later) is never refused. The future is bounded
// by CheckNotFuture.
var EarliestTime = time.Date(2006, 8, 25, 0, 0, 0, 0, time.UTC)

// CheckNotBefore rejects a trigger time before EarliestTime.
func CheckNotBefore(field string, t time.Time) error {
	if t.Before(EarliestTime) {
		return fmt.Errorf("%s: %s is before %s, when EC2 opened: no backup can be that old; use the trigger's real time (Scheduler: \"<aws.scheduler.scheduled-time>\"; put-events without a Time entry uses the current time)",
			field, t.UTC().Format(time.RFC3339), EarliestTime.Format("2006-01-02"))
	}
	return nil
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

// StrictDecode decodes an object amibackup owns with the rules of its
// triggers (unknown fields, trailing data, null values and duplicate keys
// are errors naming the field): the rollout workflow's action contract.
func StrictDecode(raw []byte, v any, what string) error { return strictDecode(raw, v, what) }
