package trigger

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
)

func testConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`{"deployment":"prod","policies":[
	 {"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}},
	 {"name":"eu-nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ev(detailType, source, detail string) string {
	return `{"version":"0","id":"1","detail-type":"` + detailType + `","source":"` + source + `","account":"123456789012",
	"time":"2026-11-24T03:00:42Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/amibackup-eu-nightly"],"detail":` + detail + `}`
}

func TestParseBackupAccepts(t *testing.T) {
	c := testConfig(t)
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name, in, policy, trigger string
		ids                       int
		dry                       bool
	}{
		{"scheduler", `{"policy":"nightly","time":"2026-11-24T03:00:00Z"}`, "nightly", "schedule", 0, false},
		{"scheduler with offset", `{"policy":"nightly","time":"2026-11-24T04:00:00+01:00"}`, "nightly", "schedule", 0, false},
		{"manual", ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-0123456789abcdef0"],"dryRun":true}`), "nightly", "manual", 1, true},
		{"classic rule by name", ev("Scheduled Event", "aws.events", `{}`), "eu-nightly", "schedule", 0, false},
		{"classic rule by detail", ev("Scheduled Event", "aws.events", `{"policy":"nightly"}`), "nightly", "schedule", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ParseBackup([]byte(tt.in), c)
			if err != nil {
				t.Fatal(err)
			}
			if b.Policy != tt.policy || b.Trigger != tt.trigger || len(b.InstanceIDs) != tt.ids || b.DryRun != tt.dry || !b.Slot.Equal(slot) {
				t.Fatalf("%+v", b)
			}
		})
	}
}

// TestParseBackupRejects: every malformed or foreign input is rejected with
// a message naming the field.
func TestParseBackupRejects(t *testing.T) {
	c := testConfig(t)
	tests := []struct{ name, in, want string }{
		{"empty", ``, "JSON object"},
		{"array", `[]`, "JSON object"},
		{"string", `"nightly"`, "JSON object"},
		{"bad json", `{"policy":`, "invalid JSON"},
		{"no policy", `{"time":"2026-11-24T03:00:00Z"}`, "input.policy: is required"},
		{"unknown policy", `{"policy":"hourly","time":"2026-11-24T03:00:00Z"}`, `unknown policy "hourly"`},
		{"no time", `{"policy":"nightly"}`, "input.time: is required"},
		{"unreplaced placeholder", `{"policy":"nightly","time":"<aws.scheduler.scheduled-time>"}`, "input.time"},
		{"bad time", `{"policy":"nightly","time":"yesterday"}`, "RFC 3339"},
		{"extra field", `{"policy":"nightly","time":"2026-11-24T03:00:00Z","force":true}`, `"force" is not allowed`},
		{"wrong type", `{"policy":7,"time":"2026-11-24T03:00:00Z"}`, "input"},
		{"prune request", ev("Prune Requested", "amibackup", `{}`), "not handled by the backup function"},
		{"foreign source", ev("EC2 Instance State-change Notification", "aws.ec2", `{}`), "not a backup trigger"},
		{"manual no detail", ev("Backup Requested", "amibackup", `null`), "event.detail: is required"},
		{"manual unknown detail field", ev("Backup Requested", "amibackup", `{"policy":"nightly","instances":["i-1"]}`), `"instances" is not allowed`},
		{"manual bad id", ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["web-1"]}`), "instanceIds[0]"},
		{"manual dup id", ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-01234567","i-01234567"]}`), "listed twice"},
		{"manual unknown policy", ev("Backup Requested", "amibackup", `{"policy":"x"}`), "event.detail.policy"},
		{"manual missing time", `{"detail-type":"Backup Requested","source":"amibackup","detail":{"policy":"nightly"}}`, "event.time"},
		{"classic rule unnamed", strings.Replace(ev("Scheduled Event", "aws.events", `{}`), "amibackup-eu-nightly", "my-rule", 1), "must name the policy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBackup([]byte(tt.in), c)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestInstanceIDLimit(t *testing.T) {
	ids := make([]string, 201)
	for i := range ids {
		ids[i] = fmt.Sprintf("i-%08x", i)
	}
	if err := CheckInstanceIDs("ids", ids); err == nil || !strings.Contains(err.Error(), "at most 200") {
		t.Fatalf("201 IDs: %v", err)
	}
	if err := CheckInstanceIDs("ids", ids[:200]); err != nil {
		t.Fatalf("200 IDs: %v", err)
	}
}

func FuzzParseBackup(f *testing.F) {
	c := testConfig(f)
	f.Add([]byte(`{"policy":"nightly","time":"2026-11-24T03:00:00Z"}`))
	f.Add([]byte(ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-0123456789abcdef0"]}`)))
	f.Add([]byte(ev("Scheduled Event", "aws.events", `{}`)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ParseBackup(raw, c)
		if err != nil {
			return
		}
		// Whatever is accepted must be a complete, valid request.
		if _, ok := c.Policy(b.Policy); !ok || b.Slot.IsZero() || b.Slot.Second() != 0 || b.Slot.Location() != time.UTC {
			t.Fatalf("accepted an incomplete request %+v from %q", b, raw)
		}
		if b.Trigger != "schedule" && b.Trigger != "manual" {
			t.Fatalf("trigger %q", b.Trigger)
		}
		if CheckInstanceIDs("ids", b.InstanceIDs) != nil {
			t.Fatalf("accepted invalid instance IDs %v", b.InstanceIDs)
		}
		if b.Slot.Before(EarliestTime) {
			t.Fatalf("accepted slot %v before EC2 existed", b.Slot)
		}
		// One object only: anything appended is rejected.
		if _, err := ParseBackup(append(append([]byte{}, raw...), " x"...), c); err == nil {
			t.Fatalf("accepted %q with trailing data", raw)
		}
	})
}
