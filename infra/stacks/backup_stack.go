// Package stacks defines amibackup's CloudFormation stacks: the functions,
// their schedules, manual-run rules, least-privilege IAM, alarms, dashboard
// and the Recycle Bin safety net.
package stacks

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatchactions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslogs"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsrbin"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsscheduler"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssns"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssnssubscriptions"
	"github.com/aws/aws-cdk-go/awscdk/v2/awssqs"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/emf"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// BackupStackProps configure a BackupStack.
type BackupStackProps struct {
	awscdk.StackProps
	// Config is the validated configuration (Deployment filled in).
	Config *config.Config
	// Root is the repository root (for bundling the functions).
	Root string
}

// Stack is one account's and Region's amibackup installation: a backup
// stack (backup, prune, optional share) or a recovery stack (copy, prune).
type Stack struct {
	awscdk.Stack
	Backup, Prune, Share, Copy awslambda.Function
	Topic                      awssns.Topic
	DLQ                        awssqs.Queue
	key                        awskms.Key
	group                      awsscheduler.CfnScheduleGroup
	schedRole                  awsiam.Role
	schedPolicy                awsiam.Policy
}

// BackupStack is kept as the name the issue and docs use.
type BackupStack = Stack

const functionTimeoutMinutes = 15

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

// NewBackupStack defines the stack that backs up this account and Region.
func NewBackupStack(scope constructs.Construct, id string, props *BackupStackProps) (*Stack, error) {
	cfg := props.Config
	s := newBase(scope, id, props, "amibackup: file-system-consistent AMI backups (deployment "+cfg.Deployment+")")
	var err error
	if s.Backup, err = s.function(props.Root, "backup", cfg, backupStatements(s.Stack, cfg), backupWildcards(s.Stack)); err != nil {
		return nil, err
	}
	if s.Prune, err = s.function(props.Root, "prune", cfg, pruneStatements(s.Stack, cfg), pruneWildcards(s.Stack)); err != nil {
		return nil, err
	}
	for i, p := range cfg.Policies {
		s.addSchedule(fmt.Sprintf("BackupSchedule%d", i), "backup-"+p.Name, p.Schedule, s.Backup, SchedulerInput(p.Name))
	}
	s.addSchedule("PruneSchedule", "prune", *cfg.Prune.Schedule, s.Prune, SchedulerInput(""))
	s.manualRules()
	s.failedImageRule(cfg, "the next backup run takes a new one")
	s.recycleBin(cfg)
	s.alarms(cfg)
	if cfg.Guardrails != nil {
		NewGuardrails(s.Stack, "Guardrails", &GuardrailsProps{Config: cfg})
	}
	if cfg.Sharing != nil {
		if err := s.sharing(props.Root, cfg); err != nil {
			return nil, err
		}
	}
	s.dashboard(cfg, s.backupWidgets(cfg)...)
	return s, nil
}

