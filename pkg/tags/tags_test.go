package tags

import (
	"testing"
	"time"
)

func TestIsReserved(t *testing.T) {
	for key, want := range map[string]bool{"aws:x": true, "amibackup:policy": true, "Name": false, "team": false} {
		if IsReserved(key) != want {
			t.Errorf("IsReserved(%q) != %v", key, want)
		}
	}
}

func TestParseTimeReadsFormatTime(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 11, 24, 4, 0, 0, 0, berlin)
	got, err := ParseTime(FormatTime(slot))
	if err != nil || !got.Equal(slot) || got.Location() != time.UTC {
		t.Fatalf("ParseTime(FormatTime(%v)) = %v, %v", slot, got, err)
	}
	if _, err := ParseTime("20261124T030000Z"); err == nil {
		t.Fatal("a name's time layout read as a tag value")
	}
}

// TestParseVerified: the one reading of the verification tags (prune's
// retention floor and the verify planner).
func TestParseVerified(t *testing.T) {
	at := time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name  string
		tags  map[string]string
		want  Verification
		holds bool
		bad   bool
	}{
		{name: "none", tags: map[string]string{}},
		{name: "verified", tags: map[string]string{Verified: FormatTime(at)}, want: Verification{At: at}, holds: true},
		{name: "failed", tags: map[string]string{Verify: VerifyFailed, VerifyError: "impaired"}, want: Verification{Failed: true, Error: "impaired"}},
		{name: "verified, later failed", tags: map[string]string{Verified: FormatTime(at), Verify: VerifyFailed},
			want: Verification{At: at, Failed: true}},
		{name: "unreadable", tags: map[string]string{Verified: "yesterday"}, bad: true},
		{name: "empty value", tags: map[string]string{Verified: ""}, bad: true},
		{name: "other verify value", tags: map[string]string{Verified: FormatTime(at), Verify: "pending"}, want: Verification{At: at}, holds: true},
	} {
		got, err := ParseVerified(c.tags)
		if got != c.want || got.Holds() != c.holds || (err != nil) != c.bad {
			t.Errorf("%s: %+v (holds %v), %v; want %+v (holds %v), error %v", c.name, got, got.Holds(), err, c.want, c.holds, c.bad)
		}
	}
}
