package awsclient

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/smithy-go"
)

// TestErrorPredicates: each predicate answers true for its codes only,
// also through wrapping, and false for non-API errors and nil.
func TestErrorPredicates(t *testing.T) {
	preds := map[string]func(error) bool{
		"ImageGone": ImageGone, "SnapshotGone": SnapshotGone, "SnapshotInUse": SnapshotInUse,
		"DuplicateName": DuplicateName, "DryRunOK": DryRunOK, "Throttled": Throttled,
		"LimitExceeded": LimitExceeded, "Unauthorized": Unauthorized,
	}
	tests := []struct {
		code string
		true []string // the predicates that hold
	}{
		{"InvalidAMIID.NotFound", []string{"ImageGone"}},
		{"InvalidAMIID.Unavailable", []string{"ImageGone"}},
		{"InvalidSnapshot.NotFound", []string{"SnapshotGone"}},
		{"InvalidSnapshot.InUse", []string{"SnapshotInUse"}},
		{"InvalidAMIName.Duplicate", []string{"DuplicateName"}},
		{"DryRunOperation", []string{"DryRunOK"}},
		{"RequestLimitExceeded", []string{"Throttled"}},
		{"ResourceLimitExceeded", []string{"LimitExceeded"}},
		{"UnauthorizedOperation", []string{"Unauthorized"}},
		{"InternalError", nil},
	}
	for _, tc := range tests {
		err := fmt.Errorf("call: %w", &smithy.GenericAPIError{Code: tc.code, Message: "m"})
		for name, p := range preds {
			want := false
			for _, n := range tc.true {
				want = want || n == name
			}
			if got := p(err); got != want {
				t.Errorf("%s(%s) = %v, want %v", name, tc.code, got, want)
			}
			if p(nil) || p(errors.New(tc.code)) {
				t.Errorf("%s holds for nil or a plain error naming %s", name, tc.code)
			}
		}
	}
}
