package trigger

import (
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
)

// parsers runs one raw input through every function's parser.
func parsers(t *testing.T) map[string]func([]byte) error {
	c := testConfig(t)
	return map[string]func([]byte) error{
		"backup": func(raw []byte) error { _, err := ParseBackup(raw, c); return err },
		"prune":  func(raw []byte) error { _, err := ParsePrune(raw, c); return err },
		"share":  func(raw []byte) error { _, err := ParseShare(raw); return err },
		"copy":   func(raw []byte) error { _, err := ParseCopy(raw); return err },
	}
}

// valid is one accepted input per function.
var valid = map[string]string{
	"backup": `{"policy":"nightly","time":"2026-11-24T03:00:00Z"}`,
	"prune":  `{"time":"2026-11-24T03:00:00Z"}`,
	"share":  `{"sweep":true,"time":"2026-11-24T03:00:00Z"}`,
	"copy":   `{"sweep":true,"time":"2026-11-24T03:00:00Z"}`,
}

// TestWholePayload (issue 16, item 5): the parsers judge the whole payload:
// trailing data, a second JSON object and an empty payload are rejected
// with the project's message for every function, never read as the first
// object alone (nor as a bare "EOF").
func TestWholePayload(t *testing.T) {
	ps := parsers(t)
	for fn, parse := range ps {
		ok := valid[fn]
		if err := parse([]byte(ok)); err != nil {
			t.Fatalf("%s: valid input rejected: %v", fn, err)
		}
		if err := parse([]byte(" \n" + ok + "\r\n\t ")); err != nil {
			t.Errorf("%s: surrounding whitespace rejected: %v", fn, err)
		}
		tests := []struct{ name, in, want string }{
			{"trailing garbage", ok + ` garbage`, `input: invalid JSON: trailing data after the JSON object ("garbage")`},
			{"second object", ok + ` {"force":true}`, "input: invalid JSON: trailing data after the JSON object"},
			{"same object twice", ok + ok, "input: invalid JSON: trailing data after the JSON object"},
			{"stray brace", ok + `}`, "input: invalid JSON: trailing data after the JSON object"},
			{"empty", ``, "input: is empty: a JSON object is required"},
			{"whitespace only", " \n\t", "input: is empty"},
			{"vertical tab is not JSON space", ok + "\v", "input: invalid JSON: trailing data"},
		}
		for _, tt := range tests {
			err := parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s, %s: error %v, want %q", fn, tt.name, err, tt.want)
			}
		}
	}
	// The same through an event envelope and through our detail.
	for _, tt := range []struct{ name, in, want string }{
		{"event trailing data", ev("Backup Requested", "amibackup", `{"policy":"nightly"}`) + ` x`, "input: invalid JSON: trailing data"},
		{"event second event", ev("Backup Requested", "amibackup", `{"policy":"nightly"}`) + ev("Backup Requested", "amibackup", `{"policy":"nightly"}`), "input: invalid JSON: trailing data"},
	} {
		if err := ps["backup"]([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.name, err, tt.want)
		}
	}
}

