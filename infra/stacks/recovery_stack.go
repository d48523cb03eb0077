package stacks

import (
	"errors"
	"fmt"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/metrics"
)

// RecoveryStackProps configure a RecoveryStack.
type RecoveryStackProps struct {
	awscdk.StackProps
	// Config is the validated configuration (Deployment filled in) with
	// Recovery set.
	Config *config.Config
	// Root is the repository root (for bundling the functions).
	Root string
}

// RecoveryStack is a recovery account's stack: the copy function and its
// schedule, the prune function for the copies, a key for the copies
// (unless one is configured), the failed-image rule, alarms, the dashboard
// and the Recycle Bin rules.
type RecoveryStack struct {
	*Common
	Copy, Prune *AmiFunction
	// CopyKey encrypts the copies; nil when recovery.kmsKeyArn names one.
	CopyKey    awskms.Key
	RecycleBin *RecycleBin // nil when recycleBin.disabled
}

// NewRecoveryStack defines the recovery account's stack.
func NewRecoveryStack(scope constructs.Construct, id string, props *RecoveryStackProps) (*RecoveryStack, error) {
	cfg := props.Config
	if cfg == nil || cfg.Recovery == nil {
		return nil, errors.New("recovery stack: the configuration has no recovery section; a configuration with policies is a BackupStack")
	}
	r := cfg.Recovery
	s := &RecoveryStack{Common: newCommon(scope, id, props.StackProps, cfg,
		"amibackup recovery: copies of shared backups (deployment "+cfg.Deployment+")")}
	copyKey := r.KMSKeyARN
	if copyKey == "" {
		s.CopyKey = awskms.NewKey(s.Stack, jsii.String("CopyKey"), &awskms.KeyProps{
			Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypts the recovery copies"),
			EnableKeyRotation: jsii.Bool(true),
			Alias:             jsii.String(physicalName("alias/amibackup-"+cfg.Deployment+"-copies", maxKeyAliasName)),
		})
		copyKey = *s.CopyKey.KeyArn()
		// The functions read the key from their configuration.
		withKey := *cfg
		rec := *r
		rec.KMSKeyARN = copyKey
		withKey.Recovery = &rec
		cfg = &withKey
	}
	var err error
	if s.Copy, err = NewAmiFunction(s.Stack, &AmiFunctionProps{Name: "copy", Config: cfg, Root: props.Root,
		Statements: copyStatements(s.Stack, cfg, copyKey), Wildcards: copyWildcards(s.Stack, cfg), Notifications: s.Notifications}); err != nil {
		return nil, err
	}
	s.Schedules.Add("CopySchedule", "copy", *r.Schedule, s.Copy, SweepInput)
	if s.Prune, err = newPrune(s.Common, cfg, props.Root); err != nil {
		return nil, err
	}
	s.Notifications.FailedImageRule(cfg, "the next copy run copies its source again")
	s.RecycleBin = NewRecycleBin(s.Stack, cfg)
	s.Notifications.AlarmOnAny("CopyFailuresAlarm", "amibackup recovery: copies failed",
		metric(metrics.CopyFailures, config.CopyPolicy, "Sum", hourly()))
	newDashboard(s.Stack, cfg, []*AmiFunction{s.Copy, s.Prune}, []awscloudwatch.IWidget{
		graph("Copies started and waiting", metric(metrics.CopiesStarted, config.CopyPolicy, "Sum", daily()), metric(metrics.CopiesWaiting, config.CopyPolicy, "Maximum", daily())),
		graph("Copy failures", metric(metrics.CopyFailures, config.CopyPolicy, "Sum", daily())),
	})
	return s, nil
}

func sourceRegion(stack awscdk.Stack, r *config.Recovery) string {
	if r.SourceRegion != "" {
		return r.SourceRegion
	}
	return *stack.Region()
}

// sourceKeys are the KMS keys of the source accounts in the source Region;
// which keys their volumes use is not known here.
func sourceKeys(stack awscdk.Stack, r *config.Recovery) []string {
	var out []string
	for _, a := range r.SourceAccountIDs {
		out = append(out, fmt.Sprintf("arn:%s:kms:%s:%s:key/*", *stack.Partition(), sourceRegion(stack, r), a))
	}
	return out
}

