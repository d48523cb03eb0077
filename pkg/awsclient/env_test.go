package awsclient_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

func describe(ctx context.Context, cfg aws.Config) error {
	_, err := ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{MaxResults: aws.Int32(1000)})
	return err
}

// TestLoadConfigHonoursCABundle: with AWS_CA_BUNDLE set, LoadConfig
// succeeds (it used to fail: "unable to add custom RootCAs HTTPClient, has
// no WithTransportOptions") and the bundle is what makes the emulator's
// certificate trusted: without it the same call fails verification.
func TestLoadConfigHonoursCABundle(t *testing.T) {
	tests := []struct {
		name              string
		bundle            func(e *simtest.Env) string
		loadErr, callErr  string
		wantDescribeCalls int
	}{
		{"valid bundle", func(e *simtest.Env) string { return e.CABundle }, "", "", 1},
		{"no bundle", func(*simtest.Env) string { return "" }, "", "certificate signed by unknown authority", 0},
		{"missing file", func(*simtest.Env) string { return "/nonexistent/ca.pem" }, "/nonexistent/ca.pem", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// 10 ms of latency, as any network has: with one attempt
			// (AWS_MAX_ATTEMPTS=1, for exact call counts) a zero-latency
			// loopback answer races the SDK's body read ("use of closed
			// network connection"; measured: 0 of 2,000 calls at 10 ms).
			e := simtest.StartTLS(t, ec2sim.Options{Latency: 10 * time.Millisecond})
			e.Sim.SeedFleet("", "", 3, nil)
			e.Setenv(t, "", "")
			t.Setenv("AWS_CA_BUNDLE", tt.bundle(e))
			t.Setenv("AWS_MAX_ATTEMPTS", "1")
			ctx := context.Background()
			cfg, _, err := awsclient.LoadConfig(ctx)
			if tt.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.loadErr) {
					t.Fatalf("LoadConfig: %v, want an error naming %q", err, tt.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("LoadConfig: %v", err)
			}
			err = describe(ctx, cfg)
			if tt.callErr == "" && err != nil || tt.callErr != "" && (err == nil || !strings.Contains(err.Error(), tt.callErr)) {
				t.Fatalf("DescribeInstances: %v, want error %q", err, tt.callErr)
			}
			if got := e.Sim.Calls().Count("DescribeInstances"); got != tt.wantDescribeCalls {
				t.Errorf("emulator served %d DescribeInstances, want %d", got, tt.wantDescribeCalls)
			}
		})
	}
}

// TestRetryEnvironmentHonoured: AWS_RETRY_MODE and AWS_MAX_ATTEMPTS, when
// set, win over amibackup's defaults (they used to be silently replaced by
// the custom retryer); unset, the defaults hold. Where the attempts are few
// enough to wait for, an EC2 call failing with InternalError every time
// shows the effective number of attempts on the emulator's call log.
func TestRetryEnvironmentHonoured(t *testing.T) {
	tests := []struct {
		name, mode, attempts string
		want                 awsclient.RetrySettings
		err                  string
	}{
		{"unset", "", "", awsclient.DefaultRetrySettings(), ""},
		{"standard mode", "standard", "", awsclient.RetrySettings{Mode: aws.RetryModeStandard, MaxAttempts: 12, MaxBackoff: 8 * time.Second, ModeFrom: "environment", MaxAttemptsFrom: "default"}, ""},
		{"attempts only", "", "2", awsclient.RetrySettings{Mode: aws.RetryModeAdaptive, MaxAttempts: 2, MaxBackoff: 8 * time.Second, ModeFrom: "default", MaxAttemptsFrom: "environment"}, ""},
		{"standard, 3 attempts", "standard", "3", awsclient.RetrySettings{Mode: aws.RetryModeStandard, MaxAttempts: 3, MaxBackoff: 8 * time.Second, ModeFrom: "environment", MaxAttemptsFrom: "environment"}, ""},
		{"adaptive, no retries", "adaptive", "1", awsclient.RetrySettings{Mode: aws.RetryModeAdaptive, MaxAttempts: 1, MaxBackoff: 8 * time.Second, ModeFrom: "environment", MaxAttemptsFrom: "environment"}, ""},
		{"unknown mode", "legacy", "", awsclient.RetrySettings{}, "AWS_RETRY_MODE"},
		{"negative attempts", "", "-1", awsclient.RetrySettings{}, "AWS_MAX_ATTEMPTS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Network-like latency: see TestLoadConfigHonoursCABundle.
			e := simtest.Start(t, ec2sim.Options{Latency: 10 * time.Millisecond})
			e.Setenv(t, "", "")
			t.Setenv("AWS_RETRY_MODE", tt.mode)
			t.Setenv("AWS_MAX_ATTEMPTS", tt.attempts)
			ctx := context.Background()
			cfg, got, err := awsclient.LoadConfig(ctx)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("LoadConfig: %v, want an error naming %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("settings %+v, want %+v", got, tt.want)
			}
			r := cfg.Retryer()
			if r.MaxAttempts() != tt.want.MaxAttempts {
				t.Errorf("retryer allows %d attempts, want %d", r.MaxAttempts(), tt.want.MaxAttempts)
			}
			_, adaptive := r.(*retry.AdaptiveMode)
			if adaptive != (tt.want.Mode == aws.RetryModeAdaptive) {
				t.Errorf("retryer %T for mode %s", r, tt.want.Mode)
			}
			if tt.want.MaxAttempts > 3 {
				return // the backoff of 12 attempts takes too long to watch
			}
			e.Sim.Inject(ec2sim.Fault{Action: "DescribeInstances", Code: "InternalError"})
			if err := describe(ctx, cfg); awsclient.ErrorCode(err) != "InternalError" {
				t.Fatalf("DescribeInstances: %v, want InternalError", err)
			}
			if got := e.Sim.Calls().Faults["DescribeInstances"]; got != tt.want.MaxAttempts {
				t.Errorf("%d attempts reached EC2, want %d", got, tt.want.MaxAttempts)
			}
		})
	}
}