// newBase creates the stack with what every amibackup stack has: the
// notification key, the alarm topic, the dead-letter queue and the
// schedule group with its role.
func newBase(scope constructs.Construct, id string, props *BackupStackProps, description string) *Stack {
	cfg := props.Config
	sp := props.StackProps
	sp.TerminationProtection = jsii.Bool(cfg.TerminationProtectionEnabled())
	if sp.Description == nil {
		sp.Description = jsii.String(description)
	}
	stack := awscdk.NewStack(scope, jsii.String(id), &sp)
	awscdk.Tags_Of(stack).Add(jsii.String("amibackup:deployment"), jsii.String(cfg.Deployment), nil)
	awscdk.Tags_Of(stack).Add(jsii.String("amibackup:component"), jsii.String("infrastructure"), nil)
	s := &Stack{Stack: stack}

	key := awskms.NewKey(stack, jsii.String("NotificationKey"), &awskms.KeyProps{
		Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypts the alarm topic and dead-letter queue"),
		EnableKeyRotation: jsii.Bool(true),
	})
	// The services that write to the encrypted topic and queue as service
	// principals need the key ("Enable compatibility between event sources
	// from AWS services and encrypted topics",
	// https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services):
	// CloudWatch alarms publishing to the topic, and EventBridge rules
	// publishing to it (failed-image rule) or sending to the dead-letter
	// queue. SNS does not support aws:SourceAccount/aws:SourceArn in the key
	// policy for EventBridge, so that statement has no condition (with one,
	// every event would be dropped); the queue policy limits EventBridge to
	// this stack's rules (aws:SourceArn), the topic policy (CDK's grant for
	// the rule target) lets EventBridge publish. Scheduler writes to the
	// dead-letter queue with its own role (SchedulerPolicy), not as a
	// service principal, so it has no key statement.
	key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchAlarmsUseKey"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey*"),
		Resources:  jsii.Strings("*"),
		Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()}},
	}), nil)
	key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("EventBridgeUsesKey"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("events.amazonaws.com"), nil)},
		Actions:    jsii.Strings("kms:Decrypt", "kms:GenerateDataKey*"),
		Resources:  jsii.Strings("*"),
	}), nil)
	s.key = key
	s.Topic = awssns.NewTopic(stack, jsii.String("Alarms"), &awssns.TopicProps{
		DisplayName: jsii.String("amibackup " + cfg.Deployment + " alarms"),
		MasterKey:   key,
		EnforceSSL:  jsii.Bool(true),
	})
	// A topic policy replaces SNS's default policy, and CDK creates one
	// (EnforceSSL, the EventBridge target), so CloudWatch alarms may publish
	// only if it says so; otherwise every alarm action fails with "not
	// authorized to perform: SNS:Publish"
	// (https://repost.aws/knowledge-center/cloudwatch-receive-sns-for-alarm-trigger).
	// Only alarms of this account and Region.
	s.Topic.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
		Sid:        jsii.String("CloudWatchAlarmsPublish"),
		Principals: &[]awsiam.IPrincipal{awsiam.NewServicePrincipal(jsii.String("cloudwatch.amazonaws.com"), nil)},
		Actions:    jsii.Strings("sns:Publish"),
		Resources:  jsii.Strings(*s.Topic.TopicArn()),
		Conditions: &map[string]any{
			"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()},
			"ArnLike":      map[string]any{"aws:SourceArn": alarmARNs(stack)},
		},
	}))
	if cfg.Alarms.Email != "" {
		s.Topic.AddSubscription(awssnssubscriptions.NewEmailSubscription(jsii.String(cfg.Alarms.Email), nil))
	}
	s.DLQ = awssqs.NewQueue(stack, jsii.String("DeadLetterQueue"), &awssqs.QueueProps{
		Encryption:          awssqs.QueueEncryption_KMS,
		EncryptionMasterKey: key,
		EnforceSSL:          jsii.Bool(true),
		RetentionPeriod:     awscdk.Duration_Days(jsii.Number(14)),
	})
	cdknag.NagSuppressions_AddResourceSuppressions(s.DLQ, &[]*cdknag.NagPackSuppression{{
		Id:     jsii.String("AwsSolutions-SQS3"),
		Reason: jsii.String("This queue is the dead-letter queue of the schedules and rules; a dead-letter queue needs no dead-letter queue of its own."),
	}}, jsii.Bool(false))

	s.group = awsscheduler.NewCfnScheduleGroup(stack, jsii.String("Schedules"), &awsscheduler.CfnScheduleGroupProps{
		Name: jsii.String(deploymentName(cfg.Deployment, maxScheduleGroupName)),
	})
	s.schedRole = awsiam.NewRole(stack, jsii.String("SchedulerRole"), &awsiam.RoleProps{
		AssumedBy: awsiam.NewServicePrincipal(jsii.String("scheduler.amazonaws.com"), &awsiam.ServicePrincipalOpts{
			Conditions: &map[string]any{"StringEquals": map[string]any{"aws:SourceAccount": stack.Account()}},
		}),
		Description: jsii.String("EventBridge Scheduler invokes the amibackup functions"),
	})
	// Explicit statements instead of grant helpers: the helpers add
	// version wildcards (function:*) and KMS action wildcards.
	s.schedPolicy = awsiam.NewPolicy(stack, jsii.String("SchedulerPolicy"), &awsiam.PolicyProps{
		Roles: &[]awsiam.IRole{s.schedRole},
		Statements: &[]awsiam.PolicyStatement{
			statement("DeadLetters", []string{"sqs:SendMessage"}, []string{*s.DLQ.QueueArn()}, nil),
			statement("DeadLetterEncryption", []string{"kms:GenerateDataKey", "kms:Decrypt"}, []string{*key.KeyArn()}, nil),
		},
	})
	return s
}

