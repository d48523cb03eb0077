package backup

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// TestMayHaveApplied: only an attempt EC2 may have carried out (a 5xx, or
// no answer at all) makes a later duplicate name this call's own image;
// throttling (503 RequestLimitExceeded) and 4xx answers never do.
func TestMayHaveApplied(t *testing.T) {
	answered := func(status int, code string) error {
		return fmt.Errorf("operation error EC2: CreateImage, %w", &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
			Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
			Err:      &smithy.GenericAPIError{Code: code, Message: "m"},
		}})
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"InternalError 500", answered(500, "InternalError"), true},
		{"Unavailable 503", answered(503, "Unavailable"), true},
		{"RequestLimitExceeded 503", answered(503, "RequestLimitExceeded"), false},
		{"InvalidAMIName.Duplicate 400", answered(400, "InvalidAMIName.Duplicate"), false},
		{"UnauthorizedOperation 403", answered(403, "UnauthorizedOperation"), false},
		{"connection reset, no answer", &smithy.OperationError{ServiceID: "EC2", OperationName: "CreateImage", Err: errors.New("read: connection reset by peer")}, true},
		{"caller gave up", fmt.Errorf("send: %w", context.DeadlineExceeded), false},
	} {
		if got := mayHaveApplied(tc.err); got != tc.want {
			t.Errorf("%s: mayHaveApplied = %v, want %v", tc.name, got, tc.want)
		}
	}
}
