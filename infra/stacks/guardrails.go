package stacks

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsconfig"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/aws-cdk-go/awscdk/v2/customresources"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"
	"github.com/cdklabs/cdk-nag-go/cdknag/v2"

	"github.com/amibackup/amibackup/pkg/config"
)

// GuardrailsProps configure the approved-AMI guardrails.
type GuardrailsProps struct {
	// Config is the validated configuration; Config.Guardrails is set.
	Config *config.Config
}

// Guardrails are the approved-AMI guards of a backup stack (README, section
// Approved-AMI guardrails): a customer-managed policy denying RunInstances
// from unapproved images, AWS Config rules reporting instances that run
// from them, and optionally the account's EC2 Allowed AMIs setting.
type Guardrails struct {
	constructs.Construct
	Policy        awsiam.ManagedPolicy
	TagRule       awsconfig.ManagedRule // nil when configRule.disabled
	IDRule        awsconfig.ManagedRule // nil unless configRule.approvedAmiIds
	AllowedImages customresources.AwsCustomResource
}

// NewGuardrails adds the guardrails configured in props.Config.Guardrails.
func NewGuardrails(scope constructs.Construct, id string, props *GuardrailsProps) *Guardrails {
	cfg := props.Config
	g := cfg.Guardrails
	c := constructs.NewConstruct(scope, jsii.String(id))
	stack := awscdk.Stack_Of(c)
	gr := &Guardrails{Construct: c}

	gr.Policy = awsiam.NewManagedPolicy(c, jsii.String("ApprovedAmisPolicy"), &awsiam.ManagedPolicyProps{
		ManagedPolicyName: jsii.String(config.GuardrailPolicyName(cfg.Deployment)),
		Description:       jsii.String("amibackup " + cfg.Deployment + ": launch instances only from approved images (tag " + describeTag(g.Tag()) + ") or allowed owners"),
		Statements:        ptr(ApprovedAMIStatements(stack, g)),
	})
	for i, n := range g.AttachTo.Roles {
		gr.Policy.AttachToRole(awsiam.Role_FromRoleName(c, jsii.String(fmt.Sprintf("Role%d", i)), jsii.String(n), nil))
	}
	for i, n := range g.AttachTo.Users {
		gr.Policy.AttachToUser(awsiam.User_FromUserName(c, jsii.String(fmt.Sprintf("User%d", i)), jsii.String(n)))
	}
	for i, n := range g.AttachTo.Groups {
		gr.Policy.AttachToGroup(awsiam.Group_FromGroupName(c, jsii.String(fmt.Sprintf("Group%d", i)), jsii.String(n)))
	}
	awscdk.NewCfnOutput(stack, jsii.String("ApprovedAmisPolicyArn"), &awscdk.CfnOutputProps{
		Description: jsii.String("Customer-managed policy that denies launching unapproved AMIs; attach it to more principals (Fn::ImportValue)"),
		Value:       gr.Policy.ManagedPolicyArn(),
		ExportName:  jsii.String(config.GuardrailPolicyName(cfg.Deployment) + "-arn"),
	})

	if !g.ConfigRule.Disabled {
		key, value := g.ConfigRuleTag()
		param := key
		if value != "" {
			param += ":" + value
		}
		// approved-amis-by-tag (AWS Config developer guide): parameter
		// amisByTagKeyAndValue, "tag-key" matches any value, "tag-key:value"
		// that value; resource type AWS::EC2::Instance. It needs a
		// configuration recorder in the account and Region.
		gr.TagRule = awsconfig.NewManagedRule(c, jsii.String("ApprovedAmisByTag"), &awsconfig.ManagedRuleProps{
			ConfigRuleName:  jsii.String("amibackup-" + cfg.Deployment + "-approved-amis-by-tag"),
			Description:     jsii.String("amibackup " + cfg.Deployment + ": instances must run from images tagged " + param + " (report only; remediation is manual)"),
			Identifier:      awsconfig.ManagedRuleIdentifiers_APPROVED_AMIS_BY_TAG(),
			InputParameters: &map[string]any{"amisByTagKeyAndValue": param},
			RuleScope:       awsconfig.RuleScope_FromResources(&[]awsconfig.ResourceType{awsconfig.ResourceType_EC2_INSTANCE()}),
		})
		if ids := g.ConfigRule.ApprovedAMIIDs; len(ids) > 0 {
			// approved-amis-by-id: amiIds, a CSV of up to 21 IDs.
			gr.IDRule = awsconfig.NewManagedRule(c, jsii.String("ApprovedAmisById"), &awsconfig.ManagedRuleProps{
				ConfigRuleName:  jsii.String("amibackup-" + cfg.Deployment + "-approved-amis-by-id"),
				Description:     jsii.String("amibackup " + cfg.Deployment + ": instances must run from the listed images (report only)"),
				Identifier:      awsconfig.ManagedRuleIdentifiers_APPROVED_AMIS_BY_ID(),
				InputParameters: &map[string]any{"amiIds": strings.Join(ids, ",")},
				RuleScope:       awsconfig.RuleScope_FromResources(&[]awsconfig.ResourceType{awsconfig.ResourceType_EC2_INSTANCE()}),
			})
		}
	}
	if a := g.AllowedImages; a != nil {
		gr.AllowedImages = allowedImagesSetting(c, cfg, a)
	}
	return gr
}

