package stacks

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awseventstargets"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/aws-cdk-go/awscdk/v2/awslambda"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// SweepInput is the Scheduler input of the share sweep and the copy runs.
const SweepInput = `{"sweep":true,"time":"<aws.scheduler.scheduled-time>"}`

// keyUseActions are what another account needs on a key to launch or copy
// an image whose snapshots use it (AWS: "Share an AMI with specific AWS
// accounts"); kms:CreateGrant is granted apart, for AWS resources only.
var keyUseActions = []string{"kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:GenerateDataKeyWithoutPlaintext"}

var grantForAWSResource = map[string]any{"Bool": map[string]any{"kms:GrantIsForAWSResource": "true"}}

// sharing adds the share function, its event rule and fallback sweep, and
// optionally a customer-managed key the target accounts may use.
func (s *Stack) sharing(root string, cfg *config.Config) error {
	sh := cfg.Sharing
	if sh.CreateKey {
		key := awskms.NewKey(s.Stack, jsii.String("SharedBackupKey"), &awskms.KeyProps{
			Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypt EBS volumes with this key so their backups can be shared"),
			EnableKeyRotation: jsii.Bool(true),
			Alias:             jsii.String(physicalName("alias/amibackup-"+cfg.Deployment, maxKeyAliasName)),
		})
		for _, st := range sharedKeyStatements(sh) {
			key.AddToResourcePolicy(st, nil)
		}
		awscdk.NewCfnOutput(s.Stack, jsii.String("SharedBackupKeyArn"), &awscdk.CfnOutputProps{
			Value:       key.KeyArn(),
			Description: jsii.String("Encrypt the instances' EBS volumes with this key (e.g. as the account's EBS default key) so their backups can be shared"),
		})
	}
	var err error
	s.Share, err = s.function(root, "share", cfg, shareStatements(s.Stack, cfg), shareWildcards(s.Stack))
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
	s.alarmOnAny("ShareErrorsAlarm", "amibackup: images could not be shared (AWS-managed key? see the amibackup:share-error tag)",
		metric("ShareErrors", "all", "Sum", awscdk.Duration_Hours(jsii.Number(1))))
	s.errorsAlarm("ShareFunctionErrorsAlarm", "amibackup share function failed (see its log group and run summary)", s.Share)
	return nil
}

// sharedKeyStatements let the target accounts, and the accounts of the
// target organizations and OUs, use the created key through EC2. An
// organization or OU can launch the shared images; copying them also
// needs create-volume permission on the snapshots, which EC2 grants only
// per account (sharing.accountIds).
func sharedKeyStatements(sh *config.Sharing) []awsiam.PolicyStatement {
	var out []awsiam.PolicyStatement
	add := func(useSid, grantsSid string, principal awsiam.IPrincipal, cond map[string]any) {
		use := &awsiam.PolicyStatementProps{Sid: jsii.String(useSid), Principals: &[]awsiam.IPrincipal{principal},
			Actions: jsii.Strings(keyUseActions...), Resources: jsii.Strings("*")}
		grantCond := map[string]any{"Bool": grantForAWSResource["Bool"]}
		if cond != nil {
			use.Conditions = &cond
			for k, v := range cond {
				grantCond[k] = v
			}
		}
		out = append(out, awsiam.NewPolicyStatement(use), awsiam.NewPolicyStatement(&awsiam.PolicyStatementProps{Sid: jsii.String(grantsSid),
			Principals: &[]awsiam.IPrincipal{principal}, Actions: jsii.Strings("kms:CreateGrant"), Resources: jsii.Strings("*"), Conditions: &grantCond}))
	}
	for i, a := range sh.AccountIDs {
		add(fmt.Sprintf("TargetAccountUse%d", i), fmt.Sprintf("TargetAccountGrants%d", i), awsiam.NewAccountPrincipal(jsii.String(a)), nil)
	}
	// Principal "*" narrowed to the organizations: the key policy cannot
	// name accounts that join them later.
	if ids := orgIDs(sh.OrganizationARNs); len(ids) > 0 {
		add("TargetOrganizationsUse", "TargetOrganizationsGrants", awsiam.NewAnyPrincipal(), map[string]any{"StringEquals": map[string]any{"aws:PrincipalOrgID": ids}})
	}
	if paths := ouPaths(sh.OrganizationalUnitARNs); len(paths) > 0 {
		add("TargetOUsUse", "TargetOUsGrants", awsiam.NewAnyPrincipal(), map[string]any{"ForAnyValue:StringLike": map[string]any{"aws:PrincipalOrgPaths": paths}})
	}
	return out
}

