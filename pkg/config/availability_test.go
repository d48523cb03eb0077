package config

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// withAvailability is a valid configuration whose only policy has the
// availability section a (and the extra policy fields extra, e.g. reboot).
func withAvailability(a, extra string) string {
	return `{"policies":[{"name":"a","selector":{"tagKey":"Backup"},"schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":1}` +
		extra + `,"availability":` + a + `}]}`
}

func TestAvailabilityDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal), "D")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Policies[0].Availability
	if a != nil {
		t.Fatalf("availability %+v written by defaults; want nil (defaults via accessors)", a)
	}
	if !a.Waves() || !slices.Equal(a.Sources(), []string{"asg", "targetGroup"}) || a.MaxUnavailableFor(40) != 1 ||
		a.Timeout() != 15*time.Minute || !a.DrainEnabled() {
		t.Errorf("defaults: waves=%v sources=%v max=%d timeout=%v drain=%v", a.Waves(), a.Sources(), a.MaxUnavailableFor(40), a.Timeout(), a.DrainEnabled())
	}
	// Without the section the rendered document is unchanged: the golden
	// templates compare AMIBACKUP_CONFIG byte for byte.
	if strings.Contains(c.JSON(), "availability") {
		t.Errorf("AMIBACKUP_CONFIG grew an availability section: %s", c.JSON())
	}
	// An empty section is the defaults too, and renders as written.
	c, err = Parse([]byte(withAvailability(`{}`, "")), "D")
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Policies[0].Availability; !a.Waves() || a.MaxUnavailableFor(3) != 1 || a.Timeout() != DefaultHealthTimeout || !a.DrainEnabled() {
		t.Errorf("empty section is not the defaults: %+v", a)
	}
	if !strings.Contains(c.JSON(), `"availability":{}`) {
		t.Errorf("rendered %s", c.JSON())
	}
}

func TestAvailabilityParsed(t *testing.T) {
	c, err := Parse([]byte(withAvailability(`{"mode":"waves","groupBy":["tag:Service","asg"],"maxUnavailable":"25%","healthTimeout":"30m","drain":false}`, "")), "D")
	if err != nil {
		t.Fatal(err)
	}
	a := c.Policies[0].Availability
	if !a.Waves() || !slices.Equal(a.Sources(), []string{"tag:Service", "asg"}) || a.Timeout() != 30*time.Minute || a.DrainEnabled() {
		t.Errorf("parsed %+v", a)
	}
	if k, ok := TagKey(a.Sources()[0]); !ok || k != "Service" {
		t.Errorf("TagKey = %q, %v", k, ok)
	}
	// The document the functions receive re-parses to the same values.
	c2, err := Parse([]byte(c.JSON()), "")
	if err != nil || c2.JSON() != c.JSON() {
		t.Fatalf("round trip: %v\n%s\n%s", err, c.JSON(), c2.JSON())
	}
	if !strings.Contains(c.JSON(), `"maxUnavailable":"25%"`) {
		t.Errorf("percentage rendered as %s", c.JSON())
	}
	c, err = Parse([]byte(withAvailability(`{"mode":"all-at-once"}`, "")), "D")
	if err != nil {
		t.Fatal(err)
	}
	if c.Policies[0].Availability.Waves() {
		t.Error("all-at-once still plans waves")
	}
}

func TestMaxUnavailableResolution(t *testing.T) {
	tests := []struct {
		json string
		size int
		want int
	}{
		{`1`, 40, 1},
		{`3`, 40, 3},
		{`3`, 2, 2}, // never more than the group
		{`"25%"`, 40, 10},
		{`"25%"`, 7, 1},  // floor(1.75)
		{`"25%"`, 3, 1},  // floor(0.75) = 0: at least 1
		{`"1%"`, 1, 1},   // at least 1
		{`"50%"`, 5, 2},  // floor(2.5)
		{`"100%"`, 9, 9}, // the whole group
		{`"99%"`, 100, 99},
	}
	for _, tt := range tests {
		var m MaxUnavailable
		if err := json.Unmarshal([]byte(tt.json), &m); err != nil || !m.valid() {
			t.Fatalf("%s: %v valid=%v", tt.json, err, m.valid())
		}
		if got := m.For(tt.size); got != tt.want {
			t.Errorf("%s for %d = %d, want %d", tt.json, tt.size, got, tt.want)
		}
	}
	if got := (*MaxUnavailable)(nil).For(40); got != 1 {
		t.Errorf("default for 40 = %d, want 1", got)
	}
}

