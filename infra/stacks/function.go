package stacks

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/lambdabuild"
	"github.com/amibackup/amibackup/pkg/runner"
)

// functionIDs are the construct IDs of the functions (folders under
// functions/) and of their errors alarms. They are fixed: a construct ID is
// part of its resources' logical IDs, and a changed logical ID replaces the
// resource on deploy. The share function's errors alarm has its own name
// because ShareErrorsAlarm watches the ShareErrors metric.
var functionIDs = map[string]struct{ id, errorsAlarm string }{
	"backup":  {"Backup", "BackupErrorsAlarm"},
	"prune":   {"Prune", "PruneErrorsAlarm"},
	"share":   {"Share", "ShareFunctionErrorsAlarm"},
	"copy":    {"Copy", "CopyErrorsAlarm"},
	"rollout": {"Rollout", "RolloutErrorsAlarm"},
	"verify":  {"Verify", "VerifyErrorsAlarm"},
}

const functionTimeoutMinutes = int(runner.FunctionTimeout / time.Minute)

// retentionDays maps config.LogRetentionValues to the CDK enum.
var retentionDays = map[int]awslogs.RetentionDays{
	1: awslogs.RetentionDays_ONE_DAY, 3: awslogs.RetentionDays_THREE_DAYS, 5: awslogs.RetentionDays_FIVE_DAYS,
	7: awslogs.RetentionDays_ONE_WEEK, 14: awslogs.RetentionDays_TWO_WEEKS, 30: awslogs.RetentionDays_ONE_MONTH,
	60: awslogs.RetentionDays_TWO_MONTHS, 90: awslogs.RetentionDays_THREE_MONTHS, 120: awslogs.RetentionDays_FOUR_MONTHS,
	150: awslogs.RetentionDays_FIVE_MONTHS, 180: awslogs.RetentionDays_SIX_MONTHS, 365: awslogs.RetentionDays_ONE_YEAR,
	400: awslogs.RetentionDays_THIRTEEN_MONTHS, 545: awslogs.RetentionDays_EIGHTEEN_MONTHS, 731: awslogs.RetentionDays_TWO_YEARS,
	1096: awslogs.RetentionDays_THREE_YEARS, 1827: awslogs.RetentionDays_FIVE_YEARS, 2192: awslogs.RetentionDays_SIX_YEARS,
	2557: awslogs.RetentionDays_SEVEN_YEARS, 2922: awslogs.RetentionDays_EIGHT_YEARS, 3288: awslogs.RetentionDays_NINE_YEARS,
	3653: awslogs.RetentionDays_TEN_YEARS,
}

// AmiFunctionProps configure an AmiFunction.
type AmiFunctionProps struct {
	// Name is the function's folder under functions/: backup, prune, share
	// or copy.
	Name string
	// Config is the validated configuration the function reads from its
	// environment (AMIBACKUP_CONFIG).
	Config *config.Config
	// Root is the repository root (for bundling).
	Root string
	// Statements are the function's permissions besides writing its logs.
	Statements []awsiam.PolicyStatement
	// Wildcards are the wildcard resources of Statements cdk-nag reports
	// and amibackup accepts.
	Wildcards []Wildcard
	// Notifications receive the alarm on the function's errors.
	Notifications *Notifications
}

// AmiFunction is one of amibackup's Lambda functions with what each has:
// the bootstrap bundled from functions/<name>, its own log group (JSON
// logs), a role with one inline policy (the statements, writing its logs),
// cdk-nag acceptances for exactly the wildcards listed, and an alarm on its
// errors. The construct is the function itself; its parts are siblings in
// the same scope (<ID>Logs, <ID>Role, <ID>Policy, <ID>ErrorsAlarm), as they
// were before the construct existed, so no logical ID changed.
//
// Role() and LogGroup() are the function's (awslambda.Function).
type AmiFunction struct {
	awslambda.Function
	Name string
	// Policy is the role's inline policy.
	Policy      awsiam.Policy
	ErrorsAlarm awscloudwatch.Alarm
}