// orgIDs: arn:aws:organizations::<management account>:organization/o-xxxxxxxxxx -> o-xxxxxxxxxx.
func orgIDs(arns []string) []string {
	var out []string
	for _, a := range arns {
		out = append(out, a[strings.LastIndex(a, "/")+1:])
	}
	return out
}

// ouPaths: arn:aws:organizations::<account>:ou/o-xxx/ou-yyy -> o-xxx/*/ou-yyy/*,
// which matches the OU (at any depth, under any root) and its child OUs.
func ouPaths(arns []string) []string {
	var out []string
	for _, a := range arns {
		parts := strings.Split(a[strings.Index(a, ":ou/")+len(":ou/"):], "/")
		out = append(out, parts[0]+"/*/"+parts[len(parts)-1]+"/*")
	}
	return out
}

// shareStatements: attribute changes and share-state tags only on our
// images and snapshots; snapshots only to the configured accounts and
// never public. EC2 has no request condition keys for an image's launch
// permissions (ModifyImageAttribute), so the image statement is limited by
// the managed-by tag only; see README, section IAM.
func shareStatements(stack awscdk.Stack, cfg *config.Config) []awsiam.PolicyStatement {
	st := []awsiam.PolicyStatement{
		statement("DescribeNeedsWildcard", []string{"ec2:DescribeImages", "ec2:DescribeSnapshots", "kms:DescribeKey"}, []string{"*"}, nil),
		statement("ShareOnlyOurImages", []string{"ec2:ModifyImageAttribute"}, []string{imageARN(stack, "image/*")}, managedBy(cfg)),
		statement("RecordShareState", []string{"ec2:CreateTags"}, []string{imageARN(stack, "image/*")}, map[string]any{
			"StringEquals":              map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment},
			"ForAllValues:StringEquals": map[string]any{"aws:TagKeys": []string{tags.Share, tags.ShareMessage}},
		}),
		denyStatement("NeverMakeSnapshotsPublic", []string{"ec2:ModifySnapshotAttribute"}, []string{"*"},
			map[string]any{"StringEquals": map[string]any{"ec2:Add/group": "all"}}),
	}
	if ids := cfg.Sharing.AccountIDs; len(ids) > 0 {
		// Null=false: a request adding no account (a removal, or only a
		// group) does not match.
		st = append(st, statement("ShareOurSnapshotsWithTargetAccounts", []string{"ec2:ModifySnapshotAttribute"}, []string{imageARN(stack, "snapshot/*")}, map[string]any{
			"StringEquals":              map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment},
			"ForAllValues:StringEquals": map[string]any{"ec2:Add/userId": ids},
			"Null":                      map[string]any{"ec2:Add/userId": "false"},
		}))
	}
	return st
}

func shareWildcards(stack awscdk.Stack) []wildcard {
	return []wildcard{
		{"*", "EC2 Describe* actions support only Resource \"*\"; kms:DescribeKey reads the metadata of whatever key a backup's snapshots use, which is not known at deploy time."},
		{imageARN(stack, "image/*"), "ModifyImageAttribute and CreateTags (share-state tag keys only) only on images carrying this deployment's managed-by tag (aws:ResourceTag)."},
		{imageARN(stack, "snapshot/*"), "ModifySnapshotAttribute only on snapshots carrying this deployment's managed-by tag and only adding the configured account IDs (ec2:Add/userId); adding group all is denied."},
	}
}