func ptr[T any](v T) *T { return &v }

func describeTag(t config.ApprovedTag) string {
	if t.Value == "" {
		return t.Key + " (any value)"
	}
	return t.Key + "=" + t.Value
}

// ApprovedAMIStatements are the guardrail policy's statements. Both deny
// ec2:RunInstances on the image resource only (arn:${Partition}:ec2:${Region}::image/${ImageId}:
// AMIs have no account in their ARN), so the other resources one launch
// touches (instance, subnet, volume, ...) never match, whatever keys they
// lack. Condition keys are those the Service Authorization Reference lists
// for the image resource: aws:ResourceTag/${TagKey} and ec2:Owner (an
// account ID, or the alias "amazon" for Amazon's images: EC2 user guide,
// example policies for RunInstances/AMIs). Keys in one statement are ANDed;
// a negated operator (StringNotEquals) is true when the key is absent.
//
//   - DenyUnapprovedImages: no approved tag AND owner not allowed.
//   - DenyImagesOfOtherOwners: owner neither this account nor allowed, so a
//     tag on an image someone else owns and shares approves nothing.
//   - DenySelfApproval: ec2:CreateTags on images adding the approved key (or
//     the Config rule's key), in any letter case (aws:TagKeys, a request
//     key of CreateTags, multivalued: ForAnyValue), so the principals the
//     guardrail restricts cannot approve their own images, neither by
//     tagging nor by creating an image with the tag (CreateImage's tags are
//     authorized as CreateTags).
//
// Every Region ("*"): the policy follows its principals wherever they launch.
func ApprovedAMIStatements(stack awscdk.Stack, g *config.Guardrails) []awsiam.PolicyStatement {
	images := []string{fmt.Sprintf("arn:%s:ec2:*::image/*", *stack.Partition())}
	tag := g.Tag()
	tagKey := "aws:ResourceTag/" + tag.Key
	unapproved := map[string]any{}
	notEquals := map[string]any{}
	if tag.Value == "" {
		unapproved["Null"] = map[string]any{tagKey: "true"}
	} else {
		notEquals[tagKey] = tag.Value
	}
	if len(g.AllowedOwners) > 0 {
		notEquals["ec2:Owner"] = g.AllowedOwners
	}
	if len(notEquals) > 0 {
		unapproved["StringNotEquals"] = notEquals
	}
	owners := append([]string{*stack.Account()}, g.AllowedOwners...)
	approvalKeys := []string{tag.Key}
	if k, _ := g.ConfigRuleTag(); !g.ConfigRule.Disabled && k != tag.Key {
		approvalKeys = append(approvalKeys, k)
	}
	return []awsiam.PolicyStatement{
		denyStatement("DenyUnapprovedImages", []string{"ec2:RunInstances"}, images, unapproved),
		denyStatement("DenyImagesOfOtherOwners", []string{"ec2:RunInstances"}, images,
			map[string]any{"StringNotEquals": map[string]any{"ec2:Owner": owners}}),
		denyStatement("DenySelfApproval", []string{"ec2:CreateTags"}, images,
			map[string]any{"ForAnyValue:StringEqualsIgnoreCase": map[string]any{"aws:TagKeys": approvalKeys}}),
	}
}

