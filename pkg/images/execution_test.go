package images_test

import (
	"strings"
	"testing"
	"time"

	"github.com/amibackup/amibackup/pkg/images"
)

// TestExecutionName: within Step Functions' 80 characters for the longest
// policy name pkg/config allows (32), none of the characters an execution
// name must not contain, and read back by ParseExecutionName.
func TestExecutionName(t *testing.T) {
	slot := time.Date(2026, 11, 24, 3, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, c := range []struct {
		policy string
		dry    bool
		want   string
	}{
		{"nightly", false, "nightly-20261124T020000Z"},
		{"nightly", true, "nightly-20261124T020000Z-dry-run"},
		{strings.Repeat("p", 32), true, strings.Repeat("p", 32) + "-20261124T020000Z-dry-run"},
		{"a-b-9", false, "a-b-9-20261124T020000Z"},
	} {
		n := images.ExecutionName(c.policy, slot, c.dry)
		if n != c.want {
			t.Errorf("%s %v: %q, want %q", c.policy, c.dry, n, c.want)
		}
		if len(n) > images.MaxExecutionName {
			t.Errorf("%q: %d characters, Step Functions allows %d", n, len(n), images.MaxExecutionName)
		}
		if strings.ContainsAny(n, " \t\n<>{}[]?*\"#%\\^|~`$&,;:/") {
			t.Errorf("%q contains a character Step Functions rejects", n)
		}
		p, ok := images.ParseExecutionName(n)
		if !ok || p.Policy != c.policy || !p.Slot.Equal(slot) || p.DryRun != c.dry {
			t.Errorf("ParseExecutionName(%q) = %+v %v", n, p, ok)
		}
	}
	for _, n := range []string{"", "nightly", "0f6b3c1e-7d2a-4b8e-9c1f-1a2b3c4d5e6f", "nightly-2026-11-24T03:00:00Z", "nightly-20261324T030000Z", "Nightly-20261124T030000Z"} {
		if p, ok := images.ParseExecutionName(n); ok {
			t.Errorf("ParseExecutionName(%q) = %+v, want not ours", n, p)
		}
	}
}