// TestNullNeverWidens (issue 16, item 6): an explicit null in an input we
// own is rejected with the field's path, so it never reads as "absent"
// (instanceIds: every instance; dryRun: a real run; policy: every policy).
func TestNullNeverWidens(t *testing.T) {
	c := testConfig(t)
	backup := func(raw string) error { _, err := ParseBackup([]byte(raw), c); return err }
	prune := func(raw string) error { _, err := ParsePrune([]byte(raw), c); return err }
	share := func(raw string) error { _, err := ParseShare([]byte(raw)); return err }
	cp := func(raw string) error { _, err := ParseCopy([]byte(raw)); return err }
	tests := []struct {
		name  string
		parse func(string) error
		in    string
		want  string
	}{
		{"backup instanceIds null", backup, ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":null}`),
			"event.detail.instanceIds: is null: name at least one instance"},
		{"backup dryRun null", backup, ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-0123456789abcdef0"],"dryRun":null}`),
			"event.detail.dryRun: is null"},
		{"backup reboot null", backup, ev("Backup Requested", "amibackup", `{"policy":"nightly","reboot":null}`), "event.detail.reboot: is null"},
		{"backup policy null", backup, ev("Backup Requested", "amibackup", `{"policy":null}`), "event.detail.policy: is null"},
		{"backup scheduler policy null", backup, `{"policy":null,"time":"2026-11-24T03:00:00Z"}`, "input.policy: is null"},
		{"backup scheduler time null", backup, `{"policy":"nightly","time":null}`, "input.time: is null"},
		{"classic rule policy null", backup, ev("Scheduled Event", "aws.events", `{"policy":null}`), "event.detail.policy: is null"},
		{"prune policy null (would prune all)", prune, ev("Prune Requested", "amibackup", `{"policy":null}`), "event.detail.policy: is null"},
		{"prune dryRun null", prune, ev("Prune Requested", "amibackup", `{"dryRun":null}`), "event.detail.dryRun: is null"},
		{"prune force null", prune, ev("Prune Requested", "amibackup", `{"force":null}`), "event.detail.force: is null"},
		{"prune detail null", prune, ev("Prune Requested", "amibackup", `null`), "event.detail: is null"},
		{"prune scheduler policy null", prune, `{"policy":null,"time":"2026-11-24T03:00:00Z"}`, "input.policy: is null"},
		{"share sweep null", share, `{"sweep":null,"time":"2026-11-24T03:00:00Z"}`, "input.sweep: is null"},
		{"copy time null", cp, `{"sweep":true,"time":null}`, "input.time: is null"},
		// Duplicate keys: encoding/json keeps the last one, case-insensitively.
		{"backup dryRun twice", backup, ev("Backup Requested", "amibackup", `{"policy":"nightly","dryRun":true,"DryRun":false}`),
			`event.detail.DryRun: is given more than once (also as "dryRun")`},
		{"instanceIds twice, Unicode-folded", backup, ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-0123456789abcdef0"],"instanceIdſ":["i-0123456789abcdef1"]}`),
			"event.detail.instanceIdſ: is given more than once"},
		{"prune policy twice", prune, `{"policy":"nightly","policy":"eu-nightly","time":"2026-11-24T03:00:00Z"}`, "input.policy: is given more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	// Absent fields keep their documented defaults.
	b, err := ParseBackup([]byte(ev("Backup Requested", "amibackup", `{"policy":"nightly"}`)), c)
	if err != nil || b.InstanceIDs != nil || b.DryRun || b.Reboot != nil {
		t.Fatalf("absent fields: %+v, %v", b, err)
	}
	p, err := ParsePrune([]byte(ev("Prune Requested", "amibackup", `{}`)), c)
	if err != nil || p.Policy != "" || p.DryRun || p.Force {
		t.Fatalf("prune {}: %+v, %v", p, err)
	}
}

// TestEnvelopeForwardCompatible (issue 11, item 11): EventBridge may add
// top-level fields (replay-name on replayed events, or a new one); they are
// accepted, while our own detail stays strict.
func TestEnvelopeForwardCompatible(t *testing.T) {
	c := testConfig(t)
	withFields := func(e, fields string) string { return strings.Replace(e, `{"version"`, `{`+fields+`,"version"`, 1) }
	manual := ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-0123456789abcdef0"]}`)
	for _, extra := range []string{`"replay-name":"replay-1"`, `"new-aws-field":{"a":[1,2]}`, `"replay-name":"r","x-future":null`} {
		b, err := ParseBackup([]byte(withFields(manual, extra)), c)
		if err != nil || b.Policy != "nightly" || len(b.InstanceIDs) != 1 {
			t.Errorf("backup with %s: %+v, %v", extra, b, err)
		}
		p, err := ParsePrune([]byte(withFields(ev("Prune Requested", "amibackup", `{"dryRun":true}`), extra)), c)
		if err != nil || !p.DryRun {
			t.Errorf("prune with %s: %+v, %v", extra, p, err)
		}
		s, err := ParseShare([]byte(withFields(ev(AMIStateChange, "aws.ec2", `{"ImageId":"ami-0123456789abcdef0","State":"available"}`), extra)))
		if err != nil || len(s.ImageIDs) != 1 {
			t.Errorf("share with %s: %+v, %v", extra, s, err)
		}
		r, err := ParseBackup([]byte(withFields(ev("Scheduled Event", "aws.events", `{}`), extra)), c)
		if err != nil || r.Policy != "eu-nightly" {
			t.Errorf("classic rule with %s: %+v, %v", extra, r, err)
		}
	}
	// Our detail stays strict, with or without new envelope fields.
	_, err := ParseBackup([]byte(withFields(ev("Backup Requested", "amibackup", `{"policy":"nightly","replay-name":"x"}`), `"replay-name":"r"`)), c)
	if err == nil || !strings.Contains(err.Error(), `event.detail: unknown field "replay-name" is not allowed`) {
		t.Errorf("unknown detail field: %v", err)
	}
	// The envelope's own fields keep their types.
	_, err = ParseBackup([]byte(strings.Replace(manual, `"time":"2026-11-24T03:00:42Z"`, `"time":42`, 1)), c)
	if err == nil || !strings.Contains(err.Error(), "event") {
		t.Errorf("numeric time: %v", err)
	}
}

// TestTimeBounds (issue 16, item 7): times before EC2 existed (year 0000
// parses as RFC 3339) are rejected in Scheduler inputs and event envelopes;
// EarliestTime itself is accepted.
func TestTimeBounds(t *testing.T) {
	c := testConfig(t)
	atEarliest := EarliestTime.Format(time.RFC3339)
	justBefore := EarliestTime.Add(-time.Second).Format(time.RFC3339)
	evAt := func(dt, src, detail, at string) string {
		return strings.Replace(ev(dt, src, detail), "2026-11-24T03:00:42Z", at, 1)
	}
	tests := []struct {
		name, in, want string
		parse          func([]byte) error
	}{
		{"backup scheduler year 0000", `{"policy":"nightly","time":"0000-01-01T00:00:00Z"}`, "input.time: 0000-01-01T00:00:00Z is before 2006-08-25", nil},
		{"backup scheduler 1970", `{"policy":"nightly","time":"1970-01-01T00:00:00Z"}`, "input.time", nil},
		{"backup scheduler just before", `{"policy":"nightly","time":"` + justBefore + `"}`, "is before 2006-08-25", nil},
		{"backup event year 0000", evAt("Backup Requested", "amibackup", `{"policy":"nightly"}`, "0000-06-01T00:00:00Z"), "event.time: 0000-06-01T00:00:00Z is before", nil},
		{"prune scheduler year 0000", `{"time":"0000-01-01T00:00:00Z"}`, "input.time", func(b []byte) error { _, err := ParsePrune(b, c); return err }},
		{"prune event 1999", evAt("Prune Requested", "amibackup", `{}`, "1999-12-31T23:59:00Z"), "event.time", func(b []byte) error { _, err := ParsePrune(b, c); return err }},
		{"share event year 0000", evAt(AMIStateChange, "aws.ec2", `{"ImageId":"ami-0123456789abcdef0","State":"available"}`, "0000-01-01T00:00:00Z"), "event.time",
			func(b []byte) error { _, err := ParseShare(b); return err }},
		{"copy year 0000", `{"sweep":true,"time":"0000-01-01T00:00:00Z"}`, "input.time", func(b []byte) error { _, err := ParseCopy(b); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parse := tt.parse
			if parse == nil {
				parse = func(b []byte) error { _, err := ParseBackup(b, c); return err }
			}
			err := parse([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	if b, err := ParseBackup([]byte(`{"policy":"nightly","time":"`+atEarliest+`"}`), c); err != nil || !b.Slot.Equal(EarliestTime) {
		t.Fatalf("EarliestTime itself: %+v, %v", b, err)
	}
	if _, err := ParseBackup([]byte(evAt("Backup Requested", "amibackup", `{"policy":"nightly"}`, atEarliest)), c); err != nil {
		t.Fatalf("event at EarliestTime: %v", err)
	}
}

func TestParseCopy(t *testing.T) {
	at, err := ParseCopy([]byte(valid["copy"]))
	if err != nil || !at.Equal(time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)) {
		t.Fatalf("%v %v", at, err)
	}
	// The copy function has no event trigger, not even the share function's.
	_, err = ParseCopy([]byte(ev(AMIStateChange, "aws.ec2", `{"ImageId":"ami-0123456789abcdef0","State":"available"}`)))
	if err == nil || !strings.Contains(err.Error(), "copy function takes only its Scheduler input") {
		t.Fatalf("event: %v", err)
	}
	if _, err := ParseCopy([]byte(`{"sweep":false,"time":"2026-11-24T03:00:00Z"}`)); err == nil {
		t.Fatal("sweep false accepted")
	}
}

func FuzzParsePrune(f *testing.F) {
	c, err := config.Parse([]byte(`{"policies":[{"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}]}`), "D")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"time":"2026-11-24T03:00:00Z"}`))
	f.Add([]byte(`{"policy":"nightly","time":"2026-11-24T03:00:00Z"}`))
	f.Add([]byte(ev("Prune Requested", "amibackup", `{"dryRun":true,"force":false}`)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParsePrune(raw, c)
		if err != nil {
			return
		}
		if p.Policy != "" && p.Policy != "nightly" || p.Time.Before(EarliestTime) || p.Time.Second() != 0 {
			t.Fatalf("accepted %+v from %q", p, raw)
		}
		// One object only: anything appended is rejected.
		if _, err := ParsePrune(append(append([]byte{}, raw...), raw...), c); err == nil {
			t.Fatalf("accepted %q twice in a row", raw)
		}
	})
}

// TestEnvelopeCannotSmuggleDetail (review finding): unknown top-level
// fields are accepted for AWS's additions, but a second detail (any letter
// case: encoding/json keeps the last) or one of our detail fields at the top
// level is refused, so a dry run or a narrowed request cannot turn into a
// real run of the whole policy.
func TestEnvelopeCannotSmuggleDetail(t *testing.T) {
	cfg := testConfig(t)
	env := func(rest string) []byte {
		return []byte(`{"version":"0","id":"1","source":"amibackup","account":"123456789012","time":"2026-11-24T03:00:00Z","region":"us-east-1","resources":[],` + rest + `}`)
	}
	for _, tc := range []struct{ name, raw, want string }{
		{"second detail, other case", `"detail-type":"Backup Requested","detail":{"policy":"nightly","dryRun":true},"Detail":{"policy":"nightly"}`, "more than once"},
		{"second detail narrowing dropped", `"detail-type":"Backup Requested","detail":{"policy":"nightly","instanceIds":["i-0123456789abcdef0"]},"detail":{"policy":"nightly"}`, "more than once"},
		{"dryRun at the top level", `"detail-type":"Backup Requested","dryRun":true,"detail":{"policy":"nightly"}`, "event.dryRun: belongs in the event's detail"},
	} {
		if _, err := ParseBackup(env(tc.raw), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("backup %s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, tc := range []struct{ name, raw, want string }{
		{"second detail", `"detail-type":"Prune Requested","detail":{"policy":"nightly","dryRun":true},"DETAIL":{}`, "more than once"},
		{"no detail", `"detail-type":"Prune Requested"`, "event.detail: is required"},
		{"empty policy", `"detail-type":"Prune Requested","detail":{"policy":"","force":true}`, "event.detail.policy: is empty"},
	} {
		if _, err := ParsePrune(env(tc.raw), cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("prune %s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := ParsePrune([]byte(`{"policy":"","time":"2026-11-24T03:00:00Z"}`), cfg); err == nil || !strings.Contains(err.Error(), "input.policy: is empty") {
		t.Errorf("scheduler input with an empty policy: %v", err)
	}
	// Still accepted: AWS's own additions and an empty detail for prune.
	if _, err := ParseBackup(env(`"detail-type":"Backup Requested","replay-name":"r","detail":{"policy":"nightly"}`), cfg); err != nil {
		t.Errorf("replayed event: %v", err)
	}
	if p, err := ParsePrune(env(`"detail-type":"Prune Requested","detail":{}`), cfg); err != nil || p.Policy != "" {
		t.Errorf("prune every policy: %+v %v", p, err)
	}
}
