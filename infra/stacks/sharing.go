package stacks

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsevents"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/awskms"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/metrics"
	"github.com/amibackup/amibackup/pkg/tags"
	"github.com/amibackup/amibackup/pkg/trigger"
)

// SharingProps configure Sharing.
type SharingProps struct {
	// Config is the validated configuration; Config.Sharing is set.
	Config *config.Config
	// Root is the repository root (for bundling the share function).
	Root string
}

// Sharing shares a backup stack's images with other accounts,
// organizations and OUs (README, section Sharing): the share function, the
// rule that starts it when an image becomes available, the sweep schedule
// as the fallback, its alarms, and optionally a customer-managed key the
// targets may use. Its resources are created in the stack, with the IDs
// they had before this type existed, so no logical ID changed.
type Sharing struct {
	Function *AmiFunction
	Key      awskms.Key // nil unless sharing.createKey
	Rule     awsevents.Rule
}

// NewSharing adds sharing to the stack of c.
func NewSharing(c *Common, props *SharingProps) (*Sharing, error) {
	cfg := props.Config
	sh := cfg.Sharing
	out := &Sharing{}
	if sh.CreateKey {
		out.Key = awskms.NewKey(c.Stack, jsii.String("SharedBackupKey"), &awskms.KeyProps{
			Description:       jsii.String("amibackup " + cfg.Deployment + ": encrypt EBS volumes with this key so their backups can be shared"),
			EnableKeyRotation: jsii.Bool(true),
			Alias:             jsii.String(physicalName("alias/amibackup-"+cfg.Deployment, maxKeyAliasName)),
		})
		for _, st := range sharedKeyStatements(sh) {
			out.Key.AddToResourcePolicy(st, nil)
		}
		awscdk.NewCfnOutput(c.Stack, jsii.String("SharedBackupKeyArn"), &awscdk.CfnOutputProps{
			Value:       out.Key.KeyArn(),
			Description: jsii.String("Encrypt the instances' EBS volumes with this key (e.g. as the account's EBS default key) so their backups can be shared"),
		})
	}
	var err error
	out.Function, err = NewAmiFunction(c.Stack, &AmiFunctionProps{Name: "share", Config: cfg, Root: props.Root,
		Statements: shareStatements(c.Stack, cfg), Wildcards: shareWildcards(c.Stack), Notifications: c.Notifications})
	if err != nil {
		return nil, err
	}
	out.Rule = ruleToFunction(c.Stack, "ImageAvailableRule", "amibackup: share images as soon as they are available (best effort; the sweep schedule is the fallback)",
		&awsevents.EventPattern{Source: jsii.Strings("aws.ec2"), DetailType: jsii.Strings(trigger.AMIStateChange),
			Detail: &map[string]any{"State": []string{"available"}}},
		out.Function, c.Notifications.DeadLetters)
	c.Schedules.Add("ShareSweepSchedule", "share-sweep", *sh.Sweep, out.Function, SweepInput)
	c.Notifications.AlarmOnAny("ShareErrorsAlarm", "amibackup: images could not be shared (AWS-managed key? see the amibackup:share-error tag)",
		metric(metrics.ShareErrors, metrics.AllPolicies, "Sum", hourly()))
	return out, nil
}

// keyUseActions are what another account needs on a key to launch or copy
// an image whose snapshots use it (AWS: "Share an AMI with specific AWS
// accounts"); kms:CreateGrant is granted apart, for AWS resources only.
var keyUseActions = []string{"kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:GenerateDataKeyWithoutPlaintext"}

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

func shareWildcards(stack awscdk.Stack) []Wildcard {
	return []Wildcard{
		{"*", "EC2 Describe* actions support only Resource \"*\"; kms:DescribeKey reads the metadata of whatever key a backup's snapshots use, which is not known at deploy time."},
		{imageARN(stack, "image/*"), "ModifyImageAttribute and CreateTags (share-state tag keys only) only on images carrying this deployment's managed-by tag (aws:ResourceTag)."},
		{imageARN(stack, "snapshot/*"), "ModifySnapshotAttribute only on snapshots carrying this deployment's managed-by tag and only adding the configured account IDs (ec2:Add/userId); adding group all is denied."},
	}
}