// alarmARNs matches every CloudWatch alarm of the stack's account and Region.
func alarmARNs(stack awscdk.Stack) string {
	return fmt.Sprintf("arn:%s:cloudwatch:%s:%s:alarm:*", *stack.Partition(), *stack.Region(), *stack.Account())
}

func arn(stack awscdk.Stack, resource string) string {
	return fmt.Sprintf("arn:%s:ec2:%s:%s:%s", *stack.Partition(), *stack.Region(), *stack.Account(), resource)
}

// imageARN: AMIs and snapshots have no account in their ARN.
func imageARN(stack awscdk.Stack, resource string) string {
	return imageARNIn(stack, *stack.Region(), resource)
}

// imageARNIn is imageARN in another Region (a recovery stack's sources).
func imageARNIn(stack awscdk.Stack, region, resource string) string {
	return fmt.Sprintf("arn:%s:ec2:%s::%s", *stack.Partition(), region, resource)
}

func statement(sid string, actions []string, resources []string, conditions map[string]any) awsiam.PolicyStatement {
	p := &awsiam.PolicyStatementProps{Sid: jsii.String(sid), Actions: jsii.Strings(actions...), Resources: jsii.Strings(resources...)}
	if conditions != nil {
		p.Conditions = &conditions
	}
	return awsiam.NewPolicyStatement(p)
}

// denyStatement: an explicit deny no allow statement can override.
func denyStatement(sid string, actions []string, resources []string, conditions map[string]any) awsiam.PolicyStatement {
	st := statement(sid, actions, resources, conditions)
	st.SetEffect(awsiam.Effect_DENY)
	return st
}

func managedBy(cfg *config.Config) map[string]any {
	return map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment}}
}

// backupStatements: CreateImage only on instances carrying a policy's
// selection tag, and only creating images and snapshots tagged as ours;
// CreateTags only as part of CreateImage; deprecation only on our images.
func backupStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	st := []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeInstances", "ec2:DescribeImages"}, []string{"*"}, nil),
		statement("CreateImageTaggedAsOurs", []string{"ec2:CreateImage"},
			[]string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"aws:RequestTag/" + tags.ManagedBy: cfg.Deployment}}),
		statement("TagOnlyWhileCreatingImages", []string{"ec2:CreateTags"},
			[]string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"ec2:CreateAction": "CreateImage"}}),
		statement("DeprecateOurImages", []string{"ec2:EnableImageDeprecation"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
	}
	for i, p := range cfg.Policies {
		cond := map[string]any{"Null": map[string]any{"aws:ResourceTag/" + p.Selector.TagKey: "false"}}
		if len(p.Selector.TagValues) > 0 {
			cond = map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/" + p.Selector.TagKey: p.Selector.TagValues}}
		}
		st = append(st, statement(fmt.Sprintf("CreateImageOfSelectedInstances%d", i), []string{"ec2:CreateImage"},
			[]string{arn(stack, "instance/*")}, cond))
	}
	return st
}

// pruneStatements: every destructive action requires our managed-by tag on
// the resource. DeregisterImage with DeleteAssociatedSnapshots also needs
// DeleteSnapshot on the snapshots, which carry the same tag.
func pruneStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeSnapshots", "ec2:DescribeInstances"}, []string{"*"}, nil),
		statement("DeleteOnlyOurImages", []string{"ec2:DeregisterImage", "ec2:EnableImageDeprecation"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("DeleteOnlyOurSnapshots", []string{"ec2:DeleteSnapshot"}, []string{imageARN(stack, "snapshot/*")}, managedBy(cfg)),
	}
}

// wildcard is a wildcard resource that cdk-nag's AwsSolutions-IAM5 reports
// and amibackup accepts, with why. Each is suppressed by its exact finding,
// so any other wildcard added later still fails the cdk-nag check.
type wildcard struct{ resource, reason string }

