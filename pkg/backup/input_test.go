package backup_test

import (
	"context"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

// TestMalformedInputsChangeNothing drives the handler with bad inputs
// against a fleet: each is rejected with the field named, and EC2 sees no
// call at all.
func TestMalformedInputsChangeNothing(t *testing.T) {
	env := simtest.Start(t, ec2sim.Options{})
	env.Sim.SeedFleet("", "", 5, map[string]string{"Backup": "nightly"})
	b := newBackuper(t, env, nil)
	ev := func(dt, src, detail string) string {
		return `{"version":"0","id":"1","detail-type":"` + dt + `","source":"` + src + `","account":"1","time":"2026-11-24T03:00:00Z","region":"r","resources":[],"detail":` + detail + `}`
	}
	tests := []struct{ in, want string }{
		{``, "JSON object"},
		{`null`, "JSON object"},
		{`42`, "JSON object"},
		{`{"policy":"nightly"`, "invalid JSON"},
		{`{}`, "input.policy"},
		{`{"policy":"nightly"}`, "input.time"},
		{`{"policy":"Nightly","time":"2026-11-24T03:00:00Z"}`, "unknown policy"},
		{`{"policy":"nightly","time":"24.11.2026 03:00"}`, "RFC 3339"},
		{`{"policy":"nightly","time":"2026-11-24T03:00:00Z","dryRun":true}`, `"dryRun" is not allowed`},
		{`{"policy":["nightly"],"time":"2026-11-24T03:00:00Z"}`, "input"},
		{ev("Backup Requested", "amibackup", `{}`), "event.detail.policy"},
		{ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":"i-01234567"}`), "event.detail"},
		{ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":["i-XYZ"]}`), "instanceIds[0]"},
		{ev("Backup Requested", "amibackup", `{"policy":"nightly","instanceIds":[]}`), "instanceIds: is an empty list"},
		{strings.Replace(ev("Backup Requested", "amibackup", `{"policy":"nightly"}`), "2026-11-24", "2036-11-24", 1), "ahead of the clock"},
		{ev("Backup Requested", "amibackup", `{"policy":"nightly","reboot":"yes"}`), "event.detail"},
		{ev("Backup Requested", "amibackup", `{"policy":"nightly","force":true}`), `"force" is not allowed`},
		{ev("Prune Requested", "amibackup", `{}`), "not handled by the backup function"},
		{ev("Backup Requested", "other.source", `{"policy":"nightly"}`), "not a backup trigger"},
		{ev("Scheduled Event", "aws.events", `{"policy":"monthly"}`), "unknown policy"},
		{strings.Replace(ev("Backup Requested", "amibackup", `{"policy":"nightly"}`), `"time":"2026-11-24T03:00:00Z",`, ``, 1), "event.time"},
		{`{"policy":"nightly","time":"2026-11-24T03:00:00Z"} {"again":1}`, "invalid JSON"},
	}
	for _, tt := range tests {
		_, err := b.Handle(context.Background(), []byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want %q", tt.in, err, tt.want)
		}
	}
	if c := env.Sim.Calls(); c.Total != 0 || len(env.Sim.Images("", "")) != 0 {
		t.Fatalf("bad input reached EC2: %v", c.ByAction)
	}
}