// TestAttemptTimeout: the production client bounds every attempt with
// AttemptTimeout, and the SDK keeps that bound when it adds the CA bundle
// and its per-client settings.
func TestAttemptTimeout(t *testing.T) {
	if got := awsclient.HTTPClient().GetTimeout(); got != awsclient.AttemptTimeout {
		t.Fatalf("HTTPClient timeout %v, want %v", got, awsclient.AttemptTimeout)
	}
	e := simtest.StartTLS(t, ec2sim.Options{})
	e.Setenv(t, "", "")
	cfg, _, err := awsclient.LoadConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b, ok := ec2.NewFromConfig(cfg).Options().HTTPClient.(*awshttp.BuildableClient)
	if !ok || b.GetTimeout() != awsclient.AttemptTimeout {
		t.Fatalf("EC2 client's HTTP client %T (ok %v) without the attempt timeout", ec2.NewFromConfig(cfg).Options().HTTPClient, ok)
	}
}

// TestHungAttemptAbandoned: an EC2 call that hangs (ec2sim holds it) is
// abandoned after the attempt timeout and retried, and the retry answers;
// a slow answer inside the bound is not cut. The whole call stays within
// the attempt timeout plus one backoff, far below the hang.
func TestHungAttemptAbandoned(t *testing.T) {
	const attempt = 500 * time.Millisecond
	tests := []struct {
		name      string
		delay     time.Duration
		wantCalls int
		within    time.Duration
	}{
		{"hung first attempt", time.Minute, 2, attempt + 2*time.Second},
		{"slow answer inside the bound", 200 * time.Millisecond, 1, attempt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := simtest.Start(t, ec2sim.Options{})
			e.Sim.SeedFleet("", "", 2, nil)
			e.Setenv(t, "", "")
			e.Sim.Inject(ec2sim.Fault{Action: "DescribeInstances", Nth: 1, Delay: tt.delay})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg, _, err := awsclient.LoadConfig(ctx, config.WithHTTPClient(awsclient.NewHTTPClient(attempt)))
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			out, err := ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
			took := time.Since(t0)
			if err != nil || len(out.Reservations) != 2 {
				t.Fatalf("DescribeInstances after %v: %v", took, err)
			}
			if errors.Is(ctx.Err(), context.DeadlineExceeded) || took > tt.within {
				t.Errorf("call took %v, want at most %v", took, tt.within)
			}
			if got := e.Sim.Calls().Count("DescribeInstances"); got != tt.wantCalls {
				t.Errorf("%d attempts reached EC2, want %d", got, tt.wantCalls)
			}
		})
	}
}