const describeReason = "EC2 Describe* actions support only Resource \"*\"; they read metadata and change nothing."

func backupWildcards(stack awscdk.Stack) []wildcard {
	return []wildcard{
		{"*", describeReason},
		{imageARN(stack, "image/*"), "CreateImage only creating images tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CreateImage (ec2:CreateAction), EnableImageDeprecation only on images with the managed-by tag; image IDs are not known in advance."},
		{imageARN(stack, "snapshot/*"), "CreateImage only creating snapshots tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CreateImage (ec2:CreateAction); snapshot IDs are not known in advance."},
		{arn(stack, "instance/*"), "CreateImage only on instances carrying a policy's selection tag (aws:ResourceTag condition per policy); the instances are chosen by tag, not by ID."},
	}
}

func pruneWildcards(stack awscdk.Stack) []wildcard {
	return []wildcard{
		{"*", describeReason},
		{imageARN(stack, "image/*"), "DeregisterImage and EnableImageDeprecation only on images carrying this deployment's managed-by tag (aws:ResourceTag)."},
		{imageARN(stack, "snapshot/*"), "DeleteSnapshot only on snapshots carrying this deployment's managed-by tag (aws:ResourceTag)."},
	}
}

// nagFinding spells a resource the way cdk-nag reports it: pseudo-parameter
// tokens as <AWS::Partition>, <AWS::Region> and <AWS::AccountId>.
func nagFinding(stack awscdk.Stack, resource string) string {
	var pairs []string
	for _, p := range []struct {
		token *string
		name  string
	}{{stack.Partition(), "AWS::Partition"}, {stack.Region(), "AWS::Region"}, {stack.Account(), "AWS::AccountId"}} {
		// A concrete Region or account (from the environment) stays as it is.
		if *awscdk.Token_IsUnresolved(p.token) {
			pairs = append(pairs, *p.token, "<"+p.name+">")
		}
	}
	return "Resource::" + strings.NewReplacer(pairs...).Replace(resource)
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

func (s *Stack) function(root, name string, cfg *config.Config, statements []awsiam.PolicyStatement, wildcards []wildcard) (awslambda.Function, error) {
	// Checked before bundling: a too large configuration would otherwise
	// fail only at deploy time, in CloudFormation.
	if err := checkConfigSize(cfg, name); err != nil {
		return nil, err
	}
	code, err := functionCode(root, name)
	if err != nil {
		return nil, err
	}
	id := map[string]string{"backup": "Backup", "prune": "Prune", "share": "Share", "copy": "Copy"}[name]
	logGroup := awslogs.NewLogGroup(s.Stack, jsii.String(id+"Logs"), &awslogs.LogGroupProps{
		Retention:     retentionDays[cfg.LogRetentionDays],
		RemovalPolicy: awscdk.RemovalPolicy_RETAIN,
	})
	role := awsiam.NewRole(s.Stack, jsii.String(id+"Role"), &awsiam.RoleProps{
		AssumedBy:   awsiam.NewServicePrincipal(jsii.String("lambda.amazonaws.com"), nil),
		Description: jsii.String("amibackup " + name + " function (" + cfg.Deployment + ")"),
	})
	policy := awsiam.NewPolicy(s.Stack, jsii.String(id+"Policy"), &awsiam.PolicyProps{
		Statements: &statements,
	})
	policy.AddStatements(statement("WriteOwnLogs", []string{"logs:CreateLogStream", "logs:PutLogEvents"},
		[]string{*logGroup.LogGroupArn() + ":*"}, nil))
	policy.AttachToRole(role)
	suppressions := []*cdknag.NagPackSuppression{{
		Id:        jsii.String("AwsSolutions-IAM5"),
		AppliesTo: &[]any{&cdknag.RegexAppliesTo{Regex: jsii.String(`/^Resource::<` + id + `Logs[0-9A-F]{8}\.Arn>:\*$/g`)}},
		Reason:    jsii.String("Log streams are created at run time; the wildcard is limited to the function's own log group."),
	}}
	for _, w := range wildcards {
		suppressions = append(suppressions, &cdknag.NagPackSuppression{Id: jsii.String("AwsSolutions-IAM5"),
			AppliesTo: &[]any{nagFinding(s.Stack, w.resource)}, Reason: jsii.String(w.reason)})
	}
	cdknag.NagSuppressions_AddResourceSuppressions(policy, &suppressions, jsii.Bool(false))
	fn := awslambda.NewFunction(s.Stack, jsii.String(id), &awslambda.FunctionProps{
		Description:  jsii.String("amibackup " + name + " (" + cfg.Deployment + ")"),
		Runtime:      awslambda.Runtime_PROVIDED_AL2023(),
		Architecture: awslambda.Architecture_ARM_64(),
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
	fn.Node().AddDependency(policy)
	return fn, nil
}

// SchedulerInput is the input a schedule passes to the functions.
func SchedulerInput(policy string) string {
	m := map[string]string{"time": "<aws.scheduler.scheduled-time>"}
	if policy != "" {
		m["policy"] = policy
	}
	// Without SetEscapeHTML(false), '<' and '>' become \u003c and \u003e and
	// Scheduler would pass the placeholder through unreplaced.
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(m)
	return strings.TrimSpace(b.String())
}

// addSchedule adds a Scheduler schedule invoking fn with input, with a
// retry policy and the dead-letter queue.
func (s *Stack) addSchedule(id, name string, sched config.Schedule, fn awslambda.Function, input string) {
	s.schedPolicy.AddStatements(statement("Invoke"+id, []string{"lambda:InvokeFunction"}, []string{*fn.FunctionArn()}, nil))
	awsscheduler.NewCfnSchedule(s.Stack, jsii.String(id), &awsscheduler.CfnScheduleProps{
		Name:                       jsii.String(physicalName(name, maxScheduleName)),
		GroupName:                  s.group.Ref(),
		Description:                jsii.String("amibackup " + name),
		ScheduleExpression:         jsii.String(sched.Expression),
		ScheduleExpressionTimezone: jsii.String(sched.TimeZone),
		FlexibleTimeWindow:         &awsscheduler.CfnSchedule_FlexibleTimeWindowProperty{Mode: jsii.String("OFF")},
		State:                      jsii.String("ENABLED"),
		Target: &awsscheduler.CfnSchedule_TargetProperty{
			Arn:              fn.FunctionArn(),
			RoleArn:          s.schedRole.RoleArn(),
			Input:            jsii.String(input),
			RetryPolicy:      &awsscheduler.CfnSchedule_RetryPolicyProperty{MaximumRetryAttempts: jsii.Number(3), MaximumEventAgeInSeconds: jsii.Number(3600)},
			DeadLetterConfig: &awsscheduler.CfnSchedule_DeadLetterConfigProperty{Arn: s.DLQ.QueueArn()},
		},
	})
}

// manualRules route manual requests on the default bus to the functions.
func (s *Stack) manualRules() {
	for _, r := range []struct {
		id, detailType string
		fn             awslambda.Function
	}{{"BackupRequestedRule", trigger.BackupRequested, s.Backup}, {"PruneRequestedRule", trigger.PruneRequested, s.Prune}} {
		rule := awsevents.NewRule(s.Stack, jsii.String(r.id), &awsevents.RuleProps{
			Description:  jsii.String("amibackup manual run: source " + trigger.Source + ", detail-type " + r.detailType),
			EventPattern: &awsevents.EventPattern{Source: jsii.Strings(trigger.Source), DetailType: jsii.Strings(r.detailType)},
		})
		rule.AddTarget(awseventstargets.NewLambdaFunction(r.fn, &awseventstargets.LambdaFunctionProps{
			DeadLetterQueue: s.DLQ,
			RetryAttempts:   jsii.Number(2),
			MaxEventAge:     awscdk.Duration_Hours(jsii.Number(1)),
		}))
	}
}

// failedImageRule notifies about failed images. The event carries no
// tags, so it fires for every failed AMI in the account; the functions'
// failure metrics cover what they see themselves. next says what happens
// to a failed image of this deployment besides prune deregistering it.
func (s *Stack) failedImageRule(cfg *config.Config, next string) {
	rule := awsevents.NewRule(s.Stack, jsii.String("FailedImageRule"), &awsevents.RuleProps{
		Description: jsii.String("amibackup: an AMI in this account and Region failed"),
		EventPattern: &awsevents.EventPattern{
			Source:     jsii.Strings("aws.ec2"),
			DetailType: jsii.Strings("EC2 AMI State Change"),
			Detail:     &map[string]any{"State": []string{"failed"}},
		},
	})
	rule.AddTarget(awseventstargets.NewSnsTopic(s.Topic, &awseventstargets.SnsTopicProps{
		Message: awsevents.RuleTargetInput_FromText(jsii.String(fmt.Sprintf(
			"amibackup (%s): AMI %s failed: %s. If it is an amibackup image, the next prune run deregisters it; %s.",
			cfg.Deployment, *awsevents.EventField_FromPath(jsii.String("$.detail.ImageId")), *awsevents.EventField_FromPath(jsii.String("$.detail.ErrorMessage")), next))),
		DeadLetterQueue: s.DLQ,
	}))
}

func (s *Stack) recycleBin(cfg *config.Config) {
	if cfg.RecycleBin.Disabled {
		return
	}
	for _, r := range []struct {
		id, typ string
		days    int
	}{{"RecycleBinImages", "EC2_IMAGE", cfg.RecycleBin.ImageRetentionDays}, {"RecycleBinSnapshots", "EBS_SNAPSHOT", cfg.RecycleBin.SnapshotRetentionDays}} {
		awsrbin.NewCfnRule(s.Stack, jsii.String(r.id), &awsrbin.CfnRuleProps{
			Description:     jsii.String("amibackup " + cfg.Deployment + ": pruned backups can be restored for a while"),
			ResourceType:    jsii.String(r.typ),
			RetentionPeriod: &awsrbin.CfnRule_RetentionPeriodProperty{RetentionPeriodUnit: jsii.String("DAYS"), RetentionPeriodValue: jsii.Number(r.days)},
			ResourceTags:    &[]any{&awsrbin.CfnRule_ResourceTagProperty{ResourceTagKey: jsii.String(tags.ManagedBy), ResourceTagValue: jsii.String(cfg.Deployment)}},
		})
	}
}

func metric(name, policy, stat string, period awscdk.Duration) awscloudwatch.Metric {
	return awscloudwatch.NewMetric(&awscloudwatch.MetricProps{
		Namespace:     jsii.String(emf.Namespace),
		MetricName:    jsii.String(name),
		DimensionsMap: &map[string]*string{"Policy": jsii.String(policy)},
		Statistic:     jsii.String(stat),
		Period:        period,
	})
}

func (s *Stack) alarm(id, description string, m awscloudwatch.IMetric, threshold float64, op awscloudwatch.ComparisonOperator, missing awscloudwatch.TreatMissingData) {
	a := awscloudwatch.NewAlarm(s.Stack, jsii.String(id), &awscloudwatch.AlarmProps{
		AlarmDescription:   jsii.String(description),
		Metric:             m,
		Threshold:          jsii.Number(threshold),
		EvaluationPeriods:  jsii.Number(1),
		ComparisonOperator: op,
		TreatMissingData:   missing,
	})
	a.AddAlarmAction(awscloudwatchactions.NewSnsAction(s.Topic))
}

// alarmOnAny alarms when the metric reaches 1 in a period; no data means
// nothing ran, which is not an alarm.
func (s *Stack) alarmOnAny(id, description string, m awscloudwatch.IMetric) {
	s.alarm(id, description, m, 1, awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD, awscloudwatch.TreatMissingData_NOT_BREACHING)
}

// errorsAlarm alarms on any failed invocation of fn.
func (s *Stack) errorsAlarm(id, description string, fn awslambda.Function) {
	s.alarmOnAny(id, description, fn.MetricErrors(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(15)), Statistic: jsii.String("Sum")}))
}

// functionAlarms alarm on errors of the functions and on messages in the
// dead-letter queue.
func (s *Stack) functionAlarms(fns map[string]awslambda.Function) {
	for _, id := range []string{"Backup", "Copy", "Prune"} {
		if fn := fns[id]; fn != nil {
			s.errorsAlarm(id+"ErrorsAlarm", "amibackup "+strings.ToLower(id)+" function failed (see its log group and run summary)", fn)
		}
	}
	s.alarmOnAny("DeadLetterAlarm", "amibackup: a schedule or rule could not invoke a function; messages wait in the dead-letter queue",
		s.DLQ.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(5)), Statistic: jsii.String("Maximum")}))
}

