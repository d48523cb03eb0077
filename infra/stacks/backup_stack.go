package stacks

import (
	"errors"
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/backup"
	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// BackupStackProps configure a BackupStack.
type BackupStackProps struct {
	awscdk.StackProps
	// Config is the validated configuration (Deployment filled in) with at
	// least one policy.
	Config *config.Config
	// Root is the repository root (for bundling the functions).
	Root string
}

// BackupStack backs up one account and Region: the backup and prune
// functions with their schedules and manual-run rules, alarms, the
// dashboard, the Recycle Bin rules, and optionally sharing and the
// approved-AMI guardrails.
type BackupStack struct {
	*Common
	Backup, Prune *AmiFunction
	RecycleBin    *RecycleBin   // nil when recycleBin.disabled
	Sharing       *Sharing      // nil without sharing
	Guardrails    *Guardrails   // nil without guardrails
	Workflow      *Workflow     // nil when no policy reboots in waves (all reboot:false or all-at-once)
	Verification  *Verification // nil without a policy that verifies
}

// NewBackupStack defines the stack that backs up this account and Region.
func NewBackupStack(scope constructs.Construct, id string, props *BackupStackProps) (*BackupStack, error) {
	cfg := props.Config
	if cfg == nil || len(cfg.Policies) == 0 {
		return nil, errors.New("backup stack: the configuration has no policies; a configuration with recovery is a RecoveryStack")
	}
	s := &BackupStack{Common: newCommon(scope, id, props.StackProps, cfg,
		"amibackup: file-system-consistent AMI backups (deployment "+cfg.Deployment+")")}
	var err error
	if s.Backup, err = NewAmiFunction(s.Stack, &AmiFunctionProps{Name: "backup", Config: cfg, Root: props.Root,
		Statements: backupStatements(s.Stack, cfg), Wildcards: backupWildcards(s.Stack), Notifications: s.Notifications}); err != nil {
		return nil, err
	}
	// Every policy's schedule and manual rule invoke the backup function; a
	// policy that reboots in waves is handed to the workflow there, as one
	// execution per slot (pkg/backup handoff.go).
	if waves := wavesPolicies(cfg); len(waves) > 0 {
		if s.Workflow, err = NewWorkflow(s.Common, cfg, props.Root, waves); err != nil {
			return nil, err
		}
		sm := s.Workflow.StateMachine
		s.Backup.Function.AddEnvironment(jsii.String(backup.WorkflowEnvVar), sm.StateMachineArn(), nil)
		s.Backup.Policy.AddStatements(statement("StartWorkflow", []string{"states:StartExecution"}, []string{*sm.StateMachineArn()}, nil))
	}
	for i, p := range cfg.Policies {
		s.Schedules.Add(fmt.Sprintf("BackupSchedule%d", i), "backup-"+p.Name, p.Schedule, s.Backup, SchedulerInput(p.Name))
	}
	if s.Prune, err = newPrune(s.Common, cfg, props.Root); err != nil {
		return nil, err
	}
	manualRule(s.Stack, "BackupRequestedRule", trigger.BackupRequested, s.Backup, s.Notifications.DeadLetters)
	manualRule(s.Stack, "PruneRequestedRule", trigger.PruneRequested, s.Prune, s.Notifications.DeadLetters)
	s.Notifications.FailedImageRule(cfg, "the next backup run takes a new one")
	s.RecycleBin = NewRecycleBin(s.Stack, cfg)
	s.policyAlarms(cfg)
	if cfg.Guardrails != nil {
		s.Guardrails = NewGuardrails(s.Stack, "Guardrails", &GuardrailsProps{Config: cfg})
	}
	charted := []*AmiFunction{s.Backup}
	if cfg.Sharing != nil {
		if s.Sharing, err = NewSharing(s.Common, &SharingProps{Config: cfg, Root: props.Root}); err != nil {
			return nil, err
		}
		charted = append(charted, s.Sharing.Function)
	}
	if s.Workflow != nil {
		charted = append(charted, s.Workflow.Function)
	}
	if s.Verification, err = NewVerification(s.Common, cfg, props.Root); err != nil {
		return nil, err
	} else if s.Verification != nil {
		charted = append(charted, s.Verification.Function)
	}
	newDashboard(s.Stack, cfg, append(charted, s.Prune), append(backupWidgets(cfg), verifyWidgets(cfg)...)...)
	return s, nil
}

// policyAlarms: per policy, failed images and runs that selected nothing.
func (s *BackupStack) policyAlarms(cfg *config.Config) {
	for i, p := range cfg.Policies {
		s.Notifications.AlarmOnAny(fmt.Sprintf("ImagesFailedAlarm%d", i), "amibackup policy "+p.Name+": images failed",
			metric(metrics.ImagesFailed, p.Name, "Sum", hourly()))
		s.Notifications.Alarm(fmt.Sprintf("ZeroSelectedAlarm%d", i), "amibackup policy "+p.Name+": a run selected zero instances (check the tag "+p.Selector.TagKey+")",
			metric(metrics.InstancesSelected, p.Name, "Minimum", hourly()), 0,
			awscloudwatch.ComparisonOperator_LESS_THAN_OR_EQUAL_TO_THRESHOLD, awscloudwatch.TreatMissingData_NOT_BREACHING)
	}
}

// backupWidgets are the backup stack's dashboard rows: per-policy
// selection, images, failures and duration.
func backupWidgets(cfg *config.Config) [][]awscloudwatch.IWidget {
	var created, failed, selected, duration []awscloudwatch.IMetric
	for _, p := range cfg.Policies {
		created = append(created, metric(metrics.ImagesCreated, p.Name, "Sum", daily()))
		failed = append(failed, metric(metrics.ImagesFailed, p.Name, "Sum", daily()))
		selected = append(selected, metric(metrics.InstancesSelected, p.Name, "Maximum", daily()))
		duration = append(duration, metric(metrics.BackupDuration, p.Name, "Maximum", daily()))
	}
	return [][]awscloudwatch.IWidget{
		{graph("Instances selected", selected...), graph("Images created", created...)},
		{graph("Images failed", failed...), graph("Backup duration (ms)", duration...)},
	}
}

// backupStatements: CreateImage only on instances carrying a policy's
// selection tag, and only creating images and snapshots tagged as ours;
// CreateTags only as part of CreateImage; deprecation only on our images.
func backupStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	st := []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeInstances", "ec2:DescribeImages"}, []string{"*"}, nil),
		statement("CreateImageTaggedAsOurs", []string{"ec2:CreateImage"},
			[]string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")}, taggedAsOurs(cfg)),
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

func backupWildcards(stack awscdk.Stack) []Wildcard {
	return []Wildcard{
		{"*", describeReason},
		{imageARN(stack, "image/*"), "CreateImage only creating images tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CreateImage (ec2:CreateAction), EnableImageDeprecation only on images with the managed-by tag; image IDs are not known in advance."},
		{imageARN(stack, "snapshot/*"), "CreateImage only creating snapshots tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CreateImage (ec2:CreateAction); snapshot IDs are not known in advance."},
		{arn(stack, "instance/*"), "CreateImage only on instances carrying a policy's selection tag (aws:ResourceTag condition per policy); the instances are chosen by tag, not by ID."},
	}
}
