package images

import (
	"strings"
	"testing"
	"time"
)

func TestNameIsDeterministicAndValid(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 11, 24, 4, 0, 0, 0, berlin) // 03:00 UTC
	tests := []struct {
		policy, instance string
		want             string
	}{
		{"nightly", "i-0abc1234def567890", "amibackup-nightly-i-0abc1234def567890-20261124T030000Z"},
		{"a", "i-12345678", "amibackup-a-i-12345678-20261124T030000Z"},
		{strings.Repeat("p", 32), "i-0abc1234def567890", "amibackup-" + strings.Repeat("p", 32) + "-i-0abc1234def567890-20261124T030000Z"},
	}
	for _, tt := range tests {
		got := Name(tt.policy, tt.instance, slot)
		if got != tt.want {
			t.Errorf("Name = %q, want %q", got, tt.want)
		}
		if got != Name(tt.policy, tt.instance, slot.UTC()) {
			t.Errorf("name depends on the slot's zone")
		}
		if !ValidName(got) {
			t.Errorf("%q is not a valid AMI name", got)
		}
		// ParseName reads back what Name wrote.
		p, ok := ParseName(got)
		if !ok || p.Policy != tt.policy || p.InstanceID != tt.instance || !p.Slot.Equal(slot) {
			t.Errorf("ParseName(%q) = %+v, %v", got, p, ok)
		}
	}
	for _, dep := range []string{"d", "dr-eu", strings.Repeat("D-9", 21) + "x"} { // 1 to 64 characters
		if n := CopyName(dep, "111111111111", "ami-0123456789abcdef0"); !ValidName(n) || !strings.Contains(n, dep) {
			t.Errorf("copy name %q (%d characters) invalid", n, len(n))
		}
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
		want Parsed
	}{
		{"amibackup-web-i-0123456789abcdef0-20261124T030000Z", true,
			Parsed{"web", "i-0123456789abcdef0", time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)}},
		{"amibackup-a-b-i-12345678-20260101T000000Z", true, Parsed{"a-b", "i-12345678", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}},
		// The shape of a name, but no valid time: read, without a slot.
		{"amibackup-web-i-12345678-20261399T990000Z", true, Parsed{Policy: "web", InstanceID: "i-12345678"}},
		{CopyName("dr", "111111111111", "ami-0123456789abcdef0"), false, Parsed{}},
		{"amibackup-Web-i-12345678-20261124T030000Z", false, Parsed{}},
		{"amibackup-web-i-12345678-20261124T030000", false, Parsed{}},
		{"x-amibackup-web-i-12345678-20261124T030000Z", false, Parsed{}},
		{"", false, Parsed{}},
	}
	for _, tc := range tests {
		got, ok := ParseName(tc.name)
		if ok != tc.ok || got.Policy != tc.want.Policy || got.InstanceID != tc.want.InstanceID || !got.Slot.Equal(tc.want.Slot) {
			t.Errorf("ParseName(%q) = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestValidName(t *testing.T) {
	tests := map[string]bool{
		"ab":                        false,
		"abc":                       true,
		strings.Repeat("a", 128):    true,
		strings.Repeat("a", 129):    false,
		"name with (parens) [x] @'": true,
		"bad#char":                  false,
		"bad:colon":                 false,
	}
	for in, want := range tests {
		if got := ValidName(in); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestDescribesDeployment(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	desc := Description("prod-eu", "nightly", "i-0123456789abcdef0", slot, true)
	for _, tc := range []struct {
		deployment string
		want       bool
	}{{"prod-eu", true}, {"prod", false}, {"prod-e", false}, {"", false}} {
		if got := DescribesDeployment(desc, tc.deployment); got != tc.want {
			t.Errorf("DescribesDeployment(%q, %q) = %v", desc, tc.deployment, got)
		}
	}
	if len(desc) > 255 {
		t.Errorf("description is %d characters; EC2 allows 255", len(desc))
	}
}

func TestDeprecationTime(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		created time.Time
		age     time.Duration
		want    time.Time
	}{
		{slot, 24 * time.Hour, slot.Add(24 * time.Hour)},
		{slot.Add(30 * time.Second), time.Hour, slot.Add(time.Hour + time.Minute)},
	} {
		if got := DeprecationTime(tc.created, tc.age); !got.Equal(tc.want) {
			t.Errorf("DeprecationTime(%v, %v) = %v, want %v", tc.created, tc.age, got, tc.want)
		}
	}
}
