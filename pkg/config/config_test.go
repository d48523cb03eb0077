package config

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

const minimal = `{"policies":[{"name":"nightly","selector":{"tagKey":"Backup","tagValues":["nightly"]},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}]}`

func TestParseAppliesDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), "AmiBackup")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	p, ok := c.Policy("nightly")
	if !ok {
		t.Fatal("policy nightly not found")
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"deployment", c.Deployment, "AmiBackup"},
		{"concurrency", c.Concurrency, DefaultConcurrency},
		{"reboot", p.RebootEnabled(), true},
		{"timeZone", p.Schedule.TimeZone, "UTC"},
		{"minAvailable", p.Retention.MinAvailable, 1},
		{"maxDeleteShare", c.Prune.MaxDeleteShare, 0.5},
		{"orphanGrace", c.Prune.OrphanGrace.D(), 24 * time.Hour},
		{"prune schedule", c.Prune.Schedule.Expression, "cron(0 5 * * ? *)"},
		{"recycle image days", c.RecycleBin.ImageRetentionDays, 7},
		{"recycle snapshot days", c.RecycleBin.SnapshotRetentionDays, 7},
		{"termination protection", c.TerminationProtectionEnabled(), true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	c, err := Parse([]byte(minimal), "AmiBackup")
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse([]byte(c.JSON()), "")
	if err != nil {
		t.Fatalf("re-parse of rendered config: %v\n%s", err, c.JSON())
	}
	if c.JSON() != c2.JSON() {
		t.Errorf("round trip differs:\n%s\n%s", c.JSON(), c2.JSON())
	}
}

