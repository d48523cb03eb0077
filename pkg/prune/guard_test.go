package prune

import (
	"fmt"
	"strings"
	"testing"

	"github.com/amibackup/amibackup/pkg/retention"
)

// TestGuard drives the blast-radius guard with crafted plans, including the
// whole-history case the retention floors normally prevent (the guard is
// the second line of defence if they ever regress).
func TestGuard(t *testing.T) {
	img := func(instance, state string, keep bool) *candidate {
		return &candidate{entry: PlanEntry{ImageID: "ami-" + instance, InstanceID: instance, Policy: "nightly", State: state, Keep: keep}}
	}
	av, failed := string(retention.Available), string(retention.Failed)
	undecidable := func() *candidate {
		c := img("", av, true)
		c.undecidable = "tag amibackup:instance-id is \"\": kept"
		return c
	}
	tests := []struct {
		name string
		plan []*candidate
		want string // substring of the reason; "" means allowed
	}{
		{"nothing to delete", []*candidate{img("i-1", av, true)}, ""},
		{"half is allowed", []*candidate{img("i-1", av, true), img("i-1", av, false), img("i-2", av, true), img("i-2", av, false)}, ""},
		{"more than half", []*candidate{img("i-1", av, true), img("i-1", av, false), img("i-1", av, false)}, "2 of 3 images"},
		{"whole history", []*candidate{img("i-1", av, true), img("i-1", av, true), img("i-1", av, true), img("i-2", av, false)}, "whole history of nightly/i-2"},
		{"failed images do not count", []*candidate{img("i-1", av, true), img("i-1", failed, false), img("i-1", failed, false), img("i-1", failed, false)}, ""},
		{"failed images do not dilute", []*candidate{img("i-1", av, true), img("i-1", av, false), img("i-1", av, false),
			img("i-1", failed, false), img("i-1", failed, false), img("i-1", failed, false)}, "2 of 3 images"},
		{"undecidable images do not dilute", []*candidate{img("i-1", av, true), img("i-1", av, false), img("i-1", av, false),
			undecidable(), undecidable(), undecidable()}, "2 of 3 images"},
		{"empty plan", nil, ""},
		{"thousands of wiped histories are named ten", wipedHistories(3000), "and 2990 more (3000 instances)"},
	}
	for _, tt := range tests {
		if got := guard(tt.plan, 0.5); len(got) > 1000 {
			t.Errorf("%s: reason of %d bytes: it is part of the response, the log line and the error", tt.name, len(got))
		}
		t.Run(tt.name, func(t *testing.T) {
			got := guard(tt.plan, 0.5)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Fatalf("guard = %q, want %q", got, tt.want)
			}
		})
	}
}

// wipedHistories is a plan deleting the one image of each of n instances.
func wipedHistories(n int) []*candidate {
	var plan []*candidate
	for i := range n {
		id := fmt.Sprintf("i-%017x", i)
		plan = append(plan, &candidate{entry: PlanEntry{ImageID: "ami-" + id[2:], InstanceID: id, Policy: "nightly", State: string(retention.Available)}})
	}
	return plan
}
