package coldstart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/amibackup/amibackup/pkg/coldstart"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/ec2sim"
	"github.com/amibackup/amibackup/pkg/ec2sim/simtest"
)

const minimal = `{"deployment":"AmiBackup","policies":[{"name":"nightly","selector":{"tagKey":"Backup","tagValues":["nightly"]},
 "schedule":{"expression":"cron(0 3 * * ? *)"},"retention":{"daily":7}}]}`

// TestInitWithUserEnvironment: a cold start in the SDK's standard
// environment of a user behind a TLS-inspecting proxy succeeds (with
// AWS_CA_BUNDLE set it used to fail: "unable to add custom RootCAs
// HTTPClient"), its EC2 client trusts the bundle, and the one cold-start
// line reports the effective retry settings, the user's where set.
func TestInitWithUserEnvironment(t *testing.T) {
	tests := []struct {
		name, mode, attempts string
		want                 map[string]any
	}{
		{"defaults", "", "", map[string]any{"retryMode": "adaptive", "retryModeFrom": "default", "maxAttempts": 12.0, "maxAttemptsFrom": "default", "maxBackoff": "8s", "retryQuota": false, "attemptTimeout": "30s"}},
		{"user's retry settings", "standard", "4", map[string]any{"retryMode": "standard", "retryModeFrom": "environment", "maxAttempts": 4.0, "maxAttemptsFrom": "environment"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := simtest.StartTLS(t, ec2sim.Options{})
			e.Sim.SeedFleet("", "", 2, map[string]string{"Backup": "nightly"})
			e.Setenv(t, "", "")
			t.Setenv(config.EnvVar, minimal)
			t.Setenv("AWS_RETRY_MODE", tt.mode)
			t.Setenv("AWS_MAX_ATTEMPTS", tt.attempts)
			var logs bytes.Buffer
			env, err := coldstart.Init(context.Background(), "backup", nil, slog.NewJSONHandler(&logs, nil))
			if err != nil {
				t.Fatalf("cold start: %v", err)
			}
			out, err := ec2.NewFromConfig(env.AWS).DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5)})
			if err != nil || len(out.Reservations) != 2 {
				t.Fatalf("DescribeInstances with the cold start's configuration: %v", err)
			}
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			var rec map[string]any
			if len(lines) != 1 || json.Unmarshal([]byte(lines[0]), &rec) != nil || rec["msg"] != coldstart.SDKSettingsMessage {
				t.Fatalf("cold start logged %q, want one %q line", logs.String(), coldstart.SDKSettingsMessage)
			}
			for k, v := range tt.want {
				if rec[k] != v {
					t.Errorf("%s = %v, want %v (line %s)", k, rec[k], v, lines[0])
				}
			}
		})
	}
}

// TestInitBadRetryEnvironment: an invalid AWS_RETRY_MODE fails the cold
// start with an error naming the variable.
func TestInitBadRetryEnvironment(t *testing.T) {
	e := simtest.Start(t, ec2sim.Options{})
	e.Setenv(t, "", "")
	t.Setenv(config.EnvVar, minimal)
	t.Setenv("AWS_RETRY_MODE", "fast")
	_, err := coldstart.Init(context.Background(), "backup", nil, slog.NewJSONHandler(&bytes.Buffer{}, nil))
	if err == nil || !strings.Contains(err.Error(), "AWS_RETRY_MODE") {
		t.Fatalf("cold start: %v, want an error naming AWS_RETRY_MODE", err)
	}
}