// TestValidationMessages checks that each problem is reported with its
// field path and that several problems are reported together.
func TestValidationMessages(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings, each must appear
	}{
		{"not json", `{`, []string{"invalid JSON"}},
		{"trailing brace", minimal + `}`, []string{"trailing data"}},
		{"second document", minimal + minimal, []string{"trailing data"}},
		{"unknown field", `{"policies":[],"polices":[]}`, []string{"unknown field", "polices"}},
		{"no policies", `{"policies":[]}`, []string{"policies: at least one policy"}},
		{"bad name and missing tag key", `{"policies":[{"name":"Night Ly","selector":{},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":1}}]}`,
			[]string{"policies[0].name", "policies[0].selector.tagKey: is required"}},
		{"duplicate policy", `{"policies":[` + pol("a", `{"daily":1}`) + `,` + pol("a", `{"daily":1}`) + `]}`, []string{"policies[1].name", "more than one policy"}},
		{"retention keeps nothing", `{"policies":[` + pol("a", `{}`) + `]}`, []string{"policies[0].retention: keeps nothing"}},
		{"negative last", `{"policies":[` + pol("a", `{"last":-1,"daily":1}`) + `]}`, []string{"policies[0].retention.last"}},
		{"bad duration", `{"policies":[` + pol("a", `{"within":"two weeks"}`) + `]}`, []string{"policies[0].retention.within", "two weeks", "14d"}},
		{"two bad durations at once", `{"policies":[` + pol("a", `{"daily":1}`) + `,` + pol("b", `{"within":7}`) + `],"prune":{"orphanGrace":"1 day"}}`,
			[]string{"policies[1].retention.within: must be a string", "prune.orphanGrace", "1 day"}},
		{"overflowing duration", `{"policies":[` + pol("a", `{"within":"30501w"}`) + `]}`, []string{"policies[0].retention.within", "too long"}},
		{"wrong type", `{"policies":[{"name":"a","reboot":"yes","selector":{"tagKey":"B"},"schedule":{"expression":"rate(1 day)"},"retention":{"daily":1}}]}`,
			[]string{"reboot", "bool"}},
		{"too many tags", `{"policies":[{"name":"a","selector":{"tagKey":"B"},"copyTags":[` + manyKeys(45) + `],"schedule":{"expression":"rate(1 day)"},"retention":{"daily":1}}]}`,
			[]string{"policies[0]: copyTags plus extraTags allow at most 44"}},
		{"policies and recovery", `{"policies":[` + pol("a", `{"daily":1}`) + `],"recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"prod","retention":{"last":3}}}`,
			[]string{"recovery: cannot be combined with policies", "own stack"}},
		{"bad cron", `{"policies":[{"name":"a","selector":{"tagKey":"B"},"schedule":{"expression":"0 3 * * *"},"retention":{"daily":1}}]}`,
			[]string{"policies[0].schedule.expression", "cron("}},
		{"cron both days", `{"policies":[{"name":"a","selector":{"tagKey":"B"},"schedule":{"expression":"cron(0 3 * * * *)"},"retention":{"daily":1}}]}`,
			[]string{"exactly one of day-of-month"}},
		{"bad tz", `{"policies":[{"name":"a","selector":{"tagKey":"B"},"schedule":{"expression":"cron(0 3 * * ? *)","timeZone":"Mars/Base"},"retention":{"daily":1}}]}`,
			[]string{"policies[0].schedule.timeZone", "IANA"}},
		{"own selector key", `{"policies":[{"name":"a","selector":{"tagKey":"amibackup:managed-by"},"schedule":{"expression":"rate(1 day)"},"retention":{"daily":1}}]}`,
			[]string{"policies[0].selector.tagKey", "amibackup's own"}},
		{"reserved copy tag", `{"policies":[{"name":"a","selector":{"tagKey":"B"},"copyTags":["aws:cloudformation:stack-name"],"schedule":{"expression":"rate(1 day)"},"retention":{"daily":1}}]}`,
			[]string{"policies[0].copyTags[0]"}},
		{"deprecation too long", `{"policies":[{"name":"a","selector":{"tagKey":"B"},"deprecateAfter":"4000d","schedule":{"expression":"rate(1 day)"},"retention":{"daily":1}}]}`,
			[]string{"policies[0].deprecateAfter", "10 years"}},
		{"share out of range", `{"policies":[` + pol("a", `{"daily":1}`) + `],"prune":{"maxDeleteShare":1.5}}`, []string{"prune.maxDeleteShare"}},
		{"concurrency", `{"policies":[` + pol("a", `{"daily":1}`) + `],"concurrency":500}`, []string{"concurrency", "1-50"}},
		{"recycle bin snapshot shorter", `{"policies":[` + pol("a", `{"daily":1}`) + `],"recycleBin":{"imageRetentionDays":14,"snapshotRetentionDays":7}}`,
			[]string{"recycleBin.snapshotRetentionDays", "shorter"}},
		{"sharing account", `{"policies":[` + pol("a", `{"daily":1}`) + `],"sharing":{"accountIds":["12345"]}}`, []string{"sharing.accountIds[0]", "12-digit"}},
		{"sharing aws managed alias", `{"policies":[` + pol("a", `{"daily":1}`) + `],"sharing":{"accountIds":["111111111111"],"kmsKeyArn":"alias/aws/ebs"}}`,
			[]string{"sharing.kmsKeyArn", "cannot be shared"}},
		{"recovery", `{"recovery":{"sourceAccountIds":[],"maxInFlight":101,"retention":{"last":3}}}`,
			[]string{"recovery.sourceAccountIds", "recovery.sourceDeployment", "recovery.maxInFlight"}},
		{"email", `{"policies":[` + pol("a", `{"daily":1}`) + `],"alarms":{"email":"ops"}}`, []string{"alarms.email"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "D")
			if err == nil {
				t.Fatal("Parse succeeded, want error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func manyKeys(n int) string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%q", fmt.Sprintf("k%d", i))
	}
	return strings.Join(keys, ",")
}

func pol(name, retention string) string {
	return `{"name":"` + name + `","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":` + retention + `}`
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		err  bool
	}{
		{"14d", 14 * 24 * time.Hour, false},
		{"2w", 14 * 24 * time.Hour, false},
		{"1d12h", 36 * time.Hour, false},
		{"90m", 90 * time.Minute, false},
		{"", 0, false},
		{"d", 0, true},
		{"14 days", 0, true},
		{"36500d", 36500 * 24 * time.Hour, false},
		{"36501d", 0, true},
		{"5215w", 0, true},                    // 36505 days
		{"99999999999999999999999d", 0, true}, // does not fit int64
		{"36000d36000d", 0, true},             // parts add up beyond the bound
		{"36500d1h", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, err=%v", tt.in, got, err, tt.want, tt.err)
		}
	}
	b, _ := json.Marshal(Duration(14 * 24 * time.Hour))
	if string(b) != `"14d"` {
		t.Errorf("marshal 14d = %s", b)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add([]byte(`{"policies":[{"name":"x"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "D")
		if err != nil {
			return
		}
		// Whatever parses must validate again after rendering: what the CDK
		// app writes into AMIBACKUP_CONFIG must be accepted by the functions.
		if _, err := Parse([]byte(c.JSON()), ""); err != nil {
			t.Fatalf("rendered config does not re-parse: %v", err)
		}
	})
}
