package tags

import (
	"strings"
	"testing"
	"time"
)

func TestImageNameIsDeterministicAndValid(t *testing.T) {
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
		got := ImageName(tt.policy, tt.instance, slot)
		if got != tt.want {
			t.Errorf("ImageName = %q, want %q", got, tt.want)
		}
		if got != ImageName(tt.policy, tt.instance, slot.UTC()) {
			t.Errorf("name depends on the slot's zone")
		}
		if !ValidImageName(got) {
			t.Errorf("%q is not a valid AMI name", got)
		}
	}
	for _, dep := range []string{"d", "dr-eu", strings.Repeat("D-9", 21) + "x"} { // 1 to 64 characters
		if n := CopyName(dep, "111111111111", "ami-0123456789abcdef0"); !ValidImageName(n) || !strings.Contains(n, dep) {
			t.Errorf("copy name %q (%d characters) invalid", n, len(n))
		}
	}
}

func TestValidImageName(t *testing.T) {
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
		if got := ValidImageName(in); got != want {
			t.Errorf("ValidImageName(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestIsReserved(t *testing.T) {
	for key, want := range map[string]bool{"aws:x": true, "amibackup:policy": true, "Name": false, "team": false} {
		if IsReserved(key) != want {
			t.Errorf("IsReserved(%q) != %v", key, want)
		}
	}
}

func TestDescribesDeployment(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	desc := ImageDescription("prod-eu", "nightly", "i-0123456789abcdef0", slot, true)
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
