package trigger

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/config"
)

func verifyConfig(t testing.TB) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(`{"deployment":"prod","policies":[
	 {"name":"nightly","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},
	  "verify":{"schedule":{"expression":"cron(0 5 ? * SUN *)"}}},
	 {"name":"plain","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseVerifyAccepts(t *testing.T) {
	c := verifyConfig(t)
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	replay := strings.Replace(ev(VerifyRequested, "amibackup", `{"policy":"nightly"}`), `"version":"0"`, `"version":"0","replay-name":"r1"`, 1)
	tests := []struct {
		name, in, trigger string
		ids               []string
		dry               bool
	}{
		{"scheduler", `{"policy":"nightly","time":"2026-11-24T03:00:00Z"}`, "schedule", nil, false},
		{"scheduler seconds are cut", `{"policy":"nightly","time":"2026-11-24T03:00:59Z"}`, "schedule", nil, false},
		{"manual", ev(VerifyRequested, "amibackup", `{"policy":"nightly"}`), "manual", nil, false},
		{"manual dry run with images", ev(VerifyRequested, "amibackup", `{"policy":"nightly","dryRun":true,"imageIds":["ami-0123456789abcdef0","ami-01234567"]}`),
			"manual", []string{"ami-0123456789abcdef0", "ami-01234567"}, true},
		{"replayed event", replay, "manual", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ParseVerify([]byte(tt.in), c)
			if err != nil {
				t.Fatal(err)
			}
			if v.Policy != "nightly" || v.Trigger != tt.trigger || !slices.Equal(v.ImageIDs, tt.ids) || v.DryRun != tt.dry || !v.Slot.Equal(slot) {
				t.Fatalf("%+v", v)
			}
		})
	}
}

// TestParseVerifyRejects: every malformed, foreign or widening input is
// rejected with a message naming the field.
func TestParseVerifyRejects(t *testing.T) {
	c := verifyConfig(t)
	ids := make([]string, MaxVerifyImageIDs+1)
	for i := range ids {
		ids[i] = fmt.Sprintf(`"ami-%08x"`, i)
	}
	manual := func(detail string) string { return ev(VerifyRequested, "amibackup", detail) }
	tests := []struct{ name, in, want string }{
		{"empty", ``, "input: is empty"},
		{"array", `[]`, "JSON object"},
		{"trailing", `{"policy":"nightly","time":"2026-11-24T03:00:00Z"} {}`, "trailing data"},
		{"no policy", `{"time":"2026-11-24T03:00:00Z"}`, "input.policy: is required"},
		{"unknown policy", `{"policy":"weekly","time":"2026-11-24T03:00:00Z"}`, `unknown policy "weekly"`},
		{"policy without verify", `{"policy":"plain","time":"2026-11-24T03:00:00Z"}`, `input.policy: policy "plain" has no verify section`},
		{"no time", `{"policy":"nightly"}`, "input.time: is required"},
		{"null time", `{"policy":"nightly","time":null}`, "input.time: is null"},
		{"null policy", `{"policy":null,"time":"2026-11-24T03:00:00Z"}`, "input.policy: is null"},
		{"duplicate key", `{"policy":"nightly","time":"2026-11-24T03:00:00Z","time":"2026-11-25T03:00:00Z"}`, "more than once"},
		{"unreplaced placeholder", `{"policy":"nightly","time":"<aws.scheduler.scheduled-time>"}`, "input.time"},
		{"before EC2", `{"policy":"nightly","time":"0001-01-01T00:00:00Z"}`, "before 2006-08-25"},
		{"scheduler extra field", `{"policy":"nightly","time":"2026-11-24T03:00:00Z","dryRun":true}`, `field "dryRun" is not allowed`},
		{"backup request", ev(BackupRequested, "amibackup", `{"policy":"nightly"}`), "is not a verify trigger"},
		{"foreign source", ev(VerifyRequested, "aws.ec2", `{"policy":"nightly"}`), "is not a verify trigger"},
		{"no detail", manual(`null`), "event.detail: is required"},
		{"detail unknown field", manual(`{"policy":"nightly","instanceIds":["i-01234567"]}`), `"instanceIds" is not allowed`},
		{"detail null dryRun", manual(`{"policy":"nightly","dryRun":null}`), "event.detail.dryRun: is null"},
		{"detail duplicate dryRun", manual(`{"policy":"nightly","dryRun":true,"DryRun":false}`), "more than once"},
		{"detail policy without verify", manual(`{"policy":"plain"}`), "event.detail.policy"},
		{"empty imageIds", manual(`{"policy":"nightly","imageIds":[]}`), "event.detail.imageIds: is an empty list"},
		{"null imageIds", manual(`{"policy":"nightly","imageIds":null}`), "event.detail.imageIds: is null"},
		{"bad image id", manual(`{"policy":"nightly","imageIds":["ami-xyz"]}`), "event.detail.imageIds[0]"},
		{"snapshot id", manual(`{"policy":"nightly","imageIds":["snap-01234567"]}`), "not an image ID"},
		{"duplicate image id", manual(`{"policy":"nightly","imageIds":["ami-01234567","ami-01234567"]}`), "imageIds[1]: \"ami-01234567\" is listed twice"},
		{"too many image ids", manual(`{"policy":"nightly","imageIds":[` + strings.Join(ids, ",") + `]}`), "at most 200"},
		{"imageIds at the top level", strings.Replace(manual(`{"policy":"nightly"}`), `"version":"0"`, `"version":"0","imageIds":["ami-01234567"]`, 1), "event.imageIds: belongs in the event's detail"},
		{"dryRun at the top level", strings.Replace(manual(`{"policy":"nightly"}`), `"version":"0"`, `"version":"0","dryRun":true`, 1), "event.dryRun: belongs in the event's detail"},
		{"event before EC2", strings.Replace(manual(`{"policy":"nightly"}`), "2026-11-24T03:00:42Z", "2001-01-01T00:00:00Z", 1), "event.time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseVerify([]byte(tt.in), c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestMarshalVerifyEvent: what the local run sends parses back.
func TestMarshalVerifyEvent(t *testing.T) {
	at := time.Date(2026, 11, 24, 3, 4, 5, 0, time.UTC)
	v, err := ParseVerify(MarshalVerifyEvent(at, VerifyDetail{Policy: "nightly", DryRun: true, ImageIDs: []string{"ami-01234567"}}), verifyConfig(t))
	if err != nil || !v.DryRun || v.ImageIDs[0] != "ami-01234567" || !v.Slot.Equal(Slot(at)) {
		t.Fatalf("%+v %v", v, err)
	}
}