// pruneAlarms: a blocked prune deletes nothing and a failing one leaves
// images and snapshots behind; both stacks prune.
func (s *Stack) pruneAlarms() {
	s.alarmOnAny("PruneBlockedAlarm", "amibackup: the prune blast-radius guard stopped a run; nothing was deleted",
		metric("PruneBlocked", "all", "Maximum", awscdk.Duration_Hours(jsii.Number(1))))
	s.alarmOnAny("PruneFailuresAlarm", "amibackup: prune could not delete some images or snapshots",
		metric("PruneFailures", "all", "Sum", awscdk.Duration_Hours(jsii.Number(1))))
}

func (s *Stack) alarms(cfg *config.Config) {
	s.functionAlarms(map[string]awslambda.Function{"Backup": s.Backup, "Prune": s.Prune})
	for i, p := range cfg.Policies {
		s.alarmOnAny(fmt.Sprintf("ImagesFailedAlarm%d", i), "amibackup policy "+p.Name+": images failed",
			metric("ImagesFailed", p.Name, "Sum", awscdk.Duration_Hours(jsii.Number(1))))
		s.alarm(fmt.Sprintf("ZeroSelectedAlarm%d", i), "amibackup policy "+p.Name+": a run selected zero instances (check the tag "+p.Selector.TagKey+")",
			metric("InstancesSelected", p.Name, "Minimum", awscdk.Duration_Hours(jsii.Number(1))), 0,
			awscloudwatch.ComparisonOperator_LESS_THAN_OR_EQUAL_TO_THRESHOLD, awscloudwatch.TreatMissingData_NOT_BREACHING)
	}
	s.pruneAlarms()
}

