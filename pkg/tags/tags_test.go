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