// copyStatements: CopyImage reads only the source accounts' images and
// creates images and snapshots tagged as ours; KMS use only through EC2
// and grants only for AWS resources; failed copies of ours may be removed.
func copyStatements(stack awscdk.Stack, cfg *config.Config, key string) []awsiam.PolicyStatement {
	r := cfg.Recovery
	srcRegion := sourceRegion(stack, r)
	viaEC2 := map[string]any{"kms:ViaService": []string{
		fmt.Sprintf("ec2.%s.amazonaws.com", *stack.Region()), fmt.Sprintf("ec2.%s.amazonaws.com", srcRegion)}}
	return []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages"}, []string{"*"}, nil),
		// CopyImage authorizes the source image (with ec2:Owner) and the
		// new image and snapshots (with aws:RequestTag/aws:TagKeys only);
		// it has no source-snapshot resource (Service Authorization
		// Reference, Amazon EC2, CopyImage), so the image statement is what
		// limits the sources: to the source accounts' images when they are
		// in another Region. In the same Region the source ARNs match
		// CreateCopiesTaggedAsOurs too (aws:RequestTag applies to every
		// resource of the request), so there IAM cannot limit the sources:
		// the function's Owners filter does, and only images shared with
		// this account (or public) are readable at all.
		statement("ReadSharedSources", []string{"ec2:CopyImage"},
			[]string{imageARNIn(stack, srcRegion, "image/*")},
			map[string]any{"StringEquals": map[string]any{"ec2:Owner": r.SourceAccountIDs}}),
		statement("CreateCopiesTaggedAsOurs", []string{"ec2:CopyImage"}, []string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")}, taggedAsOurs(cfg)),
		// A failed copy holds its source's deterministic name; the copy
		// function deregisters it (and its snapshots) to copy again.
		statement("RemoveOurFailedCopies", []string{"ec2:DeregisterImage"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("RemoveOurFailedCopySnapshots", []string{"ec2:DeleteSnapshot"}, []string{imageARN(stack, "snapshot/*")}, managedBy(cfg)),
		statement("TagOnlyWhileCopying", []string{"ec2:CreateTags"}, []string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"ec2:CreateAction": "CopyImage"}}),
		statement("UseSourceKeysThroughEC2", []string{"kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKeyWithoutPlaintext"},
			sourceKeys(stack, r), map[string]any{"StringEquals": viaEC2}),
		statement("GrantSourceKeysToEC2", []string{"kms:CreateGrant"}, sourceKeys(stack, r),
			map[string]any{"StringEquals": viaEC2, "Bool": grantForAWSResource["Bool"]}),
		// What EBS encryption with a customer-managed key needs from the
		// caller (EBS encryption requirements; kms:ReEncrypt* spelled out),
		// CreateGrant apart; EBS never calls kms:Encrypt.
		statement("UseCopyKey", []string{"kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"}, []string{key}, nil),
		statement("GrantCopyKeyToEC2", []string{"kms:CreateGrant"}, []string{key}, grantForAWSResource),
	}
}

func copyWildcards(stack awscdk.Stack, cfg *config.Config) []Wildcard {
	r := cfg.Recovery
	srcRegion := sourceRegion(stack, r)
	w := []Wildcard{
		{"*", describeReason},
		{imageARNIn(stack, srcRegion, "image/*"), "CopyImage reads only images owned by the source accounts (ec2:Owner on the source image, when the source Region differs); which images they share is not known in advance."},
		{imageARN(stack, "image/*"), "CopyImage only creating images tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CopyImage (ec2:CreateAction), DeregisterImage only on images carrying the managed-by tag."},
		{imageARN(stack, "snapshot/*"), "CopyImage only creating snapshots tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CopyImage (ec2:CreateAction), DeleteSnapshot only on snapshots carrying the managed-by tag."},
	}
	for _, k := range sourceKeys(stack, r) {
		w = append(w, Wildcard{k, "The source account's volume keys are not known here: use only through EC2 (kms:ViaService), grants only for AWS resources (kms:GrantIsForAWSResource)."})
	}
	return w
}