func graph(title string, m ...awscloudwatch.IMetric) awscloudwatch.IWidget {
	return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: &m, Width: jsii.Number(12)})
}

// backupWidgets are the backup stack's rows: per-policy selection,
// images, failures and duration.
func (s *Stack) backupWidgets(cfg *config.Config) [][]awscloudwatch.IWidget {
	day := awscdk.Duration_Days(jsii.Number(1))
	var created, failed, selected, duration []awscloudwatch.IMetric
	for _, p := range cfg.Policies {
		created = append(created, metric("ImagesCreated", p.Name, "Sum", day))
		failed = append(failed, metric("ImagesFailed", p.Name, "Sum", day))
		selected = append(selected, metric("InstancesSelected", p.Name, "Maximum", day))
		duration = append(duration, metric("BackupDuration", p.Name, "Maximum", day))
	}
	return [][]awscloudwatch.IWidget{
		{graph("Instances selected", selected...), graph("Images created", created...)},
		{graph("Images failed", failed...), graph("Backup duration (ms)", duration...)},
	}
}

// dashboard adds the deployment's dashboard: the stack's own rows, then
// what every stack has: prune results and each function's runs and errors.
func (s *Stack) dashboard(cfg *config.Config, rows ...[]awscloudwatch.IWidget) {
	d := awscloudwatch.NewDashboard(s.Stack, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: jsii.String(deploymentName(cfg.Deployment, maxDashboardName)),
	})
	for _, r := range rows {
		d.AddWidgets(r...)
	}
	day := awscdk.Duration_Days(jsii.Number(1))
	var runs []awscloudwatch.IMetric
	for _, fn := range []awslambda.Function{s.Backup, s.Share, s.Copy, s.Prune} {
		if fn != nil {
			runs = append(runs, fn.MetricInvocations(&awscloudwatch.MetricOptions{Period: day}), fn.MetricErrors(&awscloudwatch.MetricOptions{Period: day}))
		}
	}
	d.AddWidgets(graph("Images pruned", metric("ImagesPruned", "all", "Sum", day), metric("OrphanSnapshotsDeleted", "all", "Sum", day)),
		graph("Function runs and errors", runs...))
}
