package awsclient

import (
	"errors"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

func TestErrorCodeAndImageGone(t *testing.T) {
	api := func(code string) error {
		return fmt.Errorf("deregister image: %w", &smithy.GenericAPIError{Code: code, Message: "m"})
	}
	tests := []struct {
		err  error
		code string
		gone bool
	}{
		{api("InvalidAMIID.NotFound"), "InvalidAMIID.NotFound", true},
		{api("InvalidAMIID.Unavailable"), "InvalidAMIID.Unavailable", true},
		{api("InvalidSnapshot.NotFound"), "InvalidSnapshot.NotFound", false},
		{api("RequestLimitExceeded"), "RequestLimitExceeded", false},
		{errors.New("dial tcp: refused"), "", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		if got := ErrorCode(tt.err); got != tt.code {
			t.Errorf("ErrorCode(%v) = %q, want %q", tt.err, got, tt.code)
		}
		if got := ImageGone(tt.err); got != tt.gone {
			t.Errorf("ImageGone(%v) = %v, want %v", tt.err, got, tt.gone)
		}
	}
}

func TestTagMap(t *testing.T) {
	m := TagMap([]types.Tag{{Key: aws.String("a"), Value: aws.String("1")}, {Key: aws.String("b"), Value: aws.String("")}})
	if len(m) != 2 || m["a"] != "1" || m["b"] != "" {
		t.Fatalf("TagMap = %v", m)
	}
	if m := TagMap(nil); m == nil || len(m) != 0 {
		t.Fatalf("TagMap(nil) = %v, want an empty map", m)
	}
}
