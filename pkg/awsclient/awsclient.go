// Package awsclient builds the AWS SDK clients the functions share. It uses
// only the SDK's standard configuration chain, so AWS_REGION,
// AWS_ENDPOINT_URL_EC2 and credentials work unchanged in Lambda, locally and
// in tests; there is no special code path for emulators.
package awsclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// Retry settings. EC2 answers RequestLimitExceeded when a bucket is empty;
// its buckets refill at 1-20 tokens per second, so a throttled call
// succeeds within seconds. Enough attempts with capped backoff ride that
// out instead of failing an instance for throttling.
const (
	MaxAttempts = 12
	MaxBackoff  = 8 * time.Second
)

// NewRetryer returns the adaptive retryer: it slows the client down when EC2
// throttles (client-side rate limiting), which is what keeps a whole run
// inside EC2's buckets.
//
// The standard retryer also keeps a client-wide retry quota (500 tokens, 5
// per retry) meant to stop retry storms against a failing service. Under
// deliberate throttling of hundreds of calls that quota runs dry and calls
// fail with "retry quota exceeded" although EC2 is healthy; the adaptive
// rate limiter already bounds the load, so the quota is switched off.
func NewRetryer() aws.Retryer {
	return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, func(so *retry.StandardOptions) {
			so.MaxAttempts = MaxAttempts
			so.MaxBackoff = MaxBackoff
			so.RateLimiter = ratelimit.None
		})
	})
}

// LoadConfig loads the standard AWS configuration with amibackup's retryer.
func LoadConfig(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, error) {
	opts := append([]func(*config.LoadOptions) error{
		config.WithRetryer(NewRetryer),
		config.WithHTTPClient(HTTPClient()),
	}, optFns...)
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	return cfg, nil
}

// NewEC2 returns an EC2 client from the standard configuration.
func NewEC2(ctx context.Context, optFns ...func(*config.LoadOptions) error) (*ec2.Client, error) {
	cfg, err := LoadConfig(ctx, optFns...)
	if err != nil {
		return nil, err
	}
	return ec2.NewFromConfig(cfg), nil
}

// ErrorCode returns the AWS API error code of err ("InvalidAMIName.Duplicate",
// "RequestLimitExceeded", ...), or "" when err is not an API error.
func ErrorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// ImageGone reports whether err says the image no longer exists; cleanup
// treats these answers as already done.
func ImageGone(err error) bool {
	switch ErrorCode(err) {
	case "InvalidAMIID.NotFound", "InvalidAMIID.Unavailable":
		return true
	}
	return false
}

// TagMap turns EC2 tags into a map by key.
func TagMap(ts []types.Tag) map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