// NewAmiFunction adds the function props.Name to scope. Unlike most
// constructs it takes no ID: the name fixes it (functionIDs), so that a
// function's logical IDs cannot drift. An unknown name,
// a configuration too large for Lambda's environment and an unsupported
// build architecture are errors, found before anything is bundled.
func NewAmiFunction(scope constructs.Construct, props *AmiFunctionProps) (*AmiFunction, error) {
	ids, ok := functionIDs[props.Name]
	if !ok {
		var known []string
		for n := range functionIDs {
			known = append(known, n)
		}
		slices.Sort(known)
		return nil, fmt.Errorf("function %q: unknown; amibackup's functions are %s (folders under functions/)", props.Name, strings.Join(known, ", "))
	}
	if props.Config == nil || props.Notifications == nil {
		return nil, fmt.Errorf("function %q: Config and Notifications are required", props.Name)
	}
	cfg := props.Config
	// Checked before bundling: a too large configuration would otherwise
	// fail only at deploy time, in CloudFormation.
	if err := checkConfigSize(cfg, props.Name); err != nil {
		return nil, err
	}
	arch, err := lambdaArchitecture()
	if err != nil {
		return nil, err
	}
	code, err := functionCode(props.Root, props.Name)
	if err != nil {
		return nil, err
	}
	id := ids.id
	f := &AmiFunction{Name: props.Name}
	logGroup := newLogGroup(scope, id+"Logs", cfg)
	role := lambdaRole(scope, id+"Role", "amibackup "+props.Name+" function ("+cfg.Deployment+")")
	statements := props.Statements
	f.Policy = awsiam.NewPolicy(scope, jsii.String(id+"Policy"), &awsiam.PolicyProps{Statements: &statements})
	logs, logsWildcard := ownLogs(logGroup, id+"Logs", "function")
	f.Policy.AddStatements(logs)
	f.Policy.AttachToRole(role)
	suppressions := []*cdknag.NagPackSuppression{logsWildcard}
	stack := awscdk.Stack_Of(scope)
	for _, w := range props.Wildcards {
		suppressions = append(suppressions, &cdknag.NagPackSuppression{Id: jsii.String("AwsSolutions-IAM5"),
			AppliesTo: &[]any{nagFinding(stack, w.Resource)}, Reason: jsii.String(w.Reason)})
	}
	cdknag.NagSuppressions_AddResourceSuppressions(f.Policy, &suppressions, jsii.Bool(false))
	f.Function = awslambda.NewFunction(scope, jsii.String(id), &awslambda.FunctionProps{
		Description:  jsii.String("amibackup " + props.Name + " (" + cfg.Deployment + ")"),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: arch,
		Handler:      jsii.String("bootstrap"),
		Code:         code,
		Timeout:      awscdk.Duration_Minutes(jsii.Number(functionTimeoutMinutes)),
		MemorySize:   jsii.Number(256),
		Role:         role,
		LogGroup:     logGroup,
		// JSON log format makes Lambda's own START/END/REPORT lines
		// structured too; the functions already write slog JSON lines.
		LoggingFormat:         awslambda.LoggingFormat_JSON,
		ApplicationLogLevelV2: awslambda.ApplicationLogLevel_INFO,
		SystemLogLevelV2:      awslambda.SystemLogLevel_INFO,
		Environment:           &map[string]*string{config.EnvVar: jsii.String(cfg.JSON())},
	})
	f.Node().AddDependency(f.Policy)
	f.ErrorsAlarm = props.Notifications.AlarmOnAny(ids.errorsAlarm, "amibackup "+props.Name+" function failed (see its log group and run summary)",
		f.MetricErrors(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(15)), Statistic: jsii.String("Sum")}))
	return f, nil
}

// lambdaArchitecture is the Lambda architecture of lambdabuild's GOARCH.
func lambdaArchitecture() (awslambda.Architecture, error) {
	switch lambdabuild.GOARCH {
	case "arm64":
		return awslambda.Architecture_ARM_64(), nil
	case "amd64":
		return awslambda.Architecture_X86_64(), nil
	}
	return nil, fmt.Errorf("lambdabuild.GOARCH %q: Lambda runs arm64 or amd64", lambdabuild.GOARCH)
}

// newLogGroup is a log group of the deployment's retention that outlives
// the stack (the logs of past runs stay readable).
func newLogGroup(scope constructs.Construct, id string, cfg *config.Config) awslogs.LogGroup {
	return awslogs.NewLogGroup(scope, jsii.String(id), &awslogs.LogGroupProps{
		Retention:     retentionDays[cfg.LogRetentionDays],
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
}

// lambdaRole is a role only Lambda can assume, without managed policies.
func lambdaRole(scope constructs.Construct, id, description string) awsiam.Role {
	return awsiam.NewRole(scope, jsii.String(id), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String(description),
	})
}

// ownLogs is the statement that lets a role write to its own log group,
// and the cdk-nag acceptance of its log-stream wildcard, which cdk-nag
// reports by the log group's logical ID: logGroupID (the construct IDs of
// its path) and 8 hex digits.
func ownLogs(logGroup awslogs.LogGroup, logGroupID, owner string) (awsiam.PolicyStatement, *cdknag.NagPackSuppression) {
	return statement("WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"}, []string{*logGroup.LogGroupArn() + ":*"}, nil),
		&cdknag.NagPackSuppression{
			Id:        jsii.String("AwsSolutions-IAM5"),
			AppliesTo: &[]any{&cdknag.RegexAppliesTo{Regex: jsii.String(`/^Resource::<` + logGroupID + `[0-9A-F]{8}\.Arn>:\*$/g`)}},
			Reason:    jsii.String("Log streams are created at run time; the wildcard is limited to the " + owner + "'s own log group."),
		}
}

// maxConfigEnvBytes keeps AMIBACKUP_CONFIG below Lambda's 4 KB limit on
// all environment variables of a function together (names included), with
// room for the variables Lambda adds no further.
const maxConfigEnvBytes = 3800

// maxKeyARNBytes is the longest KMS key ARN a created key can resolve to
// (arn:aws-us-gov:kms:<region>:<account>:key/<uuid>); until deploy it is a
// short CDK token in the document.
const maxKeyARNBytes = 90

func checkConfigSize(cfg *config.Config, function string) error {
	n := len(config.EnvVar) + len(cfg.JSON())
	if r := cfg.Recovery; r != nil && *awscdk.Token_IsUnresolved(jsii.String(r.KMSKeyARN)) {
		n += max(0, maxKeyARNBytes-len(r.KMSKeyARN))
	}
	if n > maxConfigEnvBytes {
		return fmt.Errorf("configuration of deployment %q is too large for the %s function: %s would be %d bytes, over the %d-byte budget "+
			"(Lambda allows 4 KB of environment variables per function); shorten it, e.g. fewer or shorter policies, account IDs or ARNs",
			cfg.Deployment, function, config.EnvVar, n, maxConfigEnvBytes)
	}
	return nil
}