func TestAvailabilityValidation(t *testing.T) {
	tests := []struct {
		name, a, extra string
		want           []string
	}{
		{"unknown field", `{"maxUnavailble":1}`, "", []string{"unknown field", "maxUnavailble"}},
		{"bad mode", `{"mode":"rolling"}`, "", []string{"policies[0].availability.mode", `"rolling"`, "all-at-once"}},
		{"all-at-once with settings", `{"mode":"all-at-once","maxUnavailable":2}`, "", []string{"policies[0].availability: mode \"all-at-once\"", "remove groupBy"}},
		{"not rebooting", `{"maxUnavailable":2}`, `,"reboot":false`, []string{"policies[0].availability: is set but the policy does not reboot"}},
		{"empty groupBy", `{"groupBy":[]}`, "", []string{"policies[0].availability.groupBy: is empty", "all-at-once"}},
		{"unknown source", `{"groupBy":["asg","elb"]}`, "", []string{"policies[0].availability.groupBy[1]", `"elb"`, "tag:<Key>"}},
		{"empty tag key", `{"groupBy":["tag:"]}`, "", []string{"policies[0].availability.groupBy[0]", "1-128"}},
		{"long tag key", `{"groupBy":["tag:` + strings.Repeat("k", 129) + `"]}`, "", []string{"policies[0].availability.groupBy[0]", "1-128"}},
		{"duplicate source", `{"groupBy":["asg","targetGroup","asg"]}`, "", []string{"policies[0].availability.groupBy[2]", "listed twice"}},
		{"zero", `{"maxUnavailable":0}`, "", []string{"policies[0].availability.maxUnavailable", "0 is not allowed", `"25%"`}},
		{"negative", `{"maxUnavailable":-1}`, "", []string{"policies[0].availability.maxUnavailable", "-1"}},
		{"fraction", `{"maxUnavailable":1.5}`, "", []string{"policies[0].availability.maxUnavailable", "1.5"}},
		{"too many", `{"maxUnavailable":10001}`, "", []string{"policies[0].availability.maxUnavailable", "1-10000"}},
		{"number as string", `{"maxUnavailable":"2"}`, "", []string{"policies[0].availability.maxUnavailable", `"2"`}},
		{"zero percent", `{"maxUnavailable":"0%"}`, "", []string{"policies[0].availability.maxUnavailable", `"0%"`}},
		{"over 100 percent", `{"maxUnavailable":"101%"}`, "", []string{"policies[0].availability.maxUnavailable"}},
		{"fraction percent", `{"maxUnavailable":"12.5%"}`, "", []string{"policies[0].availability.maxUnavailable"}},
		{"bool", `{"maxUnavailable":true}`, "", []string{"policies[0].availability.maxUnavailable", "true"}},
		{"bad timeout", `{"healthTimeout":"15 minutes"}`, "", []string{"policies[0].availability.healthTimeout", "not a duration", "15m"}},
		{"short timeout", `{"healthTimeout":"30s"}`, "", []string{"policies[0].availability.healthTimeout", "out of range", "1m0s-2h0m0s"}},
		{"long timeout", `{"healthTimeout":"1d"}`, "", []string{"policies[0].availability.healthTimeout", "out of range"}},
		{"timeout as number", `{"healthTimeout":900}`, "", []string{"availability.healthTimeout", "number", "string"}},
		{"drain as string", `{"drain":"yes"}`, "", []string{"availability.drain", "bool"}},
		{"several at once", `{"mode":"wave","maxUnavailable":0,"healthTimeout":"0s"}`, "",
			[]string{"availability.mode", "availability.maxUnavailable", "availability.healthTimeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(withAvailability(tt.a, tt.extra)), "D")
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
	// The bounds themselves are allowed.
	for _, a := range []string{`{"healthTimeout":"1m"}`, `{"healthTimeout":"2h"}`, `{"maxUnavailable":10000}`, `{"maxUnavailable":"100%"}`,
		`{"groupBy":["tag:aws:cloudformation:stack-name"]}`, `{"mode":"waves"}`} {
		if _, err := Parse([]byte(withAvailability(a, "")), "D"); err != nil {
			t.Errorf("%s: %v", a, err)
		}
	}
}

// FuzzAvailability: any availability section either fails with a field path
// or renders into a document the functions accept again.
func FuzzAvailability(f *testing.F) {
	for _, s := range []string{`{}`, `{"maxUnavailable":"25%"}`, `{"maxUnavailable":2,"groupBy":["tag:Service"]}`, `{"mode":"all-at-once"}`, `{"healthTimeout":"15m","drain":false}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, a string) {
		c, err := Parse([]byte(withAvailability(a, "")), "D")
		if err != nil {
			return
		}
		c2, err := Parse([]byte(c.JSON()), "")
		if err != nil {
			t.Fatalf("rendered config does not re-parse: %v\n%s", err, c.JSON())
		}
		a1, a2 := c.Policies[0].Availability, c2.Policies[0].Availability
		for _, size := range []int{1, 7, 40, 10000} {
			n := a1.MaxUnavailableFor(size)
			if n < 1 || n > size || n != a2.MaxUnavailableFor(size) {
				t.Fatalf("maxUnavailable for %d = %d (re-parsed %d)", size, n, a2.MaxUnavailableFor(size))
			}
		}
		if d := a1.Timeout(); d < MinHealthTimeout || d > MaxHealthTimeout {
			t.Fatalf("timeout %v accepted", d)
		}
	})
}
