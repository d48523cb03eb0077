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
	live := context.Background()
	gaveUp, cancel := context.WithCancel(live)
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"InternalError 500", live, answered(500, "InternalError"), true},
		{"Unavailable 503", live, answered(503, "Unavailable"), true},
		{"RequestLimitExceeded 503", live, answered(503, "RequestLimitExceeded"), false},
		{"InvalidAMIName.Duplicate 400", live, answered(400, "InvalidAMIName.Duplicate"), false},
		{"UnauthorizedOperation 403", live, answered(403, "UnauthorizedOperation"), false},
		{"connection reset, no answer", live, &smithy.OperationError{ServiceID: "EC2", OperationName: "CreateImage", Err: errors.New("read: connection reset by peer")}, true},
		{"caller gave up", gaveUp, fmt.Errorf("send: %w", context.Canceled), false},
		// Review findings: the attempt timeout matches DeadlineExceeded but
		// the SDK retries it; a 200 whose body broke off was carried out.
		{"attempt timeout, caller still waiting", live, fmt.Errorf("send: %w", context.DeadlineExceeded), true},
		{"200, connection reset while reading the body", live, answered(200, ""), true},
	} {
		if got := mayHaveApplied(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: mayHaveApplied = %v, want %v", tc.name, got, tc.want)
		}
	}
}
