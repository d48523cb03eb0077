package tags

import "testing"

func TestIsReserved(t *testing.T) {
	for key, want := range map[string]bool{"aws:x": true, "amibackup:policy": true, "Name": false, "team": false} {
		if IsReserved(key) != want {
			t.Errorf("IsReserved(%q) != %v", key, want)
		}
	}
}
