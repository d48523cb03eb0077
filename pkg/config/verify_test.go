package config

import (
	"strings"
	"testing"
	"time"
)

func TestVerifyValidation(t *testing.T) {
	base := `{"deployment":"d","policies":[{"name":"p","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7},"verify":%s}]}`
	tests := []struct {
		name, verify string
		want         []string // substrings of the error; none: valid
	}{
		{"minimal", `{"schedule":{"expression":"cron(0 6 ? * SUN *)"}}`, nil},
		{"full", `{"schedule":{"expression":"rate(1 day)","timeZone":"Europe/Berlin"},"sample":"10%","instanceType":{"x86_64":"m5.large","arm64":"c7gn.xlarge"},"timeout":"30m","maxConcurrent":20,"subnetId":"subnet-0123456789abcdef0","securityGroupId":"sg-01234567","maxVerifiedAge":"2d"}`, nil},
		{"metal size", `{"schedule":{"expression":"rate(1 day)"},"instanceType":{"x86_64":"c7i.metal-48xl","arm64":"c7g.metal"}}`, nil},
		{"count sample", `{"schedule":{"expression":"rate(1 day)"},"sample":3}`, nil},
		{"named sample", `{"schedule":{"expression":"rate(1 day)"},"sample":"newest-per-instance"}`, nil},
		{"no schedule", `{}`, []string{"policies[0].verify.schedule"}},
		{"bad sample", `{"schedule":{"expression":"rate(1 day)"},"sample":"all"}`, []string{"policies[0].verify.sample", `"all"`}},
		{"zero sample", `{"schedule":{"expression":"rate(1 day)"},"sample":0}`, []string{"policies[0].verify.sample"}},
		{"percent over", `{"schedule":{"expression":"rate(1 day)"},"sample":"101%"}`, []string{"policies[0].verify.sample"}},
		{"arch", `{"schedule":{"expression":"rate(1 day)"},"instanceType":{"i386":"t3.small"}}`, []string{"policies[0].verify.instanceType", `"i386"`}},
		{"arm on x86", `{"schedule":{"expression":"rate(1 day)"},"instanceType":{"x86_64":"t4g.small"}}`, []string{"policies[0].verify.instanceType.x86_64", "Graviton"}},
		{"x86 on arm", `{"schedule":{"expression":"rate(1 day)"},"instanceType":{"arm64":"t3.small"}}`, []string{"policies[0].verify.instanceType.arm64"}},
		{"type form", `{"schedule":{"expression":"rate(1 day)"},"instanceType":{"x86_64":"small"}}`, []string{"policies[0].verify.instanceType.x86_64", "not an instance type"}},
		{"timeout short", `{"schedule":{"expression":"rate(1 day)"},"timeout":"1m"}`, []string{"policies[0].verify.timeout", "5m-2h"}},
		{"timeout form", `{"schedule":{"expression":"rate(1 day)"},"timeout":"soon"}`, []string{"policies[0].verify.timeout", "not a duration"}},
		{"concurrency", `{"schedule":{"expression":"rate(1 day)"},"maxConcurrent":101}`, []string{"policies[0].verify.maxConcurrent", "1-100"}},
		{"subnet alone", `{"schedule":{"expression":"rate(1 day)"},"subnetId":"subnet-01234567"}`, []string{"go together"}},
		{"subnet form", `{"schedule":{"expression":"rate(1 day)"},"subnetId":"subnet-xyz","securityGroupId":"sg-01234567"}`, []string{"policies[0].verify.subnetId"}},
		{"sg form", `{"schedule":{"expression":"rate(1 day)"},"subnetId":"subnet-01234567","securityGroupId":"sg-1"}`, []string{"policies[0].verify.securityGroupId"}},
		{"age", `{"schedule":{"expression":"rate(1 day)"},"maxVerifiedAge":"400d"}`, []string{"policies[0].verify.maxVerifiedAge", "1h-365d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(strings.Replace(base, "%s", tt.verify, 1)), "")
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("valid section rejected: %v", err)
				}
				if c.Policies[0].Verify == nil {
					t.Fatal("verify section lost")
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted; want an error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestVerifyScheduleTimeZoneDefault(t *testing.T) {
	c, err := Parse([]byte(`{"deployment":"d","policies":[{"name":"p","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)","timeZone":"Europe/Berlin"},"retention":{"daily":7},"verify":{"schedule":{"expression":"cron(0 6 ? * SUN *)"}}}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if tz := c.Policies[0].Verify.Schedule.TimeZone; tz != "Europe/Berlin" {
		t.Errorf("verify schedule time zone %q, want the policy's Europe/Berlin", tz)
	}
}

func TestVerifyDefaults(t *testing.T) {
	v := &Verify{}
	if v.TimeoutOrDefault() != 20*time.Minute || v.Concurrency() != 5 || v.MaxAge() != 8*24*time.Hour || !v.Isolated() {
		t.Errorf("defaults: %v %d %v %v", v.TimeoutOrDefault(), v.Concurrency(), v.MaxAge(), v.Isolated())
	}
	if it, ok := v.InstanceTypeFor(ArchARM64); !ok || it != "t4g.small" {
		t.Errorf("arm64 default %q", it)
	}
	v.InstanceType = map[string]string{ArchX86_64: "m5.large"}
	if it, _ := v.InstanceTypeFor(ArchX86_64); it != "m5.large" {
		t.Errorf("x86_64 configured %q", it)
	}
	if _, ok := v.InstanceTypeFor("i386"); ok {
		t.Error("i386 has no type")
	}
}

func TestSampleOf(t *testing.T) {
	tests := []struct {
		s    *Sample
		n    int
		want int
	}{
		{nil, 7, 7}, {nil, 0, 0}, {SampleCount(3), 7, 3}, {SampleCount(30), 7, 7},
		{SamplePercent(10), 7, 1}, {SamplePercent(10), 25, 3}, {SamplePercent(100), 25, 25}, {SamplePercent(50), 0, 0},
	}
	for _, tt := range tests {
		if got := tt.s.Of(tt.n); got != tt.want {
			t.Errorf("%s of %d = %d, want %d", tt.s, tt.n, got, tt.want)
		}
	}
}
