package stacks

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/config"
)

// Context keys read by the app.
const (
	ContextConfig = "amibackup:config"
	ContextStack  = "amibackup:stack"
	DefaultStack  = "AmiBackup"
)

// ConfigFromContext reads the configuration document from CDK context: an
// object (cdk.json), or a string holding inline JSON or a file path
// (`cdk deploy -c amibackup:config=prod.json`).
func ConfigFromContext(v any, stackName string) (*config.Config, error) {
	var raw []byte
	switch c := v.(type) {
	case nil:
		return nil, fmt.Errorf("context %s is missing: add it to cdk.json or pass -c %s=<file or JSON>", ContextConfig, ContextConfig)
	case string:
		if s := strings.TrimSpace(c); strings.HasPrefix(s, "{") {
			raw = []byte(s)
		} else {
			b, err := os.ReadFile(s)
			if err != nil {
				return nil, fmt.Errorf("context %s: read configuration file: %w", ContextConfig, err)
			}
			raw = b
		}
	default:
		b, err := json.Marshal(c)
		if err != nil {
			return nil, fmt.Errorf("context %s: %w", ContextConfig, err)
		}
		raw = b
	}
	return config.Parse(raw, stackName)
}

// Build defines the app's stack from its context (a BackupStack when
// policies are configured, else a RecoveryStack: config.Validate rejects
// a configuration with both) and applies cdk-nag's AwsSolutions checks.
func Build(app awscdk.App, root string) (awscdk.Stack, error) {
	name := DefaultStack
	if v, ok := app.Node().TryGetContext(jsii.String(ContextStack)).(string); ok && v != "" {
		name = v
	}
	cfg, err := ConfigFromContext(app.Node().TryGetContext(jsii.String(ContextConfig)), name)
	if err != nil {
		return nil, err
	}
	env := &awscdk.Environment{}
	if a := os.Getenv("CDK_DEFAULT_ACCOUNT"); a != "" {
		env.Account = jsii.String(a)
	}
	if r := os.Getenv("CDK_DEFAULT_REGION"); r != "" {
		env.Region = jsii.String(r)
	}
	sp := awscdk.StackProps{Env: env}
	var stack awscdk.Stack
	if len(cfg.Policies) > 0 {
		s, err := NewBackupStack(app, name, &BackupStackProps{StackProps: sp, Config: cfg, Root: root})
		if err != nil {
			return nil, err
		}
		stack = s.Stack
	} else {
		s, err := NewRecoveryStack(app, name, &RecoveryStackProps{StackProps: sp, Config: cfg, Root: root})
		if err != nil {
			return nil, err
		}
		stack = s.Stack
	}
	awscdk.Aspects_Of(app).Add(cdknag.NewAwsSolutionsChecks(&cdknag.NagPackProps{Verbose: jsii.Bool(true)}), nil)
	return stack, nil
}