// allowedImagesSetting sets the account's EC2 Allowed AMIs (per Region)
// through two AWS SDK calls: the criteria (ReplaceImageCriteriaInAllowedImagesSettings,
// ImageCriteria[].ImageProviders: amazon, aws-marketplace, aws-backup-vault,
// account IDs or none; at most 200) and then the state (EnableAllowedImagesSettings
// with audit-mode or enabled). Deleting the stack disables the setting
// (DisableAllowedImagesSettings). EC2 never restricts the account's own
// images (EnableAllowedImagesSettings API reference), so backups and copies
// stay usable whatever the criteria.
func allowedImagesSetting(scope constructs.Construct, cfg *config.Config, a *config.AllowedImages) customresources.AwsCustomResource {
	// Own role and log group instead of the provider defaults: the default
	// role carries the AWS-managed AWSLambdaBasicExecutionRole, and no
	// amibackup role has managed policies.
	logs := newLogGroup(scope, "AllowedImagesLogs", cfg)
	role := lambdaRole(scope, "AllowedImagesRole", "amibackup "+cfg.Deployment+": sets the account's EC2 Allowed AMIs")
	writeLogs, logsWildcard := ownLogs(logs, "GuardrailsAllowedImagesLogs", "custom resource")
	logPolicy := awsiam.NewPolicy(scope, jsii.String("AllowedImagesLogPolicy"), &awsiam.PolicyProps{
		Statements: &[]awsiam.PolicyStatement{writeLogs},
	})
	logPolicy.AttachToRole(role)
	cdknag.NagSuppressions_AddResourceSuppressions(logPolicy, &[]*cdknag.NagPackSuppression{logsWildcard}, jsii.Bool(false))
	// The Allowed AMIs actions act on the account's setting, not on a
	// resource with an ARN, so Resource is "*".
	policy := customresources.AwsCustomResourcePolicy_FromStatements(&[]awsiam.PolicyStatement{
		statement("SetAllowedAmis", []string{"ec2:ReplaceImageCriteriaInAllowedImagesSettings", "ec2:EnableAllowedImagesSettings", "ec2:DisableAllowedImagesSettings"},
			[]string{"*"}, nil),
	})
	// The policy goes with the criteria resource only: the state resource
	// depends on it, so the policy exists for every call of both (and, on
	// delete, until the state's DisableAllowedImagesSettings has run).
	common := func() *customresources.AwsCustomResourceProps {
		return &customresources.AwsCustomResourceProps{
			Role:     role,
			LogGroup: logs,
			// The runtime's bundled SDK; no npm download at deploy time.
			InstallLatestAwsSdk: jsii.Bool(false),
			ResourceType:        jsii.String("Custom::AmibackupAllowedAmis"),
		}
	}
	criteriaCall := &customresources.AwsSdkCall{
		Service:    jsii.String("EC2"),
		Action:     jsii.String("ReplaceImageCriteriaInAllowedImagesSettings"),
		Parameters: map[string]any{"ImageCriteria": []any{map[string]any{"ImageProviders": a.Providers()}}},
		// One setting per account and Region: the physical ID names it.
		PhysicalResourceId: customresources.PhysicalResourceId_Of(jsii.String("allowed-amis-criteria-" + cfg.Deployment)),
	}
	cp := common()
	cp.Policy = policy
	cp.OnCreate, cp.OnUpdate = criteriaCall, criteriaCall
	criteria := customresources.NewAwsCustomResource(scope, jsii.String("AllowedImagesCriteria"), cp)

	stateCall := &customresources.AwsSdkCall{
		Service:            jsii.String("EC2"),
		Action:             jsii.String("EnableAllowedImagesSettings"),
		Parameters:         map[string]any{"AllowedImagesSettingsState": a.State()},
		PhysicalResourceId: customresources.PhysicalResourceId_Of(jsii.String("allowed-amis-state-" + cfg.Deployment)),
	}
	sp := common()
	sp.OnCreate, sp.OnUpdate = stateCall, stateCall
	sp.OnDelete = &customresources.AwsSdkCall{Service: jsii.String("EC2"), Action: jsii.String("DisableAllowedImagesSettings")}
	state := customresources.NewAwsCustomResource(scope, jsii.String("AllowedImagesState"), sp)
	// Criteria first, then the state; on delete the state goes first.
	state.Node().AddDependency(criteria)
	for _, cr := range []customresources.AwsCustomResource{criteria, state} {
		cr.Node().AddDependency(logPolicy)
		cdknag.NagSuppressions_AddResourceSuppressions(cr, &[]*cdknag.NagPackSuppression{{
			Id:        jsii.String("AwsSolutions-IAM5"),
			AppliesTo: &[]any{"Resource::*"},
			Reason:    jsii.String("EC2's Allowed AMIs actions change an account-level setting that has no ARN; Resource must be *."),
		}}, jsii.Bool(true))
	}
	return state
}
