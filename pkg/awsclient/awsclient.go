// Package awsclient builds the AWS SDK clients the functions share. It uses
// only the SDK's standard configuration chain, so AWS_REGION,
// AWS_ENDPOINT_URL_EC2 and credentials work unchanged in Lambda, locally and
// in tests; there is no special code path for emulators.
package awsclient

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// amibackup's retry defaults. EC2 answers RequestLimitExceeded when a
// bucket is empty; its buckets refill at 1-20 tokens per second, so a
// throttled call succeeds within seconds. Enough attempts with capped
// backoff ride that out instead of failing an instance for throttling. The
// SDK's own defaults are standard mode, 3 attempts and a 20 s backoff cap.
const (
	DefaultRetryMode = aws.RetryModeAdaptive
	MaxAttempts      = 12
	MaxBackoff       = 8 * time.Second
)

// RetrySettings are the effective retry settings of a configuration.
type RetrySettings struct {
	Mode        aws.RetryMode
	MaxAttempts int
	MaxBackoff  time.Duration
	// ModeFrom and MaxAttemptsFrom say where the value came from: "default"
	// (amibackup's) or "environment" (AWS_RETRY_MODE / AWS_MAX_ATTEMPTS, or
	// retry_mode / max_attempts in the shared config file).
	ModeFrom, MaxAttemptsFrom string
}

// DefaultRetrySettings are amibackup's defaults: adaptive mode, 12 attempts,
// 8 s backoff cap.
func DefaultRetrySettings() RetrySettings {
	return RetrySettings{Mode: DefaultRetryMode, MaxAttempts: MaxAttempts, MaxBackoff: MaxBackoff, ModeFrom: "default", MaxAttemptsFrom: "default"}
}

// NewRetryer returns the retryer of amibackup's default settings.
func NewRetryer() aws.Retryer { return DefaultRetrySettings().NewRetryer() }

// NewRetryer returns the SDK retryer for s. Adaptive mode slows the client
// down when EC2 throttles (client-side rate limiting), which is what keeps
// a whole run inside EC2's buckets; standard mode only backs off.
//
// The SDK's retryers also keep a client-wide retry quota (500 tokens, 5 per
// retry) meant to stop retry storms against a failing service. Under
// deliberate throttling of hundreds of calls that quota runs dry and calls
// fail with "retry quota exceeded" although EC2 is healthy; the backoff (and
// in adaptive mode the rate limiter) already bounds the load, so the quota
// is switched off in both modes.
func (s RetrySettings) NewRetryer() aws.Retryer {
	std := func(so *retry.StandardOptions) {
		so.MaxAttempts = s.MaxAttempts
		so.MaxBackoff = s.MaxBackoff
		so.RateLimiter = ratelimit.None
	}
	if s.Mode == aws.RetryModeStandard {
		return retry.NewStandard(std)
	}
	return retry.NewAdaptiveMode(func(o *retry.AdaptiveModeOptions) {
		o.StandardOptions = append(o.StandardOptions, std)
	})
}

// LogAttrs are the settings as log attributes; the functions log them once
// at cold start.
func (s RetrySettings) LogAttrs() []any {
	return []any{"retryMode", string(s.Mode), "retryModeFrom", s.ModeFrom,
		"maxAttempts", s.MaxAttempts, "maxAttemptsFrom", s.MaxAttemptsFrom,
		"maxBackoff", s.MaxBackoff.String(), "retryQuota", false, "attemptTimeout", AttemptTimeout.String()}
}

// retrySettings resolves the effective settings of a loaded configuration:
// the user's AWS_RETRY_MODE and AWS_MAX_ATTEMPTS (or the shared config
// file's retry_mode and max_attempts, which the SDK resolved into cfg) win
// over amibackup's defaults, each on its own.
func retrySettings(cfg aws.Config) (RetrySettings, error) {
	s := DefaultRetrySettings()
	if cfg.RetryMode != "" {
		s.Mode, s.ModeFrom = cfg.RetryMode, "environment"
	}
	switch {
	case cfg.RetryMaxAttempts < 0:
		return s, fmt.Errorf("AWS_MAX_ATTEMPTS (or max_attempts) is %d: set a positive number of attempts (1 disables retries) or unset it for amibackup's default of %d", cfg.RetryMaxAttempts, MaxAttempts)
	case cfg.RetryMaxAttempts > 0:
		s.MaxAttempts, s.MaxAttemptsFrom = cfg.RetryMaxAttempts, "environment"
	}
	return s, nil
}

// LoadConfig loads the standard AWS configuration (environment, shared
// files, AWS_CA_BUNDLE, proxies through HTTPS_PROXY/NO_PROXY, endpoints) with
// amibackup's HTTP client and retryer, and returns the effective retry
// settings. The retry environment (AWS_RETRY_MODE, AWS_MAX_ATTEMPTS) is
// honoured: a value the user set replaces amibackup's default for that
// setting; the backoff cap and the absent retry quota stay.
func LoadConfig(ctx context.Context, optFns ...func(*config.LoadOptions) error) (aws.Config, RetrySettings, error) {
	// No config.WithRetryer here: with one, the SDK skips reading
	// AWS_RETRY_MODE and AWS_MAX_ATTEMPTS altogether.
	opts := append([]func(*config.LoadOptions) error{config.WithHTTPClient(HTTPClient())}, optFns...)
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, RetrySettings{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	s, err := retrySettings(cfg)
	if err != nil {
		return aws.Config{}, RetrySettings{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	// A caller's config.WithRetryer (tests) stays; s then describes what
	// amibackup would have used.
	if cfg.Retryer == nil {
		cfg.Retryer = s.NewRetryer
		cfg.RetryMode, cfg.RetryMaxAttempts = s.Mode, s.MaxAttempts
	}
	return cfg, s, nil
}

// NewEC2 returns an EC2 client from the standard configuration.
func NewEC2(ctx context.Context, optFns ...func(*config.LoadOptions) error) (*ec2.Client, error) {
	cfg, _, err := LoadConfig(ctx, optFns...)
	if err != nil {
		return nil, err
	}
	return ec2.NewFromConfig(cfg), nil
}

// TagMap turns EC2 tags into a map by key.
func TagMap(ts []types.Tag) map[string]string {
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}