// NewRecoveryStack defines the recovery account's stack: the copy function
// and its schedule, the prune function for the copies, a key for the copies
// (unless one is configured), the failed-image rule, alarms, the dashboard
// and the Recycle Bin rules.
func NewRecoveryStack(scope constructs.Construct, id string, props *BackupStackProps) (*Stack, error) {
	cfg := props.Config
	r := cfg.Recovery
	s := newBase(scope, id, props, "amibackup recovery: copies of shared backups (deployment "+cfg.Deployment+")")
	copyKey := r.KMSKeyARN
	if copyKey == "" {
		key := awskms.NewKey(s.Stack, jsii.String("CopyKey"), &awskms.KeyProps{
			Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypts the recovery copies"),
			EnableKeyRotation: jsii.Bool(true),
			Alias:             jsii.String(physicalName("alias/amibackup-"+cfg.Deployment+"-copies", maxKeyAliasName)),
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
	if s.Copy, err = s.function(props.Root, "copy", cfg, copyStatements(s.Stack, cfg, copyKey), copyWildcards(s.Stack, cfg)); err != nil {
		return nil, err
	}
	if s.Prune, err = s.function(props.Root, "prune", cfg, pruneStatements(s.Stack, cfg), pruneWildcards(s.Stack)); err != nil {
		return nil, err
	}
	s.addSchedule("CopySchedule", "copy", *r.Schedule, s.Copy, SweepInput)
	s.addSchedule("PruneSchedule", "prune", *cfg.Prune.Schedule, s.Prune, SchedulerInput(""))
	s.failedImageRule(cfg, "the next copy run copies its source again")
	s.recycleBin(cfg)
	s.functionAlarms(map[string]awslambda.Function{"Copy": s.Copy, "Prune": s.Prune})
	s.alarmOnAny("CopyFailuresAlarm", "amibackup recovery: copies failed",
		metric("CopyFailures", config.CopyPolicy, "Sum", awscdk.Duration_Hours(jsii.Number(1))))
	s.pruneAlarms()
	day := awscdk.Duration_Days(jsii.Number(1))
	s.dashboard(cfg, []awscloudwatch.IWidget{
		graph("Copies started and waiting", metric("CopiesStarted", config.CopyPolicy, "Sum", day), metric("CopiesWaiting", config.CopyPolicy, "Maximum", day)),
		graph("Copy failures", metric("CopyFailures", config.CopyPolicy, "Sum", day)),
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
		statement("CreateCopiesTaggedAsOurs", []string{"ec2:CopyImage"}, []string{imageARN(stack, "image/*"), imageARN(stack, "snapshot/*")},
			map[string]any{"StringEquals": map[string]any{"aws:RequestTag/" + tags.ManagedBy: cfg.Deployment}}),
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

func copyWildcards(stack awscdk.Stack, cfg *config.Config) []wildcard {
	r := cfg.Recovery
	srcRegion := sourceRegion(stack, r)
	w := []wildcard{
		{"*", describeReason},
		{imageARNIn(stack, srcRegion, "image/*"), "CopyImage reads only images owned by the source accounts (ec2:Owner on the source image, when the source Region differs); which images they share is not known in advance."},
		{imageARN(stack, "image/*"), "CopyImage only creating images tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CopyImage (ec2:CreateAction), DeregisterImage only on images carrying the managed-by tag."},
		{imageARN(stack, "snapshot/*"), "CopyImage only creating snapshots tagged with this deployment's managed-by tag (aws:RequestTag), CreateTags only as part of CopyImage (ec2:CreateAction), DeleteSnapshot only on snapshots carrying the managed-by tag."},
	}
	for _, k := range sourceKeys(stack, r) {
		w = append(w, wildcard{k, "The source account's volume keys are not known here: use only through EC2 (kms:ViaService), grants only for AWS resources (kms:GrantIsForAWSResource)."})
	}
	return w
}
