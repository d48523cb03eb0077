package stacks

import (
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// SweepInput is the Scheduler input of the share sweep and the copy runs.
const SweepInput = `{"sweep":true,"time":"<aws.scheduler.scheduled-time>"}`

// sharing adds the share function, its event rule and fallback sweep, and
// optionally a customer-managed key the target accounts may use.
func (s *Stack) sharing(root string, cfg *config.Config) error {
	sh := cfg.Sharing
	if sh.CreateKey {
		key := awskms.NewKey(s.Stack, jsii.String("SharedBackupKey"), &awskms.KeyProps{
			Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypt EBS volumes with this key so their backups can be shared"),
			EnableKeyRotation: jsii.Bool(true),
			Alias:             jsii.String("alias/amibackup-" + cfg.Deployment),
		})
		for i, a := range sh.AccountIDs {
			// What another account needs to launch or copy an image whose
			// snapshots use this key (AWS: "Share an AMI with specific AWS accounts").
			key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:        jsii.String(fmt.Sprintf("TargetAccountUse%d", i)),
				Principals: &[]awsiam.IPrincipal{awsiam.NewAccountPrincipal(jsii.String(a))},
				Actions:    jsii.Strings("kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:GenerateDataKeyWithoutPlaintext"),
				Resources:  jsii.Strings("*"),
			}), nil)
			key.AddToResourcePolicy(awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{
				Sid:        jsii.String(fmt.Sprintf("TargetAccountGrants%d", i)),
				Principals: &[]awsiam.IPrincipal{awsiam.NewAccountPrincipal(jsii.String(a))},
				Actions:    jsii.Strings("kms:CreateGrant"),
				Resources:  jsii.Strings("*"),
				Conditions: &map[string]any{"Bool": map[string]any{"kms:GrantIsForAWSResource": "true"}},
			}), nil)
		}
		awscdk.NewCfnOutput(s.Stack, jsii.String("SharedBackupKeyArn"), &awscdk.CfnOutputProps{
			Value:       key.KeyArn(),
			Description: jsii.String("Encrypt the instances' EBS volumes with this key (e.g. as the account's EBS default key) so their backups can be shared"),
		})
	}
	var err error
	s.Share, err = s.function(root, "share", cfg, shareStatements(s.Stack, cfg))
	if err != nil {
		return err
	}
	rule := awsevents.NewRule(s.Stack, jsii.String("ImageAvailableRule"), &awsevents.RuleProps{
		Description: jsii.String("amibackup: share images as soon as they are available (best effort; the sweep schedule is the fallback)"),
		EventPattern: &awsevents.EventPattern{Source: jsii.Strings("aws.ec2"), DetailType: jsii.Strings(trigger.AMIStateChange),
			Detail: &map[string]any{"State": []string{"available"}}},
	})
	rule.AddTarget(awseventstargets.NewLambdaFunction(s.Share, &awseventstargets.LambdaFunctionProps{
		DeadLetterQueue: s.DLQ, RetryAttempts: jsii.Number(2), MaxEventAge: awscdk.Duration_Hours(jsii.Number(1)),
	}))
	s.addSchedule("ShareSweepSchedule", "share-sweep", *sh.Sweep, s.Share, SweepInput)
	gt := awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD
	s.alarm("ShareErrorsAlarm", "amibackup: images could not be shared (AWS-managed key? see the amibackup:share-error tag)",
		metric("ShareErrors", "all", "Sum", awscdk.Duration_Hours(jsii.Number(1))), 1, gt, awscloudwatch.TreatMissingData_NOT_BREACHING)
	s.alarm("ShareFunctionErrorsAlarm", "amibackup share function failed",
		s.Share.MetricErrors(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(15)), Statistic: jsii.String("Sum")}), 1, gt,
		awscloudwatch.TreatMissingData_NOT_BREACHING)
	return nil
}

// shareStatements: attribute changes and share-state tags only on our images.
func shareStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeSnapshots", "kms:DescribeKey"}, []string{"*"}, nil),
		statement("ShareOnlyOurImages", []string{"ec2:ModifyImageAttribute"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("ShareOnlyOurSnapshots", []string{"ec2:ModifySnapshotAttribute"}, []string{imageARN(stack, "snapshot/*")}, managedBy(cfg)),
		statement("RecordShareState", []string{"ec2:CreateTags"}, []string{imageARN(stack, "image/*")}, map[string]any{
			"StringEquals":              map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment},
			"ForAllValues:StringEquals": map[string]any{"aws:TagKeys": []string{tags.Share, tags.ShareMessage}},
		}),
	}
}

