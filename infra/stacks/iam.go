package stacks

import (
	"fmt"
	"strings"

	"github.com/aws/aws-cdk-go/awscdk/v2"
	"github.com/aws/aws-cdk-go/awscdk/v2/awsiam"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/tags"
)

// IAM building blocks of every construct: statements, ARNs, conditions and
// the wildcards amibackup accepts (with why) in cdk-nag's terms.

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

// managedBy: only resources carrying this deployment's managed-by tag.
func managedBy(cfg *config.Config) map[string]any {
	return map[string]any{"StringEquals": map[string]any{"aws:ResourceTag/" + tags.ManagedBy: cfg.Deployment}}
}

// taggedAsOurs: only requests creating resources with this deployment's
// managed-by tag.
func taggedAsOurs(cfg *config.Config) map[string]any {
	return map[string]any{"StringEquals": map[string]any{"aws:RequestTag/" + tags.ManagedBy: cfg.Deployment}}
}

// grantForAWSResource: kms:CreateGrant only for an AWS service acting for
// the caller (EC2 attaching an encrypted volume or copying a snapshot).
var grantForAWSResource = map[string]any{"Bool": map[string]any{"kms:GrantIsForAWSResource": "true"}}

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

// Wildcard is a wildcard resource that cdk-nag's AwsSolutions-IAM5 reports
// and amibackup accepts, with why. Each is suppressed by its exact finding,
// so any other wildcard added later still fails the cdk-nag check.
type Wildcard struct{ Resource, Reason string }

const describeReason = "EC2 Describe* actions support only Resource \"*\"; they read metadata and change nothing."

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
