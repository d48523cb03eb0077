// Package coldstart does what every function does once per execution
// environment, before its first event: a JSON logger, the validated
// configuration from AMIBACKUP_CONFIG and the AWS SDK configuration.
package coldstart

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/amibackup/amibackup/pkg/awsclient"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/logging"
)

// SDKSettingsMessage is the message of the cold-start line that reports the
// effective AWS SDK retry settings.
const SDKSettingsMessage = "AWS SDK settings"

// Env is what a function's handler needs.
type Env struct {
	Log     *slog.Logger
	Config  *config.Config
	AWS     aws.Config
	Metrics *emf.Writer
}

// Init builds the Env; require checks that the configuration has the
// sections this function needs; handler is the log handler (the functions
// pass lambdacontext's, nil means logging.New's JSON handler). The logger
// is usable even on error.
func Init(ctx context.Context, function string, require func(*config.Config) error, handler slog.Handler) (Env, error) {
	log := logging.New(os.Stdout)
	if handler != nil {
		log = slog.New(handler)
	}
	env := Env{Log: log.With("function", function), Metrics: emf.New(os.Stdout)}
	cfg, err := config.FromEnv()
	if err == nil && require != nil {
		err = require(cfg)
	}
	if err != nil {
		return env, fmt.Errorf("invalid configuration, fix AMIBACKUP_CONFIG (the stack sets it from cdk.json / -c amibackup:config): %w", err)
	}
	env.Config = cfg
	var retry awsclient.RetrySettings
	if env.AWS, retry, err = awsclient.LoadConfig(ctx); err != nil {
		return env, err
	}
	// Once per execution environment: what the SDK will do when EC2
	// throttles or hangs, and whether the user's AWS_RETRY_MODE /
	// AWS_MAX_ATTEMPTS took effect.
	env.Log.Info(SDKSettingsMessage, retry.LogAttrs()...)
	return env, nil
}

// Logger is the invocation's logger: every line goes through the handler
// with the invocation's context, so the request ID is on every line.
func (e Env) Logger(ctx context.Context) *slog.Logger {
	return slog.New(logging.BindContext(e.Log.Handler(), ctx))
}

// Must exits the process when Init failed: Lambda reports the init error
// and no event is processed with a half-configured function.
func Must(env Env, err error) Env {
	if err != nil {
		env.Log.Error("cold start failed", "error", err.Error())
		os.Exit(1)
	}
	return env
}