// NewRecoveryStack defines the recovery account's stack: the copy function
// and its schedule, the prune function for the copies, a key for the copies
// (unless one is configured), alarms and the Recycle Bin rules.
func NewRecoveryStack(scope constructs.Construct, id string, props *BackupStackProps) (*Stack, error) {
	cfg := props.Config
	r := cfg.Recovery
	s := newBase(scope, id, props, "amibackup recovery: copies of shared backups (deployment "+cfg.Deployment+")")
	copyKey := r.KMSKeyARN
	if copyKey == "" {
		key := awskms.NewKey(s.Stack, jsii.String("CopyKey"), &awskms.KeyProps{
			Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypts the recovery copies"),
			EnableKeyRotation: jsii.Bool(true),
			Alias:             jsii.String("alias/amibackup-" + cfg.Deployment + "-copies"),
		})
		copyKey = *key.KeyArn()
		// The functions read the key from their configuration.
		withKey := *cfg
		rec := *r
		rec.KMSKeyARN = copyKey
		withKey.Recovery = &rec
		cfg = &withKey
	}
	var err error
	if s.Copy, err = s.function(props.Root, "copy", cfg, copyStatements(s.Stack, cfg, copyKey)); err != nil {
		return nil, err
	}
	if s.Prune, err = s.function(props.Root, "prune", cfg, pruneStatements(s.Stack, cfg)); err != nil {
		return nil, err
	}
	s.addSchedule("CopySchedule", "copy", *r.Schedule, s.Copy, SweepInput)
	s.addSchedule("PruneSchedule", "prune", *cfg.Prune.Schedule, s.Prune, SchedulerInput(""))
	s.recycleBin(cfg)
	gt := awscloudwatch.ComparisonOperator_GREATER_THAN_OR_EQUAL_TO_THRESHOLD
	none := awscloudwatch.TreatMissingData_NOT_BREACHING
	for _, f := range []struct {
		id string
		fn interface {
			MetricErrors(*awscloudwatch.MetricOptions) awscloudwatch.Metric
		}
	}{{"Copy", s.Copy}, {"Prune", s.Prune}} {
		s.alarm(f.id+"ErrorsAlarm", "amibackup recovery "+f.id+" function failed",
			f.fn.MetricErrors(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(15)), Statistic: jsii.String("Sum")}), 1, gt, none)
	}
	s.alarm("DeadLetterAlarm", "amibackup recovery: a schedule could not invoke a function",
		s.DLQ.MetricApproximateNumberOfMessagesVisible(&awscloudwatch.MetricOptions{Period: awscdk.Duration_Minutes(jsii.Number(5)), Statistic: jsii.String("Maximum")}), 1, gt, none)
	s.alarm("CopyFailuresAlarm", "amibackup recovery: copies failed",
		metric("CopyFailures", config.CopyPolicy, "Sum", awscdk.Duration_Hours(jsii.Number(1))), 1, gt, none)
	s.alarm("PruneBlockedAlarm", "amibackup recovery: the prune blast-radius guard stopped a run",
		metric("PruneBlocked", "all", "Maximum", awscdk.Duration_Hours(jsii.Number(1))), 1, gt, none)
	return s, nil
}

// copyStatements: CopyImage reads the shared source images and creates
// images and snapshots tagged as ours; KMS use only through EC2.
func copyStatements(stack awscdk.Stack, cfg *config.Config, key string) []awsiam.PolicyStatement {
	r := cfg.Recovery
	srcRegion := r.SourceRegion
	if srcRegion == "" {
		srcRegion = *stack.Region()
	}
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages"}, []string{"*"}, nil),
		statement("ReadSharedSources", []string{"ec2:CopyImage"},
			[]string{fmt.Sprintf("arn:%s:ec2:%s::image/*", *stack.Partition(), srcRegion), fmt.Sprintf("arn:%s:ec2:%s::snapshot/*", *stack.Partition(), srcRegion)}, nil),
		statement("CreateCopiesTaggedAsOurs", []string{"ec2:CopyImage"}, []string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"aws:RequestTag/" + tags.ManagedBy: cfg.Deployment}}),
		// A failed copy holds its source's deterministic name; the copy
		// function deregisters it (and its snapshots) to copy again.
		statement("RemoveOurFailedCopies", []string{"ec2:DeregisterImage"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("RemoveOurFailedCopySnapshots", []string{"ec2:DeleteSnapshot"}, []string{imageARN(stack, "snapshot/*")}, managedBy(cfg)),
		statement("TagOnlyWhileCopying", []string{"ec2:CreateTags"}, []string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"ec2:CreateAction": "CopyImage"}}),
		// The source keys live in the source accounts and are not known
		// here; kms:ViaService limits their use to EC2 in these Regions.
		statement("UseKeysThroughEC2", []string{"kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKeyWithoutPlaintext"},
			[]string{"*"}, map[string]any{"StringEquals": map[string]any{"kms:ViaService": []string{
				fmt.Sprintf("ec2.%s.amazonaws.com", *stack.Region()), fmt.Sprintf("ec2.%s.amazonaws.com", srcRegion)}}}),
		statement("UseCopyKey", []string{"kms:Encrypt", "kms:GenerateDataKeyWithoutPlaintext", "kms:CreateGrant", "kms:DescribeKey", "kms:ReEncryptTo"}, []string{key}, nil),
	}
}
